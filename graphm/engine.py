"""The autodiff engine, written once for both front-ends.

graphm has two ways to run ops: the eager :class:`graphm.Tensor`, which computes at once and
records a tape, and the compiled :class:`graphm.GraphM`, which records SSA nodes and runs them
later as a :class:`graphm.graph.Program`. What they share lives here, in one place:

* **operand lifting** (:func:`lift`): an op's operands that are not values of the front-end
  (Python numbers, NumPy arrays) become constants, a scalar taking the float dtype of the op's
  other operands (``x * 2`` stays float32), and a value of the *other* front-end is refused;
* **tangent filling** (:func:`fill_tangents`): forward mode hands every op one tangent per
  differentiable input, zeros where none was given;
* **the reverse sweep** (:func:`reverse_sweep` over :func:`topological_order`): visit the
  vertices from the outputs back, each once, summing the cotangents that reach a vertex before
  pulling the sum back through its op's ``vjp`` rule (the multivariate chain rule).

The sweep does not care what a vertex or a cotangent is. On the tape a vertex is a record and
the cotangents are NumPy arrays, or Tensors when ``create_graph=True``; in a Program a vertex is
an SSA number and the cotangents are arrays when the program runs, or Vars when the program's
own derivative is being *built* (:meth:`graphm.graph.Program.vjp_program`): the gradient of a
Program is then a Program. One loop, four interpretations, the same ``vjp`` rules.

Nothing here imports a front-end: they pass in what differs (how to make a constant, how to pull
a cotangent back through one vertex).
"""
from __future__ import annotations

import numpy as np

from graphm.ops.base import FLOAT_DTYPES

__all__ = ["operand_dtype", "constant_operand", "lift", "fill_tangents", "topological_order",
           "reverse_sweep", "accumulate", "saved_residuals"]


# ------------------------------------------------------------------------------------------------
# Operand lifting
# ------------------------------------------------------------------------------------------------

def operand_dtype(inputs, is_value):
    """The float dtype of the first operand that is a value of the front-end (None if none)."""
    for value in inputs:
        if is_value(value) and value.dtype in FLOAT_DTYPES:
            return value.dtype
    return None


def constant_operand(value, dtype, differentiable, what="a graphm op"):
    """A non-value operand as a NumPy array.

    A Python or NumPy scalar takes ``dtype`` (the float dtype of the op's other operands), and
    so does an integer or boolean array in a differentiable position (a mask in ``g * mask``),
    so that no op ever promotes silently.
    """
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"cannot use a {type(value).__name__} as an operand of {what}")
    if dtype is not None and differentiable and (array.ndim == 0 or array.dtype.kind in "biu"):
        array = array.astype(dtype)
    return array


def lift(op, inputs, is_value, make_constant, front_end):
    """The operands of ``op`` with every non-value turned into a constant of the front-end.

    Parameters
    ----------
    op : graphm.ops.Op
    inputs : sequence
        Values of the front-end, ``None`` (an absent optional input), numbers or arrays.
    is_value : callable
        ``is_value(x)``: is ``x`` a value of this front-end (a Tensor; a Var of this graph)?
    make_constant : callable
        ``make_constant(array)``: the front-end's constant holding ``array``.
    front_end : str
        Named in the error for a value of the other front-end.
    """
    dtype = operand_dtype(inputs, is_value)
    lifted = []
    for index, value in enumerate(inputs):
        if value is None or is_value(value):
            lifted.append(value)
            continue
        if getattr(value, "__graphm_tensor__", False):
            raise TypeError(f"{op.name}: cannot mix an eager graphm Tensor and a compiled "
                            f"graph's Var in one operation (got a {type(value).__name__} among "
                            f"{front_end} operands); pass a Tensor's values into a graph as an "
                            "input or param (or tensor.numpy() as a constant)")
        lifted.append(make_constant(constant_operand(value, dtype, op.differentiable(index),
                                                     f"{op.name}")))
    return lifted


