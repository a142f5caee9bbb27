"""conv_weight_grad (the kernel K_w as a function of its own) and (low, high) padding pairs.

Oracles: torch.nn.grad.conv{1,2,3}d_weight, conv_backward's weight gradient, and for padding
pairs an explicit np.pad (conv) or an explicit crop (conv_transpose).
"""
import numpy as np
import pytest
import torch

import graphm.functional as F
from conftest import RTOL, assert_close, make_rng, random_array

TORCH_WEIGHT_GRAD = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight,
                     3: torch.nn.grad.conv3d_weight}

CASES = [  # (d, N, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
    (1, 2, 3, 4, (9,), (3,), 2, 1, 1, 1),
    (2, 2, 4, 6, (7, 8), (3, 2), (2, 1), (1, 0), (1, 2), 2),
    (2, 1, 2, 2, (5, 5), (5, 5), 1, 2, 1, 1),
    (3, 1, 2, 4, (4, 5, 4), (2, 3, 2), 1, 1, 1, 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_conv_weight_grad_matches_torch_and_conv_backward(case, dtype):
    d, n, c_in, c_out, spatial, kernel, stride, padding, dilation, groups = case
    rng = make_rng(d * 100 + c_in)
    x = random_array(rng, (n, c_in) + spatial, dtype)
    w_shape = (c_out, c_in // groups) + kernel
    w = random_array(rng, w_shape, dtype)
    y = F.conv(x, w, None, stride, padding, dilation, groups)
    g = random_array(rng, y.shape, dtype)
    got = F.conv_weight_grad(x, w_shape, g, stride, padding, dilation, groups)
    expected = TORCH_WEIGHT_GRAD[d](torch.from_numpy(x), w_shape, torch.from_numpy(g), stride,
                                    padding, dilation, groups).numpy()
    assert got.shape == w_shape and got.dtype == dtype
    assert_close(got, expected, np.dtype(dtype))
    backward = F.conv_backward(g, x, w, stride, padding, dilation, groups).grad_weight
    np.testing.assert_array_equal(got, backward)          # the same kernel, bit for bit


def test_conv_weight_grad_unbatched_and_cropped_grad_output():
    rng = make_rng(7)
    x = random_array(rng, (3, 11), np.float64)                        # unbatched (C, L)
    w_shape = (2, 3, 3)
    full = F.conv(x, np.ones(w_shape), None, stride=2, padding=1).shape  # (2, 6)
    g_full = random_array(rng, full, np.float64)
    g_cropped = g_full[:, :4]                   # the last two outputs cropped away
    got = F.conv_weight_grad(x, w_shape, g_cropped, stride=2, padding=1)
    # cropping the output is the same as a zero cotangent on the cropped outputs
    g_zeroed = g_full.copy()
    g_zeroed[:, 4:] = 0
    expected = F.conv_weight_grad(x, w_shape, g_zeroed, stride=2, padding=1)
    np.testing.assert_allclose(got, expected, rtol=RTOL[np.dtype(np.float64)])


@pytest.mark.parametrize("bad_g_shape", [(2, 7), (2, 0), (3, 6), (1, 2, 6)])
def test_conv_weight_grad_rejects_grad_output_that_does_not_fit(bad_g_shape):
    x = np.zeros((3, 11))
    with pytest.raises(ValueError, match="grad_output"):
        F.conv_weight_grad(x, (2, 3, 3), np.zeros(bad_g_shape), stride=2, padding=1)


@pytest.mark.parametrize("weight_shape, error", [
    ((2, 3, 0), ValueError), ((2, 3, 2.0), ValueError), (np.array([2, 3, 3]), TypeError),
    (None, TypeError), ((2, 3, True), ValueError)])
def test_conv_weight_grad_rejects_bad_weight_shape(weight_shape, error):
    with pytest.raises(error, match="weight_shape"):
        F.conv_weight_grad(np.zeros((3, 11)), weight_shape, np.zeros((2, 9)))


# ------------------------------------------------------------------------------------------------
# (low, high) padding pairs
# ------------------------------------------------------------------------------------------------

PAIRS = [((0, 1),), ((2, 0),), ((1, 2), (0, 3)), ((1, 1), (2, 0), (0, 1))]


@pytest.mark.parametrize("pairs", PAIRS)
def test_conv_padding_pairs_are_an_explicit_zero_pad(pairs):
    d = len(pairs)
    rng = make_rng(d)
    x = random_array(rng, (2, 3) + (5,) * d, np.float64)
    w = random_array(rng, (4, 3) + (2,) * d, np.float64)
    b = random_array(rng, (4,), np.float64)
    padded = np.pad(x, ((0, 0), (0, 0)) + tuple(pairs))
    np.testing.assert_allclose(F.conv(x, w, b, padding=pairs), F.conv(padded, w, b),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pairs", PAIRS)
def test_conv_transpose_padding_pairs_crop_each_end(pairs):
    d = len(pairs)
    rng = make_rng(10 + d)
    x = random_array(rng, (2, 3) + (4,) * d, np.float64)
    w = random_array(rng, (3, 2) + (3,) * d, np.float64)
    full = F.conv_transpose(x, w, None, stride=2)
    crop = (slice(None), slice(None)) + tuple(slice(lo, n - hi)
                                              for (lo, hi), n in zip(pairs, full.shape[2:]))
    np.testing.assert_allclose(F.conv_transpose(x, w, None, stride=2, padding=pairs),
                               full[crop], rtol=1e-12, atol=1e-12)


def test_symmetric_pairs_equal_int_padding():
    rng = make_rng(3)
    x = random_array(rng, (1, 2, 6, 6), np.float32)
    w = random_array(rng, (2, 2, 3, 3), np.float32)
    np.testing.assert_array_equal(F.conv2d(x, w, padding=((1, 1), (2, 2))),
                                  F.conv2d(x, w, padding=(1, 2)))
    np.testing.assert_array_equal(F.conv_transpose2d(x, w, padding=((1, 1), (2, 2))),
                                  F.conv_transpose2d(x, w, padding=(1, 2)))


@pytest.mark.parametrize("padding, message", [
    (((1, 1),), "pairs"), (((1, -1), (0, 0)), ">= 0"), (((1, 1), (0, 0), (0, 0)), "pairs")])
def test_bad_padding_pairs(padding, message):
    with pytest.raises(ValueError, match=message):
        F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), padding=padding)
