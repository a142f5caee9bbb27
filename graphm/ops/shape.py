"""Ops that only move numbers around: reshape, permute (transpose) and indexing.

They compute nothing, so their derivatives move the gradient back the same way: a reshape's
adjoint is the inverse reshape, a permutation's is the inverse permutation, and reading entries
(indexing) has as adjoint *scattering* the gradient into zeros, adding where an entry was read
twice.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from graphm.ops.base import (FLOAT_DTYPES, Op, ShapeError, call, format_shape, is_traced,
                             linear_jvp, register)
from graphm.ops.interval import monotone_interval

__all__ = ["reshape", "permute", "index", "index_add", "alias", "cast", "resolve_shape", "flatten_shape"]


def resolve_shape(shape, new_shape, opname="reshape"):
    """``new_shape`` with its one ``-1`` (if any) filled in; ShapeError if sizes differ."""
    new_shape = tuple(new_shape)
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in new_shape):
        raise TypeError(f"{opname}: the shape must be a tuple of ints, got {new_shape!r}")
    size = math.prod(shape)
    unknown = [i for i, n in enumerate(new_shape) if n == -1]
    if len(unknown) > 1 or any(n < -1 for n in new_shape):
        raise ShapeError(f"{opname}: invalid shape {new_shape} (at most one -1, no other "
                         "negative sizes)")
    known = math.prod(n for n in new_shape if n != -1)
    if unknown:
        if known == 0 or size % known:
            raise ShapeError(f"{opname}: cannot reshape {format_shape(shape)} ({size} elements)"
                             f" into {new_shape}")
        new_shape = new_shape[:unknown[0]] + (size // known,) + new_shape[unknown[0] + 1:]
    if math.prod(new_shape) != size:
        raise ShapeError(f"{opname}: cannot reshape {format_shape(shape)} ({size} elements) "
                         f"into {new_shape} ({math.prod(new_shape)} elements)")
    return tuple(int(n) for n in new_shape)


def flatten_shape(shape, start_dim=0, end_dim=-1):
    """The shape ``torch.flatten(x, start_dim, end_dim)`` gives: axes start..end merged."""
    ndim = max(len(shape), 1)
    start, end = start_dim % ndim, end_dim % ndim
    if not (-ndim <= start_dim < ndim and -ndim <= end_dim < ndim) or start > end:
        raise ShapeError(f"flatten: start_dim={start_dim}, end_dim={end_dim} invalid for "
                         f"{format_shape(shape)}")
    if len(shape) == 0:
        return (1,)
    return tuple(shape[:start]) + (math.prod(shape[start:end + 1]),) + tuple(shape[end + 1:])


class Reshape(Op):
    r"""The same numbers in a new shape (C order); ``-1`` in ``shape`` is inferred.

    .. math:: \bar x = \mathrm{reshape}(\bar y, x.\mathrm{shape}), \qquad
              \dot y = \mathrm{reshape}(\dot x, \text{shape})
    """
    name = "reshape"
    higher_order = True

    def shape(self, x, shape):
        return resolve_shape(x, shape)

    def forward(self, x, shape):
        return x.reshape(resolve_shape(x.shape, shape)), x.shape

    def vjp(self, x_shape, g, shape):
        return (g.reshape(x_shape),)

    def jvp(self, primals, tangents, shape):
        new_shape = resolve_shape(primals[0].shape, shape)
        return primals[0].reshape(new_shape), tangents[0].reshape(new_shape)

    def interval(self, x, shape):
        """The box's corners, reshaped (exact): moving numbers computes nothing."""
        return monotone_interval(lambda v: self.forward(v, shape)[0], x)


reshape = register(Reshape())


def _check_permutation(ndim, dims):
    dims = tuple(dims)
    normalized = tuple(int(d) % max(ndim, 1) for d in dims) if all(
        isinstance(d, numbers.Integral) and -max(ndim, 1) <= d < max(ndim, 1) for d in dims) \
        else None
    if normalized is None or sorted(normalized) != list(range(ndim)):
        raise ShapeError(f"permute: dims {dims} is not a permutation of the {ndim} axes")
    return normalized


class Permute(Op):
    r"""Reorder the axes: ``y.shape[i] == x.shape[dims[i]]`` (``transpose`` swaps two).

    .. math:: \bar x = \mathrm{permute}(\bar y, \text{dims}^{-1}), \qquad
              \dot y = \mathrm{permute}(\dot x, \text{dims})
    """
    name = "permute"
    higher_order = True

    def shape(self, x, dims):
        return tuple(x[d] for d in _check_permutation(len(x), dims))

    def forward(self, x, dims):
        return np.transpose(x, _check_permutation(x.ndim, dims)), None

    def vjp(self, residuals, g, dims):
        inverse = tuple(int(d) for d in np.argsort(_check_permutation(g.ndim, dims)))
        return (g.permute(*inverse) if is_traced(g) else np.transpose(g, inverse),)

    def jvp(self, primals, tangents, dims):
        order = _check_permutation(primals[0].ndim, dims)
        return linear_jvp(self, primals, tangents, lambda v: np.transpose(v, order), dims=dims)

    def interval(self, x, dims):
        """The box's corners, permuted (exact)."""
        return monotone_interval(lambda v: self.forward(v, dims)[0], x)


