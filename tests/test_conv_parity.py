"""graphm.functional against PyTorch: forward values and the three gradients.

PyTorch (CPU) is the oracle, at test time only. Every drawn configuration checks

* the forward of ``conv{d}d`` / ``conv`` (or ``conv_transpose{d}d`` / ``conv_transpose``)
  against ``torch.nn.functional``: values, shape, dtype, a fresh C-contiguous result, and
  inputs left untouched;
* ``conv_backward`` / ``conv_transpose_backward`` against ``torch.autograd`` on the same op
  with a bias: ``grad_input``, ``grad_weight``, ``grad_bias``.

Then fixed cases: memory layouts (Fortran order, strided, negative strides, read-only),
an empty batch, and NaN / Inf propagation.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import (
    FLOAT_DTYPES, ConvCase, assert_close, assert_fresh_c_array, conv_cases, examples, make_rng,
    nonfinite_pattern, torch_forward, torch_gradients, with_layout,
)

pytest.importorskip("torch")
import graphm.functional as F  # noqa: E402  (a broken build must fail, not skip)

DIMS = (1, 2, 3)
LAYOUTS = ["F", "strided", "reversed", "readonly"]  # besides "C"; see conftest.with_layout
# Sizes per rank: enough positions that the stride leaves remainders, small enough to be fast.
MAX_IN = {1: 11, 2: 7, 3: 4}


def forward_function(d, transpose, generic):
    """graphm's rank-specific entry point (conv2d, ...) or the any-rank one (conv, ...)."""
    if generic:
        return F.conv_transpose if transpose else F.conv
    return getattr(F, f"conv_transpose{d}d" if transpose else f"conv{d}d")


def backward_function(transpose):
    return F.conv_transpose_backward if transpose else F.conv_backward


def check_case(case: ConvCase, dtype, generic, layout="C"):
    """Forward and backward of one configuration against torch."""
    x, w, b, g = case.arrays(dtype)
    kw = case.kwargs()
    xl, wl = with_layout(x, layout), with_layout(w, layout)
    bl = None if b is None else with_layout(b, layout)
    gl = with_layout(g, layout)
    saved = [a.copy() for a in (x, w, g)] + ([] if b is None else [b.copy()])

    # forward
    out = forward_function(case.d, case.transpose, generic)(xl, wl, bl, **kw)
    expected = torch_forward(x, w, b, transpose=case.transpose, **kw)
    assert expected.shape == case.output_shape  # the test's own size formula agrees with torch
    assert_fresh_c_array(out, dtype, xl, wl, bl)
    assert_close(out, expected, dtype)

    # backward: the three gradients of the op with a bias
    grads = backward_function(case.transpose)(gl, xl, wl, **kw)
    expected_grads = torch_gradients(g, x, w, transpose=case.transpose, **kw)
    assert tuple(grads._fields) == ("grad_input", "grad_weight", "grad_bias")
    for name, got, want, like in zip(grads._fields, grads, expected_grads, (x, w, g)):
        assert isinstance(got, np.ndarray), name
        assert got.dtype == np.dtype(dtype), (name, got.dtype)
        assert got.flags.c_contiguous, f"{name} is not C-contiguous"
        assert_close(got, want, dtype)
    assert grads.grad_input is grads[0] and grads.grad_bias is grads[2]

    # nothing was written into the inputs
    after = [xl, wl, gl] + ([] if b is None else [bl])
    for before, now in zip(saved, after):
        assert np.array_equal(before, now, equal_nan=True), "an input array was modified"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("d", DIMS)
@settings(max_examples=examples(150))
@given(data=st.data())
def test_conv_matches_torch(d, dtype, data):
    case = data.draw(conv_cases(d, transpose=False, max_in=MAX_IN[d]), label="case")
    generic = data.draw(st.booleans(), label="generic entry point")
    check_case(case, dtype, generic)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("d", DIMS)
@settings(max_examples=examples(150))
@given(data=st.data())
def test_conv_transpose_matches_torch(d, dtype, data):
    case = data.draw(conv_cases(d, transpose=True, max_in=MAX_IN[d]), label="case")
    generic = data.draw(st.booleans(), label="generic entry point")
    check_case(case, dtype, generic)


# --------------------------------------------------------------------------------------------
# Hand-picked configurations the random draw might reach only rarely
# --------------------------------------------------------------------------------------------

