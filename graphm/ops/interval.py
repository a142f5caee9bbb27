r"""Interval arithmetic that is sound in floating point: what the ops' ``interval`` rules share.

Beside its four rules (shape, forward, vjp, jvp) an op may have a fifth::

    interval(*inputs, **attrs) -> Bounds(lower, upper)

Each input is either a :class:`Bounds` (a box: every value between ``lower`` and ``upper``,
elementwise) or a plain array (a value known exactly, such as a weight). The answer must
contain *every value the op's own forward pass can return* for inputs in the boxes, computed
in the program's float32 or float64 arithmetic, not only the values of exact real arithmetic:
a bound that holds for real numbers but not for what the computer computes certifies nothing.
:mod:`graphm.verify` runs these rules node by node over a program (interval bound propagation).

Three kinds of rule cover graphm's ops.

**Monotone, correctly rounded ops** (add, sub, neg, multiplication and division by a constant,
relu, max pooling, reshaping, indexing, casts). IEEE 754 rounds every ``+ - * /`` to nearest,
and rounding to nearest is monotone: ``a <= b`` implies ``fl(a) <= fl(b)``. So the op applied to
the box's corners, *in the same arithmetic*, bounds what it computes anywhere inside, with no
widening at all: ``fl(l1 + l2) <= fl(x1 + x2)`` whenever ``l1 <= x1`` and ``l2 <= x2``.

**Affine maps** (conv, conv_transpose, linear, avg_pool, sum, mean, matmul by a constant). In
centre–radius form, with :math:`c = (l + u)/2` and :math:`r \ge (u - l)/2`, exact arithmetic
gives :math:`c' = W c + b` and :math:`r' = |W| r`. A dot product of :math:`n` terms computed in
floating point (in any order, with or without fused multiply-adds) is off by at most

.. math:: |\mathrm{fl}(w^\top x + b) - (w^\top x + b)| \le \gamma_{n+1}\,(|w|^\top |x| + |b|),
          \qquad \gamma_n = \frac{n u}{1 - n u},

where :math:`u` is the unit roundoff (:math:`2^{-24}` in float32, :math:`2^{-53}` in float64)
(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1). For :math:`x = c + \delta`,
:math:`|\delta| \le r`, the program's output therefore lies within

.. math:: |\mathrm{fl}(Wx + b) - \mathrm{fl}(Wc + b)| \le
          |W|\,\big((1 + \gamma) r + 2\gamma |c|\big) + 2\gamma |b| + a

of the computed centre (the first :math:`\gamma` term is the program's own rounding at
:math:`x`, the second the rounding of the centre we computed; :math:`a` bounds underflow). That
radius is one more affine map, :math:`|W|` applied to one vector, computed by the same kernel,
and since all its terms are non-negative its own rounding only needs a factor
:math:`1 + 2\gamma`. The rounding of every elementwise step of this bookkeeping (each at
most a factor :math:`1 + u` on non-negative numbers) and of the final ``centre ∓ radius`` is
collected into two constant factors (:func:`affine_interval`). The cost is two passes of the
op (centre and radius) plus elementwise work: IBP through a conv costs two convolutions.

**Other monotone functions** (exp, log, sigmoid, tanh, softplus) are not correctly rounded by
NumPy; their values at the corners are widened by :data:`TRANSCENDENTAL_ULPS` units in the last
place (a documented bound on the error of NumPy's and the C library's implementations, with
room to spare) on each of the two evaluations the argument compares.

The bounds are for numbers, not NaN: an op that computes NaN somewhere in the box (``0 * inf``)
is outside what a box can describe.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "TRANSCENDENTAL_ULPS",
    "Bounds",
    "NoIntervalRule",
    "affine_interval",
    "approximate_monotone_interval",
    "centre_radius",
    "corner_interval",
    "exact_value",
    "flip",
    "gamma",
    "magnitude",
    "monotone_interval",
    "round_down",
    "round_up",
    "scalar_up",
    "unit_roundoff",
]

#: Error allowed for NumPy's exp, log, log1p, tanh and the compositions graphm builds from them
#: (sigmoid, softplus), in units in the last place of the result. NumPy documents at most 4 ulp
#: for its vectorised float32 exp/log and glibc at most 2 ulp in float64; the compositions add
#: one or two roundings. 8 leaves room for all of them.
TRANSCENDENTAL_ULPS = 8


class Bounds(NamedTuple):
    """A box: ``lower <= value <= upper`` elementwise (two arrays of one shape and dtype)."""

    lower: np.ndarray
    upper: np.ndarray

    @property
    def shape(self):
        return self.lower.shape

    @property
    def dtype(self):
        return self.lower.dtype

    def width(self):
        """``upper - lower``, elementwise."""
        return self.upper - self.lower

    def contains(self, values):
        """Are all ``values`` (broadcast against the box) inside it?"""
        values = np.asarray(values)
        return bool(np.all((self.lower <= values) & (values <= self.upper)))


class NoIntervalRule(NotImplementedError):
    """An op (or an op applied to these kinds of argument) has no interval rule."""


def exact_value(op, name, value):
    """``value`` as a known array; a :class:`NoIntervalRule` error if it is a box.

    The affine rules bound ``W x + b`` for a box on ``x`` and a *known* ``W`` and ``b`` (the
    weights of a trained network); a box on the weights too is not what they compute.
    """
    if isinstance(value, Bounds):
        if value.lower is value.upper or np.array_equal(value.lower, value.upper):
            return value.lower
        raise NoIntervalRule(f"{op}: the interval rule needs an exact {name} (only the input may "
                             f"be a box), got a box of shape {value.lower.shape} on {name}")
    return value


# ------------------------------------------------------------------------------------------------
# Rounding
# ------------------------------------------------------------------------------------------------

def unit_roundoff(dtype):
    """:math:`u`, half the distance from 1 to the next float: 2**-24 (float32), 2**-53."""
    return float(np.finfo(dtype).eps) / 2


def scalar_up(value, dtype):
    """The Python float ``value`` as a scalar of ``dtype`` no smaller than it."""
    scalar = np.dtype(dtype).type(value)
    if float(scalar) < value:
        scalar = np.nextafter(scalar, np.dtype(dtype).type(np.inf))
    return scalar


def gamma(n, dtype):
    r""":math:`\gamma_n = n u / (1 - n u)` as a scalar of ``dtype`` rounded up (``inf`` once
    :math:`n u \ge 1`): the relative error bound of a sum of ``n`` rounded terms."""
    nu = n * unit_roundoff(dtype)
    if nu >= 0.5:
        return np.dtype(dtype).type(np.inf)
    return scalar_up(nu / (1 - nu) * (1 + 2 ** -40), dtype)


def round_up(x):
    """The next float above ``x`` (elementwise): an upper bound of the exact result of the one
    operation, rounded to nearest, that gave ``x``."""
    return np.nextafter(x, x.dtype.type(np.inf))


def round_down(x):
    """The next float below ``x`` (elementwise)."""
    return np.nextafter(x, x.dtype.type(-np.inf))


def _tiny(dtype):
    """The smallest normal float: more than the absolute error of one operation that
    underflows (gradual underflow is off by at most half the smallest subnormal)."""
    return np.finfo(dtype).tiny


def magnitude(bounds):
    """``max(|lower|, |upper|)``: the largest absolute value in the box (exact)."""
    return np.maximum(np.abs(bounds.lower), np.abs(bounds.upper))


def centre_radius(bounds):
    r"""``(c, d)``: a centre and a radius computed in the box's dtype, with
    :math:`[l, u] \subseteq [c - r, c + r]` for the exact :math:`r = \max(u - c, c - l)`,
    and :math:`r \le d (1 + u) + \eta` (one rounding; :math:`\eta` the underflow).

    ``c = fl(l/2 + u/2)``; where ``l == u`` the radius is exactly 0.
    """
    lower, upper = bounds
    half = lower.dtype.type(0.5)
    with np.errstate(over="ignore", invalid="ignore"):
        c = np.multiply(lower, half)            # halves first: l + u may overflow
        d = np.multiply(upper, half)
        c += d
        np.subtract(upper, c, out=d)
        np.maximum(d, c - lower, out=d)
    return c, d


# ------------------------------------------------------------------------------------------------
# The three kinds of rule
# ------------------------------------------------------------------------------------------------

def affine_interval(bounds, centre_map, abs_map, terms, bias=None):
    r"""Bounds on an affine map :math:`x \mapsto Wx + b` over a box, sound for the map as the
    program computes it.

    Parameters
    ----------
    bounds : Bounds
        The box on ``x``.
    centre_map : callable
        ``centre_map(c)`` computes :math:`Wc + b` exactly as the op's forward pass does.
    abs_map : callable
        ``abs_map(v, bias_term)`` computes :math:`|W| v + \text{bias\_term}` for a
        non-negative ``v`` (``bias_term`` is None when the op has no bias): the same kernel
        with the absolute value of the weight.
    terms : int
        An upper bound on the products summed for one output (``C_in/groups · prod(kernel)``
        for a conv, ``in_features`` for linear, the window size for a pool); one more rounding
        (the bias, or the pool's division) is counted here.
    bias : ndarray, optional
        The bias, shaped as ``abs_map`` wants it.

    Returns
    -------
    Bounds
        ``fl(c') ∓ E``, with (module docstring and Notes)
        :math:`E \approx |W|((1+\gamma) d + (2\gamma + u)|c|) + (2\gamma + u)|b| + a`.

    Notes
    -----
    Each elementwise step of the radius is rounded to nearest, so its exact value is at most
    :math:`(1 + u)` times the computed one per operation (non-negative numbers, plus
    underflow). Rather than round each step up with ``np.nextafter`` (slow), one factor
    :math:`F = (1 + 2\gamma)(1 + u)^7` collects them all (the radius ``d``, the four operations
    of ``v``, the bias term, and :math:`1 + 2\gamma` for the :math:`|W|` pass, whose terms are
    non-negative). The final ``m ∓ E`` rounds too, by at most :math:`u |m \mp E|
    \le u(|m| + E)`; since :math:`|m| \le (1 + \gamma)(|W||c| + |b|)`, adding
    :math:`u(1 + \gamma)` to the coefficient of :math:`|c|` and :math:`|b|` lets the radius pass
    carry :math:`u|m|` as well, and :math:`E = F R (1 + u)^2 / (1 - u)` covers the rest. So the
    cost is two passes of the op (centre and radius) and about ten elementwise passes.
    """
    c, d = centre_radius(bounds)
    dtype = c.dtype
    u = unit_roundoff(dtype)
    g = float(gamma(terms + 1, dtype))
    one_plus_g = scalar_up(1 + g, dtype)
    # 2γ|c| for the two roundings of the map, and u(1 + γ)|c| more so that the radius pass also
    # covers u|fl(Wc + b)|, the rounding of the final centre ∓ radius (same for |b|)
    k = scalar_up((2 * g + u * (1 + g)) * (1 + 4 * u), dtype)
    factor = (1 + 2 * g) * (1 + u) ** 7 * (1 + 4 * u)
    spread_factor = scalar_up(factor * (1 + u) ** 2 / (1 - u) * (1 + 4 * u), dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        centre = np.asarray(centre_map(c))
        v = d
        v *= one_plus_g
        magnitude_c = np.abs(c, out=c)
        magnitude_c *= k
        v += magnitude_c
        v += dtype.type(4) * _tiny(dtype)     # the underflow of d and of these operations
        bias_term = None if bias is None else np.abs(bias) * k + _tiny(dtype)
        spread = np.asarray(abs_map(v, bias_term), dtype=dtype)   # a fresh array
        spread *= spread_factor
        spread += dtype.type(2 * (terms + 8)) * _tiny(dtype)     # the pass's own underflow
        lower = centre - spread
        centre += spread
        upper = centre
    return _no_nan(lower, upper)


def monotone_interval(function, *boxes, decreasing=False):
    """``function`` applied to the lower and to the upper corner: exact for an op that is
    monotone (increasing, or ``decreasing``) in every box argument and correctly rounded (see
    the module docstring), such as relu, max pooling, reshapes and casts.

    ``boxes`` are Bounds or exact arrays; an exact array is passed to both calls.
    """
    lows = [b.lower if isinstance(b, Bounds) else b for b in boxes]
    highs = [b.upper if isinstance(b, Bounds) else b for b in boxes]
    if decreasing:
        lows, highs = highs, lows
    return _no_nan(np.asarray(function(*lows)), np.asarray(function(*highs)))


def corner_interval(function, a, b):
    """Bounds on ``function(a, b)`` for a product or quotient: its extreme values over a box lie
    at the corners, and rounding to nearest keeps the order, so the smallest and largest of the
    four corners, computed in the program's arithmetic, are sound (``a``, ``b`` Bounds or
    exact arrays)."""
    a_ends = (a.lower, a.upper) if isinstance(a, Bounds) else (a,)
    b_ends = (b.lower, b.upper) if isinstance(b, Bounds) else (b,)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        corners = [np.asarray(function(x, y)) for x in a_ends for y in b_ends]
    lower = corners[0]
    upper = corners[0]
    for corner in corners[1:]:
        lower, upper = np.minimum(lower, corner), np.maximum(upper, corner)
    # a NaN corner (0 * inf) says nothing: widen to everything
    nan = np.zeros(lower.shape, bool)
    for corner in corners:
        nan |= np.isnan(corner)
    if nan.any():
        lower = np.where(nan, lower.dtype.type(-np.inf), lower)
        upper = np.where(nan, upper.dtype.type(np.inf), upper)
    return Bounds(lower, upper)


def approximate_monotone_interval(function, bounds, ulps=TRANSCENDENTAL_ULPS):
    r"""``function`` at the corners, widened for an implementation that is not correctly
    rounded but within ``ulps`` units in the last place of the true increasing function
    :math:`f`.

    For :math:`x \in [l, u]`: :math:`\hat f(x) \ge f(x) - e \ge f(l) - e \ge \hat f(l) - 2e`,
    with :math:`e \le` ``ulps`` ulp of the largest value in the box; so each corner moves out by
    :math:`2e` (plus underflow), rounded outward.
    """
    lower, upper = monotone_interval(function, bounds)
    dtype = lower.dtype
    eps = float(np.finfo(dtype).eps)
    with np.errstate(over="ignore", invalid="ignore"):
        size = np.maximum(np.abs(lower), np.abs(upper))
        slack = round_up(size * scalar_up(2 * ulps * eps * (1 + 4 * eps), dtype)
                         + dtype.type(2 * ulps) * _tiny(dtype))
        lower, upper = round_down(lower - slack), round_up(upper + slack)
    return _no_nan(lower, upper)


def _no_nan(lower, upper):
    """NaN bounds (``inf - inf`` in the bookkeeping of an unbounded box) become ``∓inf``."""
    with np.errstate(over="ignore", invalid="ignore"):
        suspicious = not np.isfinite(np.sum(lower) + np.sum(upper))
    if suspicious:                      # a NaN, an infinity or an overflow: look entry by entry
        if np.isnan(lower).any():
            lower = np.where(np.isnan(lower), lower.dtype.type(-np.inf), lower)
        if np.isnan(upper).any():
            upper = np.where(np.isnan(upper), upper.dtype.type(np.inf), upper)
    return Bounds(lower, upper)


def flip(bounds):
    """A box with its corners swapped, for an argument an op decreases in (``a - b`` in b)."""
    return Bounds(bounds.upper, bounds.lower) if isinstance(bounds, Bounds) else bounds
