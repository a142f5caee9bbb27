"""Argument checks for graphm.functional: one home for every check the NumPy-level ops share.

Errors are for people: each check names the function, the argument, its value and the shapes
involved, and says what would be valid. graphm's kernels drop the GIL and trust what they are
given, so everything a kernel relies on is checked here first, in Python.

Two families of messages live side by side: the convolution checks (``op: ... (context)``, with
the shapes of every array in ``context``) and the checks of the other ops (``fname(): ...``).
"""
import math
import numbers
import operator
import warnings

import numpy as np

from graphm import spec

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------------------------
# Arrays, dtypes and integer parameters
# ----------------------------------------------------------------------------------------------

def check_float_array(fname, argname, value):
    """Return ``value`` if it is a float32/float64 NumPy array, else raise TypeError."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{fname}(): argument '{argname}' must be a NumPy array or a graphm "
                        f"Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fname}(): argument '{argname}' must have dtype float32 or float64, "
                        f"got {value.dtype} (convert with .astype(np.float32))")
    return value


def check_same_dtype(fname, **arrays):
    """Raise TypeError when the given float arrays do not share one dtype (no silent promotion)."""
    named = [(name, a) for name, a in arrays.items() if a is not None]
    dtypes = {a.dtype for _, a in named}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {a.dtype}" for name, a in named)
        raise TypeError(f"{fname}(): arguments must share one dtype, got {listing}")



def int_tuple(fname, argname, value, dims, minimum):
    """Expand an int (or a 1-tuple) to a ``dims``-tuple of ints, each at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value,
                                                             (numbers.Integral, tuple, list)):
        raise TypeError(f"{fname}(): {argname} must be an int or a tuple of {dims} ints, "
                        f"got {value!r}")
    if isinstance(value, numbers.Integral):
        values = (int(value),) * dims
    else:
        if len(value) == 1:
            value = tuple(value) * dims
        if len(value) != dims or not all(isinstance(v, numbers.Integral)
                                         and not isinstance(v, (bool, np.bool_)) for v in value):
            raise ValueError(f"{fname}(): {argname} must be an int or a tuple of {dims} ints, "
                             f"got {value!r}")
        values = tuple(int(v) for v in value)
    if any(v < minimum for v in values):
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{fname}(): {argname} must be {bound}, got {value!r}")
    return values


def normalize_dim(fname, dim, ndim):
    """Map a possibly negative axis to ``0 <= dim < max(ndim, 1)`` (a 0-d array has axis 0)."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{fname}(): dim must be an int, got {dim!r}")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(f"{fname}(): dim {dim} is out of range for an array of {ndim} "
                         f"dimension(s) (expected to be in range [{-size}, {size - 1}])")
    return int(dim) % size


def legacy_reduction(fname, size_average, reduce, reduction):
    """Translate PyTorch's deprecated ``size_average``/``reduce`` flags to ``reduction``."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "mean" if (reduce and size_average) else ("sum" if reduce else "none")
        warnings.warn(f"{fname}(): size_average and reduce are deprecated, use "
                      f"reduction='{reduction}' instead", DeprecationWarning, stacklevel=3)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{fname}(): reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction



def softmax_dim(fname, ndim, dim):
    """PyTorch's choice of axis when ``dim`` is None (deprecated there too): 0 for 0-, 1-, 3-d."""
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {fname} has been deprecated. Change the "
                      "call to include dim=X as an argument.", UserWarning, stacklevel=3)
        return 0 if ndim in (0, 1, 3) else 1
    return normalize_dim(fname, dim, ndim)


# ----------------------------------------------------------------------------------------------
# Convolution: arrays, shapes, channels, groups, stride, padding, dilation
# ----------------------------------------------------------------------------------------------


def float_array(op, name, value, shapes):
    """``value`` as a float32/float64 ndarray, or a TypeError naming ``name``."""
    if value is None:
        raise TypeError(f"{op}: {name} must be an array, got None ({shapes})")
    array = np.asarray(value)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be a float32 or float64 array, got dtype "
                        f"{array.dtype} with shape {array.shape} ({shapes}); convert it with "
                        f"{name}.astype(np.float32)")
    return array


