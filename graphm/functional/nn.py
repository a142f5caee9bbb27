"""NumPy-level neural-network ops other than convolution, with PyTorch's names and semantics.

Every public function here takes NumPy arrays and returns a new NumPy array of the input's dtype
(float32 or float64), with the signature, defaults and edge cases of the function of the same name
in ``torch.nn.functional``. They are decorated with ``tensor_aware``: passed a graphm ``Tensor``
(or a compiled-graph ``Var``), the call is routed to the autograd layer, which differentiates it
with the rules in ``graphm.ops``.

This module knows no calculus, but a few of its helpers are shared with the rules in
``graphm.ops``, so that each piece of bookkeeping exists once: ``pool_geometry`` (argument checks
and output sizes, also the pools' shape rule), ``class_targets`` and ``reduce_rows`` (the target
distribution and reduction of the classification losses), and the pooling adjoints
``max_pool_backward`` and ``avg_pool_backward``, which are the transposes of the window gathers
written here and belong next to them.

Pooling is written without a Python loop over pixels. A pooling window of size ``k`` (per axis)
visits ``prod(k)`` *offsets*; for each offset, the values it picks up from every window at once
form one strided slice of the (padded) input. So a pool is a loop over the few kernel offsets, each
step a whole-array NumPy operation::

    out[n, c, i, j] = max over (a, b) of  x_pad[n, c, i*s + a*dil, j*s + b*dil]
                    = max over (a, b) of  x_pad[:, :, a*dil : ... : s, b*dil : ... : s][n, c, i, j]
"""
from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections import namedtuple

import numpy as np

from graphm.functional._dispatch import tensor_aware
from graphm.functional.convolution import ConvGradients, conv1d, conv_backward

__all__ = [
    "relu", "sigmoid", "tanh", "softplus",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "softmax", "log_softmax", "linear", "linear_backward", "cross_entropy", "nll_loss",
    "mse_loss",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------------------------
# Argument checking (errors are for people: name the function, the argument and the value)
# --------------------------------------------------------------------------------------------

def _check_float_array(fname, argname, value):
    """Return ``value`` if it is a float32/float64 NumPy array, else raise TypeError."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{fname}(): argument '{argname}' must be a NumPy array or a graphm "
                        f"Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{fname}(): argument '{argname}' must have dtype float32 or float64, "
                        f"got {value.dtype} (convert with .astype(np.float32))")
    return value


def _check_same_dtype(fname, **arrays):
    """Raise TypeError when the given float arrays do not share one dtype (no silent promotion)."""
    named = [(name, a) for name, a in arrays.items() if a is not None]
    dtypes = {a.dtype for _, a in named}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {a.dtype}" for name, a in named)
        raise TypeError(f"{fname}(): arguments must share one dtype, got {listing}")


def _int_tuple(fname, argname, value, dims, minimum):
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


def _normalize_dim(fname, dim, ndim):
    """Map a possibly negative axis to ``0 <= dim < max(ndim, 1)`` (a 0-d array has axis 0)."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{fname}(): dim must be an int, got {dim!r}")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(f"{fname}(): dim {dim} is out of range for an array of {ndim} "
                         f"dimension(s) (expected to be in range [{-size}, {size - 1}])")
    return int(dim) % size


def _legacy_reduction(fname, size_average, reduce, reduction):
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


# --------------------------------------------------------------------------------------------
# Elementwise activations
# --------------------------------------------------------------------------------------------

@tensor_aware
def relu(input, inplace=False):
    r"""Rectified linear unit, elementwise.

    .. math:: \mathrm{relu}(x) = \max(x, 0)

    Parameters
    ----------
    input : ndarray
        Any shape, float32 or float64.
    inplace : bool, default False
        Overwrite ``input`` with the result and return it (NumPy arrays only; a Tensor is never
        modified in place, a new Tensor is returned).

    Returns
    -------
    ndarray
        Same shape and dtype as ``input``. NaN stays NaN, as in PyTorch.
    """
    _check_float_array("relu", "input", input)
    if inplace:
        return np.maximum(input, 0, out=input)
    return np.ascontiguousarray(np.maximum(input, 0))


