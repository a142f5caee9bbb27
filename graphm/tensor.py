"""Eager mode: ``graphm.Tensor``, a NumPy array that remembers how it was made.

Every operation on Tensors runs at once (like PyTorch) and, when some input requires a
gradient, leaves a record behind (a :class:`Node`): the op, its attributes, the residuals its VJP
will need, and where each input's gradient must go. Those records form the *tape*, a DAG as in
micrograd. ``loss.backward()`` walks it from the loss back to the leaves in reverse topological
order, calling each op's ``vjp`` once, and adds the results into the leaves' ``.grad``; then the
tape is freed.

Forward mode rides along the same calls: a Tensor may carry *tangents*, one per forward level
(``graphm.jvp`` opens a level and sets them), and an op given a tangent calls its ``jvp`` rule,
so the output's tangent is computed in the same sweep as its value. The rule runs on plain
arrays when nothing more is asked of it, and on Tensors when its result must itself be
differentiated (nested levels, or a reverse transform around the ``jvp``).

Nothing here knows a derivative: every rule lives in :mod:`graphm.ops`.
"""
from __future__ import annotations

import functools
import threading
import weakref

import numpy as np

from graphm import engine
from graphm._random import default_generator
from graphm.ops.base import FLOAT_DTYPES
from graphm.ops.shape import alias as _ALIAS
from graphm.surface import ArraySurface, shape_arguments

__all__ = ["Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "zeros", "ones",
           "rand", "randn", "arange", "from_numpy"]


# ------------------------------------------------------------------------------------------------
# Gradient mode
# ------------------------------------------------------------------------------------------------

class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled():
    """Are operations on Tensors being recorded for ``backward`` (in this thread)?"""
    return _grad_mode.enabled


