"""What graphm.verify reads from a model or a program: its steps, its known values, its input.

Everything that touches a :class:`graphm.graph.Program`'s internals is in :func:`read_program`,
so that a change in how programs store their nodes changes one function.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from graphm.ops.base import FLOAT_DTYPES, ShapeError
from graphm.ops.interval import Bounds

__all__ = ["Graph", "Step", "as_graph", "check_box"]


class Step(NamedTuple):
    """One op of a program: ``value[index] = op(*value[inputs], **attrs)``."""
    index: int
    op: object
    attrs: dict
    inputs: tuple          # node indices (None for an absent optional input)
    shape: tuple
    dtype: np.dtype


class Graph(NamedTuple):
    """A program as the verifier walks it.

    ``steps`` in order of evaluation; ``known`` the values fixed for the run (params, constants,
    other inputs); ``input`` the index of the node the box is put on; ``output`` the node bounded.
    """
    steps: list
    known: dict
    input: int
    output: int
    input_shape: tuple
    dtype: np.dtype


def read_program(program, values, function):
    """The :class:`Graph` of a compiled :class:`graphm.graph.Program`.

    ``values`` gives every param (and every input but one) by name; the input left over is the
    one the box is put on.
    """
    nodes = program._nodes
    if not program._single:
        raise ValueError(f"{function}: the program must have one output, it has "
                         f"{len(program._outputs)}")
    known, free = {}, []
    for i in program._live:
        node = nodes[i]
        if node.kind == "const":
            known[i] = node.value
        elif node.kind in ("input", "param"):
            if node.name in values:
                array = np.asarray(values[node.name])
                if array.shape != node.shape:
                    raise ValueError(f"{function}: params[{node.name!r}] must have shape "
                                     f"{node.shape}, got {array.shape}")
                known[i] = array.astype(node.dtype, copy=False)
            elif node.kind == "param":
                raise ValueError(f"{function}: the program's param {node.name!r} "
                                 f"({node.shape}) has no value; pass params={{{node.name!r}: "
                                 "array, ...}")
            else:
                free.append(i)
    unknown = sorted(set(values) - {nodes[i].name for i in program._live})
    if unknown:
        raise ValueError(f"{function}: params names {unknown}, which the program does not use")
    if len(free) != 1:
        names = [nodes[i].name for i in free]
        raise ValueError(f"{function}: the box goes on exactly one input of the program; give "
                         f"the others in params (inputs without a value: {names})")
    steps = [Step(i, nodes[i].op, dict(nodes[i].attrs), tuple(nodes[i].inputs),
                  tuple(nodes[i].shape), np.dtype(nodes[i].dtype)) for i in program._steps]
    x = nodes[free[0]]
    return Graph(steps, known, free[0], program._outputs[0], tuple(x.shape), np.dtype(x.dtype))


def as_graph(model, lower, params, function):
    """Read ``model`` (a graphm.nn Module, a CompiledModule or a Program) for a box shaped like
    ``lower``; a Module is traced into a program (graphm.compile) for that shape."""
    from graphm.graph import Program
    from graphm.nn.compiled import CompiledModule, compile
    from graphm.nn.module import Module
    if isinstance(model, CompiledModule):
        model = model.module
    if isinstance(model, Program):
        graph = read_program(model, dict(params or {}), function)
        if graph.input_shape != lower.shape:
            raise ValueError(f"{function}: lower and upper have shape {lower.shape}, but the "
                             f"program's input has shape {graph.input_shape}")
        if graph.dtype != lower.dtype:
            raise TypeError(f"{function}: lower and upper are {lower.dtype}, the program's input "
                            f"is {graph.dtype} (convert with .astype(np.{graph.dtype}))")
        return graph
    if not isinstance(model, Module):
        raise TypeError(f"{function}: expected a graphm.nn Module, a CompiledModule or a "
                        f"Program, got {type(model).__name__}")
    if params is not None:
        raise TypeError(f"{function}: params is for Programs; a Module brings its own")
    weights = [p for p in model.parameters()]
    if weights and weights[0].dtype != lower.dtype:
        raise TypeError(f"{function}: lower and upper are {lower.dtype}, the model's parameters "
                        f"are {weights[0].dtype} (convert with .astype(np.{weights[0].dtype}))")
    try:
        compiled = compile(model, np.zeros(lower.shape, lower.dtype))
    except (ShapeError, ValueError) as error:
        raise ValueError(f"{function}: lower and upper have shape {lower.shape}, which does not "
                         f"fit the model: {error}") from None
    named = dict(model.named_parameters())
    values = {ident: named[name].data for ident, name in compiled.param_names.items()}
    program = compiled.program
    values = {name: value for name, value in values.items() if name in program.params}
    return read_program(program, values, function)


def check_box(lower, upper, function):
    """``lower`` and ``upper`` as arrays of one float dtype and shape, with ``lower <= upper``
    and no NaN; a ValueError (TypeError for a dtype) naming the argument otherwise."""
    arrays = {}
    for name, value in (("lower", lower), ("upper", upper)):
        array = value.data if hasattr(value, "__graphm_tensor__") else np.asarray(value)
        if array.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{function}: {name} must be float32 or float64, got {array.dtype}")
        arrays[name] = array
    lower, upper = arrays["lower"], arrays["upper"]
    if lower.dtype != upper.dtype:
        raise TypeError(f"{function}: lower ({lower.dtype}) and upper ({upper.dtype}) must "
                        "share one dtype")
    if lower.shape != upper.shape:
        raise ValueError(f"{function}: lower and upper must have one shape, got lower "
                         f"{lower.shape} and upper {upper.shape}")
    for name, array in arrays.items():
        nan = np.isnan(array)
        if nan.any():
            first = tuple(int(i) for i in np.argwhere(nan)[0])
            raise ValueError(f"{function}: {name} holds NaN at {int(nan.sum())} of {array.size} "
                             f"entries (first at index {first}); a box needs numbers")
    crossed = lower > upper
    if crossed.any():
        first = tuple(int(i) for i in np.argwhere(crossed)[0])
        raise ValueError(f"{function}: lower > upper at {int(crossed.sum())} of {lower.size} "
                         f"entries (shape {lower.shape}); first at index {first}: lower="
                         f"{lower[first]!r}, upper={upper[first]!r}")
    return Bounds(np.ascontiguousarray(lower), np.ascontiguousarray(upper))