@tensor_aware
def sigmoid(input):
    r"""Logistic sigmoid, elementwise, computed without overflow for large ``|x|``.

    .. math:: \sigma(x) = \frac{1}{1 + e^{-x}} = \frac{e^{x}}{1 + e^{x}}

    The first form is used where ``x >= 0`` and the second where ``x < 0``, so ``exp`` only ever
    sees non-positive arguments.
    """
    _check_float_array("sigmoid", "input", input)
    z = np.exp(-np.abs(input))          # in (0, 1], never overflows
    return np.ascontiguousarray(np.where(input >= 0, 1 / (1 + z), z / (1 + z)))


@tensor_aware
def tanh(input):
    r"""Hyperbolic tangent, elementwise: :math:`\tanh(x) = (e^{x} - e^{-x}) / (e^{x} + e^{-x})`."""
    _check_float_array("tanh", "input", input)
    return np.ascontiguousarray(np.tanh(input))


@tensor_aware
def softplus(input, beta=1.0, threshold=20.0):
    r"""Softplus, a smooth ReLU, elementwise, as ``torch.nn.functional.softplus``.

    .. math::
        \mathrm{softplus}(x) = \begin{cases}
            \frac{1}{\beta}\log(1 + e^{\beta x}) & \beta x \le \text{threshold} \\
            x & \beta x > \text{threshold} \end{cases}

    Above the threshold the two branches agree to float precision; switching avoids overflow.
    """
    _check_float_array("softplus", "input", input)
    scaled = input * input.dtype.type(beta)
    with np.errstate(over="ignore"):
        smooth = np.log1p(np.exp(scaled)) / input.dtype.type(beta)
    return np.ascontiguousarray(np.where(scaled > threshold, input, smooth))


# --------------------------------------------------------------------------------------------
# Softmax and log-softmax
# --------------------------------------------------------------------------------------------

def _softmax_dim(fname, ndim, dim):
    """PyTorch's choice of axis when ``dim`` is None (deprecated there too): 0 for 0-, 1-, 3-d."""
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {fname} has been deprecated. Change the "
                      "call to include dim=X as an argument.", UserWarning, stacklevel=3)
        return 0 if ndim in (0, 1, 3) else 1
    return _normalize_dim(fname, dim, ndim)


def _softmax_input(fname, input, dim, dtype):
    _check_float_array(fname, "input", input)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{fname}(): dtype must be float32 or float64, got {dtype}")
        input = input.astype(dtype)
    axis = _softmax_dim(fname, input.ndim, dim)
    return input, axis


@tensor_aware
def softmax(input, dim=None, _stacklevel=3, dtype=None):
    r"""Softmax along ``dim``: exponentials normalised to sum to one.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}},
              \quad m = \max_j x_j

    Subtracting the maximum changes nothing mathematically and keeps ``exp`` from overflowing.
    ``dtype`` casts the input first, as in PyTorch.
    """
    input, axis = _softmax_input("softmax", input, dim, dtype)
    if input.ndim == 0:
        return np.ones_like(input)
    e = np.exp(input - input.max(axis=axis, keepdims=True))
    return np.ascontiguousarray(e / e.sum(axis=axis, keepdims=True))


@tensor_aware
def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    r"""Logarithm of the softmax along ``dim``, computed stably (never ``log`` of a tiny number).

    .. math:: \log\mathrm{softmax}(x)_i = x_i - m - \log \sum_j e^{x_j - m},
              \quad m = \max_j x_j
    """
    input, axis = _softmax_input("log_softmax", input, dim, dtype)
    if input.ndim == 0:
        return np.zeros_like(input)
    shifted = input - input.max(axis=axis, keepdims=True)
    return np.ascontiguousarray(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)))


# --------------------------------------------------------------------------------------------
# Linear layer
# --------------------------------------------------------------------------------------------

def _linear_shape(input_shape, weight_shape, bias_shape):
    """Output shape of ``linear``; ValueError naming every dimension when they do not fit."""
    if len(weight_shape) != 2:
        raise ValueError(f"linear(): weight must be 2-D (out_features, in_features), "
                         f"got shape {weight_shape}")
    if len(input_shape) < 1 or input_shape[-1] != weight_shape[1]:
        raise ValueError(f"linear(): input's last dimension must equal weight.shape[1] "
                         f"(in_features); got input {input_shape} and weight {weight_shape}")
    if bias_shape is not None and tuple(bias_shape) not in ((weight_shape[0],), ()):
        raise ValueError(f"linear(): bias must have shape ({weight_shape[0]},) "
                         f"(out_features), got {bias_shape} with weight {weight_shape}")
    return tuple(input_shape[:-1]) + (weight_shape[0],)


