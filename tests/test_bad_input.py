"""Bad input and faults in the functional layer (issue 12, section 1), each case with its
neighbours.

Oracles: PyTorch (at test time only) and :mod:`graphm.spec`. Each bad call must raise a
ValueError or TypeError whose message names the argument; each good neighbour must agree with
the oracle; nothing may allocate past graphm's bound on array sizes or take time proportional
to the padding rather than the work.
"""
import itertools
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import graphm
import graphm.functional as F
from graphm import nn, spec

F32 = np.float32


def zeros(*shape):
    return np.zeros(shape, F32)


def ones(*shape):
    return np.ones(shape, F32)


def _t(array):
    return torch.from_numpy(np.array(array, copy=True))


def assert_same_values(actual, expected, rtol=1e-5, atol=1e-6):
    """Equal shapes, NaN exactly where expected has NaN, the same infinities, close elsewhere."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------
# An input with a spatial extent of 0 (PyTorch refuses it: "only zero batch or zero channel")
# --------------------------------------------------------------------------------------------

EMPTY_EXTENT_CALLS = {
    "conv1d padding=1": lambda: F.conv1d(zeros(1, 1, 0), ones(1, 1, 1), padding=1),
    "conv1d": lambda: F.conv1d(zeros(1, 1, 0), ones(1, 1, 1)),
    "conv2d padding=1": lambda: F.conv2d(zeros(1, 1, 3, 0), ones(1, 1, 1, 1), padding=1),
    "conv unbatched": lambda: F.conv(zeros(1, 0), ones(1, 1, 1), padding=2),
    "conv_backward": lambda: F.conv_backward(zeros(1, 1, 2), zeros(1, 1, 0), ones(1, 1, 1),
                                             padding=1),
    "conv_weight_grad": lambda: F.conv_weight_grad(zeros(1, 1, 0), (1, 1, 1), zeros(1, 1, 2),
                                                   padding=1),
    "conv_transpose1d": lambda: F.conv_transpose1d(zeros(1, 1, 0), ones(1, 1, 3)),
    "conv_transpose_backward": lambda: F.conv_transpose_backward(
        zeros(1, 1, 2), zeros(1, 1, 0), ones(1, 1, 3)),
    "conv_output_shape": lambda: F.conv_output_shape((1, 1, 0), (1, 1, 1), padding=1),
}


@pytest.mark.parametrize("call", EMPTY_EXTENT_CALLS.values(), ids=EMPTY_EXTENT_CALLS)
def test_spatial_extent_zero_is_refused_naming_the_extent(call):
    with pytest.raises(ValueError, match=r"spatial extent of 0.*\(0,\)|spatial extent of 0"):
        call()


def test_pytorch_refuses_a_spatial_extent_of_zero_too():
    with pytest.raises(RuntimeError):
        TF.conv1d(torch.zeros(1, 1, 0), torch.ones(1, 1, 1), padding=1)
    with pytest.raises(RuntimeError):
        TF.conv_transpose1d(torch.zeros(1, 1, 0), torch.ones(1, 1, 3))


@pytest.mark.parametrize("transpose", [False, True])
def test_empty_batch_matches_torch_and_builds_nothing_spatial(transpose):
    """N = 0 gives the right (empty) shape and zero gradients, and allocates nothing that grows
    with the spatial size (a per-geometry table would be kernel taps x positions, 144 MB here)."""
    x, w = zeros(0, 1, 2000, 2000), ones(1, 1, 3, 3)
    tracemalloc.start()
    try:
        if transpose:
            y = F.conv_transpose2d(x, w, padding=1)
            grads = F.conv_transpose_backward(zeros(*y.shape), x, w, padding=1)
        else:
            y = F.conv2d(x, w, padding=1)
            grads = F.conv_backward(zeros(*y.shape), x, w, padding=1)
            assert F.conv_weight_grad(x, w.shape, zeros(*y.shape), padding=1).shape == w.shape
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    torch_op = TF.conv_transpose2d if transpose else TF.conv2d
    assert y.shape == tuple(torch_op(_t(x), _t(w), padding=1).shape)
    assert grads.grad_input.shape == x.shape
    np.testing.assert_array_equal(grads.grad_weight, np.zeros_like(w))
    np.testing.assert_array_equal(grads.grad_bias, np.zeros(1, F32))


# --------------------------------------------------------------------------------------------
# Non-finite values: zero padding is an explicit 0 with IEEE arithmetic (gathers), a scatter
# never forms what its padding crops
# --------------------------------------------------------------------------------------------

def test_spec_conv_multiplies_the_padded_zero():
    """spec.conv is np.pad followed by the correlation sum, NaN and Inf included."""
    x = np.array([[[1.0, 2.0, 3.0]]])
    for bad in (np.nan, np.inf, -np.inf):
        w = np.array([[[bad, 1.0, 0.5]]])
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1)))
        with np.errstate(invalid="ignore"):
            expected = np.array([[[np.dot(w[0, 0], padded[0, 0, i:i + 3]) for i in range(3)]]])
            actual = spec.conv(x, w, padding=1)
        assert np.isnan(actual[0, 0, 0])                  # bad weight times the padded zero
        assert_same_values(actual, expected)


def test_spec_conv_transpose_never_forms_the_cropped_positions():
    """A scatter: an Inf weight only reaches outputs it lands on, never a padding zero."""
    x = np.array([[[1.0, 2.0]]])
    w = np.array([[[np.inf, 1.0, 1.0]]])
    y = spec.conv_transpose(x, w, padding=1)              # cropped: output 0 of the full 4
    assert y.shape == (1, 1, 2)
    assert not np.isnan(y).any()
    assert np.isposinf(y[0, 0, 0])                        # x[1] * inf lands at full position 1
    assert y[0, 0, 1] == 3.0                              # x[0] * 1 + x[1] * 1: no Inf reaches it


def _nonfinite_cases():
    """(name, where, value): the location of one non-finite entry, padded or interior."""
    locations = ["weight-edge-tap", "weight-centre-tap", "input-edge", "input-interior",
                 "grad-edge", "grad-interior"]
    return [(where, value) for where in locations for value in (np.nan, np.inf, -np.inf)]


def _plant(array, index, value):
    array = array.copy()
    array[index] = value
    return array


@pytest.mark.parametrize("where, value", _nonfinite_cases(),
                         ids=[f"{w}-{v}" for w, v in _nonfinite_cases()])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank", [1, 2])
def test_nonfinite_conv_and_its_gradients_match_the_spec(where, value, dtype, rank):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 2) + (5,) * rank).astype(dtype)
    w = rng.standard_normal((3, 2) + (3,) * rank).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    g = rng.standard_normal((2, 3) + (5,) * rank).astype(dtype)   # padding 1 keeps the extent
    edge, centre = (0,) * rank, (1,) * rank
    if where == "weight-edge-tap":
        w = _plant(w, (1, 0) + edge, value)       # meets the padding at the first output
    elif where == "weight-centre-tap":
        w = _plant(w, (1, 0) + centre, value)     # never meets the padding
    elif where == "input-edge":
        x = _plant(x, (0, 1) + edge, value)
    elif where == "input-interior":
        x = _plant(x, (0, 1) + (2,) * rank, value)
    elif where == "grad-edge":
        g = _plant(g, (1, 2) + edge, value)       # its window reaches into the padding
    else:
        g = _plant(g, (1, 2) + (2,) * rank, value)
    with np.errstate(all="ignore"):
        assert_same_values(F.conv(x, w, b, padding=1), spec.conv(x, w, b, padding=1),
                           rtol=1e-4, atol=1e-4)
        for got, want in zip(F.conv_backward(g, x, w, padding=1),
                             spec.conv_backward(g, x, w, padding=1)):
            assert_same_values(got, want, rtol=1e-4, atol=1e-4)
        assert_same_values(F.conv_weight_grad(x, w.shape, g, padding=1),
                           spec.conv_backward(g, x, w, padding=1).grad_weight,
                           rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("where, value", _nonfinite_cases(),
                         ids=[f"{w}-{v}" for w, v in _nonfinite_cases()])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank", [1, 2])
def test_nonfinite_conv_transpose_and_its_gradients_match_the_spec(where, value, dtype, rank):
    rng = np.random.default_rng(21)
    kwargs = dict(stride=2, padding=1, output_padding=1)
    x = rng.standard_normal((2, 2) + (3,) * rank).astype(dtype)
    w = rng.standard_normal((2, 3) + (3,) * rank).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    out = spec.conv_transpose_out_spatial(3, 3, 2, 1, 1)
    g = rng.standard_normal((2, 3) + (out,) * rank).astype(dtype)
    edge, centre = (0,) * rank, (1,) * rank
    if where == "weight-edge-tap":
        w = _plant(w, (1, 0) + edge, value)       # lands on the cropped position -1
    elif where == "weight-centre-tap":
        w = _plant(w, (1, 0) + centre, value)
    elif where == "input-edge":
        x = _plant(x, (0, 1) + edge, value)
    elif where == "input-interior":
        x = _plant(x, (0, 1) + centre, value)
    elif where == "grad-edge":
        g = _plant(g, (1, 2) + edge, value)
    else:
        g = _plant(g, (1, 2) + (2,) * rank, value)
    with np.errstate(all="ignore"):
        assert_same_values(F.conv_transpose(x, w, b, **kwargs),
                           spec.conv_transpose(x, w, b, **kwargs), rtol=1e-4, atol=1e-4)
        for got, want in zip(F.conv_transpose_backward(g, x, w, **kwargs),
                             spec.conv_transpose_backward(g, x, w, **kwargs)):
            assert_same_values(got, want, rtol=1e-4, atol=1e-4)


def test_nan_weight_at_a_padded_tap_gives_nan_where_it_meets_the_padding_only():
    w = np.array([[[np.nan, 1.0, 1.0]]], F32)
    y = F.conv1d(ones(1, 1, 4), w, padding=1)
    np.testing.assert_array_equal(np.isnan(y[0, 0]), [True, True, True, True])
    y = F.conv1d(ones(1, 1, 4), w)                        # no padding: NaN everywhere too
    assert np.isnan(y).all()
    w = np.array([[[1.0, 1.0, np.inf]]], F32)
    y = F.conv1d(ones(1, 1, 4), w, padding=1)            # the last tap meets the high padding
    assert np.isnan(y[0, 0, -1]) and np.isposinf(y[0, 0, :-1]).all()


# --------------------------------------------------------------------------------------------
# cross_entropy and nll_loss with -inf, softmax and log_softmax at +-inf
# --------------------------------------------------------------------------------------------

INF = np.inf

CLASS_CASES = {
    "non-target -inf": (np.array([[0.0, -INF, 1.0], [2.0, 1.0, -INF]], F32), np.array([0, 1])),
    "target -inf": (np.array([[0.0, -INF, 1.0]], F32), np.array([1])),
    "all but target -inf": (np.array([[-INF, 3.0, -INF]], F32), np.array([1])),
    "ignored row with -inf": (np.array([[-INF, 0.0, 1.0], [0.5, 1.0, -INF]], F32),
                              np.array([-100, 0])),
    "spatial": (np.array([[[0.0, -INF], [-INF, 1.0], [1.0, 2.0]]], F32), np.array([[2, 1]])),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("case", CLASS_CASES, ids=list(CLASS_CASES))
def test_classification_losses_with_minus_inf_match_torch(case, reduction, label_smoothing,
                                                          weighted):
    scores, target = CLASS_CASES[case]
    classes = scores.shape[1]
    weight = np.linspace(0.5, 2.0, classes).astype(F32) if weighted else None
    tw = None if weight is None else _t(weight)
    with np.errstate(all="ignore"):
        got = F.cross_entropy(scores, target, weight, reduction=reduction,
                              label_smoothing=label_smoothing)
    want = TF.cross_entropy(_t(scores), _t(target), tw, reduction=reduction,
                            label_smoothing=label_smoothing).numpy()
    assert_same_values(got, want)
    if label_smoothing == 0.0:
        with np.errstate(all="ignore"):
            got = F.nll_loss(scores, target, weight, reduction=reduction)
        want = TF.nll_loss(_t(scores), _t(target), tw, reduction=reduction).numpy()
        assert_same_values(got, want)


def test_cross_entropy_with_minus_inf_has_torchs_gradient_eager_and_compiled():
    scores, target = CLASS_CASES["non-target -inf"]
    tz = _t(scores).requires_grad_()
    TF.cross_entropy(tz, _t(target)).backward()
    with np.errstate(all="ignore"):
        grad = graphm.grad(lambda z: F.cross_entropy(z, target))(graphm.tensor(scores))
    assert_same_values(np.asarray(grad), tz.grad.numpy())
    assert np.isfinite(np.asarray(grad)).all()


SOFTMAX_ROWS = [[0.0, INF], [INF, INF], [-INF, -INF], [0.0, -INF], [INF, -INF],
                [1.0, -INF, 2.0], [-INF, -INF, 0.0]]


@pytest.mark.parametrize("row", SOFTMAX_ROWS, ids=[str(r) for r in SOFTMAX_ROWS])
def test_softmax_and_log_softmax_at_infinity_match_torch(row):
    x = np.array([row, [0.0] * len(row)], F32)
    with np.errstate(all="ignore"):
        assert_same_values(F.softmax(x, dim=1), TF.softmax(_t(x), dim=1).numpy())
        assert_same_values(F.log_softmax(x, dim=1), TF.log_softmax(_t(x), dim=1).numpy())


# --------------------------------------------------------------------------------------------
# 0-d inputs stay 0-d
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softplus"])
@pytest.mark.parametrize("value", [-3.0, 0.0, 2.5])
def test_elementwise_activation_of_a_0d_input_is_0d(name, value):
    x = np.array(value, F32)
    want = getattr(TF, name)(_t(x)).numpy()
    got = getattr(F, name)(x)
    assert got.shape == () and want.shape == ()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    eager = getattr(F, name)(graphm.tensor(x))
    assert eager.shape == ()
    assert graphm.grad(lambda t: getattr(F, name)(t))(graphm.tensor(x)).shape == ()


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softplus"])
def test_elementwise_activation_keeps_other_ranks(name):
    for shape in [(1,), (3,), (2, 0), (2, 3)]:
        assert getattr(F, name)(ones(*shape)).shape == shape


def test_losses_with_reduction_none_keep_a_0d_target_0d():
    scores, target = np.array([0.5, -1.0, 2.0], F32), np.array(2)
    for name in ("cross_entropy", "nll_loss"):
        got = getattr(F, name)(scores, target, reduction="none")
        want = getattr(TF, name)(_t(scores), _t(target), reduction="none").numpy()
        assert got.shape == () == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert getattr(F, name)(graphm.tensor(scores), target, reduction="none").shape == ()
    x, t = np.array(1.5, F32), np.array(-0.5, F32)
    got = F.mse_loss(x, t, reduction="none")
    assert got.shape == () and got == TF.mse_loss(_t(x), _t(t), reduction="none").item()


# --------------------------------------------------------------------------------------------
# Huge requests fail fast, with a ValueError naming the argument
# --------------------------------------------------------------------------------------------

HUGE_CALLS = {
    "Conv2d(2**20, 2**20, 3)": (lambda: nn.Conv2d(2**20, 2**20, 3), "weight"),
    "Linear(3, 2**31)": (lambda: nn.Linear(3, 2**31), "out_features"),
    "ConvTranspose1d huge kernel": (lambda: nn.ConvTranspose1d(4, 4, 2**31 - 1), "weight"),
    "Conv1d kernel 2**70": (lambda: nn.Conv1d(1, 1, 2**70), "kernel_size"),
    "conv_transpose dilation=2**31-1": (
        lambda: F.conv_transpose(zeros(1, 1, 2), ones(1, 1, 4), dilation=2**31 - 1), "output"),
    "max_pool1d stride 2**70": (lambda: F.max_pool1d(zeros(1, 1, 4), 2, 2**70), "stride"),
    "max_pool1d kernel 2**70": (lambda: F.max_pool1d(zeros(1, 1, 4), 2**70), "kernel_size"),
    "avg_pool2d padding 2**70": (lambda: F.avg_pool2d(zeros(1, 1, 4, 4), 2, 1, 2**70),
                                 "padding"),
    "conv output past the bound": (
        lambda: F.conv2d(zeros(1, 1, 8, 8), ones(2**26, 1, 1, 1), padding=4), "output"),
    "conv_output_shape past the bound": (
        lambda: F.conv_output_shape((64, 1, 4000, 4000), (64, 1, 3, 3)), "output"),
    "conv_weight_grad weight_shape": (
        lambda: F.conv_weight_grad(zeros(1, 1, 4), (2**29, 1, 1), zeros(1, 2**29, 4)),
        "weight_shape|output"),
    "GraphM.param": (lambda: graphm.GraphM().param("w", (2**20, 2**20)), "'w'"),
    "linear output past the bound": (
        lambda: F.linear(np.broadcast_to(ones(1, 1), (2**20, 1)), ones(2**10, 1)), "output"),
    "mse_loss broadcast past the bound": (
        lambda: F.mse_loss(zeros(2**15, 1), zeros(1, 2**15)), "broadcast"),
}


@pytest.mark.parametrize("call, name", HUGE_CALLS.values(), ids=list(HUGE_CALLS))
def test_huge_requests_fail_fast_naming_the_argument(call, name):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=name):
        call()
    assert time.perf_counter() - start < 2.0


def test_the_bound_is_user_settable_and_restorable():
    default = graphm.get_max_elements()
    assert default == 2**28
    previous = graphm.set_max_elements(1000)
    try:
        assert previous == default
        with pytest.raises(ValueError, match="set_max_elements"):
            F.conv1d(zeros(1, 1, 40), ones(30, 1, 1))          # 1200 output elements
        with pytest.raises(ValueError, match="weight"):
            nn.Linear(50, 50)
        assert F.conv1d(zeros(1, 1, 30), ones(30, 1, 1)).shape == (1, 30, 30)
    finally:
        graphm.set_max_elements(default)
    assert nn.Linear(50, 50).weight.shape == (50, 50)
    for bad, exc in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="set_max_elements"):
            graphm.set_max_elements(bad)


def test_the_bound_is_read_from_the_environment():
    code = "import graphm; print(graphm.get_max_elements())"
    env = dict(os.environ, GRAPHM_MAX_ELEMENTS="12345", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "12345"


# --------------------------------------------------------------------------------------------
# Pooling: time follows the work, not the padding or the kernel
# --------------------------------------------------------------------------------------------

def test_huge_pool_window_on_a_tiny_input_is_fast_and_matches_torch():
    x = zeros(1, 1, 1, 1)
    start = time.perf_counter()
    got, indices = F.max_pool2d(x, 2001, 1, 1000, return_indices=True)
    avg = F.avg_pool2d(x + 1, 2001, 1, 1000)
    avg_excluding = F.avg_pool2d(x + 1, 2001, 1, 1000, count_include_pad=False)
    assert time.perf_counter() - start < 2.0
    want, want_indices = TF.max_pool2d(_t(x), 2001, 1, 1000, return_indices=True)
    np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    np.testing.assert_allclose(avg, TF.avg_pool2d(_t(x + 1), 2001, 1, 1000).numpy())
    np.testing.assert_allclose(avg_excluding, TF.avg_pool2d(
        _t(x + 1), 2001, 1, 1000, count_include_pad=False).numpy())


def test_pool_gradient_with_a_huge_window_is_fast_and_matches_torch():
    x = np.arange(6, dtype=F32).reshape(1, 1, 2, 3)
    start = time.perf_counter()
    grad_max = graphm.grad(lambda t: F.max_pool2d(t, 801, 1, 400).sum())(graphm.tensor(x))
    grad_avg = graphm.grad(lambda t: F.avg_pool2d(t, 801, 1, 400).sum())(graphm.tensor(x))
    assert time.perf_counter() - start < 5.0
    for pool, got in ((TF.max_pool2d, grad_max), (TF.avg_pool2d, grad_avg)):
        tx = _t(x).requires_grad_()
        pool(tx, 801, 1, 400).sum().backward()
        np.testing.assert_allclose(np.asarray(got), tx.grad.numpy(), rtol=1e-5)


POOL_CONFIGS = [c for c in itertools.product([1, 2, 5], [1, 2, 3, 5], [1, 2, 4], [0, 1, 2],
                                             [1, 2], [False, True]) if c[3] <= c[1] // 2]


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, ceil_mode", POOL_CONFIGS)
def test_pooling_visiting_only_reachable_offsets_matches_torch(size, kernel, stride, padding,
                                                               dilation, ceil_mode):
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    x = rng.standard_normal((2, 1, size, size + 1)).astype(F32)
    x[1, 0, 0, 0] = np.nan
    try:
        want, want_indices = TF.max_pool2d(_t(x), kernel, stride, padding, dilation, ceil_mode,
                                           return_indices=True)
    except RuntimeError:                 # PyTorch refuses it (an empty output): so does graphm
        with pytest.raises(ValueError):
            F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
        return
    got, indices = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode,
                                return_indices=True)
    assert_same_values(got, want.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    finite = np.nan_to_num(x)
    for include in (True, False):
        assert_same_values(
            F.avg_pool2d(finite, kernel, stride, padding, ceil_mode, include),
            TF.avg_pool2d(_t(finite), kernel, stride, padding, ceil_mode, include).numpy())


# --------------------------------------------------------------------------------------------
# Error messages name the argument
# --------------------------------------------------------------------------------------------

X4, W2 = zeros(1, 1, 4, 4), ones(1, 1, 2, 2)

NAMED_ERRORS = {
    "conv2d stride 2-d array": (lambda: F.conv2d(X4, W2, stride=np.ones((1, 2), int)),
                                TypeError, "stride"),
    "conv2d padding 2-d array": (lambda: F.conv2d(X4, W2, padding=np.ones((2, 1), int)),
                                 TypeError, "padding"),
    "conv2d dilation float array": (lambda: F.conv2d(X4, W2, dilation=np.ones(2)),
                                    TypeError, "dilation"),
    "conv_transpose2d stride 2-d array": (
        lambda: F.conv_transpose2d(X4, W2, stride=np.ones((1, 2), int)), TypeError, "stride"),
    "max_pool2d stride 2-d array": (lambda: F.max_pool2d(X4, 2, np.ones((1, 2), int)),
                                    TypeError, "stride"),
    "avg_pool2d padding 2-d array": (lambda: F.avg_pool2d(X4, 2, 2, np.zeros((2, 1), int)),
                                     TypeError, "padding"),
    "conv_output_shape None": (lambda: F.conv_output_shape((1, None, 4, 4), (1, 1, 2, 2)),
                               TypeError, "input_shape"),
    "conv_output_shape float": (lambda: F.conv_output_shape((1, 1, 4.0, 4), (1, 1, 2, 2)),
                                TypeError, "input_shape"),
    "conv_output_shape weight None": (lambda: F.conv_output_shape((1, 1, 4, 4), (1, 1, None, 2)),
                                      TypeError, "weight_shape"),
    "conv_output_shape huge": (lambda: F.conv_output_shape((1, 1, 2**40, 2**40), (1, 1, 2, 2)),
                               ValueError, "input_shape"),
    "conv_output_shape negative": (lambda: F.conv_output_shape((1, 1, -4, 4), (1, 1, 2, 2)),
                                   ValueError, "input_shape"),
    "conv_transpose_output_shape None": (
        lambda: F.conv_transpose_output_shape((1, 1, 4, None), (1, 1, 2, 2)),
        TypeError, "input_shape"),
    "GraphM.input None": (lambda: graphm.GraphM().input("x", (1, None)), TypeError, "'x'"),
    "GraphM.input float": (lambda: graphm.GraphM().input("x", (1, 2.0)), TypeError, "'x'"),
    "GraphM.input huge": (lambda: graphm.GraphM().input("x", (2**40, 2**40)), ValueError, "'x'"),
    "GraphM.input negative": (lambda: graphm.GraphM().input("x", (1, -2)), ValueError, "'x'"),
    "ConvTranspose2d kernel_size=None": (lambda: nn.ConvTranspose2d(3, 1, kernel_size=None),
                                         TypeError, "kernel_size"),
    "Conv2d stride=None": (lambda: nn.Conv2d(3, 1, 3, stride=None), TypeError, "stride"),
    "Conv1d padding=1.5": (lambda: nn.Conv1d(3, 1, 3, padding=1.5), TypeError, "padding"),
}


@pytest.mark.parametrize("call, exc, name", NAMED_ERRORS.values(), ids=list(NAMED_ERRORS))
def test_error_names_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_one_dimensional_integer_arrays_are_sequences():
    np.testing.assert_array_equal(F.conv2d(X4, W2, stride=np.array([2, 1])),
                                  F.conv2d(X4, W2, stride=(2, 1)))
    np.testing.assert_array_equal(F.max_pool2d(X4, np.array([2, 2]), np.array([1, 2])),
                                  F.max_pool2d(X4, (2, 2), (1, 2)))


def test_graph_input_shapes_still_accept_ints_and_numpy_ints():
    g = graphm.GraphM()
    assert g.input("a", 3).shape == (3,)
    assert g.input("b", (np.int64(2), 0)).shape == (2, 0)


# --------------------------------------------------------------------------------------------
# One rule for a 1-tuple on a multi-axis op, PyTorch's: it is broadcast to every axis
# --------------------------------------------------------------------------------------------

ONE_TUPLE_CALLS = [
    ("conv2d", dict(stride=(2,))), ("conv2d", dict(padding=(1,))),
    ("conv2d", dict(dilation=(2,))), ("conv2d", dict(stride=[2], padding=[1], dilation=[1])),
    ("conv3d", dict(stride=(2,), padding=(1,))),
    ("conv_transpose2d", dict(stride=(2,), padding=(1,), output_padding=(1,))),
    ("conv_transpose2d", dict(dilation=(2,))),
    ("max_pool2d", dict(kernel_size=(2,), stride=(1,), padding=(1,), dilation=(2,))),
    ("max_pool3d", dict(kernel_size=(2,), stride=(1,))),
    ("avg_pool2d", dict(kernel_size=(3,), stride=(2,), padding=(1,))),
]


@pytest.mark.parametrize("name, kwargs", ONE_TUPLE_CALLS,
                         ids=[f"{n}-{sorted(k)}" for n, k in ONE_TUPLE_CALLS])
def test_a_one_tuple_is_broadcast_as_in_pytorch(name, kwargs):
    rank = int(name[-2])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2) + (6,) * rank).astype(F32)
    if "pool" in name:
        args = (x,)
    else:
        w = rng.standard_normal((2, 2) + (2,) * rank).astype(F32)
        args = (x, w)
    got = getattr(F, name)(*args, **kwargs)
    want = getattr(TF, name)(*map(_t, args), **kwargs).numpy()
    assert_same_values(got, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# set_num_threads checks its range when the value is set
# --------------------------------------------------------------------------------------------

def test_set_num_threads_range_is_checked_where_it_is_set():
    before = graphm.get_num_threads()
    try:
        for bad in (2**31, 1025, 10**30, 0, -1):
            with pytest.raises(ValueError, match="set_num_threads"):
                graphm.set_num_threads(bad)
            assert graphm.get_num_threads() == before
        with pytest.raises(TypeError, match="set_num_threads"):
            graphm.set_num_threads(2.0)
        graphm.set_num_threads(1024)                      # the documented maximum
        assert graphm.get_num_threads() == 1024
        graphm.set_num_threads(np.int64(2))
        assert F.conv1d(ones(1, 1, 4), ones(1, 1, 1)).shape == (1, 1, 4)
    finally:
        graphm.set_num_threads(before)


def test_a_window_wholly_in_the_padding_has_torchs_index_and_sends_no_gradient():
    """Dilation 2 with padding 1 on an extent of 1: the window's taps are -1 and 1, both padding."""
    x = np.arange(4, dtype=F32).reshape(2, 1, 1, 2)
    got, indices = F.max_pool2d(x, 2, 1, 1, 2, return_indices=True)
    want, want_indices = TF.max_pool2d(_t(x), 2, 1, 1, 2, return_indices=True)
    assert_same_values(got, want.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    # a neighbour whose windows all read input: the gradient is PyTorch's
    grad = graphm.grad(lambda t: F.max_pool2d(t, (1, 2), 1, (0, 1), 2).sum())(graphm.tensor(x))
    tx = _t(x).requires_grad_()
    TF.max_pool2d(tx, (1, 2), 1, (0, 1), 2).sum().backward()
    np.testing.assert_array_equal(np.asarray(grad), tx.grad.numpy())
    from graphm.functional.pooling import max_pool_backward
    geometry = F.pooling.pool_geometry("max_pool2d", x.shape, 2, 2, 1, 1, 2)
    spread = max_pool_backward(np.ones(got.shape, F32), indices, x.shape, geometry)
    np.testing.assert_array_equal(spread, np.zeros_like(x))   # no window read any input


@pytest.mark.parametrize("pool", ["max_pool2d", "avg_pool2d"])
def test_empty_batch_pooling_builds_nothing_of_the_output_size(pool):
    x = zeros(0, 1, 2000, 2000)
    function = getattr(F, pool)
    tracemalloc.start()
    try:
        y = function(x, 3, 1, 1)
        grad = graphm.grad(lambda t: function(t, 3, 1, 1).sum())(graphm.tensor(x))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert y.shape == tuple(getattr(TF, pool)(_t(x), 3, 1, 1).shape)
    assert np.asarray(grad).shape == x.shape
    _, indices = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    assert indices.shape == y.shape and indices.dtype == np.int64


def test_layers_follow_the_same_one_tuple_rule():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 7, 7)).astype(F32)
    layer = nn.Conv2d(2, 3, 3, stride=(2,), padding=(1,), dilation=(1,))
    reference = torch.nn.Conv2d(2, 3, 3, stride=(2,), padding=(1,), dilation=(1,))
    with torch.no_grad():
        reference.weight.copy_(_t(layer.weight.numpy()))
        reference.bias.copy_(_t(layer.bias.numpy()))
        want = reference(_t(x)).numpy()
    assert layer.stride == (2, 2) and layer.padding == (1, 1)
    assert_same_values(layer(graphm.tensor(x)).numpy(), want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Cases the fuzz test (tests/test_fuzz.py) found, kept here so every run checks them
# --------------------------------------------------------------------------------------------

FUZZ_FOUND = {
    "ceil_mode=2": (lambda: F.max_pool2d(ones(1, 1, 4, 4), 2, ceil_mode=2), TypeError, "ceil_mode"),
    "count_include_pad=array": (lambda: F.avg_pool1d(ones(1, 1, 4), 2,
                                                     count_include_pad=np.array([1, 2])),
                                TypeError, "count_include_pad"),
    "return_indices=1": (lambda: F.max_pool1d(ones(1, 1, 4), 2, return_indices=1), TypeError,
                         "return_indices"),
    "divisor_override=2**63": (lambda: F.avg_pool2d(ones(1, 1, 2, 2), 1,
                                                    divisor_override=2 ** 63),
                               ValueError, "divisor_override"),
    "groups=array": (lambda: F.conv1d(ones(1, 1, 3), ones(1, 1, 1), groups=np.array([1, 2])),
                     TypeError, "groups"),
    "rank=[]": (lambda: F.conv_output_shape((1, 1, 3), (1, 1, 1), rank=[]), TypeError, "rank"),
    "label_smoothing=[]": (lambda: F.cross_entropy(ones(2, 3), np.zeros(2, np.int64),
                                                   label_smoothing=[]),
                           TypeError, "label_smoothing"),
    "ignore_index=2**63": (lambda: F.nll_loss(ones(2, 3), np.zeros(2, np.int64),
                                              ignore_index=2 ** 63), ValueError, "ignore_index"),
    "reduction=array": (lambda: F.mse_loss(ones(2), ones(2), reduction=np.array([1, 2])),
                        ValueError, "reduction"),
    "no class": (lambda: F.nll_loss(zeros(0), np.zeros((), np.int64)), ValueError, "class"),
    "softplus beta='same'": (lambda: F.softplus(ones(2), beta="same"), TypeError, "beta"),
    "relu inplace=array": (lambda: F.relu(ones(2), inplace=np.array([1, 2])), TypeError,
                           "inplace"),
    "linear input=None": (lambda: F.linear(None, ones(1, 1)), TypeError, "input"),
    "linear_backward grad_output=None": (lambda: F.linear_backward(None, ones(1), ones(1, 1)),
                                         TypeError, "grad_output"),
    "Linear dtype=0": (lambda: nn.Linear(1, 1, dtype=0), TypeError, "dtype"),
    "Conv2d padding_mode=array": (lambda: nn.Conv2d(1, 1, 1, padding_mode=np.array([1, 2])),
                                  ValueError, "padding_mode"),
    "Conv2d bias=array": (lambda: nn.Conv2d(1, 1, 1, bias=np.array([1, 2])), TypeError, "bias"),
    "Flatten start_dim=inf": (lambda: nn.Flatten(start_dim=float("inf")), TypeError,
                              "start_dim"),
    "MaxPool2d ceil_mode=array": (lambda: nn.MaxPool2d(2, ceil_mode=np.array([1, 2])),
                                  TypeError, "ceil_mode"),
}


@pytest.mark.parametrize("case", sorted(FUZZ_FOUND))
def test_cases_the_fuzz_test_found_raise_naming_the_argument(case):
    call, kind, name = FUZZ_FOUND[case]
    with pytest.raises(kind, match=name):
        call()


def test_an_index_out_of_range_is_a_value_error_and_an_index_error():
    """PyTorch raises IndexError for a dim or a label out of range; graphm's contract is a
    ValueError for every bad argument: the error is both, as NumPy's AxisError."""
    for call in (lambda: F.softmax(ones(2, 3), dim=2),
                 lambda: F.nll_loss(ones(2, 3), np.array([0, 3]))):
        with pytest.raises(ValueError) as caught:
            call()
        assert isinstance(caught.value, IndexError)
    with pytest.raises(IndexError):
        TF.softmax(torch.ones(2, 3), dim=2)


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_of_empty_and_of_nonfinite_0d_inputs_match_torch(fn):
    torch_fn = getattr(TF, fn.__name__)
    for x, dim in ((zeros(0, 3), 0), (zeros(2, 0), 1), (zeros(0), 0)):
        assert fn(x, dim=dim).shape == tuple(torch_fn(_t(x), dim=dim).shape)
    for value in (np.nan, np.inf, -np.inf, 1.5):
        x = np.array(value, F32)
        got = fn(x, dim=0)
        assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == F32
        assert_same_values(got, torch_fn(_t(x), dim=0).numpy())
