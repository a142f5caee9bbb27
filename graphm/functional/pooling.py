"""Max and average pooling over 1, 2 or 3 spatial axes, with PyTorch's names and semantics.

The pooling adjoints ``max_pool_backward`` and ``avg_pool_backward`` are the transposes of the
window gathers written here and belong next to them; ``pool_geometry`` (argument checks and
output sizes) is also the pools' shape rule in :mod:`graphm.ops.pool`.

Pooling is written without a Python loop over pixels. A pooling window of size ``k`` (per axis)
visits ``prod(k)`` *offsets*; for each offset, the values it picks up from every window at once
form one strided slice of the (padded) input. So a pool is a loop over the few kernel offsets, each
step a whole-array NumPy operation::

    out[n, c, i, j] = max over (a, b) of  x_pad[n, c, i*s + a*dil, j*s + b*dil]
                    = max over (a, b) of  x_pad[:, :, a*dil : ... : s, b*dil : ... : s][n, c, i, j]
"""
import itertools
import math
import numbers
from collections import namedtuple

import numpy as np

from graphm.functional._checks import LARGEST_PARAMETER, check_bool, check_float_array, int_tuple
from graphm.functional._dispatch import tensor_aware

__all__ = ['max_pool1d', 'max_pool2d', 'max_pool3d', 'avg_pool1d', 'avg_pool2d', 'avg_pool3d', 'PoolGeometry', 'pool_geometry', 'max_pool_with_indices', 'max_pool_backward', 'max_pool_gather', 'avg_pool_geometry', 'avg_pool', 'avg_pool_backward', 'avg_pool_divisor']


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------

PoolGeometry = namedtuple("PoolGeometry",
                          "kernel_size stride padding dilation ceil_mode out_spatial batched")
PoolGeometry.__doc__ = """Validated pooling parameters (one tuple entry per spatial axis) and the
output's spatial size; ``batched`` says whether the input had a leading batch axis."""


def _pool_out_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's ``pooling_output_shape``: the floor (or ceil) formula of a convolution, and in
    ceil mode the last window must start inside the input or its left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_geometry(fname, input_shape, dims, kernel_size, stride=None, padding=0, dilation=1,
                  ceil_mode=False):
    """Check a pooling call's arguments against the input shape; return a ``PoolGeometry``.

    Used by the pools below and, at graph-build time, by ``graphm.ops.pool``'s shape rule, so a
    bad call is reported the same way in every mode.
    """
    input_shape = tuple(input_shape)
    ceil_mode = check_bool(fname, "ceil_mode", ceil_mode)
    if len(input_shape) not in (dims + 1, dims + 2):
        layout = ", ".join("DHW"[3 - dims:])
        raise ValueError(f"{fname}(): expected a {dims + 1}-D (C, {layout}) or {dims + 2}-D "
                         f"(N, C, {layout}) input, got shape {input_shape}")
    if any(s == 0 for s in input_shape[-dims - 1:]):
        raise ValueError(f"{fname}(): channel and spatial sizes must be non-zero (only the "
                         f"batch may be empty), got input shape {input_shape}")
    kernel = int_tuple(fname, "kernel_size", kernel_size, dims, 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = int_tuple(fname, "stride", stride, dims, 1)
    padding = int_tuple(fname, "padding", padding, dims, 0)
    dilation = int_tuple(fname, "dilation", dilation, dims, 1)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{fname}(): padding must be at most half of kernel_size, got "
                         f"padding={padding} with kernel_size={kernel}")
    spatial = input_shape[-dims:]
    out = tuple(_pool_out_size(*args, bool(ceil_mode))
                for args in zip(spatial, kernel, stride, padding, dilation))
    if any(o < 1 for o in out):
        raise ValueError(f"{fname}(): output size is too small: input spatial size {spatial} "
                         f"with kernel_size={kernel}, stride={stride}, padding={padding}, "
                         f"dilation={dilation} gives {out}")
    return PoolGeometry(kernel, stride, padding, dilation, bool(ceil_mode), out,
                        len(input_shape) == dims + 2)


