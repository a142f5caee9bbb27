"""Arithmetic: add, sub, mul, div, neg, pow, exp, log and matmul.

The binary elementwise ops broadcast as NumPy does; their VJPs sum the gradient back down to each
input's shape (``unbroadcast``), because broadcasting copies and the adjoint of a copy is a sum.

Every VJP and JVP here is written with operators (``*``, ``/``, ``@``, ``-``) and graphm ops only,
so the same line runs on NumPy arrays (a first-order backward pass, or forward mode at NumPy speed)
and on Tensors or a graph's Vars (recorded, so that the derivative can be differentiated again):
the residuals are the op's own inputs and output.
"""
from __future__ import annotations

import numbers

import numpy as np

from graphm.ops.base import (Op, ShapeError, broadcast_shape, call, format_shape, is_traced,
                             register, unbroadcast)
from graphm.ops.interval import (Bounds, affine_interval, approximate_monotone_interval,
                                 corner_interval, exact_value, flip, monotone_interval)

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "matmul"]


class Add(Op):
    r"""Elementwise sum :math:`a + b` (broadcasting).

    .. math:: \bar a = \bar y, \quad \bar b = \bar y, \qquad \dot y = \dot a + \dot b
    """
    name = "add"
    higher_order = True
    inputs = ("a", "b")

    def shape(self, a, b):
        return broadcast_shape(a, b)

    def forward(self, a, b):
        return a + b, (a.shape, b.shape)

    def vjp(self, residuals, g):
        a_shape, b_shape = residuals
        return unbroadcast(g, a_shape), unbroadcast(g, b_shape)

    def jvp(self, primals, tangents):
        (a, b), (da, db) = primals, tangents
        return a + b, da + db

    def interval(self, a, b):
        """``[fl(l_a + l_b), fl(u_a + u_b)]``: increasing in both, correctly rounded."""
        return monotone_interval(np.add, a, b)


add = register(Add())


class Sub(Op):
    r"""Elementwise difference :math:`a - b` (broadcasting).

    .. math:: \bar a = \bar y, \quad \bar b = -\bar y, \qquad \dot y = \dot a - \dot b
    """
    name = "sub"
    higher_order = True
    inputs = ("a", "b")

    def shape(self, a, b):
        return broadcast_shape(a, b)

    def forward(self, a, b):
        return a - b, (a.shape, b.shape)

    def vjp(self, residuals, g):
        a_shape, b_shape = residuals
        return unbroadcast(g, a_shape), unbroadcast(-g, b_shape)

    def jvp(self, primals, tangents):
        (a, b), (da, db) = primals, tangents
        return a - b, da - db

    def interval(self, a, b):
        """``[fl(l_a - u_b), fl(u_a - l_b)]``: increasing in a, decreasing in b."""
        return monotone_interval(np.subtract, a, flip(b))


sub = register(Sub())


class Mul(Op):
    r"""Elementwise product :math:`a b` (broadcasting).

    .. math:: \bar a = \bar y\, b, \quad \bar b = \bar y\, a, \qquad
              \dot y = \dot a\, b + a\, \dot b
    """
    name = "mul"
    higher_order = True
    inputs = ("a", "b")

    def shape(self, a, b):
        return broadcast_shape(a, b)

    def forward(self, a, b):
        return a * b, (a, b)

    def vjp(self, residuals, g):
        a, b = residuals
        return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)

    def jvp(self, primals, tangents):
        (a, b), (da, db) = primals, tangents
        return a * b, da * b + a * db

    def interval(self, a, b):
        """The smallest and largest of the corner products (each correctly rounded)."""
        return corner_interval(np.multiply, a, b)


mul = register(Mul())