def _linear_arguments(fname, input, weight, bias, grad_output=None):
    """Check linear's arrays; return them with the bias as (out_features,) or None."""
    for name, value in (("input", input), ("weight", weight), ("bias", bias),
                        ("grad_output", grad_output)):
        if value is not None:
            _check_float_array(fname, name, value)
    _check_same_dtype(fname, input=input, weight=weight, bias=bias, grad_output=grad_output)
    out_shape = _linear_shape(input.shape, weight.shape, None if bias is None else bias.shape)
    if grad_output is not None and grad_output.shape != out_shape:
        raise ValueError(f"{fname}(): grad_output must have the output's shape {out_shape}, "
                         f"got {grad_output.shape}")
    if bias is not None and bias.shape == ():
        bias = np.full(weight.shape[0], bias, dtype=bias.dtype)
    return out_shape, bias


def _as_positions(rows):
    """(M, features) rows as one sample of a 1-d convolution: (1, features, M) positions."""
    return np.ascontiguousarray(rows.T)[None]


@tensor_aware
def linear(input, weight, bias=None):
    r"""Affine map of the last axis, as ``torch.nn.functional.linear``.

    .. math:: y = x W^{\top} + b

    A linear layer is a 1x1 convolution: with the leading axes of ``x`` flattened into M rows,
    the rows are M positions of a single sample whose channels are the features, and ``W`` is a
    kernel of width 1. graphm computes it exactly so, on its convolution kernels: all of
    graphm's arithmetic then runs on one thread pool (a BLAS library's own threads would compete
    with it for the cores) and gives the same bits for any thread count.

    Parameters
    ----------
    input : ndarray, shape ``(*, in_features)``
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), optional

    Returns
    -------
    ndarray, shape ``(*, out_features)``
    """
    out_shape, bias = _linear_arguments("linear", input, weight, bias)
    rows = input.reshape(math.prod(input.shape[:-1]), weight.shape[1])   # (M, in)
    if rows.shape[0] == 0 or rows.shape[1] == 0:                         # nothing to convolve
        out = rows @ weight.T + (0 if bias is None else bias)
    else:
        out = conv1d(_as_positions(rows), weight[:, :, None], bias)[0].T  # (out, M) -> (M, out)
    return np.ascontiguousarray(out.reshape(out_shape))


def linear_backward(grad_output, input, weight):
    r"""The three gradients of :func:`linear` (with a bias), as ``conv_backward`` for a conv.

    With the leading axes flattened into rows, X (M, in) and :math:`\bar Y` (M, out):

    .. math:: \bar X = \bar Y W, \qquad \bar W = \bar Y^{\top} X, \qquad
              \bar b = \textstyle\sum_{\text{rows}} \bar Y

    computed, like the forward pass, as a 1x1 convolution (``conv_backward``).

    Returns
    -------
    ConvGradients
        ``(grad_input, grad_weight, grad_bias)``, shaped like input, weight and (out_features,).
    """
    _linear_arguments("linear_backward", input, weight, None, grad_output)
    count = math.prod(input.shape[:-1])
    rows_g = grad_output.reshape(count, weight.shape[0])                # (M, out)
    rows_x = input.reshape(count, weight.shape[1])                      # (M, in)
    if rows_x.shape[0] == 0 or rows_x.shape[1] == 0:
        return ConvGradients((rows_g @ weight).reshape(input.shape), rows_g.T @ rows_x,
                         rows_g.sum(axis=0))
    grads = conv_backward(_as_positions(rows_g), _as_positions(rows_x), weight[:, :, None])
    return ConvGradients(np.ascontiguousarray(grads.grad_input[0].T).reshape(input.shape),
                     grads.grad_weight[:, :, 0], grads.grad_bias)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def _class_scores(fname, input, target):
    """Check (input, target) for a classification loss and return them as (M, C) and (M,).

    PyTorch's layouts: input (C,) with a 0-d target, (N, C) with (N,), or (N, C, d1, ...) with
    (N, d1, ...). The class axis is moved last and everything else flattened into M rows.
    """
    _check_float_array(fname, "input", input)
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu":
        kind = target.dtype if isinstance(target, np.ndarray) else type(target).__name__
        raise TypeError(f"{fname}(): target must be an integer array of class indices, got "
                        f"{kind} (class-probability targets are not supported)")
    expected = (input.shape[:1] + input.shape[2:]) if input.ndim >= 2 else ()
    if input.ndim == 0 or target.shape != expected:
        raise ValueError(f"{fname}(): for input of shape {input.shape} (class axis 1, or 0 when "
                         f"1-D) the target must have shape {expected}, got {target.shape}")
    num_classes = input.shape[1] if input.ndim >= 2 else input.shape[0]
    scores = np.moveaxis(input, 1, -1) if input.ndim >= 2 else input
    return scores.reshape(-1, num_classes), target.reshape(-1).astype(np.int64)


