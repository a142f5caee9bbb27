"""Pooling: max_pool and avg_pool over 1, 2 or 3 spatial axes (``dims``).

Both are built in graphm.functional.pooling from one idea: a pooling window of size k visits
``prod(k)`` kernel offsets, and each offset reads one strided slice of the padded input. The
derivatives follow from that picture:

* avg_pool is *linear*: its JVP is avg_pool of the tangent, and its VJP is the transpose of the
  window sum: every window hands ``g / divisor`` back to each position it read.
* max_pool is linear *once the winners are known*: it reads one element per window. The forward
  pass records which (the indices, as ``return_indices=True`` in PyTorch); the VJP sends each
  gradient to its winner (adding where overlapping windows share a winner), and the JVP reads the
  tangent at the winners.
"""
from __future__ import annotations

import math

import numpy as np

from graphm.functional import pooling as Fpool
from graphm.ops.base import Op, call, forward_residual, is_traced, linear_jvp, register
from graphm.ops.interval import affine_interval, monotone_interval

__all__ = ["max_pool", "avg_pool", "max_pool_scatter", "max_pool_gather", "avg_pool_transpose"]


def _batch_shape(x, geometry):
    """(N, C, *out) or (C, *out), whichever layout the input had."""
    lead = x[:2] if geometry.batched else x[:1]
    return tuple(lead) + geometry.out_spatial