permute = register(Permute())


def _is_basic(index):
    """Basic indexing (ints, slices, None, Ellipsis) never reads an entry twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (numbers.Integral, slice, type(None), type(Ellipsis)))
               and not isinstance(p, bool) for p in parts)


class Index(Op):
    r"""NumPy indexing ``y = x[index]`` (basic and advanced).

    .. math:: \bar x = \text{scatter-add of } \bar y \text{ into zeros at index}, \qquad
              \dot y = \dot x[\text{index}]
    """
    name = "index"
    higher_order = True

    def shape(self, x, index):
        # Index a zero-strided stand-in of the right shape: NumPy's own rules, no data touched.
        try:
            return np.broadcast_to(np.empty((), np.int8), x)[index].shape
        except IndexError as error:
            raise ShapeError(f"index: {error} (indexing {format_shape(x)} with {index!r})") \
                from None

    def forward(self, x, index):
        return np.asarray(x[index]), (x.shape, x.dtype)

    def vjp(self, residuals, g, index):
        x_shape, dtype = residuals
        return (call(index_add, g, index=index, shape=tuple(x_shape)),)

    def jvp(self, primals, tangents, index):
        return linear_jvp(self, primals, tangents, lambda v: np.asarray(v[index]), index=index)

    def interval(self, x, index):
        """The box's corners, read at ``index`` (exact)."""
        return monotone_interval(lambda v: self.forward(v, index)[0], x)


index = register(Index())


class IndexAdd(Op):
    r"""Scatter-add ``y`` into zeros of ``shape`` at ``index`` (``np.add.at``): the VJP of
    indexing, as an op. It is linear, and its adjoint reads the entries back.

    .. math:: z = 0_{\text{shape}};\ z[\text{index}] \mathrel{+}= y, \qquad
              \bar y = \bar z[\text{index}], \qquad \dot z = \mathrm{index\_add}(\dot y)
    """
    name = "index_add"
    higher_order = True

    def shape(self, y, index, shape):
        return tuple(shape)

    def forward(self, y, index, shape):
        z = np.zeros(shape, y.dtype)
        if _is_basic(index):
            z[index] = y
        else:
            np.add.at(z, index, y)
        return z, None

    def vjp(self, residuals, g, index, shape):
        return (call(globals()["index"], g, index=index),)

    def jvp(self, primals, tangents, index, shape):
        return linear_jvp(self, primals, tangents, index=index, shape=shape)


index_add = register(IndexAdd())


class Alias(Op):
    r"""The identity, as a node of its own: ``graphm.vjp`` called on a Tensor differentiates
    with respect to a fresh alias of it, so that nested derivatives never confuse whose
    derivative is whose. :math:`\bar x = \bar y`, :math:`\dot y = \dot x`."""
    name = "alias"
    higher_order = True

    def shape(self, x):
        return x

    def forward(self, x):
        return x, None

    def vjp(self, residuals, g):
        return (g,)

    def jvp(self, primals, tangents):
        return linear_jvp(self, primals, tangents, lambda v: v)   # a fresh alias if traced

    def interval(self, x):
        """The same box."""
        return x


alias = register(Alias())


class Cast(Op):
    r"""Convert between float32 and float64 (``x.float()``, ``x.double()``, ``x.to(dtype)``).

    .. math:: \bar x = \mathrm{cast}(\bar y, x.\mathrm{dtype}), \qquad
              \dot y = \mathrm{cast}(\dot x, \text{dtype})
    """
    name = "cast"
    higher_order = True

    def dtype(self, x, dtype):
        if np.dtype(x) not in FLOAT_DTYPES or np.dtype(dtype) not in FLOAT_DTYPES:
            raise TypeError(f"cast: only float32 <-> float64 conversions are differentiable, "
                            f"got {np.dtype(x)} -> {np.dtype(dtype)}")
        return np.dtype(dtype)

    def shape(self, x, dtype):
        return x

    def forward(self, x, dtype):
        return x.astype(dtype), x.dtype.name

    def vjp(self, x_dtype, g, dtype):
        return (call(cast, g, dtype=x_dtype),)

    def jvp(self, primals, tangents, dtype):
        return linear_jvp(self, primals, tangents, lambda v: v.astype(dtype), dtype=dtype)

    def interval(self, x, dtype):
        """The corners, converted: float64 -> float32 rounds to nearest, which keeps the order,
        and float32 -> float64 is exact."""
        return monotone_interval(lambda v: v.astype(dtype), x)


cast = register(Cast())