class Div(Op):
    r"""Elementwise quotient :math:`y = a / b` (broadcasting).

    .. math:: \bar a = \bar y / b, \quad \bar b = -\bar y\, a / b^2 = -\bar y\, y / b,
              \qquad \dot y = (\dot a - y\, \dot b) / b
    """
    name = "div"
    higher_order = True
    inputs = ("a", "b")

    def shape(self, a, b):
        return broadcast_shape(a, b)

    def forward(self, a, b):
        y = a / b
        return y, (a.shape, b, y)

    def vjp(self, residuals, g):
        a_shape, b, y = residuals
        grad_a = g / b
        return unbroadcast(grad_a, a_shape), unbroadcast(-grad_a * y, b.shape)

    def jvp(self, primals, tangents):
        (a, b), (da, db) = primals, tangents
        y = a / b
        return y, (da - y * db) / b

    def interval(self, a, b):
        """The corner quotients when the divisor's box excludes 0; everything otherwise."""
        if isinstance(b, Bounds):
            spans_zero = (b.lower <= 0) & (b.upper >= 0)
            box = corner_interval(np.divide, a, b)
            if spans_zero.any():
                box = Bounds(np.where(spans_zero, box.lower.dtype.type(-np.inf), box.lower),
                             np.where(spans_zero, box.upper.dtype.type(np.inf), box.upper))
            return box
        return corner_interval(np.divide, a, b)


div = register(Div())


class Neg(Op):
    r"""Negation :math:`-x`:  :math:`\bar x = -\bar y`, :math:`\dot y = -\dot x`."""
    name = "neg"
    higher_order = True

    def shape(self, x):
        return x

    def forward(self, x):
        return -x, None

    def vjp(self, residuals, g):
        return (-g,)

    def jvp(self, primals, tangents):
        return -primals[0], -tangents[0]

    def interval(self, x):
        """``[-u, -l]`` (exact)."""
        return monotone_interval(np.negative, x, decreasing=True)


neg = register(Neg())


class Pow(Op):
    r"""Power with a constant exponent, :math:`y = x^p` (``p`` an attribute, not an input).

    .. math:: \bar x = \bar y\, p\, x^{p-1}, \qquad \dot y = p\, x^{p-1} \dot x
    """
    name = "pow"
    higher_order = True

    def shape(self, x, exponent):
        if not isinstance(exponent, numbers.Real) or isinstance(exponent, bool):
            raise TypeError(f"pow: the exponent must be a Python number, got {exponent!r}")
        return x

    def forward(self, x, exponent):
        return x ** exponent, x

    def vjp(self, x, g, exponent):
        return (g * _power_slope(x, exponent),)

    def jvp(self, primals, tangents, exponent):
        (x,), (dx,) = primals, tangents
        return x ** exponent, dx * _power_slope(x, exponent)


pow = register(Pow())


def _power_slope(x, exponent):
    """d(x^p)/dx = p x^(p-1); exactly 0 for p = 0 (not 0 * inf at x = 0), as PyTorch."""
    if exponent == 0:
        return np.zeros(x.shape, x.dtype)           # a constant, for arrays and Tensors alike
    return exponent * x ** (exponent - 1)


class Exp(Op):
    r"""Exponential :math:`y = e^x`: its own derivative, so the VJP reuses the output.

    .. math:: \bar x = \bar y\, y, \qquad \dot y = y\, \dot x
    """
    name = "exp"
    higher_order = True

    def shape(self, x):
        return x

    def forward(self, x):
        y = np.exp(x)
        return y, y

    def vjp(self, y, g):
        return (g * y,)

    def jvp(self, primals, tangents):
        x = primals[0]
        y = call(self, x) if is_traced(x) else np.exp(x)    # once, reused as the slope
        return y, y * tangents[0]

    def interval(self, x):
        """``[exp(l), exp(u)]``, widened for NumPy's exp (not correctly rounded)."""
        return approximate_monotone_interval(np.exp, x)


exp = register(Exp())


