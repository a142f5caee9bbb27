"""How each ``graphm.functional`` name maps onto an op: the table behind Tensor (and Var) calls.

``graphm.functional`` works on NumPy arrays. When one of its functions is called with a graphm
Tensor (or a compiled-graph Var), ``_dispatch.tensor_aware`` hands the call to the autograd layer,
which asks :func:`bind` here: *which op, which array inputs, which attributes?* The arguments
arrive already bound to the NumPy function's signature, defaults filled in, so the defaults and
argument names live in one place (graphm.functional) and each binding below is one line of
bookkeeping.
"""
from __future__ import annotations

import functools
import inspect
import warnings

from graphm.functional._checks import legacy_reduction, softmax_dim
from graphm.ops.activation import relu, sigmoid, softplus, tanh
from graphm.ops.conv import conv, conv_transpose, conv_weight_grad
from graphm.ops.nn import cross_entropy, linear, log_softmax, mse_loss, nll_loss, softmax
from graphm.ops.pool import avg_pool, max_pool

__all__ = ["BINDINGS", "bind"]

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