# ------------------------------------------------------------------------------------------------
# Forward mode
# ------------------------------------------------------------------------------------------------

def fill_tangents(op, primals, tangents, zeros_like=np.zeros_like):
    """One tangent per input, as an op's ``jvp`` rule wants them: the given tangent, zeros for a
    differentiable input that has none, ``None`` for an absent input or one without a
    derivative (integer labels)."""
    return [(t if t is not None else zeros_like(p)) if p is not None and op.differentiable(k)
            else None for k, (p, t) in enumerate(zip(primals, tangents))]


# ------------------------------------------------------------------------------------------------
# Reverse mode
# ------------------------------------------------------------------------------------------------

def topological_order(roots, parents_of, stops=()):
    """Every vertex reachable from ``roots``, each listed after all its parents.

    ``parents_of(vertex)`` lists a vertex's parents (``None`` entries are skipped). An explicit
    stack instead of recursion, so that a long chain of ops does not hit Python's limit.
    Vertices whose id is in ``stops`` are listed but not expanded.
    """
    order, visited = [], set()
    stack = [(root, False) for root in roots]
    while stack:
        vertex, expanded = stack.pop()
        if expanded:
            order.append(vertex)
            continue
        if id(vertex) in visited:
            continue
        visited.add(id(vertex))
        stack.append((vertex, True))
        if id(vertex) not in stops:
            stack.extend((parent, False) for parent in parents_of(vertex)
                         if parent is not None and id(parent) not in visited)
    return order


def accumulate(pending, key, cotangent):
    """``pending[key] += cotangent`` without touching the summand in place (it may be a
    read-only broadcast view, or a Tensor/Var on which ``+`` records an op)."""
    pending[key] = pending[key] + cotangent if key in pending else cotangent


def reverse_sweep(order, seeds, pull, key=id, visit=None):
    """The reverse-mode sweep: from the last vertex of ``order`` back to the first.

    Parameters
    ----------
    order : sequence
        Vertices in topological order (each after the vertices it reads).
    seeds : dict
        ``key(vertex) -> cotangent`` to start from (the outputs' cotangents).
    pull : callable
        ``pull(vertex, g)`` returns ``(parent_key, gradient)`` pairs: ``g``, the total
        cotangent of ``vertex``, pulled back through its op's ``vjp`` rule. Return nothing for a
        vertex that has no op (a leaf).
    key : callable or None, default ``id``
        How a vertex is keyed in ``seeds`` and in what ``pull`` returns; None: by itself (the
        vertices are SSA numbers).
    visit : callable, optional
        ``visit(vertex, g)`` is told each vertex's total cotangent before it is pulled back
        (for ``.grad`` of leaves and the gradients asked for); returning True stops there.

    Returns
    -------
    dict
        The cotangents that reached keys which are not in ``order`` (the leaves of a Program),
        the seeds of vertices that are not in ``order`` included.
    """
    pending = dict(seeds)
    for vertex in reversed(order):
        g = pending.pop(vertex if key is None else key(vertex), None)
        if g is None:
            continue
        if visit is not None and visit(vertex, g):
            continue
        for parent, gradient in pull(vertex, g):
            accumulate(pending, parent, gradient)
    return pending


def saved_residuals(residuals, arrays, out, out_array):
    """Which residuals of an op's forward pass are the op's inputs or output:
    ``((position, input index or "out"), ...)`` (the single residual of a non-tuple is at
    position 0). Found by identity, so it costs a few
    comparisons. The tape turns exactly these back into Tensors (``Node.residuals_as_tensors``)
    and a derivative Program into Vars, so that a rule run on them is recorded."""
    items = residuals if isinstance(residuals, tuple) else (residuals,)
    saved = []
    for position, item in enumerate(items):
        if not isinstance(item, np.ndarray):
            continue
        if item is out or item is out_array:
            saved.append((position, "out"))
            continue
        for index, array in enumerate(arrays):
            if item is array:
                saved.append((position, index))
                break
    return tuple(saved)
