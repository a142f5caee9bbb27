"""Tests for graphm.spec: the output-size formulas and the slow reference implementations.

The references are themselves the oracle for graphm's kernels, so here they are checked against an
independent one: PyTorch (forward through torch.nn.functional, gradients through torch.autograd)
for spatial ranks 1, 2 and 3. Rank 4, which PyTorch has no op for, is checked against a sum of
PyTorch 3-d convolutions and through exact identities (adjointness and bilinearity) that tie the
four references to each other.
"""
import itertools

import numpy as np
import pytest

from graphm import spec

torch = pytest.importorskip("torch")
F = torch.nn.functional

# PyTorch warns that 'same' with an even kernel copies the input; that is its business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

# float64 references against float64 PyTorch: only rounding separates them.
RTOL, ATOL = 1e-10, 1e-12


# --------------------------------------------------------------------------------------------
# Output-size formulas
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (dict(in_spatial=28, kernel=5, stride=1, padding=2), 28),              # LeNet, 'same' by hand
    (dict(in_spatial=32, kernel=3, stride=2, padding=1), 16),              # (32 + 2 - 2 - 1)//2 + 1
    (dict(in_spatial=7, kernel=3, stride=2, padding=0), 3),                # 7 = 2·3 + 1 tiles
    (dict(in_spatial=8, kernel=3, stride=2, padding=0), 3),                # 8 does not: floor
    (dict(in_spatial=10, kernel=3, stride=1, padding=0, dilation=2), 6),   # dilated extent 5
    (dict(in_spatial=5, kernel=5, stride=3, padding=0), 1),
    (dict(in_spatial=1, kernel=1, stride=1, padding=0), 1),
    (dict(in_spatial=3, kernel=5, stride=1, padding=0), -1),               # does not fit: < 1
])
def test_conv_out_spatial_hand_computed(args, expected):
    assert spec.conv_out_spatial(**args) == expected


@pytest.mark.parametrize("args, expected", [
    (dict(in_spatial=16, kernel=3, stride=2, padding=1, output_padding=1), 32),
    (dict(in_spatial=16, kernel=3, stride=2, padding=1), 31),
    (dict(in_spatial=3, kernel=3, stride=2, padding=0), 7),                # (3-1)·2 + 2 + 1
    (dict(in_spatial=4, kernel=3, stride=1, padding=0, dilation=2), 8),    # 3 + 4 + 1
    (dict(in_spatial=28, kernel=5, stride=1, padding=2), 28),
    (dict(in_spatial=1, kernel=1, stride=5, padding=0, output_padding=4), 5),
])
def test_conv_transpose_out_spatial_hand_computed(args, expected):
    assert spec.conv_transpose_out_spatial(**args) == expected


def test_out_spatial_broadcasts_ints_over_sequences():
    assert spec.conv_out_spatial((32, 7), kernel=3, stride=2, padding=(1, 0)) == (16, 3)
    assert spec.conv_out_spatial([9, 9, 9], kernel=(1, 3, 5), stride=1, padding=0,
                                 dilation=(1, 1, 2)) == (9, 7, 1)
    assert spec.conv_out_spatial((5,), 3, 1, 1) == (5,)
    assert spec.conv_transpose_out_spatial((16, 5), kernel=(3, 2), stride=2, padding=1,
                                           output_padding=(1, 0)) == (32, 8)
    # numpy integers count as ints; the result is made of plain Python ints.
    result = spec.conv_out_spatial(np.int64(8), np.int32(3), 1, 0)
    assert result == 6 and type(result) is int


