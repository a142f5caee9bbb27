"""Convolution and transposed convolution on NumPy arrays, with torch.nn.functional's signatures.

This module is the door to graphm's compiled kernels.  It does three things, in this order:

1. **Checks every argument** and raises a ``ValueError``/``TypeError`` that names the argument,
   its value and the shapes involved, *before* any compiled code runs: the kernels drop the GIL
   and trust what they are given.
2. **Reduces any rank to one geometry.**  A convolution of rank d is described completely by
   six small integers per spatial axis: the input and output extents, the kernel extent, the
   stride, the low padding and the dilation (a ``(6, d)`` array).  The kernels see
   ``(N, C, positions)`` arrays and that array; each work unit computes, from it, which input
   position each kernel tap reads for the output positions of its tile (nothing of the size
   taps x positions is ever built, or cached).
3. **Routes each op to one of three kernels** (the adjoint table on the documentation site's concepts page).  Transposed
   convolution *is* the adjoint of convolution, ``<conv(x, w), y> = <x, conv_transpose(y, w)>``,
   so its forward pass is convolution's input-gradient kernel and its input gradient is
   convolution's forward kernel.

Shapes (PyTorch's conventions)::

    conv            input (N, C_in, *in)    weight (C_out, C_in/groups, *k)   output (N, C_out, *out)
    conv_transpose  input (N, C_in, *in)    weight (C_in, C_out/groups, *k)   output (N, C_out, *out)

The batch axis may be left out (TorchLean's single-sample form ``(C, *spatial)``); the result
then has none either.
"""
import functools
import math
import numbers

import numpy as np

from graphm import spec
from graphm.spec import ConvGradients
from graphm._config import get_num_threads
from graphm._kernels import _conv as kernels
from graphm.functional._checks import (check_arrays, check_output_extent, check_positions,
                                       check_shape, check_shapes, check_size, conv_padding,
                                       per_axis, positive)
from graphm.functional._dispatch import tensor_aware

__all__ = [
    "ConvGradients", "conv", "conv1d", "conv2d", "conv3d",
    "conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv_backward", "conv_transpose_backward", "conv_weight_grad", "conv_output_shape",
    "conv_transpose_output_shape",
]


FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------------------------
# Geometry: what the kernels are told
# ----------------------------------------------------------------------------------------------

def _kernel_geometry(in_spatial, kernel, stride, pad_low, dilation, out_spatial):
    """The ``(6, d)`` array the kernels read: rows in, out, kernel, stride, pad_low, dilation.

    Along one axis, output index ``o`` and tap ``κ`` read input index ``o·s − p_low + κ·d``
    (zero padding where that falls outside ``[0, in)``).  A few dozen bytes; made per call.
    """
    return np.array([in_spatial, out_spatial, kernel, stride, pad_low, dilation], dtype=np.intp)