class MaxPool(Op):
    r"""Max pooling over the last ``dims`` axes (PyTorch's ``max_pool{1,2,3}d``).

    .. math::
        y_{\mathbf i} = x_{w(\mathbf i)},\quad w(\mathbf i) = \operatorname{argmax}_{\mathbf a}
        x_{\mathbf i s - p + \mathbf a d}, \qquad
        \bar x_j = \sum_{\mathbf i:\, w(\mathbf i) = j} \bar y_{\mathbf i}, \qquad
        \dot y_{\mathbf i} = \dot x_{w(\mathbf i)}
    """
    name = "max_pool"
    higher_order = True

    def shape(self, x, dims, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        geometry = Fpool.pool_geometry(f"max_pool{dims}d", x, dims, kernel_size, stride, padding,
                                     dilation, ceil_mode)
        return _batch_shape(x, geometry)

    def forward(self, x, dims, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        y, winners, geometry = Fpool.max_pool_with_indices(
            f"max_pool{dims}d", x, dims, kernel_size, stride, padding, dilation, ceil_mode)
        return y, (winners, x.shape, geometry)

    def vjp(self, residuals, g, dims, **attrs):
        winners, x_shape, geometry = residuals
        return (call(max_pool_scatter, g, winners=winners, x_shape=tuple(x_shape),
                     geometry=geometry),)

    def jvp(self, primals, tangents, dims, kernel_size, stride=None, padding=0, dilation=1,
            ceil_mode=False):
        (x,), (dx,) = primals, tangents
        attrs = dict(dims=dims, kernel_size=kernel_size, stride=stride, padding=padding,
                     dilation=dilation, ceil_mode=ceil_mode)
        if not is_traced(x):
            y, (winners, _, _) = self.forward(x, **attrs)
            if not is_traced(dx):
                return y, Fpool.max_pool_gather(dx, winners, dims)
        else:
            # the winners are a constant (as in the vjp): the forward pass's residual, computed
            # when a compiled program runs
            y, winners = call(self, x, **attrs), forward_residual(self, (x,), attrs, item=0)
        geometry = Fpool.pool_geometry(f"max_pool{dims}d", tuple(x.shape), dims, kernel_size,
                                       stride, padding, dilation, ceil_mode)
        return y, call(max_pool_gather, dx, winners=winners, dims=dims, x_shape=tuple(x.shape),
                       geometry=geometry)

    def interval(self, x, dims, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode=False):
        """``[maxpool(l), maxpool(u)]``: a maximum is increasing in every entry and exact. Only
        the values are needed (not the winners), so each corner is one running maximum over
        the window's offsets, as the forward pass scans them."""
        geometry = Fpool.pool_geometry(f"max_pool{dims}d", x.lower.shape, dims, kernel_size,
                                       stride, padding, dilation, ceil_mode)

        def window_max(v):
            padded = Fpool._padded(Fpool._as_batched(v, geometry), geometry, -np.inf)
            best = None
            for _, window in Fpool._offset_slices(geometry, v.shape[-dims:]):
                if best is None:
                    best = padded[window].copy()
                else:
                    np.maximum(best, padded[window], out=best)
            return best if geometry.batched else best[0]
        return monotone_interval(window_max, x)


max_pool = register(MaxPool())


class AvgPool(Op):
    r"""Average pooling over the last ``dims`` axes (PyTorch's ``avg_pool{1,2,3}d``).

    .. math::
        y_{\mathbf i} = \frac{1}{D_{\mathbf i}} \sum_{\mathbf a} x_{\mathbf i s - p + \mathbf a},
        \qquad \bar x_j = \sum_{\mathbf i, \mathbf a:\, \mathbf i s - p + \mathbf a = j}
        \frac{\bar y_{\mathbf i}}{D_{\mathbf i}}, \qquad \dot y = \mathrm{avg\_pool}(\dot x)
    """
    name = "avg_pool"
    higher_order = True

    def shape(self, x, dims, kernel_size, stride=None, padding=0, ceil_mode=False,
              count_include_pad=True, divisor_override=None):
        geometry = Fpool.avg_pool_geometry(f"avg_pool{dims}d", x, dims, kernel_size, stride,
                                         padding, ceil_mode, divisor_override)
        return _batch_shape(x, geometry)

    def forward(self, x, dims, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
        name = f"avg_pool{dims}d"
        y = Fpool.avg_pool(name, x, dims, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override)
        geometry = Fpool.avg_pool_geometry(name, x.shape, dims, kernel_size, stride, padding,
                                         ceil_mode, divisor_override)
        return y, (x.shape, geometry)

    def vjp(self, residuals, g, dims, kernel_size, stride=None, padding=0, ceil_mode=False,
            count_include_pad=True, divisor_override=None):
        x_shape, geometry = residuals
        pool = dict(dims=dims, kernel_size=kernel_size, stride=stride, padding=padding,
                    ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                    divisor_override=divisor_override)
        return (call(avg_pool_transpose, g, x_shape=tuple(x_shape), geometry=geometry,
                     pool=pool),)

    def jvp(self, primals, tangents, dims, **attrs):
        return linear_jvp(self, primals, tangents, dims=dims, **attrs)

    def interval(self, x, dims, **attrs):
        r"""A linear map with weights :math:`1/D`: centre–radius form (the radius pooled with
        the weights' absolute values, which share one sign), with the rounding of a window sum
        and its division (graphm.ops.interval.affine_interval)."""
        def pool(v):
            return self.forward(v, dims, **attrs)[0]
        kernel = Fpool.avg_pool_geometry(f"avg_pool{dims}d", x.lower.shape, dims,
                                         attrs["kernel_size"], attrs.get("stride"),
                                         attrs.get("padding", 0), attrs.get("ceil_mode", False),
                                         attrs.get("divisor_override")).kernel_size
        return affine_interval(x, pool, lambda v, _: np.abs(pool(v)), terms=math.prod(kernel))


avg_pool = register(AvgPool())


# ------------------------------------------------------------------------------------------------
# The pool adjoints, as ops: both are linear, and each one's adjoint is the other (or the pool)
# ------------------------------------------------------------------------------------------------

class MaxPoolScatter(Op):
    r"""Send each value to its window's winner, adding where winners repeat: the VJP of max
    pooling. Linear in ``y`` once the winners are fixed; its adjoint reads at the winners.

    .. math:: z_j = \sum_{\mathbf i:\, w(\mathbf i) = j} y_{\mathbf i}, \qquad
              \bar y = \bar z_{w(\cdot)}, \qquad \dot z = \mathrm{scatter}(\dot y)
    """
    name = "max_pool_scatter"
    higher_order = True

    def shape(self, y, winners, x_shape, geometry):
        return tuple(x_shape)

    def forward(self, y, winners, x_shape, geometry):
        return Fpool.max_pool_backward(y, winners, x_shape, geometry), None

    def vjp(self, residuals, g, winners, x_shape, geometry):
        return (call(max_pool_gather, g, winners=winners, dims=len(geometry.kernel_size),
                     x_shape=tuple(x_shape), geometry=geometry),)

    def jvp(self, primals, tangents, winners, x_shape, geometry):
        return linear_jvp(self, primals, tangents, winners=winners, x_shape=x_shape,
                          geometry=geometry)


max_pool_scatter = register(MaxPoolScatter())


class MaxPoolGather(Op):
    r"""Read ``x`` at the winning positions: max pooling's JVP, and the adjoint of
    :class:`MaxPoolScatter`. :math:`y_{\mathbf i} = x_{w(\mathbf i)}`."""
    name = "max_pool_gather"
    higher_order = True

    def shape(self, x, winners, dims, x_shape, geometry):
        return tuple(winners.shape)

    def forward(self, x, winners, dims, x_shape, geometry):
        return Fpool.max_pool_gather(x, winners, dims), None

    def vjp(self, residuals, g, winners, dims, x_shape, geometry):
        return (call(max_pool_scatter, g, winners=winners, x_shape=x_shape, geometry=geometry),)

    def jvp(self, primals, tangents, winners, dims, x_shape, geometry):
        return linear_jvp(self, primals, tangents, winners=winners, dims=dims, x_shape=x_shape,
                          geometry=geometry)


max_pool_gather = register(MaxPoolGather())


class AvgPoolTranspose(Op):
    r"""Spread each window's value, divided by its divisor, back over the window: the VJP of
    average pooling. Linear, and its adjoint is the average pool itself."""
    name = "avg_pool_transpose"
    higher_order = True

    def shape(self, y, x_shape, geometry, pool):
        return tuple(x_shape)

    def _run(self, y, x_shape, geometry, pool):
        return Fpool.avg_pool_backward(y, x_shape, geometry, pool["count_include_pad"],
                                       pool["divisor_override"])

    def forward(self, y, x_shape, geometry, pool):
        return self._run(y, x_shape, geometry, pool), None

    def vjp(self, residuals, g, x_shape, geometry, pool):
        return (call(avg_pool, g, **pool),)

    def jvp(self, primals, tangents, x_shape, geometry, pool):
        return linear_jvp(self, primals, tangents, x_shape=x_shape, geometry=geometry,
                          pool=pool)


avg_pool_transpose = register(AvgPoolTranspose())
