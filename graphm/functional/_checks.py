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
import os
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


class ArgumentRangeError(ValueError, IndexError):
    """An index argument out of range (a ``dim``, a class label): a ValueError, as every bad
    argument to graphm is, and an IndexError, as PyTorch raises there (NumPy's ``AxisError``
    is both for the same reason), so that ``except IndexError`` ported from PyTorch still works.
    """


def check_bool(fname, argname, value):
    """Return ``value`` as a bool if it is one (NumPy's included), else raise TypeError.

    PyTorch's rule for flags such as ``ceil_mode``: ``ceil_mode=2`` is refused, not read as true.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fname}(): argument '{argname}' must be bool, got {value!r} "
                        f"({type(value).__name__})")
    return bool(value)


def check_real(fname, argname, value):
    """Return ``value`` as a Python float if it is a real number (not a bool), else TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fname}(): argument '{argname}' must be a real number, got "
                        f"{value!r} ({type(value).__name__})")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{fname}(): argument '{argname}'={value} does not fit in a float") \
            from None


def check_same_dtype(fname, **arrays):
    """Raise TypeError when the given float arrays do not share one dtype (no silent promotion)."""
    named = [(name, a) for name, a in arrays.items() if a is not None]
    dtypes = {a.dtype for _, a in named}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {a.dtype}" for name, a in named)
        raise TypeError(f"{fname}(): arguments must share one dtype, got {listing}")



LARGEST_PARAMETER = 2 ** 31 - 1  # stride, padding, dilation, kernel: the kernels index with these


def _is_int(value):
    """An integer that is not a bool (``stride=True`` is surely a mistake), NumPy's included."""
    return (isinstance(value, (numbers.Integral, np.integer))
            and not isinstance(value, (bool, np.bool_)))


def axis_entries(value, dims):
    """The raw per-axis entries of a stride/padding/dilation/kernel argument: PyTorch's rule.

    One rule for convolution and pooling alike, as in PyTorch: an int applies to every axis, a
    tuple or list gives one entry per axis, and a **1-tuple is broadcast** to every axis
    (``stride=(2,)`` on a 2-d op is ``(2, 2)``). A 0-d or 1-d NumPy integer array counts as an
    int or a list. Returns a tuple (its length may still be wrong, the caller says so), or
    None when ``value`` is none of these (the caller raises a TypeError naming it).
    """
    if isinstance(value, np.ndarray):
        if value.ndim > 1 or value.dtype.kind not in "iu":
            return None
        value = value.tolist()
    if _is_int(value) or (hasattr(type(value), "__index__")
                          and not isinstance(value, (bool, np.bool_, np.ndarray))):
        return (value,) * dims
    if isinstance(value, (tuple, list)):
        if len(value) == 1 and dims > 1:
            return tuple(value) * dims
        return tuple(value)
    return None


def int_tuple(fname, argname, value, dims, minimum):
    """Expand an int (or a 1-tuple, as PyTorch) to a ``dims``-tuple of ints, each at least
    ``minimum`` and at most :data:`LARGEST_PARAMETER`."""
    entries = axis_entries(value, dims)
    if entries is None or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fname}(): {argname} must be an int or a tuple of {dims} ints, "
                        f"got {value!r}")
    if len(entries) != dims or not all(_is_int(v) for v in entries):
        raise ValueError(f"{fname}(): {argname} must be an int or a tuple of {dims} ints, "
                         f"got {value!r}")
    values = tuple(int(v) for v in entries)
    if any(v < minimum for v in values):
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{fname}(): {argname} must be {bound}, got {value!r}")
    if any(v > LARGEST_PARAMETER for v in values):
        raise ValueError(f"{fname}(): {argname}={values} is too large; each value must be at "
                         f"most 2**31 - 1")
    return values


