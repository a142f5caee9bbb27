"""The direct path of the convolution kernels: depthwise convolution and its transpose.

When a group has one input channel (``groups == C_in``: depthwise convolution, any channel
multiplier ``C_out / groups``) or one output channel (a transposed convolution with ``groups ==
C_in``, whose adjoint convolution has one output channel per group), the three kernels compute
the sums directly instead of as a one-row GEMM. These tests check that path, forward and all
three gradients, against two independent oracles: PyTorch (``torch.nn.functional`` and
``torch.autograd``) and the plain-NumPy reference ``graphm.spec``; then empty batches, strided
inputs, non-finite values (a transposed convolution forms only the terms that exist) and
bit-identical results for any thread count.
"""
import numpy as np
import pytest

import graphm
from graphm import spec
from conftest import (FLOAT_DTYPES, assert_close, make_rng, nonfinite_pattern, random_array,
                      torch_forward, torch_gradients, with_layout)

pytest.importorskip("torch")
import graphm.functional as F  # noqa: E402  (a broken build must fail, not skip)

# (rank, spatial size, kernel, stride, padding, dilation, output_padding): output_padding is
# used by the transposed cases only, 'same' by the convolution only.
GEOMETRIES = [
    (1, 17, 3, 1, 1, 1, 0),
    (1, 19, 5, 2, 2, 1, 1),
    (1, 16, 3, 1, 2, 2, 0),
    (1, 40, 4, 3, 0, 1, 2),      # rows longer than one register chunk, with a remainder
    (1, 9, 3, 1, "same", 2, 0),
    (2, 9, 3, 1, 1, 1, 0),
    (2, (8, 11), (3, 2), (2, 1), (1, 0), (1, 2), (1, 0)),
    (2, 7, 2, 1, "same", 1, 0),
    (2, 6, 1, 1, 0, 1, 0),
    (3, 5, 3, 1, 1, 1, 0),
    (3, (4, 5, 6), (2, 3, 2), (1, 2, 1), (0, 1, 1), (2, 1, 1), (0, 1, 0)),
]
GEOMETRY_IDS = [f"{g[0]}d-k{g[2]}-s{g[3]}-p{g[4]}-d{g[5]}".replace(" ", "") for g in GEOMETRIES]


def per_axis(value, d):
    return tuple(value) if isinstance(value, tuple) else (value,) * d


def make_problem(geometry, transpose, multiplier, batch, dtype, seed=0):
    """Arrays and keyword arguments of one depthwise convolution (or transposed one)."""
    d, size, kernel, stride, padding, dilation, output_padding = geometry
    if transpose and padding == "same":
        padding = 0
    channels = 3
    rng = make_rng(seed)
    spatial = per_axis(size, d)
    x_shape = ((batch,) if batch is not None else ()) + (channels,) + spatial
    if transpose:
        w_shape = (channels, multiplier) + per_axis(kernel, d)
        kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                      groups=channels, dilation=dilation)
    else:
        w_shape = (channels * multiplier, 1) + per_axis(kernel, d)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=channels)
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    b = random_array(rng, (channels * multiplier,), dtype)
    out_shape = torch_forward(x, w, b, transpose=transpose, **kwargs).shape
    g = random_array(rng, out_shape, dtype)
    return x, w, b, g, kwargs


def graphm_all(x, w, b, g, kwargs, transpose):
    forward = F.conv_transpose if transpose else F.conv
    backward = F.conv_transpose_backward if transpose else F.conv_backward
    return [forward(x, w, b, **kwargs), *backward(g, x, w, **kwargs)]


def spec_all(x, w, b, g, kwargs, transpose):
    forward = spec.conv_transpose if transpose else spec.conv
    backward = spec.conv_transpose_backward if transpose else spec.conv_backward
    return [forward(x, w, b, **kwargs), *backward(g, x, w, **kwargs)]


