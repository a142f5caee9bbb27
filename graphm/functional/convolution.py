"""Convolution and transposed convolution on NumPy arrays, with torch.nn.functional's signatures.

This module is the door to graphm's compiled kernels.  It does three things, in this order:

1. **Checks every argument** and raises a ``ValueError``/``TypeError`` that names the argument,
   its value and the shapes involved, *before* any compiled code runs: the kernels drop the GIL
   and trust what they are given.
2. **Reduces any rank to one geometry.**  A convolution of rank d is described completely by a
   *gather map*: ``gather[k, p]`` is the flat input position that kernel tap ``k`` reads for
   output position ``p`` (or -1 where the tap falls into the zero padding).  Stride, padding and
   dilation exist only here; the kernels see ``(N, C, positions)`` arrays and the map.
3. **Routes each op to one of three kernels** (the adjoint table of DESIGN.md).  Transposed
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
import operator

import numpy as np

from graphm import spec
from graphm.spec import ConvGradients
from graphm._config import get_num_threads
from graphm._kernels import _conv as kernels
from graphm.functional._dispatch import tensor_aware

__all__ = [
    "ConvGradients", "conv", "conv1d", "conv2d", "conv3d",
    "conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv_backward", "conv_transpose_backward", "conv_output_shape",
    "conv_transpose_output_shape",
]


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------------------------
# Argument checking
# ----------------------------------------------------------------------------------------------

def _float_array(op, name, value, shapes):
    """``value`` as a float32/float64 ndarray, or a TypeError naming ``name``."""
    if value is None:
        raise TypeError(f"{op}: {name} must be an array, got None ({shapes})")
    array = np.asarray(value)
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be a float32 or float64 array, got dtype "
                        f"{array.dtype} with shape {array.shape} ({shapes}); convert it with "
                        f"{name}.astype(np.float32)")
    return array


def _check_arrays(op, input, weight, bias, grad_output=None, *, grad_output_needed=False):
    """Turn the array arguments into arrays of one float dtype; returns them in order."""
    shapes = ", ".join(f"{n} shape {np.shape(v)}" for n, v in
                       (("input", input), ("weight", weight), ("bias", bias),
                        ("grad_output", grad_output)) if v is not None)
    arrays = {"input": _float_array(op, "input", input, shapes),
              "weight": _float_array(op, "weight", weight, shapes)}
    if bias is not None:
        arrays["bias"] = _float_array(op, "bias", bias, shapes)
    if grad_output_needed:
        arrays["grad_output"] = _float_array(op, "grad_output", grad_output, shapes)
    dtype = arrays["input"].dtype
    for name, array in arrays.items():
        if array.dtype != dtype:
            raise TypeError(f"{op}: input is {dtype} but {name} is {array.dtype} ({shapes}); "
                            f"all arrays must share one dtype: convert with "
                            f"{name}.astype(np.{dtype})")
    return arrays["input"], arrays["weight"], arrays.get("bias"), arrays.get("grad_output")


def _as_int(op, name, value, context, per_axis=True):
    """A Python int from an int-like value (bools and floats are rejected, as in PyTorch)."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(type(value), "__index__"):
        wanted = "an int or a tuple of ints" if per_axis else "an int"
        raise TypeError(f"{op}: {name} must be {wanted}, got {value!r} "
                        f"of type {type(value).__name__} ({context})")
    return operator.index(value)


_LARGEST_PARAMETER = 2 ** 31 - 1  # stride, padding, dilation: the kernels index with these