class _Problem:
    """One convolution, checked, in the kernels' terms: ``(N, C, positions)`` arrays and a
    geometry."""

    def __init__(self, op, input, weight, bias, stride, padding, dilation, groups, rank,
                 transposed, output_padding=0, grad_output=None, grad_output_needed=False,
                 cropped_output=False):
        input, weight, bias, grad_output = check_arrays(
            op, input, weight, bias, grad_output, grad_output_needed=grad_output_needed)
        rank, batched, in_channels, out_channels, groups, context = check_shapes(
            op, input, weight, bias, rank, transposed, groups)
        kernel = tuple(weight.shape[2:])
        in_spatial = tuple(input.shape[-rank:])
        stride = positive(op, "stride", per_axis(op, "stride", stride, rank, context), context)
        dilation = positive(op, "dilation", per_axis(op, "dilation", dilation, rank, context),
                             context)
        if transposed:
            if isinstance(padding, str):
                raise ValueError(f"{op}: padding={padding!r}: a transposed convolution takes "
                                 f"an int or a tuple of {rank} ints, not a string (as in "
                                 f"PyTorch) ({context})")
            pad_low, pad_high = conv_padding(op, padding, kernel, stride, dilation, context)
            output_padding = per_axis(op, "output_padding", output_padding, rank, context)
            for op_a, s, d in zip(output_padding, stride, dilation):
                if op_a < 0 or op_a >= max(s, d):
                    raise ValueError(
                        f"{op}: output_padding={output_padding} must be >= 0 and smaller than "
                        f"max(stride, dilation) on each axis (stride={stride}, dilation="
                        f"{dilation}) ({context})")
            # spec's formula without padding, then each axis cropped by its (low, high) pair
            out_spatial = tuple(
                n - lo - hi for n, lo, hi in zip(spec.conv_transpose_out_spatial(
                    in_spatial, kernel, stride, 0, output_padding, dilation), pad_low, pad_high))
            check_output_extent(op, out_spatial, in_spatial, kernel, context)
            # The adjoint convolution reads the transposed output and writes the transposed
            # input: its "input" has out_spatial positions, its "output" in_spatial ones.
            check_positions(op, "output", out_spatial, context)
            self.geometry = (tuple(out_spatial), kernel, stride, pad_low, dilation, in_spatial)
        else:
            pad_low, pad_high = conv_padding(op, padding, kernel, stride, dilation, context)
            # spec's formula with the padding folded into the extent ('same' may be asymmetric)
            padded = tuple(i + lo + hi for i, lo, hi in zip(in_spatial, pad_low, pad_high))
            out_spatial = spec.conv_out_spatial(padded, kernel, stride, 0, dilation)
            check_output_extent(op, out_spatial, in_spatial, kernel, context)
            if cropped_output:
                # conv_weight_grad: the output is grad_output's, which may stop short of the
                # full output at the high end of an axis (the last outputs cropped away)
                given = grad_output.shape[2:] if batched else grad_output.shape[1:]
                if (grad_output.ndim != input.ndim or len(given) != rank
                        or any(not 1 <= g <= o for g, o in zip(given, out_spatial))):
                    full = self._shape_with(input, batched, out_channels, out_spatial)
                    raise ValueError(
                        f"{op}: grad_output must have shape {full} or be cropped at the high end of its spatial axes (each extent "
                        f"between 1 and the full one), got grad_output shape "
                        f"{grad_output.shape} ({context})")
                out_spatial = tuple(given)
            check_positions(op, "input", in_spatial, context)
            check_positions(op, "output", out_spatial, context)
            self.geometry = (in_spatial, kernel, stride, pad_low, dilation, tuple(out_spatial))
        self.op, self.context, self.groups, self.batched = op, context, groups, batched
        self.dtype = input.dtype
        self.n_samples = input.shape[0] if batched else 1
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_spatial, self.out_spatial = in_spatial, tuple(out_spatial)
        self._arrays = (input, weight, bias, grad_output)
        self.input_shape, self.weight_shape = input.shape, weight.shape
        if grad_output_needed:
            expected = self.output_shape
            if grad_output.shape != expected:
                raise ValueError(f"{op}: grad_output must have the output's shape {expected}, "
                                 f"got grad_output shape {grad_output.shape} ({context})")
        else:
            check_size(op, "output", self.output_shape,
                       f"check the channels, stride, padding, dilation and output_padding; "
                       f"{context}")

    @staticmethod
    def _shape_with(input, batched, channels, spatial):
        return ((input.shape[0],) if batched else ()) + (channels,) + tuple(spatial)

    # The kernels' views are made on first use only, so that a shape query copies nothing.

    @functools.cached_property
    def kernel_geometry(self):
        """The geometry array of the convolution (for conv_transpose: of its adjoint one)."""
        return _kernel_geometry(*self.geometry)

    @functools.cached_property
    def input3(self):
        return self._flat(self._arrays[0], self.in_channels, self.in_spatial)

    @functools.cached_property
    def weight2(self):
        """Both layouts flatten to (weight.shape[0], weight.shape[1] * K): rows are the adjoint
        pair's "output" channels, columns (channel within the group, tap)."""
        weight = self._arrays[1]
        return np.ascontiguousarray(weight).reshape(weight.shape[0], -1)

    @functools.cached_property
    def bias(self):
        bias = self._arrays[2]
        return np.ascontiguousarray(bias) if bias is not None else np.empty(0, dtype=self.dtype)

    @functools.cached_property
    def grad_output3(self):
        return self._flat(self._arrays[3], self.out_channels, self.out_spatial)

    def _flat(self, array, channels, spatial):
        """A C-contiguous (N, C, positions) view (a copy only if the array is not contiguous)."""
        return np.ascontiguousarray(array).reshape(self.n_samples, channels, math.prod(spatial))

    @property
    def output_shape(self):
        batch = (self.n_samples,) if self.batched else ()
        return batch + (self.out_channels,) + self.out_spatial

    def empty(self, channels, spatial):
        return np.empty((self.n_samples, channels, math.prod(spatial)), dtype=self.dtype)

    def unflat(self, array3, channels, spatial):
        batch = (self.n_samples,) if self.batched else ()
        return array3.reshape(batch + (channels,) + tuple(spatial))