def make_case(d, transpose=False, *, batch=2, groups=1, in_per_group=2, out_per_group=3,
              kernel=3, in_spatial=7, stride=1, padding=0, dilation=1, output_padding=0,
              with_bias=True, seed=0):
    """A :class:`ConvCase` from per-axis ints or tuples (ints are used for every axis)."""
    def per_axis(value):
        return tuple(value) if isinstance(value, tuple) else (value,) * d
    pads = (0,) * d if isinstance(padding, str) else per_axis(padding)
    return ConvCase(
        d=d, transpose=transpose, batch=batch, groups=groups, in_per_group=in_per_group,
        out_per_group=out_per_group, kernel=per_axis(kernel), in_spatial=per_axis(in_spatial),
        stride=stride, padding=padding, dilation=dilation, output_padding=output_padding,
        strides=per_axis(stride), pads=pads, dilations=per_axis(dilation),
        output_paddings=per_axis(output_padding), with_bias=with_bias, seed=seed)


SAME_CASES = [  # 'same': odd and even kernels, with dilation; PyTorch pads extra on the right
    dict(kernel=3), dict(kernel=4), dict(kernel=2, dilation=3), dict(kernel=4, dilation=2),
    dict(kernel=(1, 2), in_spatial=(5, 4)), dict(kernel=(5, 2), dilation=(1, 2), groups=2),
    dict(kernel=6, in_spatial=3), dict(kernel=1),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("params", SAME_CASES)
@pytest.mark.parametrize("d", DIMS)
def test_same_padding(d, params, dtype):
    params = dict(params)
    if d != 2:  # the tuple cases are written for d = 2
        for key in ("kernel", "in_spatial", "dilation"):
            if isinstance(params.get(key), tuple):
                params[key] = params[key][0]
    if d == 3:
        params.setdefault("in_spatial", 4)
    case = make_case(d, padding="same", **params)
    check_case(case, dtype, generic=False)


FIXED_CASES = [
    # stride that does not tile the input, on every axis and per axis
    dict(kernel=3, in_spatial=8, stride=3, padding=1),
    dict(kernel=(2, 3), in_spatial=(9, 6), stride=(2, 4), padding=(0, 2), dilation=(2, 1)),
    # depthwise (groups == channels), and groups with several channels each
    dict(groups=4, in_per_group=1, out_per_group=2, kernel=3, stride=2, padding=1),
    dict(groups=3, in_per_group=2, out_per_group=1, kernel=2, dilation=2),
    # kernel as large as the padded input: a single output position
    dict(kernel=5, in_spatial=3, padding=1),
    # 1x1 kernels with stride, padding larger than the kernel
    dict(kernel=1, in_spatial=6, stride=2, padding=2),
    # 'valid' padding
    dict(kernel=(3, 2), in_spatial=(5, 7), padding="valid", stride=2),
]

TRANSPOSE_CASES = [
    dict(kernel=3, in_spatial=4, stride=2, padding=1, output_padding=1),
    dict(kernel=(2, 3), in_spatial=(3, 5), stride=(3, 1), output_padding=(2, 0)),
    # output_padding allowed by dilation although the stride is 1 (below max(stride, dilation))
    dict(kernel=2, in_spatial=4, stride=1, dilation=3, output_padding=2),
    dict(groups=3, in_per_group=2, out_per_group=1, kernel=3, stride=2, padding=2,
         dilation=2, output_padding=1),
    dict(kernel=1, in_spatial=5, stride=3, output_padding=2),
    dict(kernel=4, in_spatial=1, stride=2, padding=1),
]


def _for_rank(params, d):
    """Collapse the d = 2 tuples of a case to their first entry for other ranks."""
    params = dict(params)
    if d != 2:
        for key, value in params.items():
            if isinstance(value, tuple):
                params[key] = value[0]
    return params


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("params", FIXED_CASES)
@pytest.mark.parametrize("d", DIMS)
def test_fixed_conv_cases(d, params, dtype):
    params = _for_rank(params, d)
    if d == 3:
        params["in_spatial"] = min(params.get("in_spatial", 7), 5)
        params["in_spatial"] = max(params["in_spatial"], 3)
    check_case(make_case(d, **params), dtype, generic=False)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("params", TRANSPOSE_CASES)
@pytest.mark.parametrize("d", DIMS)
def test_fixed_conv_transpose_cases(d, params, dtype):
    params = _for_rank(params, d)
    check_case(make_case(d, transpose=True, **params), dtype, generic=False)


# --------------------------------------------------------------------------------------------
# Sizes past the kernels' blocking: > 8 samples (several sample blocks of the weight gradient),
# > 256 output positions (several position blocks), > 256 rows of K (several KC blocks) and
# > 96 output channels per group (several MC blocks), none of them a multiple of a block or of
# the 6 x 16 / 6 x 8 register tile.
# --------------------------------------------------------------------------------------------

BLOCKED_CASES = {
    "conv2d-big": dict(d=2, batch=10, in_per_group=40, out_per_group=100, kernel=3,
                       in_spatial=(23, 19), padding=1),
    "conv2d-grouped-strided": dict(d=2, batch=9, groups=2, in_per_group=30, out_per_group=98,
                                   kernel=(3, 4), in_spatial=(35, 30), stride=(2, 1),
                                   padding=(1, 2), dilation=(1, 2)),
    "conv1d-long": dict(d=1, batch=3, groups=3, in_per_group=20, out_per_group=13, kernel=15,
                        in_spatial=700, stride=2, padding=7, dilation=2),
    "conv3d-big": dict(d=3, batch=2, in_per_group=12, out_per_group=8, kernel=3,
                       in_spatial=9, padding=1),
    "conv_transpose2d-big": dict(d=2, transpose=True, batch=10, in_per_group=100,
                                 out_per_group=40, kernel=3, in_spatial=(12, 10), stride=2,
                                 padding=1, output_padding=1),
    "conv_transpose1d-grouped": dict(d=1, transpose=True, batch=3, groups=2, in_per_group=50,
                                     out_per_group=20, kernel=9, in_spatial=300, stride=3,
                                     dilation=2, output_padding=2),
    "conv_transpose3d-big": dict(d=3, transpose=True, batch=2, in_per_group=16,
                                 out_per_group=12, kernel=3, in_spatial=5, stride=2,
                                 output_padding=1),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(BLOCKED_CASES))
def test_sizes_past_the_blocking(name, dtype):
    params = dict(BLOCKED_CASES[name])
    check_case(make_case(params.pop("d"), **params), dtype, generic=False)


@settings(max_examples=examples(60))
@given(data=st.data())
def test_large_random_configurations(data):
    """Random configurations up to the blocking sizes and past them, any layout."""
    d = data.draw(st.integers(1, 3), label="d")
    transpose = data.draw(st.booleans(), label="transpose")
    case = data.draw(conv_cases(d, transpose, max_in={1: 300, 2: 24, 3: 8}[d], max_kernel=5,
                                max_dilation=3, max_pad=3, max_per_group=110, max_batch=11),
                     label="case")
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    layout = data.draw(st.sampled_from(["C"] + LAYOUTS), label="layout")
    check_case(case, dtype, generic=data.draw(st.booleans(), label="generic"), layout=layout)


# --------------------------------------------------------------------------------------------
# Batched vs unbatched
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", DIMS)
def test_unbatched_is_the_batch_of_one(d, transpose):
    case = make_case(d, transpose=transpose, batch=1, groups=2, stride=2, padding=1,
                     output_padding=1 if transpose else 0, in_spatial=5)
    x, w, b, g = case.arrays(np.float64)
    kw = case.kwargs()
    forward = forward_function(d, transpose, generic=False)
    batched = forward(x, w, b, **kw)
    single = forward(x[0], w, b, **kw)
    assert single.shape == batched.shape[1:]
    assert_close(single, batched[0], np.float64)
    grads_batched = backward_function(transpose)(g, x, w, **kw)
    grads_single = backward_function(transpose)(g[0], x[0], w, **kw)
    assert grads_single.grad_input.shape == x.shape[1:]
    assert_close(grads_single.grad_input, grads_batched.grad_input[0], np.float64)
    assert_close(grads_single.grad_weight, grads_batched.grad_weight, np.float64)
    assert_close(grads_single.grad_bias, grads_batched.grad_bias, np.float64)


# --------------------------------------------------------------------------------------------
# Memory layouts: accepted, and the values do not depend on them
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", DIMS)
def test_memory_layouts(d, transpose, dtype, layout):
    case = make_case(d, transpose=transpose, batch=3, groups=2, kernel=2, stride=2,
                     padding=1, dilation=1, in_spatial=5, output_padding=1 if transpose else 0)
    check_case(case, dtype, generic=False, layout=layout)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_transposed_axes_view(transpose):
    """A view that swaps the spatial axes (Fortran-like within each sample)."""
    case = make_case(2, transpose=transpose, batch=2, groups=1, kernel=(2, 3),
                     in_spatial=(6, 4), stride=(2, 1), padding=(1, 0),
                     output_padding=(1, 0) if transpose else 0)
    x, w, b, _ = case.arrays(np.float32)
    x_view = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)
    w_view = np.ascontiguousarray(np.swapaxes(w, 0, 1)).swapaxes(0, 1)
    assert not x_view.flags.c_contiguous and not w_view.flags.c_contiguous
    kw = case.kwargs()
    out = forward_function(2, transpose, generic=False)(x_view, w_view, b, **kw)
    assert_fresh_c_array(out, np.float32, x_view, w_view, b)
    assert_close(out, torch_forward(x, w, b, transpose=transpose, **kw), np.float32)


