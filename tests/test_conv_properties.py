"""Mathematical properties of graphm's convolution kernels, in any rank (no PyTorch needed).

* The kernels agree with ``graphm.spec``, the slow reference written from the definition,
  for d = 1, 2, 3 and 4.
* Transposed convolution is the adjoint of convolution, <conv(x, w), y> =
  <x, conv_transpose(y, w)>, and so the three kernels serve both ops as the adjoint table on
  the concepts page says.
* Central finite differences in float64 confirm each of the three gradients of both ops.
* The dot-product test <J t, g> = <t, J^T g> ties the backward functions to the forward: the
  op is bilinear, so J t is two forward calls.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FLOAT_DTYPES, assert_close, conv_cases, examples, make_rng, random_array

import graphm.functional as F  # noqa: E402  (a broken build must fail, not skip)
from graphm import spec  # noqa: E402

DIMS = (1, 2, 3, 4)
# Small sizes per rank; rank 4 runs the slow spec loops, so it is tiny.
SIZES = {
    1: dict(max_in=7),
    2: dict(max_in=4),
    3: dict(max_in=3, extra=1, max_kernel=2, max_batch=2),
    4: dict(max_in=2, extra=1, max_kernel=2, max_stride=2, max_groups=2, max_per_group=2,
            max_batch=2, max_pad=1),
}


def forward(case, x, w, b=None):
    """graphm's any-rank forward of the case's op."""
    op = F.conv_transpose if case.transpose else F.conv
    return op(x, w, b, **case.kwargs())


def backward(case, g, x, w):
    op = F.conv_transpose_backward if case.transpose else F.conv_backward
    return op(g, x, w, **case.kwargs())


# --------------------------------------------------------------------------------------------
# Kernels vs the spec reference
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", DIMS)
@settings(max_examples=examples(40))
@given(data=st.data())
def test_kernels_match_spec(d, transpose, dtype, data):
    case = data.draw(conv_cases(d, transpose=transpose, **SIZES[d]), label="case")
    x, w, b, g = case.arrays(dtype)
    kw = case.kwargs()
    reference = spec.conv_transpose if transpose else spec.conv
    reference_backward = spec.conv_transpose_backward if transpose else spec.conv_backward

    out = forward(case, x, w, b)
    expected = reference(x, w, b, **kw)
    assert out.shape == case.output_shape
    assert_close(out, np.asarray(expected, dtype), dtype)

    grads = backward(case, g, x, w)
    expected_grads = tuple(reference_backward(g, x, w, **kw))
    assert len(expected_grads) == 3
    for got, want in zip(grads, expected_grads):
        assert_close(got, np.asarray(want, dtype), dtype)
    assert grads.grad_input.shape == x.shape and grads.grad_weight.shape == w.shape
    assert grads.grad_bias.shape == (case.out_channels,)


# --------------------------------------------------------------------------------------------
# The adjoint identity and the adjoint table
# --------------------------------------------------------------------------------------------

def transpose_output_padding(case):
    """The output_padding that makes conv_transpose map conv's output shape back onto its
    input shape: the remainder the stride left over on each axis (always < stride)."""
    return tuple((n + 2 * p - dil * (k - 1) - 1) % s for n, k, s, p, dil in zip(
        case.in_spatial, case.kernel, case.strides, case.pads, case.dilations))


def conv_transpose_kwargs(case):
    """conv_transpose arguments that invert the shapes of the conv ``case``."""
    return dict(stride=case.strides, padding=case.pads, dilation=case.dilations,
                groups=case.groups, output_padding=transpose_output_padding(case))


ADJOINT_SIZES = {
    1: dict(max_in=9), 2: dict(max_in=6), 3: dict(max_in=4),
    4: dict(max_in=3, extra=1, max_kernel=2, max_groups=2, max_per_group=2, max_batch=2),
}


@pytest.mark.parametrize("d", DIMS)
@settings(max_examples=examples(80))
@given(data=st.data())
def test_adjoint_identity(d, data):
    """<conv(x, w), y> = <x, conv_transpose(y, w)> in float64, the same weight array."""
    case = data.draw(conv_cases(d, allow_strings=False, **ADJOINT_SIZES[d]), label="case")
    x, w, _, y = case.arrays(np.float64)
    conv_xw = F.conv(x, w, **case.kwargs())
    transposed_yw = F.conv_transpose(y, w, **conv_transpose_kwargs(case))
    assert conv_xw.shape == y.shape
    assert transposed_yw.shape == x.shape
    lhs, rhs = np.vdot(conv_xw, y), np.vdot(x, transposed_yw)
    scale = np.vdot(np.abs(conv_xw), np.abs(y)) + np.vdot(np.abs(x), np.abs(transposed_yw))
    assert abs(lhs - rhs) <= 1e-12 * scale + 1e-300, (lhs, rhs)


@pytest.mark.parametrize("d", (1, 2, 3))
@settings(max_examples=examples(50))
@given(data=st.data())
def test_adjoint_table(d, data):
    """Three kernels serve two ops (the adjoint table): each gradient of one op is the other op, or
    the weight gradient of conv with its arguments swapped."""
    case = data.draw(conv_cases(d, allow_strings=False, **ADJOINT_SIZES[d]), label="case")
    x, w, _, y = case.arrays(np.float64)
    conv_kw, transpose_kw = case.kwargs(), conv_transpose_kwargs(case)
    conv_grads = F.conv_backward(y, x, w, **conv_kw)
    # conv's input gradient is the transposed conv of grad_output
    assert_close(conv_grads.grad_input, F.conv_transpose(y, w, **transpose_kw), np.float64)
    # conv_transpose(y, w) has x's shape, so x can be its grad_output
    transpose_grads = F.conv_transpose_backward(x, y, w, **transpose_kw)
    # ... whose input gradient is conv of grad_output
    assert_close(transpose_grads.grad_input, F.conv(x, w, **conv_kw), np.float64)
    # ... whose weight gradient is conv's weight gradient with input and grad_output swapped
    assert_close(transpose_grads.grad_weight, conv_grads.grad_weight, np.float64)
    # both bias gradients sum grad_output over batch and space
    channel_axis = 0 if case.batch is None else 1
    sum_axes = tuple(a for a in range(y.ndim) if a != channel_axis)
    assert_close(conv_grads.grad_bias, y.sum(axis=sum_axes), np.float64)
    assert_close(transpose_grads.grad_bias, x.sum(axis=sum_axes), np.float64)


# --------------------------------------------------------------------------------------------
# Finite differences (float64)
# --------------------------------------------------------------------------------------------

FD_SIZES = {
    1: dict(max_in=8), 2: dict(max_in=5), 3: dict(max_in=3, extra=1),
    4: dict(max_in=2, extra=1, max_kernel=2, max_groups=2, max_per_group=2, max_batch=2),
}


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", DIMS)
@settings(max_examples=examples(50))
@given(data=st.data())
def test_finite_differences(d, transpose, data):
    """For L(x, w, b) = <op(x, w, b), g>, the central difference of L along a random
    direction in one argument equals <gradient of that argument, direction>."""
    case = data.draw(conv_cases(d, transpose=transpose, **FD_SIZES[d]), label="case")
    x, w, b, g = case.arrays(np.float64)
    if b is None:
        b = np.zeros(case.out_channels)
    grads = backward(case, g, x, w)
    rng = make_rng(case.seed + 1)
    directions = [random_array(rng, a.shape, np.float64) for a in (x, w, b)]

    def loss(args):
        return np.vdot(forward(case, *args), g)

    scale = np.vdot(np.abs(forward(case, x, w, b)), np.abs(g))
    h = 1e-3
    for i, (name, gradient) in enumerate(zip(grads._fields, grads)):
        plus, minus = [x, w, b], [x, w, b]
        plus[i] = plus[i] + h * directions[i]
        minus[i] = minus[i] - h * directions[i]
        numeric = (loss(plus) - loss(minus)) / (2 * h)
        analytic = np.vdot(gradient, directions[i])
        assert abs(numeric - analytic) <= 1e-7 * (scale + abs(analytic)) + 1e-12, (
            name, numeric, analytic)


# --------------------------------------------------------------------------------------------
# Bilinearity and the dot-product test
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", (1, 2, 3))
@settings(max_examples=examples(50))
@given(data=st.data())
def test_dot_product_and_bilinearity(d, transpose, data):
    """op is bilinear in (x, w) plus b, so along a tangent t = (dx, dw, db)

        op(x + s dx, w + s dw, b + s db) = op(x, w, b) + s J t + s^2 op(dx, dw, 0),
        J t = op(dx, w, 0) + op(x, dw, 0) + db,

    and the backward functions are J^T: <J t, g> = <dx, grad_input> + <dw, grad_weight>
    + <db, grad_bias>.
    """
    case = data.draw(conv_cases(d, transpose=transpose, **FD_SIZES[d]), label="case")
    x, w, b, g = case.arrays(np.float64)
    if b is None:
        b = np.zeros(case.out_channels)
    rng = make_rng(case.seed + 2)
    dx, dw, db = (random_array(rng, a.shape, np.float64) for a in (x, w, b))

    tangent = forward(case, dx, w) + forward(case, x, dw) + forward(case, np.zeros_like(x), w, db)
    s = 0.75
    moved = forward(case, x + s * dx, w + s * dw, b + s * db)
    predicted = forward(case, x, w, b) + s * tangent + s * s * forward(case, dx, dw)
    assert_close(moved, predicted, np.float64)

    # bias: op(x, w, b) - op(x, w) is b broadcast over batch and space
    channel_axis = 0 if case.batch is None else 1
    shape = [1] * g.ndim
    shape[channel_axis] = -1
    assert_close(forward(case, x, w, b) - forward(case, x, w), np.broadcast_to(
        b.reshape(shape), g.shape), np.float64)

    grads = backward(case, g, x, w)
    lhs = np.vdot(tangent, g)
    rhs = (np.vdot(dx, grads.grad_input) + np.vdot(dw, grads.grad_weight)
           + np.vdot(db, grads.grad_bias))
    scale = np.vdot(np.abs(tangent), np.abs(g)) + abs(rhs)
    assert abs(lhs - rhs) <= 1e-12 * scale + 1e-300, (lhs, rhs)
