"""Network ops: linear, softmax, log_softmax and the losses cross_entropy, nll_loss, mse_loss.

Their forwards are graphm.functional's; here are their shape rules and derivatives.
"""
from __future__ import annotations

import math

import numpy as np

from graphm import functional as F
from graphm.functional import linear_layer as Flinear, loss as Floss
from graphm.functional._checks import normalize_dim
from graphm.ops.arithmetic import exp as _exp
from graphm.ops.base import (FLOAT_DTYPES, Op, ShapeError, broadcast_shape, call,
                             forward_residual, is_traced, register, unbroadcast)
from graphm.ops.interval import affine_interval, exact_value

__all__ = ["linear", "softmax", "log_softmax", "cross_entropy", "nll_loss", "mse_loss"]


class Linear(Op):
    r"""Affine map of the last axis, :math:`y = x W^{\top} + b`: a 1x1 convolution.

    Shapes: x (*, in), W (out, in), b (out,) -> y (*, out). With every leading axis of x
    flattened into rows, X (M, in) and Ȳ (M, out):

    .. math:: \bar X = \bar Y W, \quad \bar W = \bar Y^{\top} X, \quad
              \bar b = \textstyle\sum_{\text{rows}} \bar Y, \qquad
              \dot y = \dot x W^{\top} + x \dot W^{\top} + \dot b

    Like a convolution it is bilinear in (x, W), hence the product rule in the JVP;
    graphm.functional computes both passes on the convolution kernels.
    """
    name = "linear"
    higher_order = True
    inputs = ("input", "weight", "bias")
    optional = ("bias",)

    def shape(self, x, weight, bias):
        return Flinear._linear_shape(x, weight, bias)

    def forward(self, x, weight, bias):
        return F.linear(x, weight, bias), (x, weight, bias is not None)

    def vjp(self, residuals, g):
        x, weight, has_bias = residuals
        if not any(is_traced(v) for v in (g, x, weight)):
            grads = Flinear.linear_backward(g, x, weight)       # the same, in one fused call
            return grads.grad_input, grads.grad_weight, grads.grad_bias if has_bias else None
        rows_g = g.reshape(-1, weight.shape[0])                  # Ȳ (M, out)
        rows_x = x.reshape(-1, weight.shape[1])                  # X (M, in)
        grad_input = g @ weight                                  # Ȳ W: (*, out) @ (out, in)
        grad_weight = rows_g.transpose(0, 1) @ rows_x if is_traced(rows_g) else rows_g.T @ rows_x
        return grad_input, grad_weight, rows_g.sum(axis=0) if has_bias else None

    def jvp(self, primals, tangents):
        (x, weight, bias), (dx, dweight, dbias) = primals, tangents
        y = F.linear(x, weight, bias)
        dy = F.linear(dx, weight, dbias) + F.linear(x, dweight)       # product rule
        return y, dy

    def interval(self, x, weight, bias):
        r"""Bounds for a box on x (W, b known): :math:`c' = cW^\top + b`,
        :math:`r' = r|W|^\top`, with the rounding of ``in_features`` products per output,
        rounded outward (graphm.ops.interval.affine_interval)."""
        weight, bias = exact_value(self.name, "weight", weight), exact_value(self.name, "bias",
                                                                            bias)
        abs_weight = np.abs(weight)
        return affine_interval(x, lambda c: F.linear(c, weight, bias),
                               lambda v, b: F.linear(v, abs_weight, b),
                               terms=weight.shape[1], bias=bias)


linear = register(Linear())


class Softmax(Op):
    r"""Softmax along ``dim``: :math:`y_i = e^{x_i} / \sum_j e^{x_j}`.

    Its Jacobian is :math:`\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)`, symmetric, so
    the VJP and the JVP are the same formula:

    .. math:: \bar x = y \odot (\bar y - \langle \bar y, y\rangle), \qquad
              \dot y = y \odot (\dot x - \langle \dot x, y\rangle)
    """
    name = "softmax"
    higher_order = True

    def shape(self, x, dim):
        normalize_dim("softmax", dim, len(x))
        return x

    def forward(self, x, dim):
        y = F.softmax(x, dim)
        return y, y

    def vjp(self, y, g, dim):
        return (y * (g - (g * y).sum(axis=dim, keepdims=True)),)

    def jvp(self, primals, tangents, dim):
        y = F.softmax(primals[0], dim)
        return y, y * (tangents[0] - (tangents[0] * y).sum(axis=dim, keepdims=True))


