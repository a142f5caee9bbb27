"""Elementwise activations: relu, sigmoid, tanh, softplus.

Each is :math:`y = f(x)` elementwise, so its Jacobian is diagonal: the VJP and the JVP both
multiply by the same slope :math:`f'(x)`, which is usually cheapest to write with the output.
"""
from __future__ import annotations

import numpy as np

from graphm import functional as F
from graphm.ops.base import Op, call, forward_residual, is_traced, register
from graphm.ops.interval import NoIntervalRule, approximate_monotone_interval, monotone_interval

__all__ = ["relu", "sigmoid", "tanh", "softplus"]


class Relu(Op):
    r"""Rectified linear unit :math:`y = \max(x, 0)`.

    .. math:: f'(x) = [x > 0] \qquad (\text{0 at } x = 0\text{, as PyTorch})
    """
    name = "relu"
    higher_order = True

    def shape(self, x):
        return x

    def forward(self, x):
        y = F.relu(x)
        return y, y > 0

    def vjp(self, positive, g):
        return (g * positive,)

    def jvp(self, primals, tangents):
        (x,), (dx,) = primals, tangents
        if not is_traced(x):
            y = F.relu(x)
            return y, dx * (y > 0)
        # the mask is a constant (its derivative is 0 almost everywhere), as in the vjp: the
        # forward pass's residual, computed when a compiled program runs
        return call(self, x), dx * forward_residual(self, (x,), {})

    def interval(self, x):
        """``[relu(l), relu(u)]``: relu is increasing and exact in floating point."""
        return monotone_interval(F.relu, x)


relu = register(Relu())


class Sigmoid(Op):
    r"""Logistic sigmoid :math:`y = \sigma(x) = 1 / (1 + e^{-x})`.

    .. math:: f'(x) = \sigma(x)\,(1 - \sigma(x)) = y (1 - y)
    """
    name = "sigmoid"
    higher_order = True

    def shape(self, x):
        return x

    def forward(self, x):
        y = F.sigmoid(x)
        return y, y

    def vjp(self, y, g):
        return (g * y * (1 - y),)

    def jvp(self, primals, tangents):
        y = F.sigmoid(primals[0])
        return y, tangents[0] * y * (1 - y)

    def interval(self, x):
        """``[σ(l), σ(u)]`` widened for NumPy's exp (σ is increasing but its computed value is
        not correctly rounded; graphm.ops.interval.approximate_monotone_interval)."""
        return approximate_monotone_interval(F.sigmoid, x)


sigmoid = register(Sigmoid())


class Tanh(Op):
    r"""Hyperbolic tangent :math:`y = \tanh x`.

    .. math:: f'(x) = 1 - \tanh^2 x = 1 - y^2
    """
    name = "tanh"
    higher_order = True

    def shape(self, x):
        return x

    def forward(self, x):
        y = F.tanh(x)
        return y, y

    def vjp(self, y, g):
        return (g * (1 - y * y),)

    def jvp(self, primals, tangents):
        y = F.tanh(primals[0])
        return y, tangents[0] * (1 - y * y)

    def interval(self, x):
        """``[tanh(l), tanh(u)]`` widened for NumPy's tanh (increasing, not correctly rounded)."""
        return approximate_monotone_interval(F.tanh, x)


tanh = register(Tanh())


class Softplus(Op):
    r"""Softplus :math:`y = \frac{1}{\beta}\log(1 + e^{\beta x})`, linear above the threshold.

    .. math:: f'(x) = \sigma(\beta x) \quad (\beta x \le \text{threshold}), \qquad
              f'(x) = 1 \quad \text{otherwise}
    """
    name = "softplus"
    higher_order = True

    def shape(self, x, beta, threshold):
        return x

    def forward(self, x, beta, threshold):
        # the mask of the linear part is kept from the forward pass, as relu keeps its mask: it
        # is piecewise constant (no derivative of its own) and, in a compiled gradient Program,
        # a value computed when the program runs rather than read at build time
        return F.softplus(x, beta, threshold), (x, _linear_part(x, beta, threshold))

    def vjp(self, residuals, g, beta, threshold):
        x, linear = residuals
        return (g * _softplus_slope(x, linear, beta),)

    def jvp(self, primals, tangents, beta, threshold):
        (x,), (dx,) = primals, tangents
        if not is_traced(x):
            y, (_, linear) = self.forward(x, beta, threshold)
            return y, dx * _softplus_slope(x, linear, beta)
        attrs = dict(beta=beta, threshold=threshold)
        linear = forward_residual(self, (x,), attrs, item=1)     # a constant, as in the vjp
        return call(self, x, **attrs), dx * _softplus_slope(x, linear, beta)

    def interval(self, x, beta, threshold):
        """Softplus at the corners, widened for exp and log1p (increasing for beta > 0)."""
        if not beta > 0:
            raise NoIntervalRule(f"softplus: the interval rule needs beta > 0, got {beta}")
        return approximate_monotone_interval(lambda v: F.softplus(v, beta, threshold), x)


softplus = register(Softplus())


def _linear_part(x, beta, threshold):
    """Where softplus is the identity, ``beta * x > threshold``, as 1.0 (else 0.0) in x's dtype:
    a number, so that a gradient Program can hold it as one of its values."""
    return np.asarray(x * x.dtype.type(beta) > threshold).astype(x.dtype)


def _softplus_slope(x, linear, beta):
    """softplus'(x): sigmoid(beta x) below the threshold, the constant 1 above it (``linear``)."""
    scaled = x * x.dtype.type(beta)
    if is_traced(scaled):          # linear is 0 or 1, so this is one of the two terms exactly
        return call(sigmoid, scaled) * (1 - linear) + linear
    scaled = np.asarray(scaled)    # 0-d stays an array (not a NumPy scalar)
    return np.where(linear > 0, x.dtype.type(1), F.sigmoid(scaled))