def _per_axis(op, name, value, rank, context):
    """Expand an int or a length-``rank`` sequence of ints to a tuple of ``rank`` ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(f"{op}: {name}={tuple(value)!r} has {len(value)} entries but the "
                             f"convolution has {rank} spatial axes ({context}); give one int or "
                             f"{rank} ints")
        values = tuple(_as_int(op, name, v, context) for v in value)
    elif isinstance(value, np.ndarray) and value.ndim == 1:
        return _per_axis(op, name, value.tolist(), rank, context)
    else:
        values = (_as_int(op, name, value, context),) * rank
    if any(abs(v) > _LARGEST_PARAMETER for v in values):
        raise ValueError(f"{op}: {name}={values} is too large; each value must be at most "
                         f"2**31 - 1 ({context})")
    return values


def _positive(op, name, values, context):
    if any(v <= 0 for v in values):
        raise ValueError(f"{op}: {name} must be positive on every axis, got {name}={values} "
                         f"({context})")
    return values


def _check_shapes(op, input, weight, bias, rank, transposed, groups):
    """Ranks, channels and groups.  Returns (batched, in_channels, out_channels, groups)."""
    context = (f"input shape {input.shape}, weight shape {weight.shape}"
               + (f", bias shape {bias.shape}" if bias is not None else ""))
    layout = ("(in_channels, out_channels/groups, *kernel)" if transposed
              else "(out_channels, in_channels/groups, *kernel)")
    if rank is None:
        if weight.ndim < 3:
            raise ValueError(f"{op}: weight must have shape {layout} with at least one spatial "
                             f"axis, got weight.ndim={weight.ndim} ({context})")
        rank = weight.ndim - 2
    elif weight.ndim != rank + 2:
        raise ValueError(f"{op}: weight must have {rank + 2} dimensions {layout} for a "
                         f"{rank}-d convolution, got weight.ndim={weight.ndim} ({context})")
    if input.ndim not in (rank + 1, rank + 2):
        raise ValueError(f"{op}: input must have {rank + 2} dimensions (N, C, *spatial) or "
                         f"{rank + 1} (C, *spatial) for a {rank}-d convolution, got "
                         f"input.ndim={input.ndim} ({context})")
    groups = _as_int(op, "groups", groups, context, per_axis=False)
    if groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got groups={groups} ({context})")
    batched = input.ndim == rank + 2
    in_channels = input.shape[1 if batched else 0]
    kernel = weight.shape[2:]
    if in_channels == 0:
        raise ValueError(f"{op}: input has 0 channels (in_channels must be >= 1) ({context})")
    if weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(f"{op}: weight has a channel axis of extent 0, weight shape "
                         f"{weight.shape} ({context})")
    if any(k == 0 for k in kernel):
        raise ValueError(f"{op}: the kernel extents weight.shape[2:]={kernel} must all be >= 1 "
                         f"({context})")
    if transposed:
        if weight.shape[0] != in_channels:
            raise ValueError(f"{op}: input has {in_channels} channels but weight.shape[0]="
                             f"{weight.shape[0]}; a transposed convolution's weight is {layout} "
                             f"({context})")
        if in_channels % groups:
            raise ValueError(f"{op}: groups={groups} does not divide the {in_channels} input "
                             f"channels ({context})")
        out_channels = weight.shape[1] * groups
    else:
        if in_channels != weight.shape[1] * groups:
            raise ValueError(f"{op}: input has {in_channels} channels but weight expects "
                             f"weight.shape[1] * groups = {weight.shape[1]} * {groups} = "
                             f"{weight.shape[1] * groups} ({context})")
        if weight.shape[0] % groups:
            raise ValueError(f"{op}: groups={groups} does not divide the {weight.shape[0]} "
                             f"output channels weight.shape[0] ({context})")
        out_channels = weight.shape[0]
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != out_channels):
        raise ValueError(f"{op}: bias must have shape ({out_channels},), one value per output "
                         f"channel, got bias shape {bias.shape} ({context})")
    return rank, batched, in_channels, out_channels, groups, context


def _conv_padding(op, padding, kernel, stride, dilation, context):
    """Per-axis (low, high) zero padding for conv: ints, 'valid' or 'same' (as PyTorch)."""
    rank = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * rank, (0,) * rank
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided "
                                 f"convolutions (stride={stride}); use an int padding "
                                 f"({context})")
            return spec.same_padding(kernel, dilation)   # asymmetric for even kernels
        raise ValueError(f"{op}: padding={padding!r} is not a valid padding string; use "
                         f"'valid', 'same', an int or a tuple of {rank} ints ({context})")
    pad = _per_axis(op, "padding", padding, rank, context)
    if any(p < 0 for p in pad):
        raise ValueError(f"{op}: padding must be >= 0 on every axis, got padding={pad} "
                         f"({context})")
    return pad, pad


def _check_output_extent(op, out_spatial, in_spatial, kernel, context):
    if any(o < 1 for o in out_spatial):
        raise ValueError(f"{op}: the output would have spatial shape {tuple(out_spatial)} "
                         f"(from input spatial shape {tuple(in_spatial)} and kernel "
                         f"{tuple(kernel)}); every extent must be >= 1: the input is too small "
                         f"for this kernel, dilation and padding ({context})")


# ----------------------------------------------------------------------------------------------
# Geometry: the gather map
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _gather_map(in_spatial, kernel, stride, pad_low, dilation, out_spatial):
    """gather[k, p]: the flat input position read by kernel tap k at output position p, or -1.

    Along one axis, output index ``o`` and tap ``κ`` read input index ``o·s − p_low + κ·d``
    (zero padding where that falls outside ``[0, in)``).  The flat position is the row-major
    combination of the per-axis indices; the map is cached because a training loop asks for the
    same geometry again and again (it is returned read-only).

    Each axis contributes ``index · row-major stride`` for an index inside the input and
    ``-2**31`` outside it, which keeps the sum negative whatever the other axes add (valid
    offsets add up to less than 2**31, checked by the caller); negative sums become -1.  The
    sums are formed one first-axis tap at a time, so the int64 scratch stays a fraction of the
    int32 map.
    """
    rank = len(kernel)
    flat_stride = np.cumprod((1,) + tuple(in_spatial[:0:-1]))[::-1]  # row-major strides
    contributions = []                                                # per axis: (k_axis, out_axis)
    for axis in range(rank):
        taps = np.arange(kernel[axis], dtype=np.int64) * dilation[axis]
        starts = np.arange(out_spatial[axis], dtype=np.int64) * stride[axis] - pad_low[axis]
        index = taps[:, None] + starts[None, :]
        inside = (index >= 0) & (index < in_spatial[axis])
        contributions.append(np.where(inside, index * flat_stride[axis], -2 ** 31))
    rows = math.prod(kernel[1:])                   # taps that share one first-axis tap
    gather = np.empty((math.prod(kernel), math.prod(out_spatial)), dtype=np.int32)
    for first in range(kernel[0]):
        block = np.zeros((1,) * (2 * rank), dtype=np.int64)
        for axis, contribution in enumerate(contributions):
            if axis == 0:
                contribution = contribution[first:first + 1]
            shape = [1] * (2 * rank)
            shape[axis], shape[rank + axis] = contribution.shape
            block = block + contribution.reshape(shape)
        gather[first * rows:(first + 1) * rows] = np.maximum(block, -1).reshape(rows, -1)
    gather.flags.writeable = False
    return gather


def _check_positions(op, what, spatial, context):
    """The kernels address one channel with 32-bit offsets: fewer than 2**31 positions each."""
    if math.prod(spatial) >= 2 ** 31:
        raise ValueError(f"{op}: the {what} would have spatial shape {tuple(spatial)}, "
                         f"{math.prod(spatial)} positions per channel; graphm supports fewer "
                         f"than 2**31 (check stride, padding, dilation and output_padding) "
                         f"({context})")


class _Problem:
    """One convolution, checked, in the kernels' terms: ``(N, C, positions)`` arrays and a map."""

    def __init__(self, op, input, weight, bias, stride, padding, dilation, groups, rank,
                 transposed, output_padding=0, grad_output=None, grad_output_needed=False):
        input, weight, bias, grad_output = _check_arrays(
            op, input, weight, bias, grad_output, grad_output_needed=grad_output_needed)
        rank, batched, in_channels, out_channels, groups, context = _check_shapes(
            op, input, weight, bias, rank, transposed, groups)
        kernel = tuple(weight.shape[2:])
        in_spatial = tuple(input.shape[-rank:])
        stride = _positive(op, "stride", _per_axis(op, "stride", stride, rank, context), context)
        dilation = _positive(op, "dilation", _per_axis(op, "dilation", dilation, rank, context),
                             context)
        if transposed:
            if isinstance(padding, str):
                raise ValueError(f"{op}: padding={padding!r}: a transposed convolution takes "
                                 f"an int or a tuple of {rank} ints, not a string (as in "
                                 f"PyTorch) ({context})")
            pad_low, pad_high = _conv_padding(op, padding, kernel, stride, dilation, context)
            output_padding = _per_axis(op, "output_padding", output_padding, rank, context)
            for op_a, s, d in zip(output_padding, stride, dilation):
                if op_a < 0 or op_a >= max(s, d):
                    raise ValueError(
                        f"{op}: output_padding={output_padding} must be >= 0 and smaller than "
                        f"max(stride, dilation) on each axis (stride={stride}, dilation="
                        f"{dilation}) ({context})")
            out_spatial = spec.conv_transpose_out_spatial(in_spatial, kernel, stride, pad_low,
                                                          output_padding, dilation)
            _check_output_extent(op, out_spatial, in_spatial, kernel, context)
            # The adjoint convolution reads the transposed output and writes the transposed
            # input: its "input" has out_spatial positions, its "output" in_spatial ones.
            _check_positions(op, "output", out_spatial, context)
            self.geometry = (tuple(out_spatial), kernel, stride, pad_low, dilation, in_spatial)
        else:
            pad_low, pad_high = _conv_padding(op, padding, kernel, stride, dilation, context)
            # spec's formula with the padding folded into the extent ('same' may be asymmetric)
            padded = tuple(i + lo + hi for i, lo, hi in zip(in_spatial, pad_low, pad_high))
            out_spatial = spec.conv_out_spatial(padded, kernel, stride, 0, dilation)
            _check_output_extent(op, out_spatial, in_spatial, kernel, context)
            _check_positions(op, "input", in_spatial, context)
            _check_positions(op, "output", out_spatial, context)
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

    # The kernels' views are made on first use only, so that a shape query copies nothing.

    @functools.cached_property
    def gather(self):
        """The gather map of the convolution (for conv_transpose: of its adjoint convolution)."""
        return _gather_map(*self.geometry)

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