def torch_all(x, w, b, g, kwargs, transpose):
    return [torch_forward(x, w, b, transpose=transpose, **kwargs),
            *torch_gradients(g, x, w, transpose=transpose, **kwargs)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("batch", [2, None], ids=["batched", "unbatched"])
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
def test_depthwise_matches_torch_and_spec(geometry, transpose, multiplier, batch, dtype):
    x, w, b, g, kwargs = make_problem(geometry, transpose, multiplier, batch, dtype)
    got = graphm_all(x, w, b, g, kwargs, transpose)
    names = ("forward", "grad_input", "grad_weight", "grad_bias")
    for name, ours, theirs in zip(names, got, torch_all(x, w, b, g, kwargs, transpose)):
        assert ours.shape == theirs.shape, name
        assert_close(ours, theirs, dtype)
    for name, ours, theirs in zip(names, got, spec_all(x, w, b, g, kwargs, transpose)):
        assert_close(ours, np.asarray(theirs, dtype), dtype)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_depthwise_empty_batch(transpose):
    x, w, b, g, kwargs = make_problem(GEOMETRIES[5], transpose, 2, 2, np.float32)
    x, g = x[:0], g[:0]
    got = graphm_all(x, w, b, g, kwargs, transpose)
    assert got[0].shape == g.shape and got[1].shape == x.shape
    assert not got[2].any() and not got[3].any()
    for ours, theirs in zip(got, torch_all(x, w, b, g, kwargs, transpose)):
        assert_close(ours, theirs, np.float32)


@pytest.mark.parametrize("layout", ["F", "strided", "reversed"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_depthwise_non_contiguous(transpose, layout):
    x, w, b, g, kwargs = make_problem(GEOMETRIES[6], transpose, 2, 3, np.float64)
    got = graphm_all(with_layout(x, layout), with_layout(w, layout), b, with_layout(g, layout),
                     kwargs, transpose)
    for ours, theirs in zip(got, torch_all(x, w, b, g, kwargs, transpose)):
        assert_close(ours, theirs, np.float64)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_depthwise_nonfinite_like_torch(transpose):
    """A NaN and an Inf in the weight, padding 1: a convolution multiplies the padded zeros (NaN
    everywhere that weight entry reaches), a transposed one forms only the existing terms, so
    its ends stay finite, as in PyTorch."""
    x, w, b, g, kwargs = make_problem((2, 6, 3, 1, 1, 1, 0), transpose, 1, 2, np.float64)
    w = w.copy()
    w[0, 0, 0, 0] = np.nan
    w[1, 0, 2, 1] = np.inf
    got = graphm_all(x, w, b, g, kwargs, transpose)
    for ours, theirs in zip(got[:2], torch_all(x, w, b, g, kwargs, transpose)[:2]):
        for mine, want in zip(nonfinite_pattern(ours), nonfinite_pattern(theirs)):
            assert np.array_equal(mine, want)
        finite = np.isfinite(theirs)
        assert finite.any() and (~finite).any()
        assert_close(np.where(finite, ours, 0), np.where(finite, theirs, 0), np.float64)


@pytest.fixture
def restore_threads():
    old = graphm.get_num_threads()
    yield
    graphm.set_num_threads(old)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("geometry", [GEOMETRIES[3], (2, 33, 3, 1, 1, 1, 0), GEOMETRIES[10]],
                         ids=["1d", "2d", "3d"])
def test_depthwise_identical_for_every_thread_count(geometry, transpose, dtype,
                                                    restore_threads):
    # 9 samples: three blocks of samples for the weight gradient's fixed-order sum
    x, w, b, g, kwargs = make_problem(geometry, transpose, 2, 9, dtype, seed=1)
    results = []
    for threads in (1, 2, 3):
        graphm.set_num_threads(threads)
        results.append(graphm_all(x, w, b, g, kwargs, transpose))
    for other in results[1:]:
        for ours, first in zip(other, results[0]):
            assert np.array_equal(ours, first)
