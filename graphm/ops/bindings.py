"""How each name maps onto an op: the table behind Tensor and Var calls and GraphM's methods.

``graphm.functional`` works on NumPy arrays. When one of its functions is called with a graphm
Tensor (or a compiled-graph Var), ``_dispatch.tensor_aware`` hands the call to the argument's own
``__graphm_function__`` (graphm/surface.py), which asks :func:`bind` here: *which op, which array
inputs, which attributes?* The arguments arrive already bound to the NumPy function's signature,
defaults filled in, so the defaults and argument names live in one place (graphm.functional) and
each binding below is one line of bookkeeping.

Ops with no functional name (the operators, reductions, reshaping) have a *method binding* in
:data:`METHODS` instead, whose own signature is the method's. The compiled graph builder
:class:`graphm.GraphM` takes its methods from both tables (``g.relu(x)``, ``g.max_pool2d(x, 2)``,
``g.add(a, b)``, ``g.sum(x, axis)``), so adding an op is one class in ``graphm/ops/`` plus one
binding here: nothing else lists op names.
"""
from __future__ import annotations

import functools
import inspect
import warnings

from graphm.functional._checks import legacy_reduction, softmax_dim
import numbers

import numpy as np

from graphm.ops.activation import relu, sigmoid, softplus, tanh
from graphm.ops.arithmetic import add, div, exp, log, matmul, mul, neg, pow, sub
from graphm.ops.reduction import broadcast_to, mean, sum, sum_to
from graphm.ops.shape import flatten_shape, permute, reshape
from graphm.ops.shape import index as index_op
from graphm.ops.conv import conv, conv_transpose, conv_weight_grad
from graphm.ops.nn import cross_entropy, linear, log_softmax, mse_loss, nll_loss, softmax
from graphm.ops.pool import avg_pool, max_pool

__all__ = ["BINDINGS", "METHODS", "bind", "bind_method"]

#: functional name -> binding(name, **arguments) -> (op, inputs, attrs)
BINDINGS = {}


def _binding(*names):
    def register(function):
        for name in names:
            BINDINGS[name] = function
        return function
    return register


@functools.lru_cache(maxsize=None)
def _signature(numpy_function):
    return inspect.signature(numpy_function)


def bind(name, numpy_function, args, kwargs):
    """``(op, inputs, attrs)`` for a call ``numpy_function(*args, **kwargs)`` named ``name``.

    ``inputs`` holds the array arguments in the op's order (Tensors, Vars, arrays or None);
    ``attrs`` the rest. Raises TypeError for a function that has no op (it is NumPy-only).
    """
    if name not in BINDINGS:
        raise TypeError(f"graphm.functional.{name}() works on NumPy arrays only; it has no "
                        "differentiable version for Tensors")
    bound = _signature(numpy_function).bind(*args, **kwargs)
    bound.apply_defaults()
    return BINDINGS[name](name, **bound.arguments)


def _rank(name):
    """conv2d -> 2, max_pool1d -> 1, conv -> None (any rank)."""
    return int(name[-2]) if name.endswith("d") and name[-2].isdigit() else None


@_binding("conv", "conv1d", "conv2d", "conv3d")
def _conv(name, input, weight, bias, stride, padding, dilation, groups):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                 rank=_rank(name))
    return conv, (input, weight, bias), attrs