@pytest.mark.parametrize("call, name", [
    (lambda: spec.conv_out_spatial(8, 3, 0, 0), "stride"),
    (lambda: spec.conv_out_spatial(8, 3, -2, 0), "stride"),
    (lambda: spec.conv_out_spatial(8, 3, 1, 0, dilation=0), "dilation"),
    (lambda: spec.conv_out_spatial(8, 0, 1, 0), "kernel"),
    (lambda: spec.conv_out_spatial(8, 3, 1, -1), "padding"),
    (lambda: spec.conv_out_spatial((8, 8), (3, 3, 3), 1, 0), "kernel"),
    (lambda: spec.conv_out_spatial((8, 8), 3, (1,), 0), "stride"),
    (lambda: spec.conv_out_spatial((8, 8), 3, 1, (0, -1)), "padding"),
    (lambda: spec.conv_out_spatial(-1, 3, 1, 0), "in_spatial"),
    (lambda: spec.conv_transpose_out_spatial(8, 3, 1, 0, output_padding=-1), "output_padding"),
    (lambda: spec.conv_transpose_out_spatial((8,), 3, (2, 2), 0), "stride"),
])
def test_out_spatial_bad_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("call, name", [
    (lambda: spec.conv_out_spatial(8, (3,), 1, 0), "kernel"),     # int in_spatial: ints only
    (lambda: spec.conv_out_spatial(8, 3, 1.0, 0), "stride"),
    (lambda: spec.conv_out_spatial(8, 3, True, 0), "stride"),
    (lambda: spec.conv_out_spatial((8, 8), 3, 1, (0, 0.5)), "padding"),
    (lambda: spec.conv_out_spatial(8.0, 3, 1, 0), "in_spatial"),
])
def test_out_spatial_non_integers_raise_type_error_naming_them(call, name):
    with pytest.raises(TypeError, match=name):
        call()


def test_conv_out_spatial_agrees_with_torch_shapes():
    """Sweep small 1-d geometries: where the formula gives >= 1 PyTorch produces that size,
    and where it gives < 1 PyTorch refuses."""
    for n, k, s, p, d in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(3),
                                           range(1, 3)):
        expected = spec.conv_out_spatial(n, k, s, p, d)
        x, w = torch.zeros(1, 1, n, dtype=torch.float64), torch.zeros(1, 1, k, dtype=torch.float64)
        if expected >= 1:
            assert F.conv1d(x, w, stride=s, padding=p, dilation=d).shape[-1] == expected
        else:
            with pytest.raises(RuntimeError):
                F.conv1d(x, w, stride=s, padding=p, dilation=d)


def test_conv_transpose_out_spatial_agrees_with_torch_shapes():
    for n, k, s, p, d in itertools.product(range(1, 6), range(1, 4), range(1, 4), range(3),
                                           range(1, 3)):
        for op in range(max(s, d)):
            expected = spec.conv_transpose_out_spatial(n, k, s, p, op, d)
            x = torch.zeros(1, 1, n, dtype=torch.float64)
            w = torch.zeros(1, 1, k, dtype=torch.float64)
            if expected >= 1:
                y = F.conv_transpose1d(x, w, stride=s, padding=p, output_padding=op, dilation=d)
                assert y.shape[-1] == expected, (n, k, s, p, op, d)
            else:
                with pytest.raises(RuntimeError):
                    F.conv_transpose1d(x, w, stride=s, padding=p, output_padding=op, dilation=d)


def test_same_padding_hand_computed():
    assert spec.same_padding(3) == (1, 1)
    assert spec.same_padding(4) == (1, 2)              # even kernel: one more zero after
    assert spec.same_padding(1) == (0, 0)
    assert spec.same_padding(3, dilation=3) == (3, 3)
    assert spec.same_padding((4, 3), dilation=(1, 2)) == ((1, 2), (2, 2))
    with pytest.raises(ValueError, match="kernel"):
        spec.same_padding(0)


# --------------------------------------------------------------------------------------------
# The references against PyTorch, d = 1, 2, 3
# --------------------------------------------------------------------------------------------

def _config_id(config):
    return "-".join(f"{key}{value}" for key, value in config.items()).replace(" ", "")