def _stand_in(shape, dtype):
    """A read-only array of ``shape`` that owns no memory: all the argument checks look at."""
    return None if shape is None else np.broadcast_to(np.zeros((), dtype), tuple(shape))


def conv_output_shape(input_shape, weight_shape, bias_shape=None, stride=1, padding=0,
                      dilation=1, groups=1, *, rank=None, dtype=np.float32):
    """The shape :func:`conv` would return, with every argument check of :func:`conv`.

    For building graphs before any data exists (graphm.GraphM checks shapes at build time):
    the same checks, and so the same error messages, as the op itself.  ``rank`` pins the
    spatial rank as conv1d/2d/3d do (and names them in messages); ``dtype`` is that of the
    arrays to come.
    """
    op = "conv" if rank is None else f"conv{rank}d"
    return _Problem(op, _stand_in(input_shape, dtype), _stand_in(weight_shape, dtype),
                    _stand_in(bias_shape, dtype), stride, padding, dilation, groups, rank,
                    transposed=False).output_shape


def conv_transpose_output_shape(input_shape, weight_shape, bias_shape=None, stride=1,
                                padding=0, output_padding=0, groups=1, dilation=1, *,
                                rank=None, dtype=np.float32):
    """The shape :func:`conv_transpose` would return, with all of its argument checks."""
    op = "conv_transpose" if rank is None else f"conv_transpose{rank}d"
    return _Problem(op, _stand_in(input_shape, dtype), _stand_in(weight_shape, dtype),
                    _stand_in(bias_shape, dtype), stride, padding, dilation, groups, rank,
                    transposed=True, output_padding=output_padding).output_shape


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------