def class_targets(fname, input, target, weight, ignore_index, label_smoothing=0.0):
    r"""What the classification losses need, shared with their derivatives in graphm.ops.

    Both losses are a weighted sum over the classes of per-row log-probabilities
    :math:`\ell` (cross_entropy: ``log_softmax`` of the input; nll_loss: the input itself),
    :math:`L_i = -\sum_c q_{ic}\,\ell_{ic}`, against a *target distribution* ``q``: the class
    weight at the label, blended with a uniform share when smoothing labels::

        q[i, c] = (1 - eps) * w[y_i] * [c == y_i]  +  eps / C * w[c]     (0 for ignored rows)

    Returns ``(scores, q, divisor)``: the input as (M, C) rows, q, and the number that divides
    the sum under ``reduction='mean'`` (the total weight of the non-ignored labels, as PyTorch).
    """
    scores, labels = _class_scores(fname, input, target)
    num_rows, num_classes = scores.shape
    dtype = input.dtype
    if weight is None:
        class_weight = np.ones(num_classes, dtype)
    else:
        _check_float_array(fname, "weight", weight)
        _check_same_dtype(fname, input=input, weight=weight)
        if weight.shape != (num_classes,):
            raise ValueError(f"{fname}(): weight must have shape ({num_classes},) (one per "
                             f"class), got {weight.shape}")
        class_weight = weight
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fname}(): label_smoothing must be in [0, 1], got {label_smoothing}")
    kept = labels != ignore_index
    bad = kept & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise IndexError(f"{fname}(): target {labels[bad][0]} is out of bounds for "
                         f"{num_classes} classes (valid: 0..{num_classes - 1}, or "
                         f"ignore_index={ignore_index})")
    safe_labels = np.where(kept, labels, 0)
    label_weight = np.where(kept, class_weight[safe_labels], 0).astype(dtype)   # (M,)
    q = np.zeros((num_rows, num_classes), dtype)
    q[np.arange(num_rows), safe_labels] = label_weight
    if label_smoothing:
        q *= dtype.type(1 - label_smoothing)
        q += dtype.type(label_smoothing / num_classes) * class_weight * kept[:, None]
    return scores, q, label_weight.sum()


def reduce_rows(rows, reduction, divisor, row_shape):
    """Apply a loss ``reduction`` to per-row losses (``row_shape``: the target's shape)."""
    if reduction == "none":
        return np.ascontiguousarray(rows.reshape(row_shape))
    total = rows.sum(dtype=rows.dtype)
    if reduction == "sum":
        return np.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):   # all rows ignored: nan, as PyTorch
        return np.asarray(total / divisor, dtype=rows.dtype)


@tensor_aware
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    r"""Cross-entropy between class scores (logits) and integer class labels.

    .. math::
        L_i = -w_{y_i} \log \frac{e^{z_{i,y_i}}}{\sum_c e^{z_{ic}}}, \qquad
        L = \frac{\sum_i L_i}{\sum_i w_{y_i}} \quad (\text{reduction='mean'})

    Parameters
    ----------
    input : ndarray
        Logits, shape (C,), (N, C) or (N, C, d1, ...).
    target : ndarray of int
        Class indices, shape (), (N,) or (N, d1, ...).
    weight : ndarray, shape (C,), optional
        A rescaling weight per class.
    size_average, reduce : deprecated
        PyTorch's old spelling of ``reduction`` (translated, with a warning).
    ignore_index : int, default -100
        Rows with this label contribute nothing and are not counted by the mean.
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float in [0, 1]
        Blend the one-hot target with the uniform distribution, as PyTorch.

    Returns
    -------
    ndarray
        0-d for 'mean' and 'sum', the shape of ``target`` for 'none'.
    """
    reduction = _legacy_reduction("cross_entropy", size_average, reduce, reduction)
    scores, q, divisor = class_targets("cross_entropy", input, target, weight, ignore_index,
                                       label_smoothing)
    rows = -(q * log_softmax(scores, dim=1)).sum(axis=1)
    return reduce_rows(rows, reduction, divisor, target.shape)