# --------------------------------------------------------------------------------------------
# Empty batch: N = 0 gives an empty result of torch's shape; gradients are zeros
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", DIMS)
def test_empty_batch(d, transpose, dtype):
    case = make_case(d, transpose=transpose, batch=0, groups=2, stride=2, padding=1,
                     in_spatial=5, output_padding=1 if transpose else 0)
    x, w, b, g = case.arrays(dtype)
    kw = case.kwargs()
    out = forward_function(d, transpose, generic=False)(x, w, b, **kw)
    expected = torch_forward(x, w, b, transpose=transpose, **kw)
    assert out.shape == expected.shape == case.output_shape
    assert_fresh_c_array(out, dtype)
    grads = backward_function(transpose)(g, x, w, **kw)
    expected_grads = torch_gradients(g, x, w, transpose=transpose, **kw)
    for got, want in zip(grads, expected_grads):
        assert_close(got, want, dtype)
    assert not grads.grad_weight.any() and not grads.grad_bias.any()


# --------------------------------------------------------------------------------------------
# NaN and Inf propagate as IEEE arithmetic does: the same non-finite positions as torch
# --------------------------------------------------------------------------------------------

def _poison(array, rng, count):
    """Write NaN, +Inf and -Inf into ``count`` random positions each (a copy)."""
    poisoned = array.copy()
    flat = poisoned.reshape(-1)
    positions = rng.choice(flat.size, size=3 * count, replace=False)
    flat[positions[:count]] = np.nan
    flat[positions[count:2 * count]] = np.inf
    flat[positions[2 * count:]] = -np.inf
    return poisoned


