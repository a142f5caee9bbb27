"""Compiled mode: ``GraphM``, after TorchLean's GraphM builder.

Build a graph once, with shapes known and checked as each op is added; compile it into a
program; run the program, its VJP or its JVP on as many inputs as you like::

    g = graphm.GraphM()
    x = g.input("x", (64, 1, 28, 28))                    # float32 by default
    w, b = g.param("w", (8, 1, 5, 5)), g.param("b", (8,))
    h = g.relu(g.conv(w, b, x, stride=1, padding=2))     # a Var: h.shape == (64, 8, 28, 28)
    loss = ...
    prog = g.compile(loss)
    prog(x=..., w=..., b=...)                            # the value
    prog.grad({"x": ..., "w": ..., "b": ...})            # {"x": dx, "w": dw, "b": db}
    step = prog.grad_program()                           # the gradient, itself a Program
    hvp = step.jvp_program()                             # and its derivative: H v

The graph is in SSA form: every op appends one node whose value is written once. An ill-shaped
op raises :class:`graphm.ShapeError` *while building*, naming the op, the argument and the shapes:
the Python stand-in for TorchLean's typed shapes. Every op is the one in :mod:`graphm.ops` the
eager Tensor uses, so both modes compute the same numbers with the same rules.

A ``Var`` has the Tensor's whole operator surface (both inherit graphm.surface.ArraySurface):
``+ - * / @``, ``.reshape``, ``.sum`` ... and the graphm.functional functions (``F.relu(v)``,
``F.max_pool2d(v, 2)``) all add nodes, so a model written once can run eagerly on Tensors or be
traced into a graph with Vars. GraphM's own methods (``g.relu``, ``g.sum``, ...) are generated
from the op bindings (graphm/ops/bindings.py).

Differentiating runs the one reverse sweep of graphm/engine.py: on arrays in ``prog.vjp``, and
on Vars in ``prog.vjp_program()``, where each op's vjp rule records its gradient as new nodes:
the derivative of a Program is a Program, which prints, draws, runs and is differentiated again.
"""
from __future__ import annotations

import functools

import numpy as np

from graphm import engine
from graphm import ops
from graphm.ops.base import FLOAT_DTYPES, Op, format_shape
from graphm.ops.bindings import BINDINGS, METHODS, bind, bind_method
from graphm.functional._checks import check_shape
from graphm.surface import ArraySurface

__all__ = ["GraphM", "Var", "Program"]


class _Node:
    """One SSA node: an input, a param, a constant, or an op applied to earlier nodes.

    ``attr_inputs`` lists ``(attribute name, node)`` for attributes whose value is another
    node's value, known only when the program runs: a derivative program reads max pooling's
    winners that way (``max_pool_scatter(%g) winners=%7``).
    """

    __slots__ = ("kind", "name", "op", "attrs", "inputs", "shape", "dtype", "value",
                 "attr_inputs")

    def __init__(self, kind, shape, dtype, *, name=None, op=None, attrs=None, inputs=(),
                 value=None, attr_inputs=()):
        self.kind, self.name, self.op, self.attrs = kind, name, op, attrs or {}
        self.inputs, self.shape, self.dtype, self.value = tuple(inputs), shape, dtype, value
        self.attr_inputs = tuple(attr_inputs)

    def reads(self):
        """Every node whose value this one reads (inputs and run-time attributes)."""
        return [j for j in self.inputs if j is not None] + [j for _, j in self.attr_inputs]


class _Residual(Op):
    r"""What an op's forward pass hands to its ``vjp`` (a ReLU's mask, max pooling's winners, a
    loss's target distribution), as a value of a derivative program.

    Most residuals are an op's inputs or output, which a derivative program reads directly;
    the others depend on the numbers, so this node recomputes them when the program runs, from
    the same inputs (``%m = residual[relu](%h)``). They carry no derivative: in the second
    derivative they are constants, as they are on the eager tape (a mask's derivative is 0).
    """
    name = "residual"

    def differentiable(self, index):
        return False

    def infer(self, shapes, dtypes, attrs):
        return tuple(attrs["shape"]), np.dtype(attrs["dtype"])

    def forward(self, *xs, of, of_attrs, item, shape, dtype):
        with np.errstate(invalid="ignore", divide="ignore"):
            _, residuals = of.forward(*xs, **of_attrs)
        return self.pick(residuals, item=item, dtype=dtype), None

    @staticmethod
    def pick(residuals, *, item, dtype, **unused):
        """Item ``item`` of an op's residuals (all of them for None), as ``dtype``."""
        value = residuals if item is None else residuals[item]
        return np.asarray(value).astype(dtype, copy=False)


_RESIDUAL = _Residual()


