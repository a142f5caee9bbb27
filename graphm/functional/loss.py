"""Losses with ``torch.nn.functional``'s names: cross_entropy, nll_loss, mse_loss.

``class_targets`` and ``reduce_rows`` are shared with the derivative rules in :mod:`graphm.ops`:
the target distribution and the reduction of the classification losses exist once.
"""
import numbers
import warnings

import numpy as np

from graphm.functional._checks import (ArgumentRangeError, check_float_array, check_real,
                                       check_same_dtype, check_size, legacy_reduction)
from graphm.functional._dispatch import tensor_aware
from graphm.functional.activation import _c_order, log_softmax

__all__ = ['cross_entropy', 'nll_loss', 'mse_loss', 'class_targets', 'row_losses', 'reduce_rows']


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def _class_scores(fname, input, target):
    """Check (input, target) for a classification loss and return them as (M, C) and (M,).

    PyTorch's layouts: input (C,) with a 0-d target, (N, C) with (N,), or (N, C, d1, ...) with
    (N, d1, ...). The class axis is moved last and everything else flattened into M rows.
    """
    check_float_array(fname, "input", input)
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu":
        kind = target.dtype if isinstance(target, np.ndarray) else type(target).__name__
        raise TypeError(f"{fname}(): target must be an integer array of class indices, got "
                        f"{kind} (class-probability targets are not supported)")
    expected = (input.shape[:1] + input.shape[2:]) if input.ndim >= 2 else ()
    if input.ndim == 0 or target.shape != expected:
        raise ValueError(f"{fname}(): for input of shape {input.shape} (class axis 1, or 0 when "
                         f"1-D) the target must have shape {expected}, got {target.shape}")
    num_classes = input.shape[1] if input.ndim >= 2 else input.shape[0]
    if num_classes == 0:
        raise ValueError(f"{fname}(): input of shape {input.shape} has no class (its class axis, "
                         f"{1 if input.ndim >= 2 else 0}, has size 0)")
    scores = np.moveaxis(input, 1, -1) if input.ndim >= 2 else input
    return scores.reshape(-1, num_classes), target.reshape(-1).astype(np.int64)


def class_targets(fname, input, target, weight, ignore_index, label_smoothing=0.0):
    r"""What the classification losses need, shared with their derivatives in graphm.ops.

    Both losses are a weighted sum over the classes of per-row log-probabilities
    :math:`\ell` (cross_entropy: ``log_softmax`` of the input; nll_loss: the input itself),
    :math:`L_i = -\sum_c q_{ic}\,\ell_{ic}`, against a *target distribution* ``q``: the class
    weight at the label, blended with a uniform share when smoothing labels::

        q[i, c] = (1 - eps) * w[y_i] * [c == y_i]  +  eps / C * w[c]     (0 for ignored rows)

    The sum is :func:`row_losses`, which skips the terms with ``q = 0``.

    Returns ``(scores, q, divisor)``: the input as (M, C) rows, q, and the number that divides
    the sum under ``reduction='mean'`` (the total weight of the non-ignored labels, as PyTorch).
    """
    scores, labels = _class_scores(fname, input, target)
    num_rows, num_classes = scores.shape
    dtype = input.dtype
    if weight is None:
        class_weight = np.ones(num_classes, dtype)
    else:
        check_float_array(fname, "weight", weight)
        check_same_dtype(fname, input=input, weight=weight)
        if weight.shape != (num_classes,):
            raise ValueError(f"{fname}(): weight must have shape ({num_classes},) (one per "
                             f"class), got {weight.shape}")
        class_weight = weight
    label_smoothing = check_real(fname, "label_smoothing", label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fname}(): label_smoothing must be in [0, 1], got {label_smoothing}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"{fname}(): ignore_index must be an int, got {ignore_index!r}")
    if not -2 ** 63 <= ignore_index < 2 ** 63:    # a label is an int64, as in PyTorch
        raise ValueError(f"{fname}(): ignore_index={ignore_index} does not fit in an int64")
    kept = labels != ignore_index
    bad = kept & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ArgumentRangeError(f"{fname}(): target {labels[bad][0]} is out of bounds for "
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


def row_losses(q, log_probs):
    r"""Per-row losses :math:`L_i = -\sum_c q_{ic}\,\ell_{ic}` over the terms the loss has.

    The sum runs over the classes with :math:`q_{ic} \ne 0` only: a class that is not the label
    (and carries no smoothing share) is not part of the loss, so it is skipped rather than
    multiplied, and a ``-inf`` log-probability there (a logit of ``-inf``) leaves the loss
    finite, as PyTorch, which gathers the label's entry, gives; ``0 * -inf`` would be NaN.
    With ``label_smoothing`` every class has a share, so a ``-inf`` makes the loss ``inf``, as
    in PyTorch. (One corner differs: PyTorch gives NaN for a ``-inf`` at a class of weight 0
    that it still multiplies; graphm skips that term.)

    Shapes: ``q`` and ``log_probs`` (M, C) -> (M,).
    """
    with np.errstate(invalid="ignore"):   # the skipped terms may be 0 * inf
        terms = np.where(q != 0, q * log_probs, log_probs.dtype.type(0))
    return -terms.sum(axis=1)


def reduce_rows(rows, reduction, divisor, row_shape):
    """Apply a loss ``reduction`` to per-row losses (``row_shape``: the target's shape)."""
    if reduction == "none":
        return _c_order(rows.reshape(row_shape))
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
    reduction = legacy_reduction("cross_entropy", size_average, reduce, reduction)
    scores, q, divisor = class_targets("cross_entropy", input, target, weight, ignore_index,
                                       label_smoothing)
    rows = row_losses(q, log_softmax(scores, dim=1))
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
    reduction = legacy_reduction("nll_loss", size_average, reduce, reduction)
    scores, q, divisor = class_targets("nll_loss", input, target, weight, ignore_index)
    rows = row_losses(q, scores)
    return reduce_rows(rows, reduction, divisor, target.shape)


def _mse_check(input, target, weight):
    check_float_array("mse_loss", "input", input)
    check_float_array("mse_loss", "target", target)
    if weight is not None:
        check_float_array("mse_loss", "weight", weight)
    check_same_dtype("mse_loss", input=input, target=target, weight=weight)
    try:
        shape = np.broadcast_shapes(input.shape, target.shape)
    except ValueError:
        raise ValueError(f"mse_loss(): input {input.shape} and target {target.shape} cannot be "
                         "broadcast together") from None
    check_size("mse_loss()", "broadcast of input and target", shape,
               f"input {input.shape}, target {target.shape}")
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
    reduction = legacy_reduction("mse_loss", size_average, reduce, reduction)
    _mse_check(input, target, weight)
    squared = (input - target) ** 2
    if weight is not None:
        squared = squared * weight
    if reduction == "none":
        return _c_order(squared)
    total = squared.sum(dtype=input.dtype)
    if reduction == "sum":
        return np.asarray(total)
    divisor = squared.size if weight is None else weight.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / input.dtype.type(divisor), dtype=input.dtype)
