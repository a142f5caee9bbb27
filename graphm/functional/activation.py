"""Elementwise activations and the softmax family, with ``torch.nn.functional``'s names.

Every function takes a float32/float64 NumPy array and returns a new array of its dtype; each is
``tensor_aware`` (called with a graphm Tensor or Var, it is routed to the autograd layer).
"""
import numpy as np

from graphm.functional._checks import (FLOAT_DTYPES, check_bool, check_float_array, check_real,
                                       softmax_dim)
from graphm.functional._dispatch import tensor_aware

__all__ = ['relu', 'sigmoid', 'tanh', 'softplus', 'softmax', 'log_softmax']


def _c_order(array):
    """A C-contiguous array, of any rank: 0-d stays 0-d (``np.ascontiguousarray`` makes it 1-d)."""
    return np.asarray(array, order="C")


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
    check_float_array("relu", "input", input)
    if check_bool("relu", "inplace", inplace):
        return np.maximum(input, 0, out=input)
    return _c_order(np.maximum(input, 0))


@tensor_aware
def sigmoid(input):
    r"""Logistic sigmoid, elementwise, computed without overflow for large ``|x|``.

    .. math:: \sigma(x) = \frac{1}{1 + e^{-x}} = \frac{e^{x}}{1 + e^{x}}

    The first form is used where ``x >= 0`` and the second where ``x < 0``, so ``exp`` only ever
    sees non-positive arguments.
    """
    check_float_array("sigmoid", "input", input)
    z = np.exp(-np.abs(input))          # in (0, 1], never overflows
    return _c_order(np.where(input >= 0, 1 / (1 + z), z / (1 + z)))


@tensor_aware
def tanh(input):
    r"""Hyperbolic tangent, elementwise: :math:`\tanh(x) = (e^{x} - e^{-x}) / (e^{x} + e^{-x})`."""
    check_float_array("tanh", "input", input)
    return _c_order(np.tanh(input))


@tensor_aware
def softplus(input, beta=1.0, threshold=20.0):
    r"""Softplus, a smooth ReLU, elementwise, as ``torch.nn.functional.softplus``.

    .. math::
        \mathrm{softplus}(x) = \begin{cases}
            \frac{1}{\beta}\log(1 + e^{\beta x}) & \beta x \le \text{threshold} \\
            x & \beta x > \text{threshold} \end{cases}

    Above the threshold the two branches agree to float precision; switching avoids overflow.
    """
    check_float_array("softplus", "input", input)
    beta = check_real("softplus", "beta", beta)
    threshold = check_real("softplus", "threshold", threshold)
    scaled = input * input.dtype.type(beta)
    with np.errstate(over="ignore"):
        smooth = np.log1p(np.exp(scaled)) / input.dtype.type(beta)
    return _c_order(np.where(scaled > threshold, input, smooth))


# --------------------------------------------------------------------------------------------
# Softmax and log-softmax
# --------------------------------------------------------------------------------------------


def _softmax_input(fname, input, dim, dtype):
    check_float_array(fname, "input", input)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{fname}(): dtype must be float32 or float64, got {dtype}")
        input = input.astype(dtype)
    axis = softmax_dim(fname, input.ndim, dim)
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
    if input.ndim == 0:            # exp(x - x): one, or NaN for a NaN or an infinity (PyTorch)
        with np.errstate(invalid="ignore"):
            return np.asarray(np.exp(input - input))
    if input.size == 0:            # no row to normalise (and no maximum to subtract)
        return np.empty_like(input, order="C")
    e = np.exp(input - input.max(axis=axis, keepdims=True))
    return _c_order(e / e.sum(axis=axis, keepdims=True))


@tensor_aware
def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    r"""Logarithm of the softmax along ``dim``, computed stably (never ``log`` of a tiny number).

    .. math:: \log\mathrm{softmax}(x)_i = x_i - m - \log \sum_j e^{x_j - m},
              \quad m = \max_j x_j
    """
    input, axis = _softmax_input("log_softmax", input, dim, dtype)
    if input.ndim == 0:            # x - x: zero, or NaN for a NaN or an infinity (PyTorch)
        with np.errstate(invalid="ignore"):
            return np.asarray(input - input)
    if input.size == 0:
        return np.empty_like(input, order="C")
    shifted = input - input.max(axis=axis, keepdims=True)
    return _c_order(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)))
