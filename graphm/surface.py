"""The operator surface shared by the eager Tensor and the compiled graph's Var.

Everything a PyTorch user reaches for on a tensor (``+ - * / @ **``, ``x[i]``, ``.sum()``,
``.reshape()``, ``.relu()``, ``.to(dtype)``, ``len(x)``, ``x.numel()``, ``.item()`` ...) is written
once, in :class:`ArraySurface`, over two hooks that each front-end supplies:

``_graphm_apply(op, inputs, attrs)``
    run (Tensor: now, recording the tape) or record (Var: an SSA node) one op of
    :mod:`graphm.ops`, and return the result as a value of the same front-end;
``_values(what)``
    the numbers, as a NumPy array. A Tensor has them; a Var is a value of a graph under
    construction, whose numbers exist only when the compiled program runs, so it raises a
    TypeError that says so (naming ``what`` was asked: ``item()``, ``argmax()``, ...).

So whatever a Tensor supports, a Var supports, and the two cannot drift apart: a method added
here is added to both. The same class also answers graphm.functional's dispatch protocol,
:meth:`ArraySurface.__graphm_function__`: ``F.relu(x)`` on a Tensor or a Var finds the op bound to
the functional name (graphm/ops/bindings.py) and applies it through the hook above. Nothing has
to be registered when graphm is imported; the argument itself says how it is computed with.
"""
from __future__ import annotations

import numbers

import numpy as np

from graphm import ops
from graphm.ops.base import FLOAT_DTYPES

__all__ = ["ArraySurface", "MinMax", "python_number", "axis_arguments", "shape_arguments"]


class MinMax(tuple):
    """``(values, indices)`` from ``max(dim)``/``min(dim)``, readable by name as in PyTorch."""

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])


def python_number(value, what):
    """``value`` as a Python number (a 0-d NumPy value too), or a TypeError naming ``what``."""
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: the exponent must be a number, got {type(value).__name__}")
    return value


def axis_arguments(dim, keepdim, axis, keepdims):
    """PyTorch's ``dim``/``keepdim`` or NumPy's ``axis``/``keepdims``, as ``(axis, keepdims)``."""
    if axis is not None:
        dim = axis
    if keepdims is not None:
        keepdim = keepdims
    if isinstance(dim, list):
        dim = tuple(dim)
    return dim, bool(keepdim)


def shape_arguments(values):
    """``(2, 3)``, ``((2, 3),)`` and ``([2, 3],)`` all mean the shape (2, 3)."""
    if len(values) == 1 and isinstance(values[0], (tuple, list)):
        values = values[0]
    return tuple(values)