# Each configuration: input size, kernel, stride, padding, dilation, groups. Between them they
# cover strides that do not tile the input, 'same' with odd and even kernels (asymmetric padding),
# 'valid', per-axis tuples, dilation, grouped and depthwise channels.
CONV_CONFIGS = [
    dict(spatial=(9,), kernel=3, stride=1, padding=0, dilation=1, groups=1),
    dict(spatial=(10,), kernel=4, stride=3, padding=2, dilation=1, groups=2),
    dict(spatial=(8,), kernel=3, stride=1, padding="same", dilation=2, groups=1),
    dict(spatial=(8,), kernel=4, stride=1, padding="same", dilation=1, groups=4),
    dict(spatial=(7,), kernel=2, stride=2, padding="valid", dilation=1, groups=1),
    dict(spatial=(7, 7), kernel=3, stride=1, padding=1, dilation=1, groups=1),
    dict(spatial=(7, 6), kernel=(3, 2), stride=(2, 3), padding=(1, 0), dilation=(1, 2), groups=2),
    dict(spatial=(6, 7), kernel=(4, 3), stride=1, padding="same", dilation=(1, 2), groups=4),
    dict(spatial=(5, 8), kernel=2, stride=1, padding="same", dilation=1, groups=1),
    dict(spatial=(9, 7), kernel=3, stride=2, padding=0, dilation=2, groups=1),
    dict(spatial=(5, 4, 3), kernel=(3, 2, 1), stride=(2, 1, 1), padding=(1, 0, 0), dilation=1,
         groups=2),
    dict(spatial=(4, 5, 4), kernel=2, stride=1, padding="same", dilation=(1, 2, 1), groups=1),
    dict(spatial=(5, 5, 5), kernel=3, stride=2, padding=1, dilation=1, groups=1),
]

# Each configuration of the transposed op: input size, kernel, stride, padding, output_padding,
# dilation, groups. output_padding is always below max(stride, dilation), as PyTorch requires.
CONV_TRANSPOSE_CONFIGS = [
    dict(spatial=(5,), kernel=3, stride=2, padding=1, output_padding=1, dilation=1, groups=1),
    dict(spatial=(6,), kernel=4, stride=3, padding=0, output_padding=2, dilation=1, groups=2),
    dict(spatial=(4,), kernel=3, stride=1, padding=2, output_padding=1, dilation=2, groups=1),
    dict(spatial=(4, 5), kernel=3, stride=2, padding=1, output_padding=1, dilation=1, groups=1),
    dict(spatial=(3, 4), kernel=(2, 3), stride=(2, 3), padding=(0, 1), output_padding=(1, 2),
         dilation=(1, 2), groups=2),
    dict(spatial=(5, 4), kernel=3, stride=1, padding=0, output_padding=0, dilation=2, groups=4),
    dict(spatial=(3, 4, 2), kernel=(3, 2, 2), stride=(2, 1, 2), padding=(1, 0, 0),
         output_padding=(1, 0, 1), dilation=1, groups=2),
    dict(spatial=(3, 3, 3), kernel=2, stride=2, padding=0, output_padding=0, dilation=1, groups=1),
]

IN_CHANNELS = 4


def _out_channels(groups):
    return 6 if 6 % groups == 0 else 8


def _kernel_tuple(kernel, rank):
    return (kernel,) * rank if isinstance(kernel, int) else tuple(kernel)


