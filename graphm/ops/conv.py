r"""Convolution and transposed convolution, any rank: the ops graphm is built around.

**Why the derivatives of a convolution are convolutions.** Fix the weight and a convolution is a
*linear* map of its input: ``y = C_w x`` for a large, sparse, structured matrix ``C_w``. Every
output position is a weighted sum over one window of the input, and in the matrix each row holds
the kernel's weights at that window's columns. The VJP of a linear map is multiplication by its
transpose, ``x̄ = C_wᵀ ȳ``: column ``j`` of ``C_w`` lists every output that read input ``j`` and
with which weight, so the transpose *spreads* each output gradient back over the window it came
from, with the same weights. Spreading with a kernel is exactly what a transposed convolution
does, with the convolution's own stride, padding, dilation and groups::

    x̄ = conv_transpose(ȳ, w)          (graphm's kernel K_in)

A stride ``s`` in the forward pass skips inputs; in the transpose it becomes ``s − 1`` zeros
inserted between gradient entries (an "input dilation"), and padding ``p`` on the way in becomes
cropping on the way back. That is all ``conv_transpose``'s parameters mean. The identity is
also why a transposed convolution needs no kernel of its own: it *is* the adjoint,
``⟨conv(x, w), y⟩ = ⟨x, conv_transpose(y, w)⟩``, so its forward pass runs K_in and its VJP runs
the convolution forward kernel K_fwd.

Fix the input instead and the convolution is linear in the weight: ``y = X w`` where each row of
``X`` is one input window, unrolled ("im2col"). The VJP is ``w̄ = Xᵀ ȳ``: correlate each input
window with the gradient at its output position and sum over the batch and the positions,
graphm's kernel K_w. For the bias, added at every position, the adjoint of that broadcast is a
sum of ȳ over the batch and all positions.

The JVP needs no new kernel either. A convolution is *bilinear* in (input, weight), like a
product, so the product rule holds (TorchLean's
``d conv(k, b, x) = conv(k, 0, dx) + conv(dk, db, x)``)::

    d conv(x, w, b)           = conv(ẋ, w)           + conv(x, ẇ)           + ḃ
    d conv_transpose(x, w, b) = conv_transpose(ẋ, w) + conv_transpose(x, ẇ) + ḃ

The reverse-mode table (the concepts page)::

    op               forward           x̄             w̄            b̄
    conv             K_fwd(x, w) + b   K_in(ȳ, w)    K_w(x, ȳ)    sum of ȳ
    conv_transpose   K_in(x, w) + b    K_fwd(ȳ, w)   K_w(ȳ, x)    sum of ȳ

**The table closes under differentiation.** The weight gradient is an op of its own here,
``conv_weight_grad`` (K_w), and it is *bilinear* in (input, grad_output): for a fixed input it is
linear in g, for a fixed g linear in x. Pair it with a weight-shaped cotangent W̄ and read the
one-line identity ``⟨K_w(x, g), W̄⟩ = ⟨g, conv(x, W̄)⟩ = ⟨x, conv_transpose(g, W̄)⟩`` both ways::

    op                 forward     VJP wrt x                 VJP wrt g         JVP
    conv_weight_grad   K_w(x, g)   conv_transpose(g, W̄)      conv(x, W̄)        K_w(ẋ, g) + K_w(x, ġ)

So the derivative of each of the three kernels is again one of the three, and so is the derivative
of that: a Hessian-vector product of a convolutional network, or a third derivative, runs on
K_fwd, K_in and K_w and needs no fourth kernel. Every VJP below is written with the public ops
(``conv``, ``conv_transpose``, ``conv_weight_grad``, a sum), so run on Tensors it is recorded on
the tape like the forward pass and can be differentiated again; run on plain arrays (an ordinary
first-order backward pass) it calls the same three kernels in one fused call.

Two details of geometry make the transposes exact. A strided convolution floors: the last
``r = (n + p_lo + p_hi − d(k − 1) − 1) mod s`` input rows are never read, so the transposed
convolution that gives x̄ must restore them, by cropping ``r`` fewer rows at the high end or, when
the padding there is smaller than ``r``, with ``output_padding``. And ``'same'`` padding of an even
kernel is asymmetric, so the rules pass padding as one (low, high) pair per axis.

The three kernels live in ``graphm._kernels``; ``graphm.functional`` wraps them as ``conv``,
``conv_transpose``, ``conv_weight_grad``, ``conv_backward`` and ``conv_transpose_backward``, and
this module only decides which to call.
"""
from __future__ import annotations

import math

import numpy as np

from graphm import functional as F
from graphm.functional._checks import conv_padding, per_axis
from graphm.ops.base import Op, is_traced, register
from graphm.ops.interval import affine_interval, exact_value

__all__ = ["conv", "conv_transpose", "conv_weight_grad"]