def _assert_same_nonfinite(actual, expected):
    for kind, got, want in zip(("NaN", "+Inf", "-Inf"), nonfinite_pattern(actual),
                               nonfinite_pattern(expected)):
        assert np.array_equal(got, want), (
            f"{kind} positions differ: graphm {np.argwhere(got).tolist()}, "
            f"torch {np.argwhere(want).tolist()}")
    finite = np.isfinite(expected)
    assert finite.any() and (~finite).any()  # the test exercises both kinds of positions
    return finite


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", DIMS)
def test_nonfinite_input_propagates(d, transpose, dtype):
    """Non-finite inputs; padded positions are zeros and the weight is finite."""
    case = make_case(d, transpose=transpose, batch=2, groups=2, in_per_group=2,
                     out_per_group=2, kernel=2, stride=2, padding=1, in_spatial=6 if d < 3 else 4,
                     output_padding=1 if transpose else 0)
    x, w, b, _ = case.arrays(dtype)
    x = _poison(x, make_rng(d), count=1)
    kw = case.kwargs()
    out = forward_function(d, transpose, generic=False)(x, w, b, **kw)
    expected = torch_forward(x, w, b, transpose=transpose, **kw)
    finite = _assert_same_nonfinite(out, expected)
    assert_close(np.where(finite, out, 0), np.where(finite, expected, 0), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", DIMS)
def test_nonfinite_weight_and_bias_propagate(d, transpose, dtype):
    """A NaN in the weight of one group, an Inf in one bias entry (no padding, so every
    weight entry meets real input values and the pattern does not depend on how padding
    is implemented)."""
    case = make_case(d, transpose=transpose, batch=2, groups=2, in_per_group=2,
                     out_per_group=2, kernel=2, stride=1, padding=0, in_spatial=4)
    x, w, b, _ = case.arrays(dtype)
    w = w.copy()
    w[0].reshape(-1)[0] = np.nan  # input channel 0 (transpose) or output channel 0 (conv)
    b[-1] = np.inf
    kw = case.kwargs()
    out = forward_function(d, transpose, generic=False)(x, w, b, **kw)
    expected = torch_forward(x, w, b, transpose=transpose, **kw)
    finite = _assert_same_nonfinite(out, expected)
    assert_close(np.where(finite, out, 0), np.where(finite, expected, 0), dtype)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_nonfinite_grad_output_propagates_to_gradients(transpose):
    """A NaN in grad_output reaches grad_bias of its channel and grad_weight of its group."""
    case = make_case(2, transpose=transpose, batch=2, groups=2, in_per_group=2,
                     out_per_group=2, kernel=2, stride=1, padding=0, in_spatial=4)
    x, w, _, g = case.arrays(np.float64)
    g = g.copy()
    g[1, 0, 1, 1] = np.nan  # batch 1, output channel 0 (group 0)
    kw = case.kwargs()
    grads = backward_function(transpose)(g, x, w, **kw)
    expected = torch_gradients(g, x, w, transpose=transpose, **kw)
    for got, want in zip(grads, expected):
        _assert_same_nonfinite(got, want)