softmax = register(Softmax())


class LogSoftmax(Op):
    r"""Log-softmax along ``dim``: :math:`y_i = x_i - \log \sum_j e^{x_j}`.

    With :math:`p = e^{y}` the softmax, :math:`\partial y_i / \partial x_j = \delta_{ij} - p_j`:

    .. math:: \bar x = \bar y - p \textstyle\sum_i \bar y_i, \qquad
              \dot y = \dot x - \langle p, \dot x \rangle
    """
    name = "log_softmax"
    higher_order = True

    def shape(self, x, dim):
        normalize_dim("log_softmax", dim, len(x))
        return x

    def forward(self, x, dim):
        y = F.log_softmax(x, dim)
        return y, y

    def vjp(self, y, g, dim):
        return (g - call(_exp, y) * g.sum(axis=dim, keepdims=True),)

    def jvp(self, primals, tangents, dim):
        y = F.log_softmax(primals[0], dim)
        return y, tangents[0] - (call(_exp, y) * tangents[0]).sum(axis=dim, keepdims=True)


log_softmax = register(LogSoftmax())


# ------------------------------------------------------------------------------------------------
# Classification losses. Both are L_i = -sum_c q_ic * l_ic against a fixed target distribution q
# (graphm.functional.loss.class_targets): for cross_entropy l = log_softmax(z), for nll_loss l = z.
# The reduction then scales each row: by 1/divisor ('mean'), 1 ('sum') or the row's own ḡ ('none').
# ------------------------------------------------------------------------------------------------

def _row_scale(g, reduction, divisor):
    """How much each row's loss contributes to the output, times the incoming gradient."""
    if reduction == "none":
        return g.reshape(-1, 1)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return g / divisor
    return g


def _rows_to_input(rows, input_shape):
    """(M, C) rows back to the input's layout: (C,), (N, C) or (N, C, d1, ...)."""
    if len(input_shape) < 2:
        return rows.reshape(input_shape)
    moved = rows.reshape((input_shape[0],) + tuple(input_shape[2:]) + (input_shape[1],))
    if is_traced(moved):
        last = moved.ndim - 1
        return moved.permute(0, last, *range(1, last))
    return np.ascontiguousarray(np.moveaxis(moved, -1, 1))


def _reduce_rows(rows, reduction, divisor, row_shape):
    """graphm.functional.loss.reduce_rows (the loss's reduction of per-row values), for rows
    that may be traced: a reshape, a sum, or a sum divided by the total label weight."""
    if not is_traced(rows):
        return Floss.reduce_rows(rows, reduction, divisor, row_shape)
    if reduction == "none":
        return rows.reshape(tuple(row_shape))
    total = rows.sum()
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):   # all rows ignored: nan, as PyTorch
        return total / divisor


def _rows(x):
    """The input's class scores as (M, C) rows (the layout class_targets uses)."""
    if x.ndim < 2:
        return x.reshape(1, -1)
    if is_traced(x):
        return x.permute(0, *range(2, x.ndim), 1).reshape(-1, x.shape[1])
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


class _ClassificationLoss(Op):
    """Shared shape and dtype rules of cross_entropy and nll_loss."""
    inputs = ("input", "target", "weight")
    optional = ("weight",)
    nondiff = ("target", "weight")

    def shape(self, x, target, weight, ignore_index=-100, reduction="mean",
              label_smoothing=0.0):
        expected = (tuple(x[:1]) + tuple(x[2:])) if len(x) >= 2 else ()
        if len(x) == 0 or tuple(target) != expected:
            raise ShapeError(f"{self.name}: for input {tuple(x)} (classes on axis 1, or 0 when "
                             f"1-D) the target must have shape {expected}, got {tuple(target)}")
        classes = x[1] if len(x) >= 2 else x[0]
        if weight is not None and tuple(weight) != (classes,):
            raise ShapeError(f"{self.name}: weight must have shape ({classes},), got "
                             f"{tuple(weight)}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{self.name}: reduction must be 'mean', 'sum' or 'none', got "
                             f"{reduction!r}")
        return tuple(target) if reduction == "none" else ()

    def dtype(self, x, target, weight, **attrs):
        if np.dtype(target).kind not in "iu":
            raise TypeError(f"{self.name}: target must hold integer class indices, got "
                            f"{np.dtype(target)}")
        if np.dtype(x) not in FLOAT_DTYPES:
            raise TypeError(f"{self.name}: input must be float32 or float64, got {np.dtype(x)}")
        if weight is not None and np.dtype(weight) != np.dtype(x):
            raise TypeError(f"{self.name}: weight ({np.dtype(weight)}) and input "
                            f"({np.dtype(x)}) must share one dtype")
        return np.dtype(x)