class Var(ArraySurface):
    """A value in a GraphM under construction: its shape and dtype are known, its numbers not.

    A Var has every method and operator of a :class:`graphm.Tensor` (both inherit them from
    :class:`graphm.surface.ArraySurface`): each one adds a node to the graph. What needs the
    numbers (``item()``, ``numpy()``, ``argmax()``, ``max()``, ``bool(v)``) raises a TypeError at
    build time, and so does the tape's own API (``backward()``, ``.grad``): a compiled program
    is differentiated with :meth:`Program.vjp`, :meth:`Program.jvp`, or as a Program with
    :meth:`Program.vjp_program` and :meth:`Program.jvp_program`.

    Attributes
    ----------
    graph : GraphM
    index : int
        The SSA number of the node that defines it.
    shape : tuple of int
    dtype : numpy dtype
    """

    def __init__(self, graph, index):
        self.graph, self.index = graph, index

    # -- the two hooks of the shared surface (graphm/surface.py) ------------------------------

    @staticmethod
    def _graphm_apply(op, inputs, attrs):
        """Record one op as an SSA node of the graph the Vars belong to."""
        graphs = {v.graph for v in inputs if isinstance(v, Var)}
        if len(graphs) != 1:
            raise ValueError(f"{op.name}: the Vars come from {len(graphs)} different GraphMs; "
                             "an op can only combine Vars of one graph")
        return graphs.pop()._add(op, inputs, {} if attrs is None else attrs)

    def _values(self, what):
        raise TypeError(f"{what} on {self!r}: a Var is a value of a graph being built, and its "
                        "numbers exist only when the compiled Program runs (call the Program, "
                        "or compute this eagerly on a Tensor)")

    _from_values = None          # never reached: _values raises first

    # -- what it is -----------------------------------------------------------------------------

    @property
    def _node(self):
        return self.graph._nodes[self.index]

    @property
    def shape(self):
        return self._node.shape

    @property
    def dtype(self):
        return self._node.dtype

    @property
    def name(self):
        """The input's or param's name; ``%<index>`` for an op's result."""
        return self._node.name or f"%{self.index}"

    @property
    def is_leaf(self):
        """True for an input, param or constant (not made by an op)."""
        return self._node.kind != "op"

    @property
    def grad_fn(self):
        """The name of the op that made this Var (None for a leaf), as on a Tensor."""
        return self._node.op.name if self._node.kind == "op" else None

    @property
    def requires_grad(self):
        """Does the Var carry a derivative (a float value)? The Program decides which leaves
        are differentiated: every float input and param."""
        return self.dtype in FLOAT_DTYPES

    def __repr__(self):
        return f"Var({self.name}: {format_shape(self.shape, self.dtype)})"

    # -- the tape's API, which a graph does not have ---------------------------------------------

    def _no_tape(self, what):
        raise TypeError(f"{what} on {self!r}: a GraphM has no tape; differentiate the compiled "
                        "program instead (Program.grad / vjp / jvp, or Program.vjp_program() "
                        "for the gradient as a Program)")

    @property
    def data(self):
        return self._values(".data")

    @property
    def grad(self):
        return self._no_tape(".grad")

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Not for a Var: see :meth:`Program.vjp_program` (raises TypeError)."""
        self._no_tape("backward()")

    def requires_grad_(self, requires_grad=True):
        """Not for a Var (raises TypeError): every float input and param is differentiated."""
        self._no_tape("requires_grad_()")

    def retain_grad(self):
        """Not for a Var (raises TypeError): list the Var among the Program's outputs."""
        self._no_tape("retain_grad()")

    def zero_grad(self, set_to_none=True):
        """Not for a Var (raises TypeError)."""
        self._no_tape("zero_grad()")

    def detach(self):
        """Not for a Var (raises TypeError): a graph value cannot leave the graph."""
        self._no_tape("detach()")

    __hash__ = object.__hash__


def _check_shape(name, shape):
    """A leaf's shape: a tuple of ints >= 0 within graphm's bound on array sizes
    (``graphm.set_max_elements``), or a TypeError/ValueError naming the leaf."""
    return check_shape("GraphM", f"the shape of {name!r}", shape)


def _functional_method(name):
    """A GraphM method that is exactly ``graphm.functional.<name>`` applied to Vars (its
    signature and docstring are the functional's; the op comes from ops/bindings.py)."""
    from graphm import functional

    function = getattr(functional, name)
    numpy_function = function.numpy_function

    @functools.wraps(function)
    def method(self, *args, **kwargs):
        op, inputs, attrs = bind(name, numpy_function, args, kwargs)
        return self._add(op, inputs, attrs)

    method.__doc__ = (f"``graphm.functional.{name}`` as a graph op (same arguments, Vars in "
                      f"place of arrays).\n\n" + (function.__doc__ or ""))
    return method


def _bound_method(name):
    """A GraphM method for the op bound to ``name`` in ``graphm.ops.bindings.METHODS``."""
    binder = METHODS[name]

    @functools.wraps(binder)
    def method(self, *args, **kwargs):
        op, inputs, attrs = bind_method(name, args, kwargs)
        return self._add(op, inputs, attrs)

    method.__name__ = method.__qualname__ = name
    return method


