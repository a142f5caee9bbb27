"""graphm.ops: every differentiable operation, defined once.

Each op is a small class holding four rules side by side (see :mod:`graphm.ops.base`)::

    shape(*shapes, **attrs)          -> output shape
    forward(*xs, **attrs)            -> (out, residuals)
    vjp(residuals, g, **attrs)       -> gradients, one per input           (reverse mode)
    jvp(primals, tangents, **attrs)  -> (out, tangent_out)                 (forward mode)

The eager :class:`graphm.Tensor` and the compiled :class:`graphm.GraphM` call these rules and
nothing else, so both modes differentiate every op the same way.

=================  ==========================================================================
module             ops
=================  ==========================================================================
``arithmetic``     add, sub, mul, div, neg, pow, exp, log, matmul
``activation``     relu, sigmoid, tanh, softplus
``reduction``      sum, mean, sum_to, broadcast_to
``shape``          reshape, permute, index, index_add, alias, cast
``pool``           max_pool, avg_pool (1-3 spatial axes) and their adjoints max_pool_scatter,
                   max_pool_gather, avg_pool_transpose
``nn``             linear, softmax, log_softmax, cross_entropy, nll_loss, mse_loss
``conv``           conv, conv_transpose, conv_weight_grad (any rank; read its docstring for the
                   adjoints and why they close under differentiation)
=================  ==========================================================================
"""
from graphm.ops.base import OPS, Op, ShapeError, format_shape
from graphm.ops.arithmetic import add, div, exp, log, matmul, mul, neg, pow, sub
from graphm.ops.activation import relu, sigmoid, softplus, tanh
from graphm.ops.reduction import broadcast_to, mean, sum, sum_to
from graphm.ops.shape import (alias, cast, flatten_shape, index, index_add, permute, reshape,
                              resolve_shape)
from graphm.ops.pool import (avg_pool, avg_pool_transpose, max_pool, max_pool_gather,
                             max_pool_scatter)
from graphm.ops.nn import cross_entropy, linear, log_softmax, mse_loss, nll_loss, softmax
from graphm.ops.conv import conv, conv_transpose, conv_weight_grad
from graphm.ops.bindings import BINDINGS, bind

__all__ = ["OPS", "Op", "ShapeError", "format_shape", "bind", "BINDINGS",
           "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "matmul",
           "relu", "sigmoid", "tanh", "softplus", "sum", "mean",
           "reshape", "permute", "index", "flatten_shape", "resolve_shape",
           "max_pool", "avg_pool", "linear", "softmax", "log_softmax",
           "cross_entropy", "nll_loss", "mse_loss", "conv", "conv_transpose",
           "conv_weight_grad", "sum_to", "broadcast_to", "index_add", "alias", "cast",
           "max_pool_scatter", "max_pool_gather", "avg_pool_transpose"]