class _SetGradMode:
    """Context manager and decorator that sets the recording mode, restoring it on exit."""

    mode = True

    def __enter__(self):
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = self.mode

    def __exit__(self, *exc_info):
        _grad_mode.enabled = self._previous

    def __call__(self, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with type(self)():
                return function(*args, **kwargs)
        return wrapper


class no_grad(_SetGradMode):
    """Do not record operations (inference, optimizer updates), as ``torch.no_grad``.

    Use as ``with graphm.no_grad(): ...`` or as a decorator ``@graphm.no_grad()``.
    """

    mode = False


class enable_grad(_SetGradMode):
    """Record operations again inside a ``no_grad`` block, as ``torch.enable_grad``."""

    mode = True


# ------------------------------------------------------------------------------------------------
# Forward-mode levels
# ------------------------------------------------------------------------------------------------

class _ForwardLevels(threading.local):
    def __init__(self):
        self.records = {}         # live level -> must its tangents be recorded on the tape?
        self.last = 0             # the last level handed out (levels are never reused)


_forward_levels = _ForwardLevels()


class forward_level:
    r"""``with forward_level(records) as level:`` one forward-mode sweep (one ``graphm.jvp``).

    A Tensor carries one tangent per live level (``Tensor._tangents``: level -> tangent), so
    that nested forward modes never add up each other's tangents: in
    :math:`\frac{d}{dx}[x \cdot \frac{d}{dy}(x + y)]` the inner derivative sees only the
    tangent of y, and the answer is 1, not 2 (*perturbation confusion*; Siskind and
    Pearlmutter's levels, JAX's tracers).

    ``records``: will a reverse transform outside this sweep differentiate its tangents
    (reverse over forward)? Only then are the ops that compute tangents recorded on the tape.
    Forward over reverse needs no such record: there the tangents ride along the values through
    the inner backward pass, and nothing differentiates them again.
    """

    def __init__(self, records):
        self.records = bool(records)

    def __enter__(self):
        _forward_levels.last += 1
        self.level = _forward_levels.last
        _forward_levels.records[self.level] = self.records
        return self.level

    def __exit__(self, *exc_info):
        del _forward_levels.records[self.level]


def live_tangents(tensor):
    """A Tensor's tangents at the live forward levels (``{}`` if none)."""
    if not tensor._tangents:
        return {}
    live = _forward_levels.records
    return {level: t for level, t in tensor._tangents.items() if level in live}


# ------------------------------------------------------------------------------------------------
# The tape
# ------------------------------------------------------------------------------------------------

class Node:
    """One record of the tape: how a Tensor was computed, and where its gradient goes.

    The tape links records to records, not Tensors to Tensors: an intermediate Tensor's values
    are kept only if its op's ``residuals`` need them (as in PyTorch, whose records are the
    ``grad_fn``). A finished forward pass therefore holds no more memory than the backward pass
    will use.

    Attributes
    ----------
    op : graphm.ops.Op
    attrs : dict
        The op's attributes (stride, axis, ...).
    parents : tuple
        One entry per op input, saying where that input's gradient goes: the ``Node`` that made
        it, the leaf ``Tensor`` itself (which accumulates ``.grad``), or ``None`` (no gradient:
        a constant, a label, an absent bias).
    residuals : object
        What ``op.forward`` left for ``op.vjp``; dropped once the tape is freed.
    shape, dtype :
        Of the output, so that a gradient can be checked against it.
    retained : weakref or None
        The output Tensor, if it called ``retain_grad()``.
    """

    __slots__ = ("op", "attrs", "parents", "residuals", "shape", "dtype", "freed", "retained",
                 "saved", "tangents", "__weakref__")

    def __init__(self, op, attrs, parents, residuals, shape, dtype, saved=None):
        self.op, self.attrs, self.parents, self.residuals = op, attrs, parents, residuals
        self.shape, self.dtype = shape, dtype
        self.freed, self.retained = False, None
        self.saved = saved
        # Under forward mode: (the inputs' tangents, the output's), so that the residuals
        # rebuilt as Tensors carry them and a backward pass pushes them forward too.
        self.tangents = None

    def residuals_as_tensors(self):
        """The residuals, with each one that *is* an input or the output of the op rebuilt as a
        Tensor linked to the tape (PyTorch's saved tensors): a rule run on them is recorded, and
        the gradient it computes can be differentiated again. Other residuals (shapes, masks,
        winners, constants) stay as they are."""
        if self.saved is None:
            return self.residuals
        single = not isinstance(self.residuals, tuple)
        items = [self.residuals] if single else list(self.residuals)
        inputs_tangents, out_tangents = self.tangents or ((None,) * len(self.parents), None)
        for position, source in self.saved:
            array = items[position]
            if source == "out":
                items[position] = Tensor._wrap(array, self, out_tangents)
            else:
                parent = self.parents[source]
                if isinstance(parent, Tensor):            # a leaf: the Tensor itself
                    items[position] = parent
                elif parent is not None or inputs_tangents[source]:
                    # made by an op (same values, same node), or a constant of the tape that
                    # carries a forward-mode tangent
                    items[position] = Tensor._wrap(array, parent, inputs_tangents[source])
        return items[0] if single else tuple(items)

    def free(self):
        """Drop the residuals and the links (``backward`` without ``retain_graph``)."""
        self.residuals, self.parents, self.freed = None, (), True


def _vertex(tensor):
    """Where a Tensor sits on the tape: its Node, or itself for a leaf that requires grad."""
    return tensor._node if tensor._node is not None else tensor


def _parents(vertex):
    return vertex.parents if isinstance(vertex, Node) else ()


def backpropagate(roots, cotangents, *, retain_graph=False, accumulate=True, wrt=(),
                  create_graph=False, record=True):
    """Reverse-mode sweep over the tape from ``roots`` seeded with ``cotangents``.

    The sweep itself is :func:`graphm.engine.reverse_sweep`, the one a compiled Program uses;
    this function says what a vertex of the tape is and what happens at a leaf.

    Parameters
    ----------
    roots : list of Tensor
        Tensors that require grad.
    cotangents : list of ndarray
        One per root, of its shape and dtype.
    retain_graph : bool
        Keep the residuals so that the tape can be swept again.
    accumulate : bool
        Add into ``.grad`` of leaves (and of Tensors that called ``retain_grad()``), as
        ``Tensor.backward`` does; ``graphm.vjp`` sweeps without touching ``.grad``.
    wrt : sequence of Tensor
        Tensors whose total cotangent to return.
    create_graph : bool
        Run every op's ``vjp`` rule on Tensors (the cotangents and the op's saved inputs and
        output), with recording on: the gradients are then Tensors on the tape themselves, and
        can be differentiated again (double backward). Otherwise the rules run on arrays.
    record : bool, default True
        With ``create_graph``: record the rules on the tape. ``False`` runs them on Tensors
        without recording, which is what forward over reverse needs: the tangents that the
        residuals carry are pushed through the backward pass (each rule's ops apply their own
        ``jvp``), but no transform will differentiate the backward pass itself.

    Returns
    -------
    list
        For each Tensor in ``wrt``, its cotangent (None if the roots do not depend on it).
    """
    if create_graph:
        with enable_grad() if record else no_grad():
            return _backpropagate(roots, [c if isinstance(c, Tensor) else Tensor._wrap(c)
                                          for c in cotangents], retain_graph, accumulate, wrt,
                                  True)
    return _backpropagate(roots, cotangents, retain_graph, accumulate, wrt, False)


def _backpropagate(roots, cotangents, retain_graph, accumulate, wrt, create_graph):
    seeds = {}                                      # id(vertex) -> cotangent summed so far
    vertices = [_vertex(root) for root in roots]
    for vertex, cotangent in zip(vertices, cotangents):
        engine.accumulate(seeds, id(vertex), cotangent)
    wanted = {id(_vertex(t)): None for t in wrt}
    # Only the gradients of ``wrt`` are asked for: nothing upstream of them can contribute.
    stops = wanted if not accumulate else ()

    def visit(vertex, g):
        if id(vertex) in wanted:
            wanted[id(vertex)] = g
        if isinstance(vertex, Tensor):                   # a leaf: the end of the road
            if accumulate:
                _accumulate(vertex, g)
            return True
        if vertex.freed:
            raise RuntimeError(
                "Trying to backward through the graph a second time: the tape was freed by the "
                "first backward(). Call backward(retain_graph=True) the first time if you need "
                "to sweep it again.")
        if accumulate and vertex.retained is not None and vertex.retained() is not None:
            _accumulate(vertex.retained(), g)
        return id(vertex) in stops

    def pull(node, g):
        if create_graph:
            if not node.op.higher_order:
                raise NotImplementedError(
                    f"create_graph=True: the vjp rule of op '{node.op.name}' is not yet written "
                    "in graphm ops, so its gradient cannot be differentiated again")
            grads = node.op.vjp(node.residuals_as_tensors(), g, **node.attrs)
        else:
            grads = node.op.vjp(node.residuals, g, **node.attrs)
        pulled = []
        for parent, grad in zip(node.parents, grads):
            if parent is None or grad is None:
                continue
            if create_graph:
                if not isinstance(grad, Tensor):
                    grad = Tensor._wrap(np.asarray(grad))
            else:
                grad = np.asarray(grad)
            if grad.shape != parent.shape:      # a rule bug, never the user's fault
                raise RuntimeError(f"{node.op.name}: vjp returned a gradient of shape "
                                   f"{grad.shape} for an input of shape {parent.shape}")
            pulled.append((id(parent), grad))
        if not retain_graph:
            node.free()
        return pulled

    engine.reverse_sweep(engine.topological_order(vertices, _parents, stops), seeds, pull,
                         visit=visit)
    return [wanted[id(_vertex(t))] for t in wrt]


def _accumulate(tensor, g):
    """``tensor.grad += g``, as a new writable array of the Tensor's dtype (PyTorch's rule); a
    Tensor (on the tape) when the sweep was ``create_graph=True``."""
    if isinstance(g, Tensor):
        tensor.grad = g if tensor.grad is None else g + tensor.grad
        return
    tensor.grad = np.array(g, dtype=tensor.dtype) if tensor.grad is None else tensor.grad + g


# ------------------------------------------------------------------------------------------------
# Tensor
# ------------------------------------------------------------------------------------------------

def _as_data(data, dtype):
    """A fresh array from ``data``: NumPy arrays keep their dtype, Python floats become float32
    (PyTorch's default dtype), Python ints int64."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=np.dtype(dtype))
    if isinstance(data, (np.ndarray, np.generic)):
        return np.array(data)
    array = np.array(data)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "b":
        return array
    raise TypeError(f"cannot make a Tensor from {type(data).__name__} (dtype {array.dtype}); "
                    "give numbers, nested lists of numbers or a NumPy array")


class Tensor(ArraySurface):
    """An n-dimensional array that records the operations done to it, for ``backward``.

    Parameters
    ----------
    data : array_like
        Copied. NumPy arrays keep their dtype; Python floats become float32, ints int64.
    requires_grad : bool, default False
        Record operations on this Tensor so that ``backward`` fills its ``.grad``.
    dtype : str or numpy dtype, optional

    Attributes
    ----------
    data : ndarray
        The values.
    grad : ndarray or None
        Filled (and accumulated, as in PyTorch) by ``backward`` on leaves that require grad.
    requires_grad : bool
    """

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_data(data, dtype)
        self.grad = None
        self._node = None
        self._tangents = None
        self.requires_grad = False
        self.requires_grad_(requires_grad)

    # -- the two hooks of the shared surface (graphm/surface.py) ------------------------------

    @staticmethod
    def _graphm_apply(op, inputs, attrs):
        """Run one op now, recording it on the tape (see :func:`apply`)."""
        return apply(op, inputs, attrs)

    def _values(self, what):
        return self.data

    @staticmethod
    def _from_values(array):
        return Tensor._wrap(array)

    @classmethod
    def _wrap(cls, data, node=None, tangents=None):
        """A Tensor around ``data`` (not copied), made by an op; ``tangents`` maps forward-mode
        levels to this Tensor's tangent at each (see :class:`forward_level`)."""
        result = cls.__new__(cls)
        result.data, result.grad, result._node = data, None, node
        result._tangents = tangents
        result.requires_grad = node is not None
        return result

    # -- properties ---------------------------------------------------------------------------

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def is_leaf(self):
        """True for Tensors made by the user rather than by a recorded op."""
        return self._node is None

    @property
    def grad_fn(self):
        """The name of the op that made this Tensor (None for a leaf)."""
        return None if self._node is None else self._node.op.name

    # -- the tape ---------------------------------------------------------------------------

    def detach(self):
        """A Tensor sharing the values, cut from the tape (no gradient flows through it)."""
        return Tensor._wrap(self.data)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` on a leaf, in place; returns the Tensor."""
        if requires_grad and self.data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"only float32/float64 Tensors can require gradients, this one is "
                            f"{self.dtype}")
        if not requires_grad and self._node is not None:
            raise RuntimeError("requires_grad can only be switched off on a leaf Tensor; use "
                               "detach() for a non-leaf")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf Tensor during ``backward`` (leaves always do)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a Tensor that does not require grad")
        if self._node is not None:
            self._node.retained = weakref.ref(self)

    def zero_grad(self, set_to_none=True):
        """Forget the accumulated gradient (``grad = None``, or zeros if ``set_to_none=False``)."""
        self.grad = None if set_to_none or self.grad is None else np.zeros_like(self.grad)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self._node is not None:
            extra = f", grad_fn=<{self._node.op.name}>"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        if self.dtype != np.float32 and self.dtype.kind == "f" or self.dtype.kind != "f":
            extra = f", dtype={self.dtype}" + extra
        return f"tensor({body}{extra})"

    # -- reverse mode -------------------------------------------------------------------------

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Add the gradient of this Tensor w.r.t. every leaf into the leaves' ``.grad``.

        Parameters
        ----------
        gradient : array_like, optional
            The cotangent to start from, of this Tensor's shape. Only a one-element Tensor
            (a loss) may leave it out (it is then 1).
        retain_graph : bool, optional
            Keep the tape, to call ``backward`` again. By default it is freed (kept when
            ``create_graph`` is set, as in PyTorch).
        create_graph : bool, default False
            Record the backward pass itself: ``.grad`` becomes a Tensor on the tape, which can
            be differentiated again (Hessian-vector products, gradient penalties).
        """
        if retain_graph is None:
            retain_graph = create_graph
        if not self.requires_grad:
            raise RuntimeError("backward(): this Tensor does not require grad and has no "
                               "recorded history (did an input set requires_grad=True? is "
                               "this inside no_grad()?)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): grad can be implicitly created only for "
                                   f"scalar outputs; this Tensor has shape {self.shape}, so "
                                   f"pass gradient= (an array of that shape)")
            gradient = np.ones_like(self.data)
        else:
            if create_graph and isinstance(gradient, Tensor):
                if gradient.shape != self.shape:
                    raise ValueError(f"backward(): gradient has shape {gradient.shape} but the "
                                     f"Tensor has shape {self.shape}")
            else:
                gradient = np.asarray(gradient.data if isinstance(gradient, Tensor)
                                      else gradient)
                if gradient.shape != self.shape:
                    raise ValueError(f"backward(): gradient has shape {gradient.shape} but the "
                                     f"Tensor has shape {self.shape}")
                gradient = gradient.astype(self.dtype, copy=False)
        backpropagate([self], [gradient], retain_graph=retain_graph, create_graph=create_graph)

    # Tensors are compared by identity, hashable, and used as dictionary keys by the tape.
    __hash__ = object.__hash__



def tensor(data, requires_grad=False, dtype=None):
    """Make a Tensor (copying ``data``), as ``torch.tensor``. See :class:`Tensor`."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _size(size):
    return shape_arguments(size)


def _made(array, dtype, requires_grad):
    return Tensor(array, requires_grad=requires_grad,
                  dtype=np.float32 if dtype is None else dtype)


def zeros(*size, dtype=None, requires_grad=False):
    """A Tensor of zeros (float32 unless ``dtype`` says otherwise), as ``torch.zeros``."""
    return _made(np.zeros(_size(size)), dtype, requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    """A Tensor of ones (float32 unless ``dtype`` says otherwise), as ``torch.ones``."""
    return _made(np.ones(_size(size)), dtype, requires_grad)


def rand(*size, dtype=None, requires_grad=False, generator=None):
    """Uniform on [0, 1), drawn from the ``graphm.manual_seed`` generator (or ``generator``)."""
    rng = default_generator() if generator is None else generator
    return _made(rng.random(_size(size)), dtype, requires_grad)


def randn(*size, dtype=None, requires_grad=False, generator=None):
    """Standard normal, drawn from the ``graphm.manual_seed`` generator (or ``generator``)."""
    rng = default_generator() if generator is None else generator
    return _made(rng.standard_normal(_size(size)), dtype, requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    """``start, start + step, ...`` below ``end``, as ``torch.arange`` (int64 for integer
    arguments, float32 otherwise, unless ``dtype`` is given)."""
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    return Tensor(values, requires_grad=requires_grad, dtype=dtype)


def from_numpy(array):
    """A Tensor holding ``array`` itself (shared, not copied), as ``torch.from_numpy``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a NumPy array, got {type(array).__name__}")
    return Tensor._wrap(array)


# ------------------------------------------------------------------------------------------------
# Running one op eagerly
# ------------------------------------------------------------------------------------------------

def _is_tensor(value):
    return isinstance(value, Tensor)


def apply(op, inputs, attrs=None):
    """Run ``op`` on Tensors (or constants) now, recording it when a gradient may be needed.

    This is the whole of eager mode: lift the operands (:func:`graphm.engine.lift`), check with
    the op's shape and dtype rules, then call its ``forward`` and, if any input requires a
    gradient, leave a :class:`Node` on the output: the op, its residuals and where each input's
    gradient goes. When an input carries a forward-mode tangent, the op's ``jvp`` rule pushes
    it forward too (:func:`_push_tangents`).
    """
    attrs = {} if attrs is None else attrs
    tensors = engine.lift(op, inputs, _is_tensor, Tensor._wrap, "Tensor")
    arrays = tuple(None if t is None else t.data for t in tensors)
    op.infer([None if a is None else a.shape for a in arrays],
             [None if a is None else a.dtype for a in arrays], attrs)
    differentiable = [t is not None and op.differentiable(i) for i, t in enumerate(tensors)]
    record = _grad_mode.enabled and any(
        d and t.requires_grad for d, t in zip(differentiable, tensors))
    levels = sorted({level for d, t in zip(differentiable, tensors) if d and t._tangents
                     for level in live_tangents(t)})
    if levels and not record and len(levels) == 1:
        level = levels[0]
        given = [t._tangents.get(level) if d and t._tangents else None
                 for d, t in zip(differentiable, tensors)]
        if not any(isinstance(g, Tensor) for g in given):
            # One forward sweep on plain arrays: the rule computes the value and its tangent.
            out, tangent = op.jvp(arrays, engine.fill_tangents(op, arrays, given), **attrs)
            return Tensor._wrap(np.asarray(out), None, {level: np.asarray(tangent)})
    out, residuals = op.forward(*arrays, **attrs)
    out_array = np.asarray(out)
    tangents = _push_tangents(op, tensors, arrays, attrs, differentiable, record, levels) \
        if levels else None
    node = None
    if record:
        parents = tuple(_vertex(t) if d and t.requires_grad else None
                        for d, t in zip(differentiable, tensors))
        node = Node(op, attrs, parents, residuals, out_array.shape, out_array.dtype,
                    engine.saved_residuals(residuals, arrays, out, out_array)
                    if op.higher_order else None)
        if tangents:
            node.tangents = (tuple(None if t is None else live_tangents(t) for t in tensors),
                             tangents)
    return Tensor._wrap(out_array, node, tangents)


def _push_tangents(op, tensors, arrays, attrs, differentiable, record, levels):
    """The output's tangent at each live forward level among the inputs', by the op's ``jvp``.

    At level L the rule sees the inputs *without* their L-tangents and the L-tangents
    themselves. It runs on plain arrays when nothing more is asked of it; on Tensors when the
    inputs carry tangents of other levels too (each pushed through the rule's own ops: the
    mixed derivatives of nested forward modes), when the tangents are Tensors, or when a
    reverse transform outside level L will differentiate them (then the rule is recorded).
    """
    tangents = {}
    for level in levels:
        given = [t._tangents.get(level) if d and t._tangents else None
                 for d, t in zip(differentiable, tensors)]
        filled = engine.fill_tangents(op, arrays, given)
        records = record and _forward_levels.records[level]
        if not (records or len(levels) > 1 or any(isinstance(g, Tensor) for g in given)):
            tangents[level] = np.asarray(op.jvp(arrays, filled, **attrs)[1])
            continue
        primals = [None if t is None else _without_level(t, level) for t in tensors]
        mode = enable_grad if record and any(_forward_levels.records[m] for m in levels) \
            else no_grad
        with mode():
            _, tangent = op.jvp(primals, filled, **attrs)
        tangents[level] = tangent
    return tangents


def _without_level(tensor, level):
    """The same value in the same place on the tape, without its tangent at ``level``."""
    rest = {m: t for m, t in live_tangents(tensor).items() if m != level} or None
    node = tensor._node
    if node is None and tensor.requires_grad and _grad_mode.enabled:
        # A leaf is its own vertex on the tape: reach it through an identity record.
        node = Node(_ALIAS, {}, (tensor,), None, tensor.shape, tensor.dtype)
    return Tensor._wrap(tensor.data, node, rest)