def check_arrays(op, input, weight, bias, grad_output=None, *, grad_output_needed=False):
    """Turn the array arguments into arrays of one float dtype; returns them in order."""
    shapes = ", ".join(f"{n} shape {np.shape(v)}" for n, v in
                       (("input", input), ("weight", weight), ("bias", bias),
                        ("grad_output", grad_output)) if v is not None)
    arrays = {"input": float_array(op, "input", input, shapes),
              "weight": float_array(op, "weight", weight, shapes)}
    if bias is not None:
        arrays["bias"] = float_array(op, "bias", bias, shapes)
    if grad_output_needed:
        arrays["grad_output"] = float_array(op, "grad_output", grad_output, shapes)
    dtype = arrays["input"].dtype
    for name, array in arrays.items():
        if array.dtype != dtype:
            raise TypeError(f"{op}: input is {dtype} but {name} is {array.dtype} ({shapes}); "
                            f"all arrays must share one dtype: convert with "
                            f"{name}.astype(np.{dtype})")
    return arrays["input"], arrays["weight"], arrays.get("bias"), arrays.get("grad_output")


def as_int(op, name, value, context, per_axis=True):
    """A Python int from an int-like value (bools and floats are rejected, as in PyTorch)."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(type(value), "__index__"):
        wanted = "an int or a tuple of ints" if per_axis else "an int"
        raise TypeError(f"{op}: {name} must be {wanted}, got {value!r} "
                        f"of type {type(value).__name__} ({context})")
    return operator.index(value)


LARGEST_PARAMETER = 2 ** 31 - 1  # stride, padding, dilation: the kernels index with these


def per_axis(op, name, value, rank, context):
    """Expand an int or a length-``rank`` sequence of ints to a tuple of ``rank`` ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(f"{op}: {name}={tuple(value)!r} has {len(value)} entries but the "
                             f"convolution has {rank} spatial axes ({context}); give one int or "
                             f"{rank} ints")
        values = tuple(as_int(op, name, v, context) for v in value)
    elif isinstance(value, np.ndarray) and value.ndim == 1:
        return per_axis(op, name, value.tolist(), rank, context)
    else:
        values = (as_int(op, name, value, context),) * rank
    if any(abs(v) > LARGEST_PARAMETER for v in values):
        raise ValueError(f"{op}: {name}={values} is too large; each value must be at most "
                         f"2**31 - 1 ({context})")
    return values


def positive(op, name, values, context):
    if any(v <= 0 for v in values):
        raise ValueError(f"{op}: {name} must be positive on every axis, got {name}={values} "
                         f"({context})")
    return values


def check_shapes(op, input, weight, bias, rank, transposed, groups):
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
    groups = as_int(op, "groups", groups, context, per_axis=False)
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


def _is_pair(value):
    return isinstance(value, (tuple, list)) and len(value) == 2


def conv_padding(op, padding, kernel, stride, dilation, context):
    """Per-axis (low, high) zero padding: ints, 'valid' or 'same' (as PyTorch), or one
    ``(low, high)`` pair per axis (as JAX's ``lax.conv_general_dilated``)."""
    rank = len(kernel)
    if isinstance(padding, (tuple, list)) and padding and all(_is_pair(p) for p in padding):
        if len(padding) != rank:
            raise ValueError(f"{op}: padding={tuple(map(tuple, padding))!r} has {len(padding)} "
                             f"(low, high) pairs but the convolution has {rank} spatial axes "
                             f"({context})")
        low = per_axis(op, "padding", [p[0] for p in padding], rank, context)
        high = per_axis(op, "padding", [p[1] for p in padding], rank, context)
        if any(p < 0 for p in low + high):
            raise ValueError(f"{op}: padding must be >= 0 on every axis, got padding="
                             f"{tuple(zip(low, high))} ({context})")
        return low, high
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
                         f"'valid', 'same', an int, a tuple of {rank} ints or {rank} "
                         f"(low, high) pairs ({context})")
    pad = per_axis(op, "padding", padding, rank, context)
    if any(p < 0 for p in pad):
        raise ValueError(f"{op}: padding must be >= 0 on every axis, got padding={pad} "
                         f"({context})")
    return pad, pad


def check_output_extent(op, out_spatial, in_spatial, kernel, context):
    if any(o < 1 for o in out_spatial):
        raise ValueError(f"{op}: the output would have spatial shape {tuple(out_spatial)} "
                         f"(from input spatial shape {tuple(in_spatial)} and kernel "
                         f"{tuple(kernel)}); every extent must be >= 1: the input is too small "
                         f"for this kernel, dilation and padding ({context})")


def check_positions(op, what, spatial, context):
    """The kernels address one channel with 32-bit offsets: fewer than 2**31 positions each."""
    if math.prod(spatial) >= 2 ** 31:
        raise ValueError(f"{op}: the {what} would have spatial shape {tuple(spatial)}, "
                         f"{math.prod(spatial)} positions per channel; graphm supports fewer "
                         f"than 2**31 (check stride, padding, dilation and output_padding) "
                         f"({context})")