def _conv(op, rank, input, weight, bias, stride, padding, dilation, groups):
    problem = _Problem(op, input, weight, bias, stride, padding, dilation, groups, rank,
                       transposed=False)
    out = problem.empty(problem.out_channels, problem.out_spatial)
    kernels.conv_forward(problem.input3, problem.weight2, problem.bias, problem.gather,
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
    threads = get_num_threads()
    grad_input = problem.empty(problem.in_channels, problem.in_spatial)
    kernels.conv_input_grad(problem.grad_output3, problem.weight2, problem.bias,
                            problem.gather, problem.groups, grad_input, threads)
    grad_weight = np.empty_like(problem.weight2)
    kernels.conv_weight_grad(problem.input3, problem.grad_output3, problem.gather,
                             problem.groups, grad_weight, threads)
    grad_bias = np.empty(problem.out_channels, dtype=problem.dtype)
    kernels.bias_grad(problem.grad_output3, grad_bias, threads)
    return ConvGradients(problem.unflat(grad_input, problem.in_channels, problem.in_spatial),
                     grad_weight.reshape(problem.weight_shape), grad_bias)


# ----------------------------------------------------------------------------------------------
# Transposed convolution: convolution's adjoint, run with the same three kernels
# ----------------------------------------------------------------------------------------------

def _conv_transpose(op, rank, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    problem = _Problem(op, input, weight, bias, stride, padding, dilation, groups, rank,
                       transposed=True, output_padding=output_padding)
    out = problem.empty(problem.out_channels, problem.out_spatial)
    # conv_transpose(x, w) + b = K_in(x, w) + b: the input-gradient kernel of the adjoint conv.
    kernels.conv_input_grad(problem.input3, problem.weight2, problem.bias, problem.gather,
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

    The adjoint of an adjoint is the original map, so the roles swap (DESIGN.md):

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
    threads = get_num_threads()
    grad_input = problem.empty(problem.in_channels, problem.in_spatial)
    kernels.conv_forward(problem.grad_output3, problem.weight2, problem.bias, problem.gather,
                         problem.groups, grad_input, threads)
    grad_weight = np.empty_like(problem.weight2)
    kernels.conv_weight_grad(problem.grad_output3, problem.input3, problem.gather,
                             problem.groups, grad_weight, threads)
    grad_bias = np.empty(problem.out_channels, dtype=problem.dtype)
    kernels.bias_grad(problem.grad_output3, grad_bias, threads)
    return ConvGradients(problem.unflat(grad_input, problem.in_channels, problem.in_spatial),
                     grad_weight.reshape(problem.weight_shape), grad_bias)