def _conv_problem(config, batched, rng, dtype=np.float64):
    """Random input, weight and bias for a convolution configuration."""
    rank = len(config["spatial"])
    groups = config["groups"]
    out_channels = _out_channels(groups)
    batch_shape = (2,) if batched else ()
    x = rng.standard_normal(batch_shape + (IN_CHANNELS,) + config["spatial"]).astype(dtype)
    w = rng.standard_normal((out_channels, IN_CHANNELS // groups)
                            + _kernel_tuple(config["kernel"], rank)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    options = {key: config[key] for key in ("stride", "padding", "dilation", "groups")}
    return x, w, b, options


def _conv_transpose_problem(config, batched, rng, dtype=np.float64):
    """Random input, weight (PyTorch's transposed layout) and bias."""
    rank = len(config["spatial"])
    groups = config["groups"]
    out_channels = _out_channels(groups)
    batch_shape = (2,) if batched else ()
    x = rng.standard_normal(batch_shape + (IN_CHANNELS,) + config["spatial"]).astype(dtype)
    w = rng.standard_normal((IN_CHANNELS, out_channels // groups)
                            + _kernel_tuple(config["kernel"], rank)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    options = {key: config[key]
               for key in ("stride", "padding", "output_padding", "groups", "dilation")}
    return x, w, b, options


def _torch_forward_and_grads(torch_op, x, w, b, options, rng):
    """PyTorch's output and its three gradients for a random output gradient."""
    x_t, w_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y_t = torch_op(x_t, w_t, b_t, **options)
    grad_output = rng.standard_normal(tuple(y_t.shape))
    grads = torch.autograd.grad(y_t, (x_t, w_t, b_t), torch.tensor(grad_output))
    return y_t.detach().numpy(), grad_output, [g.numpy() for g in grads]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("config", CONV_CONFIGS, ids=_config_id)
def test_conv_and_conv_backward_match_torch(config, batched):
    rng = np.random.default_rng(0)
    x, w, b, options = _conv_problem(config, batched, rng)
    torch_op = TORCH_CONV[len(config["spatial"])]
    expected_y, grad_output, expected_grads = _torch_forward_and_grads(
        torch_op, x, w, b, options, rng)

    y = spec.conv(x, w, b, **options)
    assert y.shape == expected_y.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, expected_y, rtol=RTOL, atol=ATOL)

    grads = spec.conv_backward(grad_output, x, w, **options)
    assert isinstance(grads, spec.ConvGradients)
    for name, got, expected in zip(grads._fields, grads, expected_grads):
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("config", CONV_TRANSPOSE_CONFIGS, ids=_config_id)
def test_conv_transpose_and_its_backward_match_torch(config, batched):
    rng = np.random.default_rng(1)
    x, w, b, options = _conv_transpose_problem(config, batched, rng)
    torch_op = TORCH_CONV_TRANSPOSE[len(config["spatial"])]
    expected_y, grad_output, expected_grads = _torch_forward_and_grads(
        torch_op, x, w, b, options, rng)

    y = spec.conv_transpose(x, w, b, **options)
    assert y.shape == expected_y.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, expected_y, rtol=RTOL, atol=ATOL)

    grads = spec.conv_transpose_backward(grad_output, x, w, **options)
    for name, got, expected in zip(grads._fields, grads, expected_grads):
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=name)


def test_no_bias_means_zero_bias():
    rng = np.random.default_rng(2)
    x, w, b, options = _conv_problem(CONV_CONFIGS[6], True, rng)
    np.testing.assert_array_equal(spec.conv(x, w, None, **options),
                                  spec.conv(x, w, np.zeros_like(b), **options))
    x, w, b, options = _conv_transpose_problem(CONV_TRANSPOSE_CONFIGS[4], True, rng)
    np.testing.assert_array_equal(spec.conv_transpose(x, w, None, **options),
                                  spec.conv_transpose(x, w, np.zeros_like(b), **options))


def test_float32_in_float32_out_close_to_torch():
    rng = np.random.default_rng(3)
    x, w, b, options = _conv_problem(CONV_CONFIGS[6], True, rng, dtype=np.float32)
    y = spec.conv(x, w, b, **options)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    expected = F.conv2d(*(torch.tensor(a) for a in (x, w, b)), **options).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    grads = spec.conv_backward(np.ones_like(y), x, w, **options)
    assert all(g.dtype == np.float32 for g in grads)

    x, w, b, options = _conv_transpose_problem(CONV_TRANSPOSE_CONFIGS[4], False, rng,
                                               dtype=np.float32)
    y = spec.conv_transpose(x, w, b, **options)
    assert y.dtype == np.float32
    expected = F.conv_transpose2d(*(torch.tensor(a) for a in (x, w, b)), **options).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    grads = spec.conv_transpose_backward(np.ones_like(y), x, w, **options)
    assert all(g.dtype == np.float32 for g in grads)


def test_empty_batch_gives_empty_result_like_torch():
    rng = np.random.default_rng(4)
    x = np.zeros((0, 4, 7, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    y = spec.conv(x, w, stride=2, groups=2)
    assert y.shape == tuple(F.conv2d(torch.tensor(x), torch.tensor(w), stride=2, groups=2).shape)
    grads = spec.conv_backward(np.zeros(y.shape), x, w, stride=2, groups=2)
    assert grads.grad_input.shape == x.shape
    np.testing.assert_array_equal(grads.grad_weight, 0.0)


# --------------------------------------------------------------------------------------------
# Rank 4 (PyTorch has no 4-d convolution) and identities between the references
# --------------------------------------------------------------------------------------------

def _torch_conv4d_by_slices(x, w, b, stride, padding, dilation, groups):
    """A 4-d convolution as a sum of PyTorch 3-d convolutions, one per kernel offset on the last
    axis: y[..., i] = b + sum_k conv3d(x_padded[..., i·s + k·d], w[..., k])."""
    s, p, d = stride[3], padding[3], dilation[3]
    kernel_last = w.shape[-1]
    out_last = (x.shape[-1] + 2 * p - d * (kernel_last - 1) - 1) // s + 1
    x_padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(p, p)])
    slices = []
    for i in range(out_last):
        total = 0
        for k in range(kernel_last):
            total = total + F.conv3d(torch.tensor(x_padded[..., i * s + k * d]),
                                     torch.tensor(w[..., k]), None, stride[:3], padding[:3],
                                     dilation[:3], groups).numpy()
        slices.append(total)
    return np.stack(slices, axis=-1) + b.reshape(-1, 1, 1, 1, 1)


RANK4 = dict(spatial=(5, 4, 3, 4), kernel=(2, 3, 1, 2), stride=(2, 1, 1, 2), padding=(1, 0, 0, 1),
             dilation=(1, 1, 2, 1), groups=2)


def test_rank4_conv_matches_sum_of_torch_conv3d():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2) + RANK4["spatial"])
    w = rng.standard_normal((4, 1) + RANK4["kernel"])
    b = rng.standard_normal(4)
    options = {key: RANK4[key] for key in ("stride", "padding", "dilation", "groups")}
    expected = _torch_conv4d_by_slices(x, w, b, **options)
    np.testing.assert_allclose(spec.conv(x, w, b, **options), expected, rtol=RTOL, atol=ATOL)