def _stand_in(op, name, shape, dtype):
    """A read-only array of ``shape`` that owns no memory: all the argument checks look at."""
    if shape is None:
        return None
    shape = check_shape(op, name, shape, limit=False)
    if math.prod(shape) >= 2 ** 62:     # no such array can exist (NumPy's own limit is 2**63)
        raise ValueError(f"{op}: {name}={shape} has {math.prod(shape)} elements; no array "
                         f"that large can exist")
    return np.broadcast_to(np.zeros((), dtype), shape)


def _shape_rank(fname, rank):
    """``rank`` of the shape functions: None (any, from the weight) or a positive int."""
    if rank is not None and (isinstance(rank, (bool, np.bool_))
                             or not isinstance(rank, numbers.Integral) or rank < 1):
        raise TypeError(f"{fname}(): rank must be None or a positive int, got {rank!r}")
    return rank


def conv_output_shape(input_shape, weight_shape, bias_shape=None, stride=1, padding=0,
                      dilation=1, groups=1, *, rank=None, dtype=np.float32):
    """The shape :func:`conv` would return, with every argument check of :func:`conv`.

    For building graphs before any data exists (graphm.GraphM checks shapes at build time):
    the same checks, and so the same error messages, as the op itself.  ``rank`` pins the
    spatial rank as conv1d/2d/3d do (and names them in messages); ``dtype`` is that of the
    arrays to come.
    """
    op = "conv" if _shape_rank("conv_output_shape", rank) is None else f"conv{rank}d"
    return _Problem(op, _stand_in(op, "input_shape", input_shape, dtype),
                    _stand_in(op, "weight_shape", weight_shape, dtype),
                    _stand_in(op, "bias_shape", bias_shape, dtype), stride, padding, dilation,
                    groups, rank, transposed=False).output_shape


def conv_transpose_output_shape(input_shape, weight_shape, bias_shape=None, stride=1,
                                padding=0, output_padding=0, groups=1, dilation=1, *,
                                rank=None, dtype=np.float32):
    """The shape :func:`conv_transpose` would return, with all of its argument checks."""
    op = ("conv_transpose" if _shape_rank("conv_transpose_output_shape", rank) is None
          else f"conv_transpose{rank}d")
    return _Problem(op, _stand_in(op, "input_shape", input_shape, dtype),
                    _stand_in(op, "weight_shape", weight_shape, dtype),
                    _stand_in(op, "bias_shape", bias_shape, dtype), stride, padding, dilation,
                    groups, rank, transposed=True, output_padding=output_padding).output_shape


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------

def _conv(op, rank, input, weight, bias, stride, padding, dilation, groups):
    problem = _Problem(op, input, weight, bias, stride, padding, dilation, groups, rank,
                       transposed=False)
    out = problem.empty(problem.out_channels, problem.out_spatial)
    kernels.conv_forward(problem.input3, problem.weight2, problem.bias,
                         problem.kernel_geometry,
                         problem.groups, out, get_num_threads())
    return problem.unflat(out, problem.out_channels, problem.out_spatial)