class CrossEntropy(_ClassificationLoss):
    r"""Cross-entropy of logits ``z`` against integer labels (PyTorch's ``cross_entropy``).

    Per row, :math:`L_i = -\sum_c q_{ic} \log p_{ic}` with :math:`p = \mathrm{softmax}(z)`;
    differentiating the log-softmax gives the familiar "probabilities minus targets":

    .. math:: \frac{\partial L_i}{\partial z_{ic}} = p_{ic} \textstyle\sum_k q_{ik} - q_{ic},
              \qquad \dot L_i = \sum_c \frac{\partial L_i}{\partial z_{ic}} \dot z_{ic}

    then scaled by the reduction (divided by the total label weight for 'mean').
    """
    name = "cross_entropy"
    higher_order = True

    def forward(self, x, target, weight, ignore_index=-100, reduction="mean",
                label_smoothing=0.0):
        scores, q, divisor = Floss.class_targets(self.name, x, target, weight, ignore_index,
                                               label_smoothing)
        log_p = F.log_softmax(scores, 1)
        loss = Floss.reduce_rows(Floss.row_losses(q, log_p), reduction, divisor, target.shape)
        return loss, (log_p, q, divisor, x.shape, x)

    @staticmethod
    def _slope(log_p, q):
        return np.exp(log_p) * q.sum(axis=1, keepdims=True) - q          # (M, C)

    def vjp(self, residuals, g, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        log_p, q, divisor, x_shape, x = residuals
        if is_traced(x) or is_traced(g):
            # p = softmax of the score rows, recomputed as an op so that it depends on x
            # (q holds no scores: rows whose label is ignored are zero in q)
            p = call(softmax, _rows(x), dim=1)
            slope = p * q.sum(axis=1, keepdims=True) - q
        else:
            slope = self._slope(log_p, q)
        grad_rows = slope * _row_scale(g, reduction, divisor)
        return _rows_to_input(grad_rows, x_shape), None, None

    def jvp(self, primals, tangents, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        (x, target, weight), (dx, _, _) = primals, tangents
        if not any(is_traced(v) for v in primals):
            loss, (log_p, q, divisor, _, _) = self.forward(x, target, weight, ignore_index,
                                                           reduction, label_smoothing)
            slope = self._slope(log_p, q)
        else:
            # q and the divisor are constants (the labels fix them), as in the vjp; the
            # probabilities depend on x, so they are recomputed as an op
            attrs = dict(ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)
            loss = call(self, x, target, weight, **attrs)
            q = forward_residual(self, primals, attrs, item=1)
            divisor = forward_residual(self, primals, attrs, item=2)
            slope = call(softmax, _rows(x), dim=1) * q.sum(axis=1, keepdims=True) - q
        rows = (slope * _rows(dx)).sum(axis=1)                   # (M,): one directional slope
        return loss, _reduce_rows(rows, reduction, divisor, target.shape)


cross_entropy = register(CrossEntropy())


class NllLoss(_ClassificationLoss):
    r"""Negative log-likelihood of integer labels under log-probabilities ``x``.

    Linear in ``x``: :math:`L_i = -\sum_c q_{ic} x_{ic}`, so
    :math:`\partial L_i / \partial x_{ic} = -q_{ic}` and
    :math:`\dot L_i = -\sum_c q_{ic}\dot x_{ic}`.
    """
    name = "nll_loss"
    higher_order = True

    def shape(self, x, target, weight, ignore_index=-100, reduction="mean"):
        return super().shape(x, target, weight, ignore_index, reduction)

    def forward(self, x, target, weight, ignore_index=-100, reduction="mean"):
        scores, q, divisor = Floss.class_targets(self.name, x, target, weight, ignore_index)
        loss = Floss.reduce_rows(Floss.row_losses(q, scores), reduction, divisor, target.shape)
        return loss, (q, divisor, x.shape)

    def vjp(self, residuals, g, ignore_index=-100, reduction="mean"):
        q, divisor, x_shape = residuals
        return _rows_to_input(-q * _row_scale(g, reduction, divisor), x_shape), None, None

    def jvp(self, primals, tangents, ignore_index=-100, reduction="mean"):
        (x, target, weight), (dx, _, _) = primals, tangents
        if not any(is_traced(v) for v in primals):
            loss, (q, divisor, _) = self.forward(x, target, weight, ignore_index, reduction)
        else:                            # q and the divisor are constants, as in the vjp
            attrs = dict(ignore_index=ignore_index, reduction=reduction)
            loss = call(self, x, target, weight, **attrs)
            q = forward_residual(self, primals, attrs, item=0)
            divisor = forward_residual(self, primals, attrs, item=1)
        rows = -(q * _rows(dx)).sum(axis=1)
        return loss, _reduce_rows(rows, reduction, divisor, target.shape)


nll_loss = register(NllLoss())


class MseLoss(Op):
    r"""Mean squared error (PyTorch's ``mse_loss``), optionally weighted elementwise.

    With :math:`r = x - t` (broadcast) and weights :math:`w` (1 when absent):

    .. math:: L = \frac{1}{D}\sum_k w_k r_k^2, \qquad
              \bar x = \bar L\, \frac{2 w r}{D}, \quad \bar t = -\bar x, \qquad
              \dot L = \frac{1}{D}\sum_k 2 w_k r_k (\dot x_k - \dot t_k)

    where :math:`D` is the element count (or :math:`\sum w`) for 'mean' and 1 for 'sum'; with
    'none' nothing is summed.
    """
    name = "mse_loss"
    higher_order = True
    inputs = ("input", "target", "weight")
    optional = ("weight",)
    nondiff = ("weight",)

    def shape(self, x, target, weight, reduction="mean"):
        shape = broadcast_shape(x, target)
        if weight is not None and tuple(weight) != tuple(x):
            raise ShapeError(f"mse_loss: weight must have the input's shape {tuple(x)}, got "
                             f"{tuple(weight)}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got "
                             f"{reduction!r}")
        return shape if reduction == "none" else ()

    def dtype(self, x, target, weight, **attrs):
        dtype = super().dtype(x, target, None)
        if weight is not None and np.dtype(weight) != dtype:
            raise TypeError(f"mse_loss: weight ({np.dtype(weight)}) and input ({dtype}) must "
                            "share one dtype")
        return dtype

    @staticmethod
    def _slope(x, target, weight, reduction):
        """d L / d x before the incoming gradient: 2 w r / D, broadcast shape."""
        slope = 2 * (x - target)
        if weight is not None:
            slope = slope * weight
        if reduction == "mean":       # the weights' sum stays a graphm value (a Var in a graph)
            divisor = x.dtype.type(math.prod(slope.shape)) if weight is None else weight.sum()
            slope = slope / divisor
        return slope

    def forward(self, x, target, weight, reduction="mean"):
        loss = F.mse_loss(x, target, reduction=reduction, weight=weight)
        return loss, (x, target, weight)

    def vjp(self, residuals, g, reduction="mean"):
        x, target, weight = residuals
        grad = self._slope(x, target, weight, reduction) * g
        return unbroadcast(grad, x.shape), unbroadcast(-grad, target.shape), None

    def jvp(self, primals, tangents, reduction="mean"):
        (x, target, weight), (dx, dtarget, _) = primals, tangents
        loss = F.mse_loss(x, target, reduction=reduction, weight=weight)
        change = self._slope(x, target, weight, reduction) * (dx - dtarget)
        if reduction == "none":
            return loss, change
        return loss, (change.sum() if is_traced(change) else np.asarray(change.sum(dtype=x.dtype)))


mse_loss = register(MseLoss())