def normalize_dim(fname, dim, ndim):
    """Map a possibly negative axis to ``0 <= dim < max(ndim, 1)`` (a 0-d array has axis 0)."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{fname}(): dim must be an int, got {dim!r}")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise ArgumentRangeError(f"{fname}(): dim {dim} is out of range for an array of {ndim} "
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
    if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
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
    try:
        return operator.index(value)
    except TypeError:              # a NumPy array of ndim >= 1 has __index__ but refuses it
        raise TypeError(f"{op}: {name} must be an int, got an array of shape "
                        f"{np.shape(value)} ({context})") from None


def per_axis(op, name, value, rank, context):
    """Expand an int or a sequence of ints (a 1-tuple broadcasts, as in PyTorch; see
    :func:`axis_entries`) to a tuple of ``rank`` ints."""
    entries = axis_entries(value, rank)
    if entries is None:
        shown = (f"an array of shape {value.shape} and dtype {value.dtype}"
                 if isinstance(value, np.ndarray) else repr(value))
        raise TypeError(f"{op}: {name} must be an int or a tuple of {rank} ints, got {shown} "
                        f"of type {type(value).__name__} ({context})")
    if len(entries) != rank:
        raise ValueError(f"{op}: {name}={tuple(entries)!r} has {len(entries)} entries but the "
                         f"convolution has {rank} spatial axes ({context}); give one int or "
                         f"{rank} ints")
    values = tuple(as_int(op, name, v, context) for v in entries)
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
    in_spatial = input.shape[-rank:]
    if 0 in in_spatial:
        # PyTorch refuses it too ("only zero batch or zero channel inputs are supported"):
        # with padding the output would be non-empty yet read nothing but padding.
        raise ValueError(f"{op}: input has a spatial extent of 0, input spatial shape "
                         f"{tuple(in_spatial)}; every spatial extent must be >= 1 (only the "
                         f"batch may be empty) ({context})")
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


# ----------------------------------------------------------------------------------------------
# Sizes: shapes given as numbers, and a bound on what graphm allocates
# ----------------------------------------------------------------------------------------------

DEFAULT_MAX_ELEMENTS = 2 ** 28


def _max_elements_from_environment():
    text = os.environ.get("GRAPHM_MAX_ELEMENTS", "").strip()
    if not text:
        return DEFAULT_MAX_ELEMENTS
    try:
        value = int(text, 0)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"GRAPHM_MAX_ELEMENTS must be a positive integer, got {text!r}")
    return value


_max_elements = _max_elements_from_environment()


def set_max_elements(n):
    """Set the largest number of elements of any array graphm allocates for a result.

    graphm checks the size of every output, gradient and parameter it is asked for *before*
    allocating it: a request past the bound (a typo such as ``nn.Linear(3, 2**31)``, or a
    dilation that asks for 96 GiB) raises a ValueError naming the argument, instead of a
    MemoryError, an OverflowError or a machine that swaps for minutes.

    Parameters
    ----------
    n : int
        A positive int. The default is ``2**28`` elements (1 GiB of float32, 2 GiB of float64)
        per array, or the value of the environment variable ``GRAPHM_MAX_ELEMENTS`` when graphm
        is imported. Raise it to work with larger arrays; it bounds one array, not the total.

    Returns
    -------
    int
        The previous bound (so that it can be restored).
    """
    global _max_elements
    if not _is_int(n) and not (hasattr(type(n), "__index__") and not isinstance(n, bool)):
        raise TypeError(f"set_max_elements: n must be an int, got {n!r} of type "
                        f"{type(n).__name__}")
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"set_max_elements: n must be >= 1, got {n}")
    previous, _max_elements = _max_elements, n
    return previous


def get_max_elements():
    """The largest number of elements graphm allocates for one array (see
    :func:`set_max_elements`)."""
    return _max_elements


def check_size(fname, what, shape, hint=""):
    """Raise ValueError when an array of ``shape`` would be past :func:`get_max_elements`.

    ``what`` names the array (``"output"``, ``"weight"``, ...), ``hint`` the arguments that set
    its size; both are in the message, with the shape and the bound.
    """
    count = math.prod(shape)
    if count > _max_elements:
        _too_many(f"{fname}: the {what} would have shape {tuple(shape)}, {count} elements",
                  hint)
    return shape


def _too_many(subject, hint):
    raise ValueError(f"{subject}, more than graphm's bound of "
                     f"{_max_elements} elements per array{' (' + hint + ')' if hint else ''}; "
                     f"if that is meant, raise the bound with graphm.set_max_elements(n) or the "
                     f"environment variable GRAPHM_MAX_ELEMENTS")


def check_shape(fname, name, shape, *, limit=True):
    """A shape given as numbers: a tuple of ints >= 0 (an int is a 1-tuple), or a ValueError
    or TypeError naming ``name`` and the offending entry.

    With ``limit`` the number of elements must also be within :func:`get_max_elements`.
    """
    if _is_int(shape):
        shape = (shape,)
    if isinstance(shape, np.ndarray) and shape.ndim == 1 and shape.dtype.kind in "iu":
        shape = shape.tolist()
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{fname}: {name} must be a tuple of ints, got {shape!r} of type "
                        f"{type(shape).__name__}")
    for axis, n in enumerate(shape):
        if not _is_int(n):
            raise TypeError(f"{fname}: {name}={tuple(shape)!r} must hold ints, but entry "
                            f"{axis} is {n!r} of type {type(n).__name__}")
        if n < 0:
            raise ValueError(f"{fname}: {name}={tuple(shape)!r} has a negative entry {n} at "
                             f"axis {axis}")
    shape = tuple(int(n) for n in shape)
    if limit and math.prod(shape) > _max_elements:
        _too_many(f"{fname}: {name}={shape} has {math.prod(shape)} elements", "")
    return shape
