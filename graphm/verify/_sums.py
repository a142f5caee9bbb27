r"""Sums whose exact value is bounded, not just approximated: the constant terms of CROWN.

CROWN's bound is a sum of many products (coefficients times biases, times box corners). These
are accumulated in float64 (a float32 times a float32 is exact there) and each sum is widened
by the standard bound on a floating-point sum of :math:`n` terms, each of them the product of
up to :math:`k` rounded factors:

.. math:: \Big|\mathrm{fl}\Big(\sum_i t_i\Big) - \sum_i t_i\Big| \le \gamma_{n+k}
          \sum_i |t_i|, \qquad \gamma_m = \frac{m u}{1 - m u},\ u = 2^{-53},

the sum of magnitudes being itself computed and rounded up. The result is an exact lower
(or upper) bound, one per row.
"""
from __future__ import annotations

import math

import numpy as np

from graphm.ops.interval import gamma, round_down, round_up

__all__ = ["add_down", "sum_lower", "sum_upper", "to_dtype_down"]

_TINY = np.finfo(np.float64).tiny


def sum_lower(terms, roundings=1):
    """A lower bound on the exact sum of ``terms`` (R, ...) over all axes but the first, each
    term the float64 product of at most ``roundings`` rounded multiplications."""
    terms = np.asarray(terms, np.float64)
    terms = terms.reshape(terms.shape[0], -1)
    n = terms.shape[1] + roundings
    g = float(gamma(n, np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        total = terms.sum(axis=1)
        size = round_up(np.abs(terms).sum(axis=1) * (1 + 4 * g))
        error = round_up(size * (g * (1 + 2 ** -40)) + 4 * n * _TINY)
        lower = round_down(total - error)
    return np.where(np.isnan(lower), -np.inf, lower)


def sum_upper(terms, roundings=1):
    """An upper bound on the exact sum (see :func:`sum_lower`)."""
    return -sum_lower(-np.asarray(terms, np.float64), roundings)


def add_down(a, b):
    """``a + b`` rounded down (float64)."""
    with np.errstate(invalid="ignore"):
        total = round_down(np.asarray(a, np.float64) + b)
    return np.where(np.isnan(total), -np.inf, total)


def to_dtype_down(values, dtype):
    """float64 lower bounds as ``dtype`` values no larger than them."""
    cast = values.astype(dtype)
    too_big = cast.astype(np.float64) > values
    return np.where(too_big, round_down(cast), cast)


def count(shape):
    return math.prod(shape)


def nonnegative_dot_upper(a, b):
    """An upper bound on the exact row sums of ``a * b`` for non-negative ``a``, ``b`` of one
    float dtype (R, ...): products rounded in that dtype (relative error ``u``, plus underflow),
    summed in float64 (relative error ``γ_n``). Cheaper than :func:`sum_upper`: no magnitudes
    to add, since every term is already non-negative."""
    dtype = np.result_type(a, b)
    rows = a.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        total = (a * b).reshape(rows, -1).sum(axis=1, dtype=np.float64)
    n = math.prod(np.broadcast_shapes(a.shape, b.shape)[1:])
    u = float(np.finfo(dtype).eps) / 2
    g = float(gamma(n + 1, np.float64))
    factor = (1 + 2 * u) * (1 + 2 * g) * (1 + 2 ** -40)
    return round_up(total * factor + 2 * n * float(np.finfo(dtype).tiny))


def to_dtype_up(values, dtype):
    """float64 values as ``dtype`` values no smaller than them."""
    cast = np.asarray(values).astype(dtype)
    too_small = cast.astype(np.float64) < values
    return np.where(too_small, round_up(cast), cast)