@tensor_aware
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    r"""Negative log-likelihood of integer labels under log-probabilities ``input``.

    .. math:: L_i = -w_{y_i}\, x_{i, y_i}, \qquad
              L = \frac{\sum_i L_i}{\sum_i w_{y_i}} \quad (\text{reduction='mean'})

    ``cross_entropy(z, y)`` equals ``nll_loss(log_softmax(z, 1), y)``; layouts and arguments
    are those of cross_entropy.
    """
    reduction = _legacy_reduction("nll_loss", size_average, reduce, reduction)
    scores, q, divisor = class_targets("nll_loss", input, target, weight, ignore_index)
    rows = -(q * scores).sum(axis=1)
    return reduce_rows(rows, reduction, divisor, target.shape)


def _mse_check(input, target, weight):
    _check_float_array("mse_loss", "input", input)
    _check_float_array("mse_loss", "target", target)
    if weight is not None:
        _check_float_array("mse_loss", "weight", weight)
    _check_same_dtype("mse_loss", input=input, target=target, weight=weight)
    try:
        shape = np.broadcast_shapes(input.shape, target.shape)
    except ValueError:
        raise ValueError(f"mse_loss(): input {input.shape} and target {target.shape} cannot be "
                         "broadcast together") from None
    if target.shape != input.shape:
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input "
                      f"size ({input.shape}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", UserWarning,
                      stacklevel=4)
    if weight is not None and weight.shape != input.shape:
        raise ValueError(f"mse_loss(): weight must have the input's shape {input.shape}, got "
                         f"{weight.shape}")
    return shape


