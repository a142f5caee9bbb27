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

The reverse-mode table (DESIGN.md)::

    op               forward           x̄             w̄            b̄
    conv             K_fwd(x, w) + b   K_in(ȳ, w)    K_w(x, ȳ)    sum of ȳ
    conv_transpose   K_in(x, w) + b    K_fwd(ȳ, w)   K_w(ȳ, x)    sum of ȳ

The three kernels live in ``graphm._kernels``; ``graphm.functional`` wraps them as ``conv``,
``conv_transpose``, ``conv_backward`` and ``conv_transpose_backward``, and this module only
decides which to call.
"""
from __future__ import annotations


from graphm import functional as F
from graphm.ops.base import Op, register

__all__ = ["conv", "conv_transpose"]

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
        grads = F.conv_backward(g, x, weight, stride, padding, dilation, groups)
        return grads.grad_input, grads.grad_weight, grads.grad_bias if has_bias else None

    def jvp(self, primals, tangents, stride=1, padding=0, dilation=1, groups=1, rank=None):
        (x, weight, bias), (dx, dweight, dbias) = primals, tangents
        conv = _CONV[rank]
        y = conv(x, weight, bias, stride, padding, dilation, groups)
        dy = conv(dx, weight, dbias, stride, padding, dilation, groups)   # conv(ẋ, w) + ḃ
        dy += conv(x, dweight, None, stride, padding, dilation, groups)    # + conv(x, ẇ)
        return y, dy


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
        grads = F.conv_transpose_backward(g, x, weight, stride, padding, output_padding, groups,
                                          dilation)
        return grads.grad_input, grads.grad_weight, grads.grad_bias if has_bias else None

    def jvp(self, primals, tangents, stride=1, padding=0, output_padding=0, groups=1,
            dilation=1, rank=None):
        (x, weight, bias), (dx, dweight, dbias) = primals, tangents
        conv_t = _CONV_TRANSPOSE[rank]
        args = (stride, padding, output_padding, groups, dilation)
        y = conv_t(x, weight, bias, *args)
        dy = conv_t(dx, weight, dbias, *args)          # conv_transpose(ẋ, w) + ḃ
        dy += conv_t(x, dweight, None, *args)           # + conv_transpose(x, ẇ)
        return y, dy


conv_transpose = register(ConvTranspose())