class GraphM:
    """A graph builder: inputs, params and ops become SSA nodes whose shapes are checked as they
    are added. ``compile(outputs)`` turns it into a reusable :class:`Program`.

    The convolution methods keep TorchLean's names and argument order (kernel, bias, input),
    with camelCase aliases ``convTranspose`` and ``convTranspose2d``; every other op has
    PyTorch's name and arguments (input first). Inside a model function, ``F.conv2d(x, w, b)``
    on Vars works as well (PyTorch's order), as does every graphm.functional call.
    """

    def __init__(self):
        self._nodes = []
        self._names = {}

    # -- leaves ---------------------------------------------------------------------------------

    def _leaf(self, kind, name, shape, dtype):
        if not isinstance(name, str) or not name:
            raise ValueError(f"GraphM.{kind}: the name must be a non-empty string, got {name!r}")
        if name in self._names:
            raise ValueError(f"GraphM.{kind}: the name {name!r} is already used by "
                             f"{self._names[name]}")
        dtype = np.dtype(dtype)
        if kind == "param" and dtype not in FLOAT_DTYPES:
            raise TypeError(f"GraphM.param {name!r}: a param must be float32 or float64, got "
                            f"{dtype}")
        self._nodes.append(_Node(kind, _check_shape(name, shape), dtype, name=name))
        self._names[name] = f"{kind} {name}"
        return Var(self, len(self._nodes) - 1)

    def input(self, name, shape, dtype="float32"):
        """A value supplied at every run (data, labels): ``g.input("x", (64, 1, 28, 28))``."""
        return self._leaf("input", name, shape, dtype)

    def param(self, name, shape, dtype="float32"):
        """A trainable value supplied at every run (weights); float32 or float64."""
        return self._leaf("param", name, shape, dtype)

    def constant(self, value, dtype=None):
        """A value fixed when the graph is built (a NumPy array or a number)."""
        array = np.array(value, dtype=dtype)
        array.flags.writeable = False
        self._nodes.append(_Node("const", array.shape, array.dtype, value=array))
        return Var(self, len(self._nodes) - 1)

    # -- ops ------------------------------------------------------------------------------------

    def _is_value(self, value):
        """Is ``value`` a Var of this graph? (A Var of another graph is an error.)"""
        if isinstance(value, Var):
            if value.graph is not self:
                raise ValueError(f"{value!r} belongs to another GraphM")
            return True
        return False

    def _add(self, op, inputs, attrs):
        """Append ``op(*inputs, **attrs)``: lift the operands (:func:`graphm.engine.lift`, as
        eager mode does) and run the op's dtype and shape rules now (ShapeError)."""
        inputs = engine.lift(op, inputs, self._is_value, self.constant, "Var")
        dtype = engine.operand_dtype(inputs, self._is_value)
        for k, v in enumerate(inputs):
            # a residual that eager mode would hold as an array (a bool mask, a NumPy scalar)
            # converts as a constant operand would (engine.constant_operand)
            if (v is not None and self._nodes[v.index].op is _RESIDUAL and dtype is not None
                    and op.differentiable(k) and v.dtype != dtype
                    and (v.ndim == 0 or v.dtype.kind in "biu")):
                inputs[k] = self._recast(v, dtype)
        nodes = [None if v is None else self._nodes[v.index] for v in inputs]
        shape, out_dtype = op.infer([None if n is None else n.shape for n in nodes],
                                    [None if n is None else n.dtype for n in nodes], attrs)
        attr_inputs = [(k, v.index) for k, v in attrs.items()
                       if isinstance(v, Var) and self._is_value(v)]
        static = {k: v for k, v in attrs.items() if not isinstance(v, Var)}
        self._nodes.append(_Node("op", shape, out_dtype, op=op, attrs=static,
                                 inputs=[None if v is None else v.index for v in inputs],
                                 attr_inputs=attr_inputs))
        return Var(self, len(self._nodes) - 1)

    def _recast(self, residual, dtype):
        node = self._nodes[residual.index]
        return self._add(_RESIDUAL, [None if j is None else Var(self, j) for j in node.inputs],
                         {**node.attrs, "dtype": np.dtype(dtype).name})

    # Convolutions: TorchLean's names and argument order (kernel, bias, input).

    def conv(self, w, b, x, stride=1, padding=0, dilation=1, groups=1):
        """N-d convolution ``conv(x, w) + b`` (rank ``w.ndim - 2``), TorchLean's ``GraphM.conv``.

        ``x`` is ``(C, *sp)`` (one sample, as TorchLean) or ``(N, C, *sp)``; ``w`` is
        ``(C_out, C/groups, *k)``; ``b`` is ``(C_out,)`` or None. The other arguments are
        graphm.functional.conv's.
        """
        return self._add(ops.conv, (x, w, b), dict(stride=stride, padding=padding,
                                                   dilation=dilation, groups=groups, rank=None))

    def conv_transpose(self, w, b, x, stride=1, padding=0, output_padding=0, groups=1,
                       dilation=1):
        """N-d transposed convolution, TorchLean's ``GraphM.convTranspose``; ``w`` is
        ``(C_in, C_out/groups, *k)`` (PyTorch's layout)."""
        return self._add(ops.conv_transpose, (x, w, b), dict(
            stride=stride, padding=padding, output_padding=output_padding, groups=groups,
            dilation=dilation, rank=None))

    def conv2d(self, kernel, bias, input, stride=1, padding=0, dilation=1, groups=1):
        """2-d :meth:`conv`, TorchLean's ``GraphM.conv2d`` (one stride and padding for both
        axes, or a pair)."""
        return self._conv_rank(2, kernel, bias, input, stride, padding, dilation, groups)

    def conv1d(self, kernel, bias, input, stride=1, padding=0, dilation=1, groups=1):
        """1-d :meth:`conv` (same argument order as :meth:`conv2d`)."""
        return self._conv_rank(1, kernel, bias, input, stride, padding, dilation, groups)

    def conv3d(self, kernel, bias, input, stride=1, padding=0, dilation=1, groups=1):
        """3-d :meth:`conv` (same argument order as :meth:`conv2d`)."""
        return self._conv_rank(3, kernel, bias, input, stride, padding, dilation, groups)

    def conv_transpose2d(self, kernel, bias, input, stride=1, padding=0, output_padding=0,
                         groups=1, dilation=1):
        """2-d :meth:`conv_transpose`, TorchLean's ``GraphM.convTranspose2d``."""
        return self._conv_transpose_rank(2, kernel, bias, input, stride, padding,
                                         output_padding, groups, dilation)

    def conv_transpose1d(self, kernel, bias, input, stride=1, padding=0, output_padding=0,
                         groups=1, dilation=1):
        """1-d :meth:`conv_transpose` (same argument order as :meth:`conv_transpose2d`)."""
        return self._conv_transpose_rank(1, kernel, bias, input, stride, padding,
                                         output_padding, groups, dilation)

    def conv_transpose3d(self, kernel, bias, input, stride=1, padding=0, output_padding=0,
                         groups=1, dilation=1):
        """3-d :meth:`conv_transpose` (same argument order as :meth:`conv_transpose2d`)."""
        return self._conv_transpose_rank(3, kernel, bias, input, stride, padding,
                                         output_padding, groups, dilation)

    def _conv_rank(self, rank, kernel, bias, input, stride, padding, dilation, groups):
        return self._add(ops.conv, (input, kernel, bias), dict(
            stride=stride, padding=padding, dilation=dilation, groups=groups, rank=rank))

    def _conv_transpose_rank(self, rank, kernel, bias, input, stride, padding, output_padding,
                             groups, dilation):
        return self._add(ops.conv_transpose, (input, kernel, bias), dict(
            stride=stride, padding=padding, output_padding=output_padding, groups=groups,
            dilation=dilation, rank=rank))

    convTranspose = conv_transpose
    convTranspose2d = conv_transpose2d

    def _var(self, x):
        if not isinstance(x, Var) or x.graph is not self:
            raise TypeError(f"expected a Var of this GraphM, got {x!r}")
        return x

    # Every other op is a method generated from the bindings (graphm/ops/bindings.py), below:
    # the graphm.functional names with their signature and docstring (relu, max_pool2d, linear,
    # cross_entropy, ...), and the method bindings (add, sub, mul, div, neg, pow, exp, log,
    # matmul, sum, mean, reshape, flatten, permute, transpose, index, ...).

    # -- compile --------------------------------------------------------------------------------

    def compile(self, outputs):
        """A :class:`Program` computing ``outputs`` (a Var, or a tuple/list of Vars)."""
        return Program(self, outputs)

    def __repr__(self):
        return f"<GraphM with {len(self._nodes)} nodes>"