def _axis_reach(size, k, s, p, d, o):
    """On one axis, the kernel offsets a pool needs to visit and the padding they read.

    Offset ``a`` reads input coordinate ``i·s − p + a·d`` for the windows ``i < o``. Offsets
    below ``a_low`` or above ``a_high`` read padding in every window, and padding never wins a
    max (nor adds to a sum), so they are skipped: the work is bounded by the input and output
    extents, not by the padding or the kernel. Returns ``(a_low, a_high, pad_low, pad_high)``,
    the offsets visited (inclusive) and how much padding those offsets read on each side.
    """
    a_low = max(0, -((p - (o - 1) * s) // -d))     # ceil((p - (o-1)·s) / d): last window reaches 0
    a_high = min(k - 1, (size - 1 + p) // d)       # the first window still reaches the input
    a_high = max(a_high, a_low)
    pad_low = max(0, p - a_low * d)
    pad_high = max(0, (o - 1) * s - p + a_high * d - (size - 1))
    return a_low, a_high, pad_low, pad_high


def _reach(spatial, geometry):
    return [_axis_reach(size, *args, o) for size, *args, o in
            zip(spatial, *geometry[:4], geometry.out_spatial)]


def _padded(x, geometry, fill):
    """Pad the spatial axes of a batched array with ``fill``, on each side by as much as the
    visited kernel offsets read (see ``_axis_reach``; ceil mode may reach past ``padding``)."""
    dims = len(geometry.kernel_size)
    widths = [(0, 0)] * (x.ndim - dims) + [(low, high) for _, _, low, high in
                                           _reach(x.shape[-dims:], geometry)]
    if all(w == (0, 0) for w in widths):
        return x
    return np.pad(x, widths, constant_values=fill)


def _offset_slices(geometry, spatial):
    """Yield, for each kernel offset that can touch the input (row-major, as PyTorch scans a
    window), the tuple of slices that picks that offset's value out of every window of the
    input padded by ``_padded`` at once."""
    reach = _reach(spatial, geometry)
    ranges = [range(a_low, a_high + 1) for a_low, a_high, _, _ in reach]
    for offset in itertools.product(*ranges):
        yield offset, (Ellipsis,) + tuple(
            slice(start, start + (o - 1) * s + 1, s)
            for start, s, o in zip((a * d - p + low for a, d, p, (_, _, low, _) in
                                    zip(offset, geometry.dilation, geometry.padding, reach)),
                                   geometry.stride, geometry.out_spatial))


def _inside_input(offset, spatial, geometry):
    """Boolean mask over output positions: does this kernel offset land inside the input (not
    in the padding)? None when it always does, the common case."""
    mask = np.ones((), bool)
    for a, size, s, p, d, o in zip(offset, spatial, geometry.stride, geometry.padding,
                                   geometry.dilation, geometry.out_spatial):
        coordinate = np.arange(o) * s - p + a * d
        mask = np.logical_and.outer(mask, (coordinate >= 0) & (coordinate < size))
    return None if mask.all() else mask


def _windows_with_input(spatial, geometry):
    """Boolean mask over output positions: does the window read at least one input element?
    None when every window does (always, unless a dilation skips over the whole input)."""
    mask = np.ones((), bool)
    for size, k, s, p, d, o in zip(spatial, *geometry[:4], geometry.out_spatial):
        start = np.arange(o) * s - p
        first = np.where(start < 0, start - d * (start // d), start)  # first tap at or past 0
        mask = np.logical_and.outer(mask, (first < size) & (first <= start + d * (k - 1)))
    return None if mask.all() else mask


def _as_batched(x, geometry):
    return x if geometry.batched else x[None]


def max_pool_with_indices(fname, input, dims, kernel_size, stride=None, padding=0, dilation=1,
                          ceil_mode=False):
    """Max pooling returning ``(output, indices, geometry)``.

    ``indices`` are PyTorch's: for every output element, the flat index into the (unpadded)
    spatial extent of the input of the element chosen. On ties the first in window order wins,
    and a NaN always wins (the last NaN if several), exactly as PyTorch's CPU kernel.
    """
    check_float_array(fname, "input", input)
    geometry = pool_geometry(fname, input.shape, dims, kernel_size, stride, padding, dilation,
                             ceil_mode)
    if input.size == 0:      # an empty batch: no window, and nothing of the output's size built
        shape = input.shape[:-dims] + tuple(geometry.out_spatial)
        return np.empty(shape, input.dtype), np.empty(shape, np.int64), geometry
    x = _padded(_as_batched(input, geometry), geometry, -np.inf)
    spatial = input.shape[-dims:]
    axis_stride = [math.prod(spatial[axis + 1:]) for axis in range(dims)]   # row-major
    has_nan = bool(np.isnan(input).any())     # one pass; NaN's special rule is needed only then
    kernel_count = math.prod(a_high - a_low + 1 for a_low, a_high, _, _ in
                             _reach(spatial, geometry))         # the offsets visited
    displacement = np.empty(kernel_count, np.int64)  # flat input offset of each kernel offset
    best = best_offset = None
    seen = np.zeros(geometry.out_spatial, bool)      # has this window met a real element yet?
    for number, (offset, window) in enumerate(_offset_slices(geometry, spatial)):
        displacement[number] = sum(a * d * st for a, d, st in
                                   zip(offset, geometry.dilation, axis_stride))
        value = x[window]
        inside = _inside_input(offset, spatial, geometry)   # None: every position is real
        if best is None:
            best = value.copy()
            best_offset = np.zeros(value.shape, np.int8 if kernel_count < 128 else np.int32)
        else:
            # ">" keeps the first maximum on ties; a NaN always takes over, as in PyTorch.
            better = np.greater(value, best)
            if has_nan:
                better |= np.isnan(value)
            first = ~seen if inside is None else (inside & ~seen)
            if first.any():                        # a window's first real element wins outright
                better |= first
            if inside is not None:                 # padding never wins
                better &= inside
            # The offsets are visited in increasing order, so "take `number` where better" is
            # a maximum (cheaper than a masked copy); so is the running value, NaN included.
            np.maximum(best_offset, better * best_offset.dtype.type(number), out=best_offset)
            np.maximum(best, value, out=best)
        seen |= True if inside is None else inside
    # The winner's flat index in the unpadded input: where its window starts, plus the
    # displacement of the winning kernel offset.
    window_start = np.zeros((), np.int64)
    for o, s, p, st in zip(geometry.out_spatial, geometry.stride, geometry.padding, axis_stride):
        window_start = np.add.outer(window_start, (np.arange(o) * s - p) * st)
    flat = displacement[best_offset]
    flat += window_start
    if not seen.all():
        # A dilated window can fall wholly into the padding: its maximum is -inf, and its index
        # is PyTorch's, the window's first dilated position at or past 0 on each axis.
        first_start = np.zeros((), np.int64)
        for o, s, p, d, st in zip(geometry.out_spatial, geometry.stride, geometry.padding,
                                  geometry.dilation, axis_stride):
            start = np.arange(o) * s - p
            start = np.where(start < 0, start - d * (start // d), start)   # start + d·ceil(-start/d)
            first_start = np.add.outer(first_start, start * st)
        flat = np.where(seen, flat, first_start)
    if not geometry.batched:
        best, flat = best[0], flat[0]
    return np.ascontiguousarray(best), flat, geometry


def max_pool_backward(grad_output, indices, input_shape, geometry):
    """Adjoint of max pooling: send each output gradient to the input element that won.

    Where windows overlap, one input element can win several windows; its gradient is then the
    sum, added in a fixed order (``np.bincount``), so the result is deterministic. Windows that
    do not overlap (stride >= window extent, the usual 2x2 pool) have distinct winners, and a
    plain scatter does.

    Shapes: ``grad_output`` and ``indices`` (N, C, *out) or (C, *out); result ``input_shape``.
    """
    dims = len(geometry.kernel_size)
    spatial = math.prod(input_shape[-dims:])
    planes = math.prod(input_shape[:-dims])                  # N * C (or C) independent images
    if planes == 0:          # an empty batch: nothing to send back
        return np.zeros(input_shape, grad_output.dtype)
    real = _windows_with_input(input_shape[-dims:], geometry)
    if real is not None:     # a window wholly in the padding read no input: it sends nothing
        grad_output = np.where(real, grad_output, grad_output.dtype.type(0))
        indices = np.where(real, indices, 0)
    targets = indices.reshape(planes, -1) + (np.arange(planes) * spatial)[:, None]
    overlapping = any(s < d * (k - 1) + 1 for k, s, d in
                      zip(geometry.kernel_size, geometry.stride, geometry.dilation))
    if overlapping:
        grad = np.bincount(targets.ravel(), weights=grad_output.ravel(),
                           minlength=planes * spatial).astype(grad_output.dtype, copy=False)
    else:
        grad = np.zeros(planes * spatial, grad_output.dtype)
        grad[targets.ravel()] = grad_output.ravel()
    return grad.reshape(input_shape)


def max_pool_gather(values, indices, dims):
    """``values`` (shaped like the pool's input) read at the winning ``indices``: the JVP of a
    max pool, which is linear in the tangent once the winners are known."""
    planes = math.prod(indices.shape[:-dims]) if indices.ndim > dims else 1
    if planes == 0:
        return np.zeros(indices.shape, values.dtype)
    flat = values.reshape(planes, -1)
    return np.take_along_axis(flat, indices.reshape(planes, -1), axis=1).reshape(indices.shape)


def _window_sum(x, geometry):
    """Sum of every window of a batched array, zero padding included: a loop over offsets."""
    spatial = x.shape[-len(geometry.kernel_size):]
    x = _padded(x, geometry, 0)
    total = None
    for _, window in _offset_slices(geometry, spatial):
        if total is None:
            total = x[window].copy()
        else:
            total += x[window]
    return total


def _window_sum_transpose(grad, input_shape, geometry):
    """Adjoint of ``_window_sum``: every window adds its gradient back onto the positions it
    read; then the padding is cropped off. Shapes: grad (N, C, *out) -> (N, C, *in)."""
    dims = len(geometry.kernel_size)
    spatial = tuple(input_shape[-dims:])
    padded_shape = list(input_shape)
    crop = [slice(None)] * (len(input_shape) - dims)
    for axis, (size, (_, _, low, high)) in enumerate(zip(spatial, _reach(spatial, geometry))):
        padded_shape[len(input_shape) - dims + axis] = low + size + high
        crop.append(slice(low, low + size))
    padded = np.zeros(padded_shape, grad.dtype)
    for _, window in _offset_slices(geometry, spatial):
        padded[window] += grad
    return np.ascontiguousarray(padded[tuple(crop)])


def avg_pool_divisor(input_shape, geometry, count_include_pad, divisor_override, dtype):
    """The number each window sum is divided by, shaped to broadcast against the output.

    As PyTorch: a window is clipped to the padded input; with ``count_include_pad`` the padding
    inside it counts, otherwise only real input elements do; ``divisor_override`` replaces both.
    """
    dims = len(geometry.kernel_size)
    if divisor_override is not None:
        return dtype.type(divisor_override)
    divisor = np.ones((), np.int64)
    for size, k, s, p, o in zip(input_shape[-dims:], geometry.kernel_size, geometry.stride,
                                geometry.padding, geometry.out_spatial):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            count = end - start
        else:
            count = np.minimum(end, size) - np.maximum(start, 0)
        divisor = np.multiply.outer(divisor, np.maximum(count, 1))
    return divisor.astype(dtype)


def avg_pool_geometry(fname, input_shape, dims, kernel_size, stride, padding, ceil_mode,
                      divisor_override):
    """``pool_geometry`` for average pooling (no dilation) plus the check on divisor_override."""
    if divisor_override is not None and (isinstance(divisor_override, (bool, np.bool_)) or
                                         not isinstance(divisor_override, numbers.Integral) or
                                         divisor_override == 0
                                         or abs(divisor_override) > LARGEST_PARAMETER):
        raise ValueError(f"{fname}(): divisor_override must be a non-zero int of magnitude at "
                         f"most 2**31 - 1, or None, got {divisor_override!r}")
    return pool_geometry(fname, input_shape, dims, kernel_size, stride, padding, 1, ceil_mode)


def avg_pool(fname, input, dims, kernel_size, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True, divisor_override=None):
    """Average pooling of any rank ``dims``: window sums divided by ``avg_pool_divisor``."""
    check_float_array(fname, "input", input)
    check_bool(fname, "count_include_pad", count_include_pad)
    geometry = avg_pool_geometry(fname, input.shape, dims, kernel_size, stride, padding,
                                 ceil_mode, divisor_override)
    if input.size == 0:      # an empty batch: no window, and nothing of the output's size built
        return np.empty(input.shape[:-dims] + tuple(geometry.out_spatial), input.dtype)
    total = _window_sum(_as_batched(input, geometry), geometry)
    total /= avg_pool_divisor(input.shape, geometry, count_include_pad, divisor_override,
                              input.dtype)
    return total if geometry.batched else total[0]


def avg_pool_backward(grad_output, input_shape, geometry, count_include_pad, divisor_override):
    """Adjoint of average pooling (it is linear): divide by the divisor, then spread each
    window's share back over the window."""
    if grad_output.size == 0:     # an empty batch: nothing to spread
        return np.zeros(input_shape, grad_output.dtype)
    grad = grad_output / avg_pool_divisor(input_shape, geometry, count_include_pad,
                                          divisor_override, grad_output.dtype)
    batched_shape = tuple(input_shape) if geometry.batched else (1,) + tuple(input_shape)
    out = _window_sum_transpose(_as_batched(grad, geometry), batched_shape, geometry)
    return out if geometry.batched else out[0]


_MAX_POOL_DOC = r"""{dims}-D max pooling, as PyTorch's ``max_pool{dims}d``.

    .. math:: y[n, c, \mathbf{{i}}] = \max_{{\mathbf{{a}} < k}}
              x[n, c, \mathbf{{i}} \cdot s - p + \mathbf{{a}} \cdot d]

    (positions in the padding are :math:`-\infty`: they never win).

    Parameters
    ----------
    input : ndarray
        ({layout}) or (N, {layout}), float32 or float64.
    kernel_size : int or tuple of {dims} ints
    stride : int or tuple, default ``kernel_size``
    padding : int or tuple, default 0
        At most half the kernel size, as PyTorch requires.
    dilation : int or tuple, default 1
    ceil_mode : bool, default False
        Round the output size up instead of down (a last, partial window).
    return_indices : bool, default False
        Also return, per output element, the flat index of the chosen element within the
        input's spatial extent (ties: the first in the window wins).

    Returns
    -------
    ndarray, or (ndarray, ndarray of int64) when ``return_indices``
    """

_AVG_POOL_DOC = r"""{dims}-D average pooling, as PyTorch's ``avg_pool{dims}d``.

    .. math:: y[n, c, \mathbf{{i}}] = \frac{{1}}{{D_{{\mathbf{{i}}}}}} \sum_{{\mathbf{{a}} < k}}
              x[n, c, \mathbf{{i}} \cdot s - p + \mathbf{{a}}]

    where padding contributes zeros and the divisor :math:`D` counts the window's positions
    (``count_include_pad=True``) or only those inside the input; ``divisor_override`` fixes it.

    Parameters
    ----------
    input : ndarray
        ({layout}) or (N, {layout}), float32 or float64.
    kernel_size : int or tuple of {dims} ints
    stride : int or tuple, default ``kernel_size``
    padding : int or tuple, default 0
    ceil_mode : bool, default False
    count_include_pad : bool, default True
{override_line}
    Returns
    -------
    ndarray
    """


@tensor_aware
def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    check_bool("max_pool1d", "return_indices", return_indices)
    out, indices, _ = max_pool_with_indices("max_pool1d", input, 1, kernel_size, stride,
                                            padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out


@tensor_aware
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    check_bool("max_pool2d", "return_indices", return_indices)
    out, indices, _ = max_pool_with_indices("max_pool2d", input, 2, kernel_size, stride,
                                            padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out


@tensor_aware
def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    check_bool("max_pool3d", "return_indices", return_indices)
    out, indices, _ = max_pool_with_indices("max_pool3d", input, 3, kernel_size, stride,
                                            padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out


@tensor_aware
def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    return avg_pool("avg_pool1d", input, 1, kernel_size, stride, padding, ceil_mode,
                    count_include_pad)


@tensor_aware
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return avg_pool("avg_pool2d", input, 2, kernel_size, stride, padding, ceil_mode,
                    count_include_pad, divisor_override)


@tensor_aware
def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return avg_pool("avg_pool3d", input, 3, kernel_size, stride, padding, ceil_mode,
                    count_include_pad, divisor_override)


for _dims, _layout in ((1, "C, L"), (2, "C, H, W"), (3, "C, D, H, W")):
    globals()[f"max_pool{_dims}d"].__doc__ = _MAX_POOL_DOC.format(dims=_dims, layout=_layout)
    globals()[f"avg_pool{_dims}d"].__doc__ = _AVG_POOL_DOC.format(
        dims=_dims, layout=_layout,
        override_line="" if _dims == 1 else "    divisor_override : int, optional\n")
del _dims, _layout