@tensor_aware
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    r"""Mean squared error, as ``torch.nn.functional.mse_loss``.

    .. math:: L = \frac{1}{n}\sum_k (x_k - t_k)^2 \quad (\text{'mean'}), \qquad
              L = \frac{\sum_k w_k (x_k - t_k)^2}{\sum_k w_k} \quad (\text{'mean' with weight})

    ``input`` and ``target`` are broadcast together (with PyTorch's warning when their shapes
    differ); ``weight``, if given, has the input's shape.
    """
    reduction = _legacy_reduction("mse_loss", size_average, reduce, reduction)
    _mse_check(input, target, weight)
    squared = (input - target) ** 2
    if weight is not None:
        squared = squared * weight
    if reduction == "none":
        return np.ascontiguousarray(squared)
    total = squared.sum(dtype=input.dtype)
    if reduction == "sum":
        return np.asarray(total)
    divisor = squared.size if weight is None else weight.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / input.dtype.type(divisor), dtype=input.dtype)


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
    if len(input_shape) not in (dims + 1, dims + 2):
        layout = ", ".join("DHW"[3 - dims:])
        raise ValueError(f"{fname}(): expected a {dims + 1}-D (C, {layout}) or {dims + 2}-D "
                         f"(N, C, {layout}) input, got shape {input_shape}")
    if any(s == 0 for s in input_shape[-dims - 1:]):
        raise ValueError(f"{fname}(): channel and spatial sizes must be non-zero (only the "
                         f"batch may be empty), got input shape {input_shape}")
    kernel = _int_tuple(fname, "kernel_size", kernel_size, dims, 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = _int_tuple(fname, "stride", stride, dims, 1)
    padding = _int_tuple(fname, "padding", padding, dims, 0)
    dilation = _int_tuple(fname, "dilation", dilation, dims, 1)
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


def _padded(x, geometry, fill):
    """Pad the spatial axes of a batched array by ``padding`` on the left and, on the right, by
    enough to hold every window (ceil mode may reach past the usual padding) with ``fill``."""
    dims = len(geometry.kernel_size)
    widths = [(0, 0)] * (x.ndim - dims)
    for size, k, s, p, d, o in zip(x.shape[-dims:], *geometry[:4], geometry.out_spatial):
        reach = (o - 1) * s + d * (k - 1) + 1            # extent covered by the windows
        widths.append((p, max(reach - size - p, 0)))
    if all(w == (0, 0) for w in widths):
        return x
    return np.pad(x, widths, constant_values=fill)


def _offset_slices(geometry):
    """Yield, for each kernel offset (row-major, as PyTorch scans a window), the tuple of slices
    that picks that offset's value out of every window of the padded input at once."""
    ranges = [range(k) for k in geometry.kernel_size]
    for offset in itertools.product(*ranges):
        yield offset, (Ellipsis,) + tuple(
            slice(a * d, a * d + (o - 1) * s + 1, s)
            for a, s, d, o in zip(offset, geometry.stride, geometry.dilation, geometry.out_spatial))


def _inside_input(offset, spatial, geometry):
    """Boolean mask over output positions: does this kernel offset land inside the input (not
    in the padding)? None when it always does, the common case."""
    mask = np.ones((), bool)
    for a, size, s, p, d, o in zip(offset, spatial, geometry.stride, geometry.padding,
                                   geometry.dilation, geometry.out_spatial):
        coordinate = np.arange(o) * s - p + a * d
        mask = np.logical_and.outer(mask, (coordinate >= 0) & (coordinate < size))
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
    _check_float_array(fname, "input", input)
    geometry = pool_geometry(fname, input.shape, dims, kernel_size, stride, padding, dilation,
                             ceil_mode)
    x = _padded(_as_batched(input, geometry), geometry, -np.inf)
    spatial = input.shape[-dims:]
    axis_stride = [math.prod(spatial[axis + 1:]) for axis in range(dims)]   # row-major
    has_nan = bool(np.isnan(input).any())     # one pass; NaN's special rule is needed only then
    kernel_count = math.prod(geometry.kernel_size)
    displacement = np.empty(kernel_count, np.int64)  # flat input offset of each kernel offset
    best = best_offset = None
    seen = np.zeros(geometry.out_spatial, bool)      # has this window met a real element yet?
    for number, (offset, window) in enumerate(_offset_slices(geometry)):
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
    flat = values.reshape(planes, -1)
    return np.take_along_axis(flat, indices.reshape(planes, -1), axis=1).reshape(indices.shape)


def _window_sum(x, geometry):
    """Sum of every window of a batched array, zero padding included: a loop over offsets."""
    x = _padded(x, geometry, 0)
    total = None
    for _, window in _offset_slices(geometry):
        if total is None:
            total = x[window].copy()
        else:
            total += x[window]
    return total


def _window_sum_transpose(grad, input_shape, geometry):
    """Adjoint of ``_window_sum``: every window adds its gradient back onto the positions it
    read; then the padding is cropped off. Shapes: grad (N, C, *out) -> (N, C, *in)."""
    dims = len(geometry.kernel_size)
    padded_shape = list(input_shape)
    crop = [slice(None)] * (len(input_shape) - dims)
    for axis, (size, k, s, p, d, o) in enumerate(zip(input_shape[-dims:], *geometry[:4],
                                                     geometry.out_spatial)):
        reach = (o - 1) * s + d * (k - 1) + 1
        padded_shape[len(input_shape) - dims + axis] = size + p + max(reach - size - p, 0)
        crop.append(slice(p, p + size))
    padded = np.zeros(padded_shape, grad.dtype)
    for _, window in _offset_slices(geometry):
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
                                         divisor_override == 0):
        raise ValueError(f"{fname}(): divisor_override must be a non-zero int or None, got "
                         f"{divisor_override!r}")
    return pool_geometry(fname, input_shape, dims, kernel_size, stride, padding, 1, ceil_mode)


def avg_pool(fname, input, dims, kernel_size, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True, divisor_override=None):
    """Average pooling of any rank ``dims``: window sums divided by ``avg_pool_divisor``."""
    _check_float_array(fname, "input", input)
    geometry = avg_pool_geometry(fname, input.shape, dims, kernel_size, stride, padding,
                                 ceil_mode, divisor_override)
    total = _window_sum(_as_batched(input, geometry), geometry)
    total /= avg_pool_divisor(input.shape, geometry, count_include_pad, divisor_override,
                              input.dtype)
    return total if geometry.batched else total[0]


def avg_pool_backward(grad_output, input_shape, geometry, count_include_pad, divisor_override):
    """Adjoint of average pooling (it is linear): divide by the divisor, then spread each
    window's share back over the window."""
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
    out, indices, _ = max_pool_with_indices("max_pool1d", input, 1, kernel_size, stride,
                                            padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out


@tensor_aware
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    out, indices, _ = max_pool_with_indices("max_pool2d", input, 2, kernel_size, stride,
                                            padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out


@tensor_aware
def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
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