def _forward_key(op, inputs, attrs):
    """Equal for two nodes that run the same forward rule on the same values (the attribute
    values compared by identity: a derivative program shares its nodes' attribute objects)."""
    return op, tuple(inputs), tuple(sorted((k, id(v)) for k, v in attrs.items()))


def _leaf_var(graph, node):
    """The Var of ``graph`` for the input or param named like ``node`` (made if absent)."""
    for index, candidate in enumerate(graph._nodes):
        if candidate.kind == node.kind and candidate.name == node.name:
            return Var(graph, index)
    return graph._leaf(node.kind, node.name, node.shape, node.dtype)


def _attributes(node, values):
    """A node's attributes, with those that are other nodes' values read from ``values``."""
    if not node.attr_inputs:
        return node.attrs
    return {**node.attrs, **{key: values[j] for key, j in node.attr_inputs}}


def _generate_methods():
    """Give GraphM one method per binding that it does not define itself (the convolutions
    keep TorchLean's argument order, kernel first, and are written above)."""
    for name in BINDINGS:
        if name not in GraphM.__dict__:
            setattr(GraphM, name, _functional_method(name))
    for name in METHODS:
        if name not in GraphM.__dict__:
            setattr(GraphM, name, _bound_method(name))


_generate_methods()


# ------------------------------------------------------------------------------------------------
# Program
# ------------------------------------------------------------------------------------------------