@tensor_aware
def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    r"""N-dimensional convolution (cross-correlation, as in every deep-learning framework).

    .. math::

        y[n, o, \mathbf{i}] = b[o] + \sum_{c=0}^{C_{in}/G - 1} \sum_{\boldsymbol\kappa}
            w[o, c, \boldsymbol\kappa]\;
            x[n,\, g(o)\,C_{in}/G + c,\; \mathbf{i}\odot\mathbf{s} - \mathbf{p} +
              \boldsymbol\kappa\odot\mathbf{d}]

    with ``x`` zero outside its extent and ``g(o) = o // (C_out / G)`` the group of channel
    ``o``.  Each output extent is ``floor((in + 2p − d·(k−1) − 1) / s) + 1``
    (:func:`graphm.spec.conv_out_spatial`).

    Zero padding is an explicit value 0 with IEEE arithmetic: the product with the padded zero
    is formed at every padded tap, as ``np.pad`` followed by the sum would, so a NaN or Inf
    weight meeting a padded tap gives NaN (and a NaN or Inf ``grad_output`` meeting one gives
    a NaN weight gradient). :func:`conv_transpose` is a scatter: the positions its padding
    crops are never formed. :mod:`graphm.spec` states and follows the same rule.

    Parameters
    ----------
    input : ndarray, float32 or float64
        ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
    weight : ndarray
        ``(C_out, C_in / groups, *kernel)``; the spatial rank is ``weight.ndim - 2``.
    bias : ndarray or None
        ``(C_out,)``.
    stride, dilation : int or tuple of ints
        Per spatial axis, all >= 1.
    padding : int, tuple of ints, 'valid' or 'same'
        Zero padding on both sides of each axis.  ``'same'`` (stride 1 only) pads
        ``d·(k−1)`` in total per axis, the odd element on the high side, as PyTorch does.
    groups : int
        Split the channels into ``groups`` independent convolutions.

    Returns
    -------
    ndarray
        ``(N, C_out, *out_spatial)`` (or unbatched), a new C-contiguous array of input's dtype.
    """
    return _conv("conv", None, input, weight, bias, stride, padding, dilation, groups)


@tensor_aware
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-d :func:`conv`: input ``(N, C_in, L)`` or ``(C_in, L)``, weight ``(C_out, C_in/groups, k)``."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


@tensor_aware
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d :func:`conv`: input ``(N, C_in, H, W)`` or ``(C_in, H, W)``, weight ``(C_out, C_in/groups, kH, kW)``."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