class Log(Op):
    r"""Natural logarithm :math:`y = \log x`.

    .. math:: \bar x = \bar y / x, \qquad \dot y = \dot x / x
    """
    name = "log"
    higher_order = True

    def shape(self, x):
        return x

    def forward(self, x):
        return np.log(x), x

    def vjp(self, x, g):
        return (g / x,)

    def jvp(self, primals, tangents):
        (x,), (dx,) = primals, tangents
        return (call(self, x) if is_traced(x) else np.log(x)), dx / x

    def interval(self, x):
        """``[log(l), log(u)]``, widened for NumPy's log; a box reaching below 0 has no
        real logarithm there, and its lower bound is ``-inf``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return approximate_monotone_interval(np.log, x)


log = register(Log())


class Matmul(Op):
    r"""Matrix product with NumPy's ``matmul`` rules (1-D promotion, batch broadcasting).

    .. math:: Y = A B, \qquad \bar A = \bar Y B^{\top}, \quad \bar B = A^{\top} \bar Y,
              \qquad \dot Y = \dot A B + A \dot B

    A 1-D ``a`` acts as a row ``(1, n)`` and a 1-D ``b`` as a column ``(n, 1)``; the VJP works
    with those 2-D views and then drops the added axes again.
    """
    name = "matmul"
    higher_order = True
    inputs = ("a", "b")

    def shape(self, a, b):
        if len(a) == 0 or len(b) == 0:
            raise ShapeError("matmul: both operands need at least one dimension, got "
                             f"{format_shape(a)} @ {format_shape(b)}")
        a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
        b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
        if a2[-1] != b2[-2]:
            raise ShapeError(f"matmul: the inner dimensions differ: {format_shape(a)} @ "
                             f"{format_shape(b)} ({a2[-1]} != {b2[-2]})")
        batch = broadcast_shape(a2[:-2], b2[:-2])
        out = batch + (a2[-2], b2[-1])
        if len(a) == 1:
            out = out[:-2] + out[-1:]
        if len(b) == 1:
            out = out[:-1]
        return out

    def forward(self, a, b):
        return np.matmul(a, b), (a, b)

    def vjp(self, residuals, g):
        a, b = residuals
        a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a             # (..., m, n)
        b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b             # (..., n, p)
        g2 = g
        if b.ndim == 1:
            g2 = g2.reshape(g2.shape + (1,))
        if a.ndim == 1:
            g2 = g2.reshape(g2.shape[:-1] + (1,) + g2.shape[-1:])       # g2: (..., m, p)
        grad_a = g2 @ _swap_last(b2)                           # (..., m, p) @ (..., p, n)
        grad_b = _swap_last(a2) @ g2                           # (..., n, m) @ (..., m, p)
        grad_a = unbroadcast(grad_a, a2.shape).reshape(a.shape)
        grad_b = unbroadcast(grad_b, b2.shape).reshape(b.shape)
        return grad_a, grad_b

    def jvp(self, primals, tangents):
        (a, b), (da, db) = primals, tangents
        return a @ b, da @ b + a @ db                # product rule (matmul is bilinear)

    def interval(self, a, b):
        """A box times a known matrix (either side), in centre–radius form with ``|matrix|``
        for the radius (graphm.ops.interval.affine_interval); a box on both sides has no rule."""
        if isinstance(a, Bounds) and isinstance(b, Bounds):
            b = exact_value(self.name, "b", b)
        if isinstance(a, Bounds):
            abs_b = np.abs(b)
            return affine_interval(a, lambda c: np.matmul(c, b),
                                   lambda v, _: np.matmul(v, abs_b), terms=a.lower.shape[-1])
        abs_a = np.abs(a)
        return affine_interval(b, lambda c: np.matmul(a, c), lambda v, _: np.matmul(abs_a, v),
                               terms=b.lower.shape[0 if b.lower.ndim == 1 else -2])


matmul = register(Matmul())


def _swap_last(x):
    """Swap the last two axes (a permute on a Tensor)."""
    return x.transpose(-1, -2) if is_traced(x) else np.swapaxes(x, -1, -2)