class Program:
    """A compiled GraphM: a fixed schedule of ops, to run again on new values of the shapes and
    dtypes fixed at build time (the batch size among them).

    Made by :meth:`GraphM.compile`. Only the nodes the outputs depend on are kept. Inputs and
    params are passed by name; ``print(prog)`` shows the SSA program and ``prog.to_dot()`` its
    Graphviz drawing.
    """

    def __init__(self, graph, outputs, output_names=None):
        self._single = isinstance(outputs, Var)
        outputs = [outputs] if self._single else list(outputs)
        if not outputs or not all(isinstance(v, Var) and v.graph is graph for v in outputs):
            raise TypeError("compile: outputs must be a Var or a non-empty tuple of Vars of "
                            "this GraphM")
        self._nodes = list(graph._nodes)          # later additions to the graph do not leak in
        self._outputs = [v.index for v in outputs]
        if output_names is not None and len(output_names) != len(outputs):
            raise ValueError(f"{len(output_names)} output names for {len(outputs)} outputs")
        self._output_names = None if output_names is None else list(output_names)
        self._cotangent_names = []
        live = set()
        stack = list(self._outputs)
        while stack:
            i = stack.pop()
            if i not in live:
                live.add(i)
                stack.extend(self._nodes[i].reads())
        self._live = sorted(live)
        self._steps = [i for i in self._live if self._nodes[i].kind == "op"]
        self._leaves = [i for i in self._live if self._nodes[i].kind in ("input", "param")]
        # A node carries a derivative if it depends on a float input or param through inputs
        # that carry one (labels and constants do not).
        self._differentiable = set()
        for i in self._live:
            node = self._nodes[i]
            if node.kind in ("input", "param") and node.dtype in FLOAT_DTYPES:
                self._differentiable.add(i)
            elif node.kind == "op" and any(
                    j in self._differentiable and node.op.differentiable(k)
                    for k, j in enumerate(node.inputs) if j is not None):
                self._differentiable.add(i)
        # When each value is last read, so that the forward pass can let it go.
        last_use = {}
        for i in self._steps:
            for j in self._nodes[i].reads():
                last_use[j] = i
        self._release = {i: [] for i in self._steps}
        for j, i in last_use.items():
            if j not in self._outputs:
                self._release[i].append(j)
        # A residual node of a derivative program reads what the forward pass of an op node of
        # the same program already computed: run that op once and hand its residuals over.
        self._shared, found = {}, {}
        for i in self._steps:
            node = self._nodes[i]
            if node.op is _RESIDUAL:
                source = found.get(_forward_key(node.attrs["of"], node.inputs,
                                                node.attrs["of_attrs"]))
                if source is not None:
                    self._shared[i] = source
            elif not node.attr_inputs:
                found.setdefault(_forward_key(node.op, node.inputs, node.attrs), i)
        self._sources = set(self._shared.values())

    # -- signature ------------------------------------------------------------------------------

    def _output_name(self, k):
        if self._output_names is not None:
            return self._output_names[k]
        return "output" if self._single else f"output_{k}"

    @property
    def output_names(self):
        """One name per output, in order (``grad_w``, ``tangent_out``, ... for a derivative
        program; ``output`` or ``output_0``, ... otherwise)."""
        return [self._output_name(k) for k in range(len(self._outputs))]

    @property
    def inputs(self):
        """``{name: (shape, dtype)}`` of the inputs the outputs depend on."""
        return {self._nodes[i].name: (self._nodes[i].shape, self._nodes[i].dtype)
                for i in self._leaves if self._nodes[i].kind == "input"}

    @property
    def params(self):
        """``{name: (shape, dtype)}`` of the params the outputs depend on."""
        return {self._nodes[i].name: (self._nodes[i].shape, self._nodes[i].dtype)
                for i in self._leaves if self._nodes[i].kind == "param"}

    def _read_inputs(self, values, what="inputs"):
        """Check the named arrays against the program's inputs and params."""
        if not isinstance(values, dict):
            raise TypeError(f"{what} must be a dict name -> array, got {type(values).__name__}")
        known = {n.name for n in self._nodes if n.kind in ("input", "param")}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unexpected {what} {unknown}; this program takes "
                            f"{sorted(self.inputs) + sorted(self.params)}")
        slots = {}
        for i in self._leaves:
            node = self._nodes[i]
            if node.name not in values:
                raise TypeError(f"missing {node.kind} '{node.name}' "
                                f"({format_shape(node.shape, node.dtype)})")
            array = np.asarray(values[node.name])
            if array.shape != node.shape:
                raise ValueError(f"{node.kind} '{node.name}' must have shape {node.shape}, got "
                                 f"{array.shape}")
            if array.dtype != node.dtype:
                if node.dtype.kind in "iu" and array.dtype.kind in "iu":
                    array = array.astype(node.dtype)
                else:
                    raise TypeError(f"{node.kind} '{node.name}' must be {node.dtype}, got "
                                    f"{array.dtype} (convert with .astype(np.{node.dtype}))")
            slots[i] = array
        return slots

    # -- running --------------------------------------------------------------------------------

    def _forward(self, values, keep_residuals):
        """Run every step in order, releasing values after their last use."""
        residuals, shared, sharing = {}, {}, self._shared
        for i in self._steps:
            node = self._nodes[i]
            if sharing and i in sharing:     # residuals already computed by op node sharing[i]
                values[i] = _Residual.pick(shared[sharing[i]], **node.attrs)
                continue
            args = [None if j is None else values[j] for j in node.inputs]
            attrs = _attributes(node, values) if node.attr_inputs else node.attrs
            out, res = node.op.forward(*args, **attrs)
            values[i] = self._checked(node, i, out)
            if sharing and i in self._sources:
                shared[i] = res
            if keep_residuals and i in self._differentiable:
                residuals[i] = res, attrs
            for j in self._release[i]:
                values.pop(j, None)
        return residuals

    def _checked(self, node, i, out):
        out = np.asarray(out)
        if out.shape != node.shape or out.dtype != node.dtype:   # a shape-rule bug, not yours
            raise RuntimeError(f"%{i} = {node.op.name}: the shape rule promised "
                               f"{format_shape(node.shape, node.dtype)} but forward gave "
                               f"{format_shape(out.shape, out.dtype)}")
        return out

    def _initial_values(self, inputs):
        values = self._read_inputs(inputs)
        for i in self._live:
            if self._nodes[i].kind == "const":
                values[i] = self._nodes[i].value
        return values

    def _result(self, arrays):
        return arrays[0] if self._single else tuple(arrays)

    def __call__(self, values=None, /, **inputs):
        """Evaluate the outputs: ``prog(x=..., w=...)`` or ``prog({"x": ..., "w": ...})``.

        Given Vars of a GraphM being built (for some or all of the inputs and params; arrays
        or numbers for the rest), the program is not run but *inlined*: its nodes are added to
        that graph and the outputs come back as Vars. So a Program (a derivative program among
        them) is a function that other graphs can call.
        """
        arguments = {**(values or {}), **inputs}
        graphs = {v.graph for v in arguments.values() if isinstance(v, Var)}
        if graphs:
            if len(graphs) != 1:
                raise ValueError(f"calling a Program with Vars of {len(graphs)} different "
                                 "GraphMs; the Vars must come from one graph")
            return self._inline(graphs.pop(), arguments)
        values = self._initial_values(arguments)
        self._forward(values, keep_residuals=False)
        return self._result([values[i] for i in self._outputs])

    def vjp(self, inputs, cotangents, *, return_outputs=False):
        """Pull ``cotangents`` (one per output, shaped like it) back to every float input and
        param: returns ``{name: gradient}`` (with ``return_outputs``, ``(outputs, grads)``)."""
        values = self._initial_values(inputs)
        residuals = self._forward(values, keep_residuals=True)
        outputs = [values[i] for i in self._outputs]
        if self._single:
            cotangents = [cotangents]
        cotangents = list(cotangents)
        if len(cotangents) != len(self._outputs):
            raise ValueError(f"vjp: expected {len(self._outputs)} cotangents, one per output, "
                             f"got {len(cotangents)}")
        pending = {}
        for k, (i, cotangent) in enumerate(zip(self._outputs, cotangents)):
            cotangent = np.asarray(cotangent)
            if cotangent.shape != self._nodes[i].shape:
                raise ValueError(f"vjp: cotangent {k} must have the output's shape "
                                 f"{self._nodes[i].shape}, got {cotangent.shape}")
            if i in self._differentiable:
                cotangent = cotangent.astype(self._nodes[i].dtype, copy=False)
                pending[i] = pending[i] + cotangent if i in pending else cotangent
        differentiable = self._differentiable

        def pull(i, g):                 # one step of the sweep (graphm/engine.py)
            res, attrs = residuals.pop(i)
            node = self._nodes[i]
            grads = node.op.vjp(res, g, **attrs)
            return [(j, grad) for j, grad in zip(node.inputs, grads)
                    if j is not None and grad is not None and j in differentiable]

        pending = engine.reverse_sweep(self._steps, pending, pull, key=None)
        grads = {}
        for i in self._leaves:
            node = self._nodes[i]
            if node.dtype in FLOAT_DTYPES:
                g = pending.get(i)
                grads[node.name] = (np.zeros(node.shape, node.dtype) if g is None
                                    else np.array(g, dtype=node.dtype))
        return (self._result(outputs), grads) if return_outputs else grads

    def value_and_grad(self, inputs):
        """``(value, {name: gradient})`` for a program with one one-element output (a loss)."""
        if not self._single or np.prod(self._nodes[self._outputs[0]].shape) != 1:
            shapes = [self._nodes[i].shape for i in self._outputs]
            raise ValueError(f"grad needs a single one-element output (a loss), this program "
                             f"returns {shapes if not self._single else shapes[0]}; use vjp")
        node = self._nodes[self._outputs[0]]
        return self.vjp(inputs, np.ones(node.shape, node.dtype), return_outputs=True)

    def grad(self, inputs):
        """``{name: gradient}`` of the one scalar output w.r.t. every float input and param."""
        return self.value_and_grad(inputs)[1]

    def jvp(self, inputs, tangents):
        """Push ``tangents`` (``{name: array}``; missing ones are zero) forward alongside the
        values: returns ``(outputs, output_tangents)``. Each op runs its ``jvp`` rule once."""
        values = self._initial_values(inputs)
        unknown = sorted(set(tangents) - {self._nodes[i].name for i in self._leaves})
        if unknown:
            raise TypeError(f"jvp: tangents for unknown or unused inputs {unknown}")
        tangent = {}
        for i in self._leaves:
            node = self._nodes[i]
            if node.name in tangents and node.dtype in FLOAT_DTYPES:
                t = np.asarray(tangents[node.name])
                if t.shape != node.shape:
                    raise ValueError(f"jvp: tangent '{node.name}' must have shape {node.shape}, "
                                     f"got {t.shape}")
                tangent[i] = t.astype(node.dtype, copy=False)
        for i in self._steps:
            node = self._nodes[i]
            args = [None if j is None else values[j] for j in node.inputs]
            attrs = _attributes(node, values)
            dargs = [None if j is None or not node.op.differentiable(k) else tangent.get(j)
                     for k, j in enumerate(node.inputs)]
            if any(d is not None for d in dargs):
                out, tangent[i] = node.op.jvp(args, engine.fill_tangents(node.op, args, dargs),
                                              **attrs)
                tangent[i] = np.asarray(tangent[i])
            else:
                out, _ = node.op.forward(*args, **attrs)
            values[i] = self._checked(node, i, out)
            for j in self._release[i]:
                values.pop(j, None)
                tangent.pop(j, None)
        outputs = [values[i] for i in self._outputs]
        output_tangents = [tangent[i] if i in tangent else
                           np.zeros(self._nodes[i].shape, self._nodes[i].dtype)
                           for i in self._outputs]
        return self._result(outputs), self._result(output_tangents)

    # -- derivatives as Programs ----------------------------------------------------------------
    #
    # The reverse sweep of graphm/engine.py, run with Vars for cotangents: every op's vjp rule,
    # written with graphm ops, then *records* its gradient as nodes of a new GraphM instead of
    # computing it. What comes out is an ordinary Program: it prints, draws, runs, and can be
    # differentiated again.

    def _copy_into(self, graph, leaf):
        """Add this program's live nodes to ``graph``; ``leaf(node)`` gives the Var standing for
        an input or param. Returns ``{node index: Var}``."""
        var_of = {}
        for i in self._live:
            node = self._nodes[i]
            if node.kind in ("input", "param"):
                var_of[i] = leaf(node)
            elif node.kind == "const":
                var_of[i] = graph.constant(node.value)
            else:
                attrs = {**node.attrs, **{k: var_of[j] for k, j in node.attr_inputs}}
                var_of[i] = graph._add(node.op, [None if j is None else var_of[j]
                                                 for j in node.inputs], attrs)
        return var_of

    def _inline(self, graph, arguments):
        """The outputs as Vars of ``graph``, with the program's leaves bound to ``arguments``."""
        known = {n.name for n in self._nodes if n.kind in ("input", "param")}
        unknown = sorted(set(arguments) - known)
        if unknown:
            raise TypeError(f"unexpected inputs {unknown}; this program takes "
                            f"{sorted(self.inputs) + sorted(self.params)}")

        def leaf(node):
            if node.name not in arguments:
                raise TypeError(f"missing {node.kind} '{node.name}' "
                                f"({format_shape(node.shape, node.dtype)})")
            value = arguments[node.name]
            if not isinstance(value, Var):
                value = graph.constant(np.asarray(value, dtype=node.dtype))
            if value.shape != node.shape or value.dtype != node.dtype:
                raise ValueError(f"{node.kind} '{node.name}' must be "
                                 f"{format_shape(node.shape, node.dtype)}, got {value!r}")
            return value

        var_of = self._copy_into(graph, leaf)
        outputs = [var_of[i] for i in self._outputs]
        return outputs[0] if self._single else tuple(outputs)

    def _symbolic_residuals(self, graph, i, var_of):
        """What node ``i``'s forward pass hands its vjp, as Vars of ``graph``: the residuals
        that are the op's inputs or output are those Vars (as on the eager tape, by identity,
        engine.saved_residuals); shapes and other data fixed by the shapes stay as they are;
        residuals that depend on the numbers become ``residual`` nodes, computed at run time.
        The forward rule is run once on stand-in arrays to learn which is which."""
        node = self._nodes[i]

        def stand_in(j):
            n = self._nodes[j]
            return np.ones(n.shape, n.dtype) if n.dtype.kind == "f" else np.zeros(n.shape, n.dtype)

        arrays = [None if j is None else stand_in(j) for j in node.inputs]
        attrs = {**node.attrs, **{k: stand_in(j) for k, j in node.attr_inputs}}
        with np.errstate(all="ignore"):
            out, residuals = node.op.forward(*arrays, **attrs)
        saved = dict(engine.saved_residuals(residuals, arrays, out, np.asarray(out)))
        single = not isinstance(residuals, tuple)
        items = [residuals] if single else list(residuals)
        for position, item in enumerate(items):
            source = saved.get(position)
            if source == "out":
                items[position] = var_of[i]
            elif source is not None:
                items[position] = var_of[node.inputs[source]]
            elif isinstance(item, (np.ndarray, np.generic)):
                if node.attr_inputs:
                    raise NotImplementedError(
                        f"vjp_program: op '{node.op.name}' has run-time attributes and "
                        "residuals that depend on the numbers")
                item = np.asarray(item)
                items[position] = graph._add(
                    _RESIDUAL, [None if j is None else var_of[j] for j in node.inputs],
                    dict(of=node.op, of_attrs=dict(node.attrs),
                         item=None if single else position, shape=item.shape,
                         dtype=item.dtype.name))
        return items[0] if single else tuple(items)

    def _symbolic_sweep(self, graph, var_of, seeds):
        """engine.reverse_sweep with Vars: ``seeds`` maps output nodes to cotangent Vars;
        returns the cotangent Var of every node the sweep reached (leaves included)."""
        differentiable = self._differentiable

        def pull(i, g):
            node = self._nodes[i]
            if not node.op.higher_order:
                raise NotImplementedError(
                    f"vjp_program: the vjp rule of op '{node.op.name}' is not written in "
                    "graphm ops, so its gradient cannot be built as a program")
            attrs = {**node.attrs, **{k: var_of[j] for k, j in node.attr_inputs}}
            grads = node.op.vjp(self._symbolic_residuals(graph, i, var_of), g, **attrs)
            pulled = []
            for j, grad in zip(node.inputs, grads):
                if j is None or grad is None or j not in differentiable:
                    continue
                parent = self._nodes[j]
                if not isinstance(grad, Var):      # a rule that returned plain numbers
                    grad = graph.constant(np.asarray(grad, dtype=parent.dtype))
                if grad.shape != parent.shape:     # a rule bug, never the user's fault
                    raise RuntimeError(f"{node.op.name}: vjp gave a gradient of shape "
                                       f"{grad.shape} for an input of shape {parent.shape}")
                pulled.append((j, grad))
            return pulled

        return engine.reverse_sweep(self._steps, seeds, pull, key=None)

    def _wrt(self, wrt, what):
        """The float leaves to differentiate, by name (default: every float input and param)."""
        floats = [i for i in self._leaves if self._nodes[i].dtype in FLOAT_DTYPES]
        if wrt is None:
            return floats
        names = [wrt] if isinstance(wrt, str) else list(wrt)
        by_name = {self._nodes[i].name: i for i in self._leaves}
        chosen = []
        for name in names:
            if name not in by_name:
                raise ValueError(f"{what}: wrt names {name!r}, which is not an input or param "
                                 f"this program uses; it uses {sorted(by_name)}")
            if self._nodes[by_name[name]].dtype not in FLOAT_DTYPES:
                raise TypeError(f"{what}: {name!r} is {self._nodes[by_name[name]].dtype}; only "
                                "float32/float64 values can be differentiated")
            chosen.append(by_name[name])
        return chosen

    @staticmethod
    def _fresh_name(graph, name):
        while name in graph._names:
            name += "_"
        return name

    def _derivative_graph(self):
        graph = GraphM()
        var_of = self._copy_into(graph, lambda n: graph._leaf(n.kind, n.name, n.shape, n.dtype))
        return graph, var_of

    def vjp_program(self, wrt=None, cotangents=None, *, with_outputs=False):
        r"""The VJP of this program, as a Program: :math:`ar y \mapsto J^	op ar y`.

        Parameters
        ----------
        wrt : str or sequence of str, optional
            The inputs and params to differentiate (default: every float one).
        cotangents : array or tuple of arrays, optional
            Fixed cotangents (one per output), built in as constants. By default they are
            new inputs of the program, ``cotangent`` (one output) or ``cotangent_0``, ...
        with_outputs : bool, default False
            Return this program's outputs too, before the gradients.

        Returns
        -------
        Program
            Taking this program's inputs and params (and the cotangents), returning one
            gradient per ``wrt`` entry, in order (a tuple, or one array for one entry);
            ``output_names`` says which is which (``grad_w``, ...). Every op's vjp rule is
            written with graphm ops, so the gradient is itself a graph of graphm ops: a
            conv's input gradient is a ``conv_transpose`` node, its weight gradient a
            ``conv_weight_grad`` node. Differentiate it again for second derivatives.
        """
        wrt = self._wrt(wrt, "vjp_program")
        graph, var_of = self._derivative_graph()
        seeds, cotangent_names = {}, []
        for k, i in enumerate(self._outputs):
            node = self._nodes[i]
            if cotangents is None:
                name = ("cotangent" if self._single else f"cotangent_{k}") \
                    if self._output_names is None else f"cotangent_{self._output_names[k]}"
                seed = graph.input(self._fresh_name(graph, name), node.shape, node.dtype)
                cotangent_names.append(seed.name)
            else:
                given = cotangents if self._single else cotangents[k]
                array = np.asarray(given, dtype=node.dtype)
                if array.shape != node.shape:
                    raise ValueError(f"vjp_program: cotangent {k} must have the output's shape "
                                     f"{node.shape}, got {array.shape}")
                if not array.any():             # a zero cotangent contributes nothing
                    continue
                seed = graph.constant(array)
            if i in self._differentiable:
                engine.accumulate(seeds, i, seed)
        pending = self._symbolic_sweep(graph, var_of, seeds)
        grads = [pending[i] if i in pending else
                 graph.constant(np.zeros(self._nodes[i].shape, self._nodes[i].dtype))
                 for i in wrt]
        names = [f"grad_{self._nodes[i].name}" for i in wrt]
        if with_outputs:
            grads = [var_of[i] for i in self._outputs] + grads
            names = [self._output_name(k) for k in range(len(self._outputs))] + names
        program = Program(graph, grads[0] if len(grads) == 1 else tuple(grads), names)
        program._cotangent_names = cotangent_names
        return program

    def grad_program(self, wrt=None, *, with_value=False):
        """The gradient of the one scalar output as a Program (``vjp_program`` seeded with 1):
        inputs and params in, ``grad_<name>`` out; with ``with_value``, the value first.
        A loss program's ``grad_program(with_value=True)`` is a whole training step."""
        if not self._single or np.prod(self._nodes[self._outputs[0]].shape) != 1:
            shapes = [self._nodes[i].shape for i in self._outputs]
            raise ValueError(f"grad_program needs a single one-element output (a loss), this "
                             f"program returns {shapes if not self._single else shapes[0]}; "
                             "use vjp_program")
        node = self._nodes[self._outputs[0]]
        return self.vjp_program(wrt, np.ones(node.shape, node.dtype), with_outputs=with_value)

    def jvp_program(self, wrt=None, *, with_outputs=False):
        r"""The JVP of this program, as a Program: :math:`\dot x \mapsto J \dot x`.

        The program takes this program's inputs and params and one tangent per ``wrt`` entry
        (inputs ``tangent_<name>``), and returns one output tangent per output.

        It is built by transposition, from reverse mode alone: :math:`u \mapsto J^	op u` is
        linear in :math:`u`, so the VJP of the VJP program with respect to its cotangent,
        seeded with :math:`\dot x`, is :math:`J \dot x`; the nodes that read :math:`u` are left
        out, as they do not reach the result. The tangents of nested derivative programs are
        distinct inputs with distinct names, so they cannot be confused.
        """
        wrt = self._wrt(wrt, "jvp_program")
        transposed = self.vjp_program([self._nodes[i].name for i in wrt])
        cotangent_names = transposed._cotangent_names
        graph, var_of = transposed._derivative_graph()
        for i in self._leaves:      # the primal inputs are accepted even when J does not read them
            _leaf_var(graph, self._nodes[i])
        tangent_vars = [graph.input(transposed._fresh_name(graph, f"tangent_{self._nodes[i].name}"),
                                    self._nodes[i].shape, self._nodes[i].dtype) for i in wrt]
        seeds = {}
        for out, tangent in zip(transposed._outputs, tangent_vars):
            if out in transposed._differentiable:
                engine.accumulate(seeds, out, tangent)
        pending = transposed._symbolic_sweep(graph, var_of, seeds)
        by_name = {transposed._nodes[i].name: i for i in transposed._leaves}
        outputs = []
        for k, name in enumerate(cotangent_names):
            i = by_name.get(name)
            node = self._nodes[self._outputs[k]]
            outputs.append(pending[i] if i is not None and i in pending else
                           graph.constant(np.zeros(node.shape, node.dtype)))
        names = [f"tangent_out_{k}" if not self._single else "tangent_out"
                 for k in range(len(outputs))]
        if with_outputs:
            values = self._inline(graph, {self._nodes[i].name: _leaf_var(graph, self._nodes[i])
                                          for i in self._leaves})
            outputs = ([values] if self._single else list(values)) + outputs
            names = [self._output_name(k) for k in range(len(self._outputs))] + names
        return Program(graph, outputs[0] if len(outputs) == 1 else tuple(outputs), names)

    # -- looking at it --------------------------------------------------------------------------

    def _ref(self, i):
        """``%name`` for named values, ``%3`` for op results; a name that is not an identifier
        is quoted (as LLVM does), so an input named "2" cannot be mistaken for result %2."""
        node = self._nodes[i]
        if not node.name:
            return f"%{i}"
        return f"%{node.name}" if node.name.isidentifier() else f"%{node.name!r}"

    @staticmethod
    def _format_attr(value):
        if isinstance(value, np.ndarray):
            return f"array{format_shape(value.shape, value.dtype)}"
        return repr(value)

    def _line(self, i):
        node = self._nodes[i]
        typ = format_shape(node.shape, node.dtype)
        if node.kind in ("input", "param"):
            return f"{self._ref(i)} = {node.kind} : {typ}"
        if node.kind == "const":
            shown = (np.array2string(node.value, threshold=6, separator=", ")
                     if node.value.size <= 6 else "...")
            return f"{self._ref(i)} = const {shown} : {typ}"
        args = ", ".join("None" if j is None else self._ref(j) for j in node.inputs)
        if node.op is _RESIDUAL:       # residual[relu](%h), residual[cross_entropy].1(%z, %t)
            item = "" if node.attrs["item"] is None else f".{node.attrs['item']}"
            return f"{self._ref(i)} = residual[{node.attrs['of'].name}]{item}({args}) : {typ}"
        attrs = [f"{k}={self._format_attr(v)}" for k, v in node.attrs.items() if v is not None]
        attrs += [f"{k}={self._ref(j)}" for k, j in node.attr_inputs]
        attrs = " ".join(attrs)
        return f"{self._ref(i)} = {node.op.name}({args}){' ' + attrs if attrs else ''} : {typ}"

    def __str__(self):
        """One line per node: ``%name = op(%args) attrs : dtype[shape]``, then the outputs."""
        lines = ["program {"] + [f"  {self._line(i)}" for i in self._live]
        outputs = ", ".join(self._ref(i) for i in self._outputs)
        lines += [f"  return {outputs}", "}"]
        return "\n".join(lines)

    def __repr__(self):
        return (f"<Program: {len(self.inputs)} inputs, {len(self.params)} params, "
                f"{len(self._steps)} ops, {len(self._outputs)} output(s)>")

    def to_dot(self):
        """The program as Graphviz ``dot`` text (render with ``dot -Tsvg``)."""
        style = {"input": 'shape=ellipse, style=filled, fillcolor="#dbeafe"',
                 "param": 'shape=ellipse, style=filled, fillcolor="#fde68a"',
                 "const": 'shape=plaintext',
                 "op": 'shape=box, style="rounded"'}
        lines = ["digraph program {", "  rankdir=TB;", '  node [fontname="Helvetica"];']
        for i in self._live:
            node = self._nodes[i]
            title = node.op.name if node.kind == "op" else (node.name or "const")
            if node.op is _RESIDUAL:
                title = f"residual[{node.attrs['of'].name}]"
            # names may hold any character: escape the two that end a dot string
            title = title.replace("\\", "\\\\").replace('"', '\\"')
            label = f"{title}\\n{format_shape(node.shape, node.dtype)}"
            lines.append(f'  n{i} [label="{label}", {style[node.kind]}];')
        for i in self._steps:
            node = self._nodes[i]
            names = (node.attrs["of"] if node.op is _RESIDUAL else node.op).inputs
            for k, j in enumerate(node.inputs):
                if j is not None:
                    lines.append(f'  n{j} -> n{i} [label="{names[k]}"];')
            for key, j in node.attr_inputs:
                lines.append(f'  n{j} -> n{i} [label="{key}", style=dashed];')
        for k, i in enumerate(self._outputs):
            lines.append(f'  out{k} [label="output {k}", shape=plaintext];')
            lines.append(f"  n{i} -> out{k};")
        lines.append("}")
        return "\n".join(lines)