@_binding("conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv_transpose(name, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    attrs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                 dilation=dilation, rank=_rank(name))
    return conv_transpose, (input, weight, bias), attrs


@_binding("conv_weight_grad")
def _conv_weight_grad(name, input, weight_shape, grad_output, stride, padding, dilation, groups):
    attrs = dict(weight_shape=tuple(int(n) for n in weight_shape), stride=stride,
                 padding=padding, dilation=dilation, groups=groups)
    return conv_weight_grad, (input, grad_output), attrs


@_binding("relu")
def _relu(name, input, inplace):
    return relu, (input,), {}          # never in place on a Tensor: the tape may need the input


@_binding("sigmoid", "tanh")
def _elementwise(name, input):
    return {"sigmoid": sigmoid, "tanh": tanh}[name], (input,), {}


@_binding("softplus")
def _softplus(name, input, beta, threshold):
    return softplus, (input,), dict(beta=beta, threshold=threshold)


@_binding("max_pool1d", "max_pool2d", "max_pool3d")
def _max_pool(name, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    if return_indices:
        raise NotImplementedError(f"{name}(return_indices=True) is NumPy-only: call it on "
                                  "x.numpy() to get the indices (they carry no gradient)")
    attrs = dict(dims=_rank(name), kernel_size=kernel_size, stride=stride, padding=padding,
                 dilation=dilation, ceil_mode=ceil_mode)
    return max_pool, (input,), attrs


@_binding("avg_pool1d", "avg_pool2d", "avg_pool3d")
def _avg_pool(name, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override=None):
    attrs = dict(dims=_rank(name), kernel_size=kernel_size, stride=stride, padding=padding,
                 ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                 divisor_override=divisor_override)
    return avg_pool, (input,), attrs


@_binding("softmax", "log_softmax")
def _softmax(name, input, dim, _stacklevel, dtype):
    if dtype is not None and str(dtype) != str(input.dtype):
        raise NotImplementedError(f"{name}(dtype=...) on a Tensor: graphm has no cast op; "
                                  "convert the data before making the Tensor")
    if dim is None:
        dim = softmax_dim(name, input.ndim, None)
    return (softmax if name == "softmax" else log_softmax), (input,), dict(dim=dim)


@_binding("linear")
def _linear(name, input, weight, bias):
    return linear, (input, weight, bias), {}


@_binding("cross_entropy")
def _cross_entropy(name, input, target, weight, size_average, ignore_index, reduce, reduction,
                   label_smoothing):
    reduction = legacy_reduction(name, size_average, reduce, reduction)
    attrs = dict(ignore_index=ignore_index, reduction=reduction,
                 label_smoothing=label_smoothing)
    return cross_entropy, (input, target, weight), attrs


@_binding("nll_loss")
def _nll_loss(name, input, target, weight, size_average, ignore_index, reduce, reduction):
    reduction = legacy_reduction(name, size_average, reduce, reduction)
    return nll_loss, (input, target, weight), dict(ignore_index=ignore_index,
                                                   reduction=reduction)


@_binding("mse_loss")
def _mse_loss(name, input, target, size_average, reduce, reduction, weight):
    reduction = legacy_reduction(name, size_average, reduce, reduction)
    target_shape = tuple(getattr(target, "shape", ()))
    if target_shape != tuple(input.shape):
        warnings.warn(f"Using a target size ({target_shape}) that is different to the "
                      f"input size ({tuple(input.shape)}). This will likely lead to incorrect "
                      "results due to broadcasting. Please ensure they have the same size.",
                      UserWarning, stacklevel=4)
    return mse_loss, (input, target, weight), dict(reduction=reduction)


# ------------------------------------------------------------------------------------------------
# Method bindings: ops without a graphm.functional name. Each binder's signature is the method's
# (``GraphM.sum(x, axis=None, keepdims=False)``); it returns (op, inputs, attrs).
# ------------------------------------------------------------------------------------------------

#: method name -> binder(*args, **kwargs) -> (op, inputs, attrs)
METHODS = {}


def bind_method(name, args, kwargs):
    """``(op, inputs, attrs)`` for the method call ``name(*args, **kwargs)`` (see METHODS)."""
    return METHODS[name](*args, **kwargs)


def _method(*names):
    def register(function):
        for name in names:
            METHODS[name] = function
        return function
    return register


def _binary(op):
    def binder(a, b):
        return op, (a, b), {}
    binder.__doc__ = f"``{op.name}(a, b)`` (broadcasting): the op ``graphm.ops.{op.name}``."
    return binder


for _op in (add, sub, mul, div, matmul):
    _method(_op.name)(_binary(_op))


def _unary(op):
    def binder(x):
        return op, (x,), {}
    binder.__doc__ = f"``{op.name}(x)``, elementwise: the op ``graphm.ops.{op.name}``."
    return binder


for _op in (neg, exp, log):
    _method(_op.name)(_unary(_op))
del _op


def _axes(axis):
    return tuple(axis) if isinstance(axis, list) else axis


@_method("pow")
def _pow(x, exponent):
    """``x ** exponent`` for a constant number ``exponent``."""
    if isinstance(exponent, (np.generic, np.ndarray)) and np.ndim(exponent) == 0:
        exponent = exponent.item()
    if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: the exponent must be a number, got {type(exponent).__name__}")
    return pow, (x,), {"exponent": exponent}


@_method("sum")
def _sum(x, axis=None, keepdims=False):
    """Sum over ``axis`` (int, tuple, or None for all)."""
    return sum, (x,), {"axis": _axes(axis), "keepdims": bool(keepdims)}


@_method("mean")
def _mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (int, tuple, or None for all)."""
    return mean, (x,), {"axis": _axes(axis), "keepdims": bool(keepdims)}


@_method("reshape")
def _reshape(x, shape):
    """The same values in a new shape (one ``-1`` is inferred)."""
    return reshape, (x,), {"shape": tuple(shape)}


@_method("flatten")
def _flatten(x, start_dim=0, end_dim=-1):
    """Merge the axes ``start_dim..end_dim`` (a reshape), as ``torch.flatten``."""
    return reshape, (x,), {"shape": flatten_shape(tuple(np.shape(x)), start_dim, end_dim)}


@_method("permute")
def _permute(x, dims):
    """Reorder the axes: ``y.shape[i] == x.shape[dims[i]]``."""
    return permute, (x,), {"dims": tuple(dims)}


@_method("transpose")
def _transpose(x, dim0, dim1):
    """Swap two axes (a permute)."""
    dims = list(range(len(np.shape(x))))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute, (x,), {"dims": tuple(dims)}


@_method("index")
def _index(x, index):
    """``x[index]`` (NumPy basic or advanced indexing)."""
    return index_op, (x,), {"index": index}


@_method("sum_to")
def _sum_to(x, shape):
    """Sum down to ``shape`` (the adjoint of broadcasting)."""
    return sum_to, (x,), {"shape": tuple(shape)}


@_method("broadcast_to")
def _broadcast_to(x, shape):
    """Copy along new leading axes and axes of length 1, as NumPy's ``broadcast_to``."""
    return broadcast_to, (x,), {"shape": tuple(shape)}