class ArraySurface:
    """Methods and operators of an n-dimensional graphm value, over two hooks (module docstring).

    Subclasses (:class:`graphm.Tensor`, :class:`graphm.graph.Var`) define ``shape``, ``dtype``,
    ``_graphm_apply(op, inputs, attrs)`` (a static method), ``_values(what)`` and
    ``_from_values(array)`` (a constant of the front-end; only reached after ``_values``).
    """

    __slots__ = ()
    __graphm_tensor__ = True      # ops.base.call and engine.lift recognise graphm values by it
    __array_ufunc__ = None        # ndarray + value calls value.__radd__ (NumPy defers to us)

    # -- graphm.functional's dispatch protocol ------------------------------------------------

    @classmethod
    def __graphm_function__(cls, name, numpy_function, args, kwargs):
        """``graphm.functional.<name>(*args, **kwargs)`` called with graphm values: find the op
        and apply it the way the arguments' front-end applies ops (see functional/_dispatch)."""
        op, inputs, attrs = ops.bind(name, numpy_function, args, kwargs)
        kinds = {type(v) for v in inputs if isinstance(v, ArraySurface)}
        # Group by how each kind runs an op, so subclasses (nn.Parameter) count as Tensors.
        appliers = {kind._graphm_apply for kind in kinds}
        if len(appliers) != 1:
            raise TypeError(f"graphm.functional.{name}(): the array arguments mix "
                            f"{', '.join(sorted(k.__name__ for k in kinds)) or 'no Tensors'}; "
                            "use Tensors (eager) or Vars of one GraphM (compiled)")
        return appliers.pop()(op, inputs, attrs)

    # -- sizes ----------------------------------------------------------------------------------

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def T(self):
        """The axes reversed, as ``x.permute(*reversed(range(x.ndim)))``."""
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        """The number of entries (known from the shape)."""
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self):
        if self.ndim == 0:
            raise TypeError(f"len() of a 0-d {type(self).__name__}")
        return self.shape[0]

    def __iter__(self):
        """The rows ``x[0], x[1], ...`` (each an indexing op, so gradients flow)."""
        return (self[i] for i in range(len(self)))

    # -- reading the numbers (a Var has none yet: a TypeError says so) --------------------------

    def numpy(self):
        """The values as a NumPy array (shared, not copied: do not modify it in place)."""
        return self._values("numpy()")

    def item(self):
        """The value of a one-element array as a Python number."""
        values = self._values("item()")
        if values.size != 1:
            raise ValueError(f"item(): only one-element {type(self).__name__}s can be converted "
                             f"to a Python number, this one has shape {self.shape}")
        return values.item()

    def tolist(self):
        return self._values("tolist()").tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def __array__(self, dtype=None, copy=None):
        values = self._values("np.asarray()")
        return values if dtype is None else values.astype(dtype)

    # -- conversion -----------------------------------------------------------------------------

    def to(self, target):
        """``x.to(dtype)`` converts (float32 <-> float64 is the op ``cast``, recorded);
        ``x.to("cpu")`` is ``x``: graphm runs on the CPU only."""
        if isinstance(target, str) and (target == "cpu" or target.startswith("cpu:")):
            return self
        try:
            dtype = np.dtype(target)
        except TypeError:
            dtype = None
        if dtype is None or isinstance(target, str) and target in ("cuda", "mps", "meta") \
                or isinstance(target, str) and ":" in target:
            raise ValueError(f"to({target!r}): graphm runs on the CPU only; use 'cpu' or a "
                             "dtype (float32, float64)")
        if dtype == self.dtype:
            return self
        if self.dtype in FLOAT_DTYPES and dtype in FLOAT_DTYPES:
            return self._graphm_apply(ops.cast, (self,), {"dtype": dtype.name})
        # to or from integers: a new constant, which carries no gradient
        return self._from_values(self._values(f"to({dtype})").astype(dtype))

    def float(self):
        """As float32 (a recorded conversion, as ``torch.Tensor.float``)."""
        return self.to(np.float32)

    def double(self):
        """As float64 (a recorded conversion, as ``torch.Tensor.double``)."""
        return self.to(np.float64)

    # -- arg-reductions: they read the numbers ---------------------------------------------------

    def argmax(self, dim=None, keepdim=False):
        """Index of the largest entry (over all entries when ``dim`` is None), int64."""
        return self._arg(np.argmax, "argmax()", dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        """Index of the smallest entry (over all entries when ``dim`` is None), int64."""
        return self._arg(np.argmin, "argmin()", dim, keepdim)

    def _arg(self, arg, what, dim, keepdim):
        values = self._values(what)
        if dim is None:
            return self._from_values(np.asarray(arg(values), dtype=np.int64))
        return self._from_values(arg(values, axis=dim, keepdims=keepdim).astype(np.int64))

    def max(self, dim=None, keepdim=False):
        """The largest entry, or ``(values, indices)`` along ``dim``, as ``torch.max``. The
        values are read with an indexing op, so the gradient goes to the winner."""
        return self._extreme(np.argmax, "max()", dim, keepdim)

    def min(self, dim=None, keepdim=False):
        """The smallest entry, or ``(values, indices)`` along ``dim``, as ``torch.min``."""
        return self._extreme(np.argmin, "min()", dim, keepdim)

    def _extreme(self, arg, what, dim, keepdim):
        values = self._values(what)                 # the winners depend on the numbers
        if dim is None:
            if values.size == 0:
                raise RuntimeError(f"max()/min() of an empty {type(self).__name__}")
            return self[np.unravel_index(int(arg(values)), self.shape)]
        dim = dim % max(self.ndim, 1)
        winners = arg(values, axis=dim)
        grid = list(np.indices(winners.shape, sparse=True))
        index = tuple(grid[:dim]) + (winners,) + tuple(grid[dim:])
        picked = self[index]
        indices = winners.astype(np.int64)
        if keepdim:
            picked = picked.reshape(tuple(np.expand_dims(winners, dim).shape))
            indices = np.expand_dims(indices, dim)
        return MinMax((picked, self._from_values(indices)))

    # -- operators, each one op -----------------------------------------------------------------

    def __add__(self, other):
        return self._graphm_apply(ops.add, (self, other), None)

    def __radd__(self, other):
        return self._graphm_apply(ops.add, (other, self), None)

    def __sub__(self, other):
        return self._graphm_apply(ops.sub, (self, other), None)

    def __rsub__(self, other):
        return self._graphm_apply(ops.sub, (other, self), None)

    def __mul__(self, other):
        return self._graphm_apply(ops.mul, (self, other), None)

    def __rmul__(self, other):
        return self._graphm_apply(ops.mul, (other, self), None)

    def __truediv__(self, other):
        return self._graphm_apply(ops.div, (self, other), None)

    def __rtruediv__(self, other):
        return self._graphm_apply(ops.div, (other, self), None)

    def __matmul__(self, other):
        return self._graphm_apply(ops.matmul, (self, other), None)

    def __rmatmul__(self, other):
        return self._graphm_apply(ops.matmul, (other, self), None)

    def __neg__(self):
        return self._graphm_apply(ops.neg, (self,), None)

    def __pos__(self):
        return self

    def __pow__(self, exponent):
        return self._graphm_apply(ops.pow, (self,), {"exponent": python_number(exponent, "**")})

    def __getitem__(self, index):
        if isinstance(index, ArraySurface):
            index = index._values("indexing with it")
        return self._graphm_apply(ops.index, (self,), {"index": index})

    add, sub, mul, div, neg, matmul = (__add__, __sub__, __mul__, __truediv__, __neg__,
                                       __matmul__)

    def pow(self, exponent):
        return self ** exponent

    # -- elementwise functions ------------------------------------------------------------------

    def exp(self):
        return self._graphm_apply(ops.exp, (self,), None)

    def log(self):
        return self._graphm_apply(ops.log, (self,), None)

    def relu(self):
        return self._graphm_apply(ops.relu, (self,), None)

    def sigmoid(self):
        return self._graphm_apply(ops.sigmoid, (self,), None)

    def tanh(self):
        return self._graphm_apply(ops.tanh, (self,), None)

    def softmax(self, dim):
        return self._graphm_apply(ops.softmax, (self,), {"dim": dim})

    def log_softmax(self, dim):
        return self._graphm_apply(ops.log_softmax, (self,), {"dim": dim})

    # -- reductions and reshaping ---------------------------------------------------------------

    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Sum over ``dim`` (an int, a tuple, or None for all); ``axis``/``keepdims`` too."""
        axis, keepdim = axis_arguments(dim, keepdim, axis, keepdims)
        return self._graphm_apply(ops.sum, (self,), {"axis": axis, "keepdims": keepdim})

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Mean over ``dim`` (an int, a tuple, or None for all); ``axis``/``keepdims`` too."""
        axis, keepdim = axis_arguments(dim, keepdim, axis, keepdims)
        return self._graphm_apply(ops.mean, (self,), {"axis": axis, "keepdims": keepdim})

    def reshape(self, *shape):
        """The same values in a new shape (``-1`` inferred): ``x.reshape(2, -1)`` or a tuple."""
        return self._graphm_apply(ops.reshape, (self,), {"shape": shape_arguments(shape)})

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge the axes ``start_dim..end_dim`` into one (a reshape), as ``torch.flatten``."""
        shape = ops.flatten_shape(self.shape, start_dim, end_dim)
        return self._graphm_apply(ops.reshape, (self,), {"shape": shape})

    def permute(self, *dims):
        return self._graphm_apply(ops.permute, (self,), {"dims": shape_arguments(dims)})

    def transpose(self, dim0, dim1):
        """Swap two axes (a permute)."""
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self._graphm_apply(ops.permute, (self,), {"dims": tuple(dims)})

    # Values are compared by identity, hashable, and used as dictionary keys by the engine.
    __hash__ = object.__hash__