# attribute ``rank``: None for the any-rank ``conv``/``conv_transpose``, else 1, 2 or 3, so that
# conv2d given a 3-d weight is an error rather than a conv1d.
_CONV = {None: F.conv, 1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {None: F.conv_transpose, 1: F.conv_transpose1d, 2: F.conv_transpose2d,
                   3: F.conv_transpose3d}


class Conv(Op):
    r"""N-d convolution (cross-correlation) with bias, PyTorch's ``conv{1,2,3}d``.

    Shapes: x (N, C_in, *sp) or (C_in, *sp), w (C_out, C_in/groups, *k), b (C_out,).

    .. math::
        y = K_{fwd}(x, w) + b, \qquad
        \bar x = K_{in}(\bar y, w), \quad \bar w = K_w(x, \bar y), \quad
        \bar b = \textstyle\sum_{n, \mathbf i} \bar y, \qquad
        \dot y = \mathrm{conv}(\dot x, w) + \mathrm{conv}(x, \dot w) + \dot b
    """
    name = "conv"
    higher_order = True
    inputs = ("input", "weight", "bias")
    optional = ("bias",)

    def shape(self, x, weight, bias, stride=1, padding=0, dilation=1, groups=1, rank=None):
        # graphm.functional's own checks, so a bad convolution reads the same at build time
        return F.conv_output_shape(x, weight, bias, stride, padding, dilation, groups, rank=rank)

    def forward(self, x, weight, bias, stride=1, padding=0, dilation=1, groups=1, rank=None):
        y = _CONV[rank](x, weight, bias, stride, padding, dilation, groups)
        return y, (x, weight, bias is not None)

    def vjp(self, residuals, g, stride=1, padding=0, dilation=1, groups=1, rank=None):
        x, weight, has_bias = residuals
        if not any(is_traced(v) for v in (g, x, weight)):        # the three kernels, fused
            grads = F.conv_backward(g, x, weight, stride, padding, dilation, groups)
            return grads.grad_input, grads.grad_weight, grads.grad_bias if has_bias else None
        pairs, output_padding = _input_grad_geometry(x.shape, weight.shape, g.shape, stride,
                                                     padding, dilation, "conv")
        grad_input = F.conv_transpose(g, weight, None, stride, pairs, output_padding, groups,
                                      dilation)                          # K_in(ȳ, w)
        grad_weight = F.conv_weight_grad(x, tuple(weight.shape), g, stride, padding, dilation,
                                         groups)                         # K_w(x, ȳ)
        return grad_input, grad_weight, _bias_grad(g, weight) if has_bias else None

    def jvp(self, primals, tangents, stride=1, padding=0, dilation=1, groups=1, rank=None):
        (x, weight, bias), (dx, dweight, dbias) = primals, tangents
        conv, args = _CONV[rank], (stride, padding, dilation, groups)
        y = conv(x, weight, bias, *args)
        dy = conv(dx, weight, dbias, *args)                 # conv(ẋ, w) + ḃ
        if not any(is_traced(v) for v in (x, dweight, dy)):
            dy += conv(x, dweight, None, *args)             # + conv(x, ẇ): dy is a fresh array
            return y, dy
        return y, dy + conv(x, dweight, None, *args)        # `+`, recorded (in place is not)

    def interval(self, x, weight, bias, stride=1, padding=0, dilation=1, groups=1, rank=None):
        r"""Bounds on the output for a box on the input (weight and bias known): centre–radius
        form, :math:`c' = \mathrm{conv}(c, w) + b`, :math:`r' = \mathrm{conv}(r, |w|)`, with
        the rounding of ``C_in/groups · prod(kernel)`` products per output added and every
        bound rounded outward (graphm.ops.interval.affine_interval): two convolutions."""
        weight, bias = exact_value(self.name, "weight", weight), exact_value(self.name, "bias",
                                                                            bias)
        conv, args = _CONV[rank], (stride, padding, dilation, groups)
        abs_weight = np.abs(weight)
        return affine_interval(
            x, lambda c: conv(c, weight, bias, *args),
            lambda v, b: conv(v, abs_weight, b, *args),
            terms=math.prod(weight.shape[1:]), bias=bias)


conv = register(Conv())


class ConvTranspose(Op):
    r"""N-d transposed convolution with bias, PyTorch's ``conv_transpose{1,2,3}d``: the adjoint
    of :class:`Conv` in its input, run with the same kernels in swapped roles.

    Shapes: x (N, C_in, *sp) or (C_in, *sp), w (C_in, C_out/groups, *k), b (C_out,).

    .. math::
        y = K_{in}(x, w) + b, \qquad
        \bar x = K_{fwd}(\bar y, w), \quad \bar w = K_w(\bar y, x), \quad
        \bar b = \textstyle\sum_{n, \mathbf i} \bar y, \qquad
        \dot y = \mathrm{conv\_transpose}(\dot x, w) + \mathrm{conv\_transpose}(x, \dot w)
                 + \dot b
    """
    name = "conv_transpose"
    higher_order = True
    inputs = ("input", "weight", "bias")
    optional = ("bias",)

    def shape(self, x, weight, bias, stride=1, padding=0, output_padding=0, groups=1,
              dilation=1, rank=None):
        return F.conv_transpose_output_shape(x, weight, bias, stride, padding, output_padding,
                                             groups, dilation, rank=rank)

    def forward(self, x, weight, bias, stride=1, padding=0, output_padding=0, groups=1,
                dilation=1, rank=None):
        y = _CONV_TRANSPOSE[rank](x, weight, bias, stride, padding, output_padding, groups,
                                  dilation)
        return y, (x, weight, bias is not None)

    def vjp(self, residuals, g, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
            rank=None):
        x, weight, has_bias = residuals
        if not any(is_traced(v) for v in (g, x, weight)):        # the three kernels, fused
            grads = F.conv_transpose_backward(g, x, weight, stride, padding, output_padding,
                                              groups, dilation)
            return grads.grad_input, grads.grad_weight, grads.grad_bias if has_bias else None
        # The adjoint convolution reads ȳ with the transposed convolution's (low, high) padding,
        # the high side reduced by output_padding (rows the forward pass added past the crop).
        rank = weight.ndim - 2
        stride_, dilation_, low, high = _axes(x.shape, weight.shape, stride, padding, dilation,
                                              "conv_transpose")
        extra = per_axis("conv_transpose", "output_padding", output_padding, rank, "")
        pairs = tuple((lo, max(hi - e, 0)) for lo, hi, e in zip(low, high, extra))
        grad_input = _crop(F.conv(g, weight, None, stride, pairs, dilation, groups),
                           x.shape[-rank:])                              # K_fwd(ȳ, w)
        grad_weight = F.conv_weight_grad(g, tuple(weight.shape), x, stride, pairs, dilation,
                                         groups)                         # K_w(ȳ, x)
        return grad_input, grad_weight, _bias_grad(g, weight) if has_bias else None

    def jvp(self, primals, tangents, stride=1, padding=0, output_padding=0, groups=1,
            dilation=1, rank=None):
        (x, weight, bias), (dx, dweight, dbias) = primals, tangents
        conv_t = _CONV_TRANSPOSE[rank]
        args = (stride, padding, output_padding, groups, dilation)
        y = conv_t(x, weight, bias, *args)
        dy = conv_t(dx, weight, dbias, *args)               # conv_transpose(ẋ, w) + ḃ
        if not any(is_traced(v) for v in (x, dweight, dy)):
            dy += conv_t(x, dweight, None, *args)           # + conv_transpose(x, ẇ), in place
            return y, dy
        return y, dy + conv_t(x, dweight, None, *args)      # `+`, recorded (in place is not)

    def interval(self, x, weight, bias, stride=1, padding=0, output_padding=0, groups=1,
                 dilation=1, rank=None):
        r"""Bounds on the output for a box on the input (weight and bias known): centre–radius
        form with :math:`|w|` for the radius, as :meth:`Conv.interval`; each output sums at
        most ``C_in/groups · prod(kernel)`` products."""
        weight, bias = exact_value(self.name, "weight", weight), exact_value(self.name, "bias",
                                                                            bias)
        conv_t = _CONV_TRANSPOSE[rank]
        args = (stride, padding, output_padding, groups, dilation)
        abs_weight = np.abs(weight)
        return affine_interval(
            x, lambda c: conv_t(c, weight, bias, *args),
            lambda v, b: conv_t(v, abs_weight, b, *args),
            terms=(weight.shape[0] // groups) * math.prod(weight.shape[2:]), bias=bias)


conv_transpose = register(ConvTranspose())


class ConvWeightGrad(Op):
    r"""The weight gradient of a convolution, :math:`K_w(x, g)`, as an op: bilinear in
    ``(input, grad_output)``, so that second derivatives of conv are again convolutions.

    Shapes: x (N, C_in, *sp) or (C_in, *sp), g (N, C_out, *out) (possibly cropped at the high
    end), result ``weight_shape`` = (C_out, C_in/groups, *k).

    .. math::
        \langle K_w(x, g), \bar W\rangle = \langle g, \mathrm{conv}(x, \bar W)\rangle
        = \langle x, \mathrm{conv\_transpose}(g, \bar W)\rangle, \qquad
        \bar x = \mathrm{conv\_transpose}(g, \bar W), \quad
        \bar g = \mathrm{conv}(x, \bar W), \qquad
        \dot W = K_w(\dot x, g) + K_w(x, \dot g)
    """
    name = "conv_weight_grad"
    higher_order = True
    inputs = ("input", "grad_output")

    def shape(self, x, g, weight_shape, stride=1, padding=0, dilation=1, groups=1):
        full = F.conv_output_shape(x, tuple(weight_shape), None, stride, padding, dilation,
                                   groups)
        rank = len(weight_shape) - 2
        if (len(g) != len(full) or tuple(g[:-rank]) != tuple(full[:-rank])
                or any(not 1 <= a <= b for a, b in zip(g[-rank:], full[-rank:]))):
            raise ValueError(f"conv_weight_grad: grad_output must have shape {tuple(full)} or "
                             f"be cropped at the high end of its spatial axes, got {tuple(g)}")
        return tuple(weight_shape)

    def forward(self, x, g, weight_shape, stride=1, padding=0, dilation=1, groups=1):
        return F.conv_weight_grad(x, weight_shape, g, stride, padding, dilation, groups), (x, g)

    def vjp(self, residuals, grad_weight, weight_shape, stride=1, padding=0, dilation=1,
            groups=1):
        x, g = residuals
        rank = len(weight_shape) - 2
        pairs, output_padding = _input_grad_geometry(x.shape, weight_shape, g.shape, stride,
                                                     padding, dilation, self.name)
        grad_x = F.conv_transpose(g, grad_weight, None, stride, pairs, output_padding, groups,
                                  dilation)                              # K_in(g, W̄)
        grad_g = _crop(F.conv(x, grad_weight, None, stride, padding, dilation, groups),
                       g.shape[-rank:])                                  # K_fwd(x, W̄)
        return grad_x, grad_g

    def jvp(self, primals, tangents, weight_shape, stride=1, padding=0, dilation=1, groups=1):
        (x, g), (dx, dg) = primals, tangents
        args = (stride, padding, dilation, groups)
        out = F.conv_weight_grad(x, weight_shape, g, *args)
        return out, (F.conv_weight_grad(dx, weight_shape, g, *args)
                     + F.conv_weight_grad(x, weight_shape, dg, *args))   # product rule


conv_weight_grad = register(ConvWeightGrad())


def _axes(x_shape, weight_shape, stride, padding, dilation, op):
    """Per-axis stride, dilation and (low, high) padding of a convolution's geometry."""
    rank = len(weight_shape) - 2
    context = f"input shape {tuple(x_shape)}, weight shape {tuple(weight_shape)}"
    stride = per_axis(op, "stride", stride, rank, context)
    dilation = per_axis(op, "dilation", dilation, rank, context)
    low, high = conv_padding(op, padding, tuple(weight_shape[2:]), stride, dilation, context)
    return stride, dilation, low, high


def _input_grad_geometry(x_shape, weight_shape, g_shape, stride, padding, dilation, op):
    """(low, high) padding pairs and output_padding that make ``conv_transpose(g, w)`` the exact
    adjoint of ``conv(x, w)`` in x: its output must have x's extent again.

    Per axis, with n input rows, o rows of g, kernel k: the transposed convolution spans
    ``(o − 1)s + d(k − 1) + 1 = n + lo + hi − r`` rows before cropping, r the rows the forward
    floor never read. Crop lo at the low end and hi − r at the high end, or, when hi < r, crop
    nothing there and add the missing ``r − hi`` rows as output_padding.
    """
    rank = len(weight_shape) - 2
    stride, dilation, low, high = _axes(x_shape, weight_shape, stride, padding, dilation, op)
    pairs, extra = [], []
    for n, o, k, s, d, lo, hi in zip(x_shape[-rank:], g_shape[-rank:], weight_shape[2:],
                                     stride, dilation, low, high):
        unread = n + lo + hi - d * (k - 1) - 1 - (o - 1) * s
        if unread <= hi:
            pairs.append((lo, hi - unread))
            extra.append(0)
        else:
            pairs.append((lo, 0))
            extra.append(unread - hi)
            if unread - hi >= max(s, d):
                raise NotImplementedError(
                    f"{op}: the adjoint of this geometry needs output_padding {unread - hi} >= "
                    f"max(stride, dilation) = {max(s, d)} (input shape {tuple(x_shape)}, "
                    f"grad_output shape {tuple(g_shape)})")
    return tuple(pairs), tuple(extra)


def _crop(y, spatial):
    """``y`` cut to ``spatial`` on its last axes (an index op on a Tensor), if it is longer."""
    spatial = tuple(spatial)
    if tuple(y.shape[-len(spatial):]) == spatial:
        return y
    return y[(Ellipsis,) + tuple(slice(0, n) for n in spatial)]


def _bias_grad(g, weight):
    """The bias gradient: ȳ summed over the batch and every position (all axes but channels)."""
    channel_axis = g.ndim - (weight.ndim - 2) - 1
    return g.sum(axis=tuple(a for a in range(g.ndim) if a != channel_axis))