@tensor_aware
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-d :func:`conv`: input ``(N, C_in, D, H, W)`` or unbatched, weight ``(C_out, C_in/groups, kD, kH, kW)``."""
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups)


def conv_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1):
    r"""The three gradients of :func:`conv` (with a bias), given the gradient of its output.

    With :math:`g` = ``grad_output``:

    .. math::

        \frac{\partial L}{\partial x} = K_{in}(g, w) = \mathrm{conv\_transpose}(g, w),\qquad
        \frac{\partial L}{\partial w} = K_w(x, g),\qquad
        \frac{\partial L}{\partial b_o} = \sum_{n, \mathbf{i}} g[n, o, \mathbf{i}]

    The input gradient is a transposed convolution of ``g`` with the *same* weight: that is
    what "transposed convolution is the adjoint of convolution" means.

    Parameters
    ----------
    grad_output : ndarray
        The gradient of the loss w.r.t. ``conv(input, weight, ...)``, of its shape.
    input, weight, stride, padding, dilation, groups
        As given to :func:`conv`.

    Returns
    -------
    ConvGradients
        ``(grad_input, grad_weight, grad_bias)``, shaped like input, weight and ``(C_out,)``.
    """
    problem = _Problem("conv_backward", input, weight, None, stride, padding, dilation, groups,
                       None, transposed=False, grad_output=grad_output, grad_output_needed=True)
    if not problem.n_samples:     # an empty batch: nothing flows, nothing to compute
        return ConvGradients(np.zeros(problem.input_shape, problem.dtype),
                             np.zeros(problem.weight_shape, problem.dtype),
                             np.zeros(problem.out_channels, problem.dtype))
    threads = get_num_threads()
    grad_input = problem.empty(problem.in_channels, problem.in_spatial)
    kernels.conv_input_grad(problem.grad_output3, problem.weight2, problem.bias,
                            problem.kernel_geometry, problem.groups, grad_input, threads)
    grad_weight = np.empty_like(problem.weight2)
    kernels.conv_weight_grad(problem.input3, problem.grad_output3, problem.kernel_geometry,
                             problem.groups, grad_weight, threads)
    grad_bias = np.empty(problem.out_channels, dtype=problem.dtype)
    kernels.bias_grad(problem.grad_output3, grad_bias, threads)
    return ConvGradients(problem.unflat(grad_input, problem.in_channels, problem.in_spatial),
                     grad_weight.reshape(problem.weight_shape), grad_bias)


def _weight_shape(op, weight_shape, input):
    """``weight_shape`` as a tuple of positive ints (conv_weight_grad gets a shape, not a weight)."""
    if isinstance(weight_shape, np.ndarray) or not isinstance(weight_shape, (tuple, list)):
        raise TypeError(f"{op}: weight_shape must be a tuple of ints (the weight's shape), got "
                        f"{weight_shape!r} of type {type(weight_shape).__name__} (input shape "
                        f"{np.shape(input)})")
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n >= 1
               for n in weight_shape):
        raise ValueError(f"{op}: weight_shape must hold positive ints, got {tuple(weight_shape)!r}"
                         f" (input shape {np.shape(input)})")
    return check_size(op, "weight_shape", tuple(int(n) for n in weight_shape))


@tensor_aware
def conv_weight_grad(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                     groups=1):
    r"""The gradient of :func:`conv` with respect to its weight: graphm's kernel :math:`K_w`.

    As ``torch.nn.grad.conv{1,2,3}d_weight``: correlate each input window with the gradient at
    its output position and sum over the batch and the positions,

    .. math::

        K_w(x, g)[o, c, \boldsymbol\kappa] = \sum_{n, \mathbf i} g[n, o, \mathbf i]\;
            x[n,\, g(o)\,C_{in}/G + c,\; \mathbf{i}\odot\mathbf{s} - \mathbf{p} +
              \boldsymbol\kappa\odot\mathbf{d}]

    (``x`` zero outside its extent). It is *bilinear* in ``(input, grad_output)``, and its
    derivatives are again convolutions (see :mod:`graphm.ops.conv`):
    :math:`\langle K_w(x, g), \bar W\rangle = \langle g, \mathrm{conv}(x, \bar W)\rangle
    = \langle x, \mathrm{conv\_transpose}(g, \bar W)\rangle`.

    Parameters
    ----------
    input : ndarray, float32 or float64
        ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``, as given to :func:`conv`.
    weight_shape : tuple of int
        ``(C_out, C_in / groups, *kernel)``: the shape of the weight (the kernel extents cannot
        be told from the other shapes when the stride is above 1).
    grad_output : ndarray
        ``(N, C_out, *out_spatial)``, the shape of ``conv(input, weight, ...)``. An axis may
        also stop short of the full output at its high end: the weight gradient of a
        convolution whose last outputs are cropped away (the adjoint of a transposed
        convolution with ``output_padding`` needs this).
    stride, padding, dilation, groups
        As given to :func:`conv` (``padding`` may also be one ``(low, high)`` pair per axis).

    Returns
    -------
    ndarray
        Of shape ``weight_shape`` and the input's dtype.
    """
    op = "conv_weight_grad"
    stand_in = _stand_in(op, "weight_shape", _weight_shape(op, weight_shape, input),
                         np.asarray(input).dtype)
    problem = _Problem(op, input, stand_in, None, stride, padding, dilation, groups, None,
                       transposed=False, grad_output=grad_output, grad_output_needed=True,
                       cropped_output=True)
    shape = problem.weight_shape
    if not problem.n_samples:     # an empty batch: the sum over it is 0
        return np.zeros(shape, problem.dtype)
    grad_weight = np.empty((shape[0], math.prod(shape[1:])), dtype=problem.dtype)
    kernels.conv_weight_grad(problem.input3, problem.grad_output3, problem.kernel_geometry,
                             problem.groups, grad_weight, get_num_threads())
    return grad_weight.reshape(problem.weight_shape)


# ----------------------------------------------------------------------------------------------
# Transposed convolution: convolution's adjoint, run with the same three kernels
# ----------------------------------------------------------------------------------------------

def _conv_transpose(op, rank, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    problem = _Problem(op, input, weight, bias, stride, padding, dilation, groups, rank,
                       transposed=True, output_padding=output_padding)
    out = problem.empty(problem.out_channels, problem.out_spatial)
    # conv_transpose(x, w) + b = K_in(x, w) + b: the input-gradient kernel of the adjoint conv.
    kernels.conv_input_grad(problem.input3, problem.weight2, problem.bias,
                            problem.kernel_geometry,
                            problem.groups, out, get_num_threads())
    return problem.unflat(out, problem.out_channels, problem.out_spatial)


@tensor_aware
def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                   dilation=1):
    r"""N-dimensional transposed convolution: the adjoint of :func:`conv` in its input.

    Each input element spreads into the output, scaled by the kernel:

    .. math::

        y[n, o, \mathbf{i}\odot\mathbf{s} - \mathbf{p} + \boldsymbol\kappa\odot\mathbf{d}]
        \mathrel{+}= w[c, o', \boldsymbol\kappa]\; x[n, c, \mathbf{i}],
        \qquad o = g(c)\,C_{out}/G + o'

    plus ``b[o]``.  For the same weight, ``<conv(x, w), y> = <x, conv_transpose(y, w)>``.
    Each output extent is ``(in − 1)·s − 2p + d·(k − 1) + output_padding + 1``
    (:func:`graphm.spec.conv_transpose_out_spatial`).

    Parameters
    ----------
    input : ndarray, float32 or float64
        ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
    weight : ndarray
        ``(C_in, C_out / groups, *kernel)`` (PyTorch's layout).
    bias : ndarray or None
        ``(C_out,)``.
    stride, padding, dilation : int or tuple of ints
        Those of the convolution this op is the adjoint of (padding is not a string here).
    output_padding : int or tuple of ints
        Extra rows at the high end of each axis, ``0 <= output_padding < max(stride, dilation)``:
        a strided convolution maps several input sizes to one output size, and this picks one.
    groups : int

    Returns
    -------
    ndarray
        ``(N, C_out, *out_spatial)`` (or unbatched), a new C-contiguous array of input's dtype.
    """
    return _conv_transpose("conv_transpose", None, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


@tensor_aware
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """1-d :func:`conv_transpose`: weight ``(C_in, C_out/groups, k)``."""
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


@tensor_aware
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """2-d :func:`conv_transpose`: weight ``(C_in, C_out/groups, kH, kW)``."""
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


@tensor_aware
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """3-d :func:`conv_transpose`: weight ``(C_in, C_out/groups, kD, kH, kW)``."""
    return _conv_transpose("conv_transpose3d", 3, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0,
                            groups=1, dilation=1):
    r"""The three gradients of :func:`conv_transpose` (with a bias), given ``grad_output``.

    The adjoint of an adjoint is the original map, so the roles swap (the adjoint table, on the concepts page):

    .. math::

        \frac{\partial L}{\partial x} = K_{fwd}(g, w) = \mathrm{conv}(g, w),\qquad
        \frac{\partial L}{\partial w} = K_w(g, x),\qquad
        \frac{\partial L}{\partial b_o} = \sum_{n, \mathbf{i}} g[n, o, \mathbf{i}]

    Returns
    -------
    ConvGradients
        ``(grad_input, grad_weight, grad_bias)``, shaped like input, weight and ``(C_out,)``.
    """
    problem = _Problem("conv_transpose_backward", input, weight, None, stride, padding,
                       dilation, groups, None, transposed=True, output_padding=output_padding,
                       grad_output=grad_output, grad_output_needed=True)
    if not problem.n_samples:     # an empty batch: nothing flows, nothing to compute
        return ConvGradients(np.zeros(problem.input_shape, problem.dtype),
                             np.zeros(problem.weight_shape, problem.dtype),
                             np.zeros(problem.out_channels, problem.dtype))
    threads = get_num_threads()
    grad_input = problem.empty(problem.in_channels, problem.in_spatial)
    kernels.conv_forward(problem.grad_output3, problem.weight2, problem.bias,
                         problem.kernel_geometry,
                         problem.groups, grad_input, threads)
    grad_weight = np.empty_like(problem.weight2)
    kernels.conv_weight_grad(problem.grad_output3, problem.input3, problem.kernel_geometry,
                             problem.groups, grad_weight, threads)
    grad_bias = np.empty(problem.out_channels, dtype=problem.dtype)
    kernels.bias_grad(problem.grad_output3, grad_bias, threads)
    return ConvGradients(problem.unflat(grad_input, problem.in_channels, problem.in_spatial),
                     grad_weight.reshape(problem.weight_shape), grad_bias)