def _inner(a, b):
    return float(np.sum(a * b))


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_adjoint_identity_ties_conv_to_conv_transpose(rank):
    """<conv(x, w), y> = <x, conv_transpose(y, w)>: the two references were written
    independently (gather and scatter), so each checks the other in every rank."""
    rng = np.random.default_rng(10 + rank)
    spatial = (7, 6, 5, 4)[:rank]
    kernel = (3, 2, 3, 2)[:rank]
    stride, padding, dilation = (2, 1, 3, 2)[:rank], (1, 0, 1, 1)[:rank], (1, 2, 1, 1)[:rank]
    groups = 2
    x = rng.standard_normal((2, 4) + spatial)
    w = rng.standard_normal((6, 4 // groups) + kernel)
    y_shape = (2, 6) + spec.conv_out_spatial(spatial, kernel, stride, padding, dilation)
    y = rng.standard_normal(y_shape)
    # output_padding recovers the input size the stride's floor forgot.
    output_padding = tuple(
        n - m for n, m in zip(spatial, spec.conv_transpose_out_spatial(
            y_shape[2:], kernel, stride, padding, 0, dilation)))
    transposed = spec.conv_transpose(y, w, None, stride, padding, output_padding, groups, dilation)
    assert transposed.shape == x.shape
    forward = spec.conv(x, w, None, stride, padding, dilation, groups)
    assert _inner(forward, y) == pytest.approx(_inner(x, transposed), rel=1e-12)


def test_rank4_gradients_by_bilinearity():
    """conv is linear in x, in w and in b separately, so for any direction t the gradient g of
    <conv(x, w, b), g> satisfies <grad_x, t> = <conv(t, w), g>, <grad_w, t> = <conv(x, t), g>
    and <grad_b, t> = <conv(0, 0, t), g> exactly. Same for conv_transpose."""
    rng = np.random.default_rng(6)
    options = {key: RANK4[key] for key in ("stride", "padding", "dilation", "groups")}
    x = rng.standard_normal((2, 2) + RANK4["spatial"])
    w = rng.standard_normal((4, 1) + RANK4["kernel"])
    g = rng.standard_normal(spec.conv(x, w, **options).shape)
    grads = spec.conv_backward(g, x, w, **options)
    t_x, t_w, t_b = (rng.standard_normal(a.shape) for a in (x, w, grads.grad_bias))
    assert _inner(grads.grad_input, t_x) == pytest.approx(_inner(spec.conv(t_x, w, **options), g))
    assert _inner(grads.grad_weight, t_w) == pytest.approx(_inner(spec.conv(x, t_w, **options), g))
    assert _inner(grads.grad_bias, t_b) == pytest.approx(
        _inner(spec.conv(np.zeros_like(x), w, t_b, **options), g))

    options = dict(stride=(2, 1, 1, 2), padding=(1, 0, 0, 1), output_padding=(1, 0, 0, 0),
                   groups=2, dilation=(1, 1, 2, 1))
    x = rng.standard_normal((2, 4, 3, 2, 3, 2))
    w = rng.standard_normal((4, 3, 2, 3, 1, 2))
    g = rng.standard_normal(spec.conv_transpose(x, w, **options).shape)
    grads = spec.conv_transpose_backward(g, x, w, **options)
    t_x, t_w, t_b = (rng.standard_normal(a.shape) for a in (x, w, grads.grad_bias))
    assert _inner(grads.grad_input, t_x) == pytest.approx(
        _inner(spec.conv_transpose(t_x, w, **options), g))
    assert _inner(grads.grad_weight, t_w) == pytest.approx(
        _inner(spec.conv_transpose(x, t_w, **options), g))
    assert _inner(grads.grad_bias, t_b) == pytest.approx(
        _inner(spec.conv_transpose(np.zeros_like(x), w, t_b, **options), g))


def test_unbatched_equals_batch_of_one_in_rank4():
    rng = np.random.default_rng(7)
    options = {key: RANK4[key] for key in ("stride", "padding", "dilation", "groups")}
    x = rng.standard_normal((2,) + RANK4["spatial"])
    w = rng.standard_normal((4, 1) + RANK4["kernel"])
    y = spec.conv(x, w, **options)
    np.testing.assert_array_equal(y, spec.conv(x[None], w, **options)[0])
    grads = spec.conv_backward(y, x, w, **options)
    grads_batched = spec.conv_backward(y[None], x[None], w, **options)
    np.testing.assert_array_equal(grads.grad_input, grads_batched.grad_input[0])
    np.testing.assert_array_equal(grads.grad_weight, grads_batched.grad_weight)


# --------------------------------------------------------------------------------------------
# The few argument checks the references make
# --------------------------------------------------------------------------------------------

X2 = np.zeros((1, 4, 6, 6))
W2 = np.zeros((6, 2, 3, 3))
WT2 = np.zeros((4, 3, 3, 3))


@pytest.mark.parametrize("call, message", [
    (lambda: spec.conv(X2, W2, groups=2, stride=2, padding="same"), "same"),
    (lambda: spec.conv(X2, W2, groups=2, padding="full"), "padding"),
    (lambda: spec.conv(X2, W2, groups=2, stride=(1, 1, 1)), "stride"),
    (lambda: spec.conv(X2, W2, groups=2, dilation=0), "dilation"),
    (lambda: spec.conv(X2, W2, groups=1), "channels"),
    (lambda: spec.conv(X2, W2, groups=2, bias=np.zeros(5)), "bias"),
    (lambda: spec.conv(X2, np.zeros((6, 2, 7, 3)), groups=2), "output"),
    (lambda: spec.conv(X2[0, 0], W2, groups=2), "input"),
    (lambda: spec.conv_transpose(X2, WT2, padding="same"), "padding"),
    (lambda: spec.conv_transpose(X2, WT2, stride=2, output_padding=2), "output_padding"),
    (lambda: spec.conv_transpose(X2, WT2, groups=3), "groups"),
    (lambda: spec.conv_backward(np.zeros((1, 6, 5, 5)), X2, W2, groups=2), "grad_output"),
    (lambda: spec.conv_backward(np.zeros((6, 4, 4)), X2, W2, groups=2), "batched"),
])
def test_reference_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_integer_arrays_are_rejected():
    with pytest.raises(TypeError, match="input"):
        spec.conv(X2.astype(np.int64), W2, groups=2)
