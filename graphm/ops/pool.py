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

from graphm.functional import pooling as Fpool
from graphm.ops.base import Op, register

__all__ = ["max_pool", "avg_pool"]


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
        return (Fpool.max_pool_backward(g, winners, x_shape, geometry),)

    def jvp(self, primals, tangents, dims, kernel_size, stride=None, padding=0, dilation=1,
            ceil_mode=False):
        y, winners, _ = Fpool.max_pool_with_indices(f"max_pool{dims}d", primals[0], dims,
                                                  kernel_size, stride, padding, dilation,
                                                  ceil_mode)
        return y, Fpool.max_pool_gather(tangents[0], winners, dims)


max_pool = register(MaxPool())


class AvgPool(Op):
    r"""Average pooling over the last ``dims`` axes (PyTorch's ``avg_pool{1,2,3}d``).

    .. math::
        y_{\mathbf i} = \frac{1}{D_{\mathbf i}} \sum_{\mathbf a} x_{\mathbf i s - p + \mathbf a},
        \qquad \bar x_j = \sum_{\mathbf i, \mathbf a:\, \mathbf i s - p + \mathbf a = j}
        \frac{\bar y_{\mathbf i}}{D_{\mathbf i}}, \qquad \dot y = \mathrm{avg\_pool}(\dot x)
    """
    name = "avg_pool"

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
        return (Fpool.avg_pool_backward(g, x_shape, geometry, count_include_pad,
                                      divisor_override),)

    def jvp(self, primals, tangents, dims, **attrs):
        y, _ = self.forward(primals[0], dims, **attrs)
        dy, _ = self.forward(tangents[0], dims, **attrs)
        return y, dy


avg_pool = register(AvgPool())
