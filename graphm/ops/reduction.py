"""Reductions: sum and mean over some axes (``axis=None``: all of them).

A sum copies nothing and adds many things; its adjoint copies one gradient back to every summed
position (a broadcast). The mean is the sum divided by the number of elements summed.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from graphm.ops.base import (Op, ShapeError, broadcast_shape, call, is_traced, linear_jvp,
                             register, unbroadcast)
from graphm.ops.interval import affine_interval, monotone_interval

__all__ = ["sum", "mean", "sum_to", "broadcast_to", "normalize_axes"]


def normalize_axes(axis, ndim, opname):
    """``axis`` (None, an int or a sequence of ints, negatives allowed) as a sorted tuple."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    size = max(ndim, 1)
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral) or not -size <= a < size:
            raise ShapeError(f"{opname}: axis {axis!r} is out of range for {ndim} dimensions")
    normalized = tuple(sorted(int(a) % size for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ShapeError(f"{opname}: axis {axis!r} repeats a dimension")
    return normalized if ndim else ()


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _spread(g, shape, axes, keepdims):
    """Broadcast a reduced gradient back to ``shape`` (re-inserting the summed axes)."""
    if is_traced(g):                       # recorded: a reshape, then the op broadcast_to
        if not keepdims:
            g = g.reshape(_reduced_shape(shape, axes, True))
        return call(broadcast_to, g, shape=tuple(shape))
    if not keepdims:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


class Sum(Op):
    r"""Sum over ``axis``: :math:`y = \sum_{i \in \text{axis}} x_i`.

    .. math:: \bar x_i = \bar y \quad (\text{broadcast back}), \qquad
              \dot y = \sum_{i \in \text{axis}} \dot x_i
    """
    name = "sum"
    higher_order = True

    def shape(self, x, axis=None, keepdims=False):
        return _reduced_shape(x, normalize_axes(axis, len(x), self.name), keepdims)

    def forward(self, x, axis=None, keepdims=False):
        axes = normalize_axes(axis, x.ndim, self.name)
        return np.asarray(x.sum(axis=axes, keepdims=keepdims)), x.shape

    def vjp(self, x_shape, g, axis=None, keepdims=False):
        axes = normalize_axes(axis, len(x_shape), self.name)
        return (_spread(g, x_shape, axes, keepdims),)

    def jvp(self, primals, tangents, axis=None, keepdims=False):
        axes = normalize_axes(axis, primals[0].ndim, self.name)
        return linear_jvp(self, primals, tangents,
                          lambda v: np.asarray(v.sum(axis=axes, keepdims=keepdims)),
                          axis=axis, keepdims=keepdims)

    def interval(self, x, axis=None, keepdims=False):
        """A sum is linear with weights 1: centre–radius form with the rounding of a sum of
        as many terms (graphm.ops.interval.affine_interval)."""
        return _reduction_interval(self, x, axis, keepdims)


sum = register(Sum())


class Mean(Op):
    r"""Mean over ``axis``: :math:`y = \frac{1}{n} \sum_{i \in \text{axis}} x_i`.

    .. math:: \bar x_i = \bar y / n, \qquad \dot y = \frac{1}{n}\sum_{i \in \text{axis}} \dot x_i
    """
    name = "mean"
    higher_order = True

    def shape(self, x, axis=None, keepdims=False):
        return _reduced_shape(x, normalize_axes(axis, len(x), self.name), keepdims)

    def forward(self, x, axis=None, keepdims=False):
        axes = normalize_axes(axis, x.ndim, self.name)
        return np.asarray(x.mean(axis=axes, keepdims=keepdims)), x.shape

    def vjp(self, x_shape, g, axis=None, keepdims=False):
        axes = normalize_axes(axis, len(x_shape), self.name)
        count = math.prod(x_shape[a] for a in axes)
        return (_spread(g / count, x_shape, axes, keepdims),)

    def jvp(self, primals, tangents, axis=None, keepdims=False):
        axes = normalize_axes(axis, primals[0].ndim, self.name)
        return linear_jvp(self, primals, tangents,
                          lambda v: np.asarray(v.mean(axis=axes, keepdims=keepdims)),
                          axis=axis, keepdims=keepdims)

    def interval(self, x, axis=None, keepdims=False):
        """A sum and one division: centre–radius form, as :meth:`Sum.interval`."""
        return _reduction_interval(self, x, axis, keepdims)


def _reduction_interval(op, x, axis, keepdims):
    axes = normalize_axes(axis, x.lower.ndim, op.name)
    count = math.prod(x.lower.shape[a] for a in axes)

    def reduce(v):
        return op.forward(v, axis, keepdims)[0]
    return affine_interval(x, reduce, lambda v, _: reduce(v), terms=max(count, 1))


mean = register(Mean())


class SumTo(Op):
    r"""Sum down to ``shape`` along the axes NumPy broadcasting would have stretched: the VJP of
    broadcasting, as an op.

    .. math:: \bar x = \mathrm{broadcast\_to}(\bar y, x.\mathrm{shape}), \qquad
              \dot y = \mathrm{sum\_to}(\dot x, \text{shape})
    """
    name = "sum_to"
    higher_order = True

    def shape(self, x, shape):
        if broadcast_shape(tuple(shape), x) != tuple(x):
            raise ShapeError(f"sum_to: {tuple(x)} does not broadcast from {tuple(shape)}")
        return tuple(shape)

    def forward(self, x, shape):
        return unbroadcast(x, shape), x.shape

    def vjp(self, x_shape, g, shape):
        return (call(broadcast_to, g, shape=tuple(x_shape)),)

    def jvp(self, primals, tangents, shape):
        return linear_jvp(self, primals, tangents, lambda v: unbroadcast(v, shape), shape=shape)

    def interval(self, x, shape):
        """A sum over the broadcast axes: centre–radius form, as :meth:`Sum.interval`."""
        count = math.prod(x.lower.shape) // max(math.prod(shape), 1)

        def reduce(v):
            return unbroadcast(v, shape)
        return affine_interval(x, reduce, lambda v, _: reduce(v), terms=max(count, 1))


sum_to = register(SumTo())


class BroadcastTo(Op):
    r"""NumPy's ``broadcast_to``: copy ``x`` along new leading axes and axes of length 1.

    .. math:: \bar x = \mathrm{sum\_to}(\bar y, x.\mathrm{shape}), \qquad
              \dot y = \mathrm{broadcast\_to}(\dot x, \text{shape})
    """
    name = "broadcast_to"
    higher_order = True

    def shape(self, x, shape):
        if broadcast_shape(tuple(shape), x) != tuple(shape):
            raise ShapeError(f"broadcast_to: {tuple(x)} does not broadcast to {tuple(shape)}")
        return tuple(shape)

    def forward(self, x, shape):
        return np.broadcast_to(x, shape), x.shape

    def vjp(self, x_shape, g, shape):
        return (unbroadcast(g, x_shape),)

    def jvp(self, primals, tangents, shape):
        return linear_jvp(self, primals, tangents, lambda v: np.broadcast_to(v, shape),
                          shape=shape)

    def interval(self, x, shape):
        """Copies: the box's corners, copied (exact)."""
        return monotone_interval(lambda v: np.broadcast_to(v, shape), x)


broadcast_to = register(BroadcastTo())
