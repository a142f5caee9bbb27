r"""Interval bound propagation: run a program on boxes instead of arrays.

A program is a list of ops; evaluating it means calling each op's ``forward`` on arrays. IBP
is the *same walk* with each op's ``interval`` rule called on :class:`~graphm.ops.interval.Bounds`
instead: the box on the input becomes a box on every intermediate value and, at the end, on
the output. Nodes that do not depend on the input (weights, constants) are evaluated exactly.
"""
from __future__ import annotations

import numpy as np

from graphm.ops import OPS
from graphm.ops.interval import Bounds, NoIntervalRule
from graphm.verify._program import as_graph, check_box

__all__ = ["ibp", "interval_values"]


def _rule_error(function, step):
    ops = sorted(name for name, op in OPS.items() if hasattr(op, "interval"))
    return NoIntervalRule(f"{function}: op '{step.op.name}' (node %{step.index}) has no interval "
                          f"rule, so bounds cannot pass through it; ops with one: "
                          f"{', '.join(ops)}")


def apply_interval(step, args, function="ibp"):
    """The box on one node from the boxes (or exact values) of its inputs."""
    rule = getattr(step.op, "interval", None)
    if rule is None:
        raise _rule_error(function, step)
    try:
        lower, upper = rule(*args, **step.attrs)
    except NoIntervalRule as error:
        raise NoIntervalRule(f"{function}: node %{step.index}: {error}") from None
    lower = np.asarray(lower, step.dtype)
    upper = np.asarray(upper, step.dtype)
    if lower.shape != step.shape or upper.shape != step.shape:   # a rule bug, not the caller's
        raise RuntimeError(f"{step.op.name}.interval gave shapes {lower.shape}, {upper.shape}; "
                           f"the node has shape {step.shape}")
    return Bounds(lower, upper)


def interval_values(graph, box, function="ibp", refine=None):
    """Every node's value: exact arrays for those that do not depend on the input, Bounds for
    those that do. ``refine(step, bounds) -> bounds`` may tighten a node's box as it is made
    (CROWN does, for the inputs of its relaxations)."""
    values = dict(graph.known)
    values[graph.input] = box
    for step in graph.steps:
        args = [None if j is None else values[j] for j in step.inputs]
        if not any(isinstance(a, Bounds) for a in args):
            values[step.index] = np.asarray(step.op.forward(*args, **step.attrs)[0])
            continue
        bounds = apply_interval(step, args, function)
        if refine is not None:
            bounds = refine(step, bounds, values)
        values[step.index] = bounds
    return values


def ibp(model, lower, upper, *, params=None):
    r"""Bounds on a model's output over a box of inputs: interval bound propagation.

    Every op maps a box on its input to a box on its output with its ``interval`` rule (conv,
    conv_transpose and linear in centre–radius form, :math:`c' = Wc + b`, :math:`r' = |W| r`;
    monotone activations and max pooling at the box's corners; ...), node by node through the
    program, as a forward pass maps arrays.

    **Sound in floating point.** The bounds contain every output the program can compute, in
    its own float32 or float64 arithmetic, for every input in the box, not only the outputs of
    exact arithmetic: each rule adds a bound on the rounding error of what it stands for
    (:math:`\gamma_n \sum |w||x|` for a dot product of :math:`n` terms,
    :math:`\gamma_n = nu/(1 - nu)`) and rounds every bound outward with ``np.nextafter``;
    monotone correctly rounded ops need no widening. :mod:`graphm.ops.interval` gives the
    argument in full.

    Parameters
    ----------
    model : graphm.nn.Module, CompiledModule or Program
        A Module (a :class:`~graphm.nn.Sequential` such as :func:`graphm.nn.models.make_cnn`)
        is traced into a program for the box's shape. A Program is walked node by node; the box
        goes on its one input without a value in ``params``.
    lower, upper : ndarray
        The box, shaped like the model's input (batch axis first), float32 or float64 like the
        model, ``lower <= upper``.
    params : dict, optional
        For a Program: the values of its params (and of any other inputs), by name.

    Returns
    -------
    Bounds
        ``(lower, upper)`` of the output, in the model's dtype.

    Raises
    ------
    ValueError
        ``lower > upper`` somewhere, NaN in a bound, shapes that differ or do not fit the model.
    NotImplementedError
        (:class:`~graphm.ops.interval.NoIntervalRule`) an op without an interval rule,
        named with its node.

    Examples
    --------
    >>> import numpy as np, graphm
    >>> from graphm.verify import ibp
    >>> layer = graphm.nn.Linear(3, 2)
    >>> x = np.zeros((1, 3), np.float32)
    >>> bounds = ibp(layer, x - 0.1, x + 0.1)
    >>> bool(np.all(bounds.lower <= layer(graphm.tensor(x)).numpy()))
    True
    """
    box = check_box(lower, upper, "ibp")
    graph = as_graph(model, box.lower, params, "ibp")
    out = interval_values(graph, box)[graph.output]
    if not isinstance(out, Bounds):          # the output does not depend on the input
        out = Bounds(out, out)
    return out
