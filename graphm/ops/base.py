"""What an op is: four rules side by side, shared by eager and compiled mode.

Every differentiable operation in graphm is a small class with four methods::

    shape(*shapes, **attrs)          -> output shape            (raises ShapeError)
    forward(*xs, **attrs)            -> (out, residuals)        the value, and what vjp needs later
    vjp(residuals, g, **attrs)       -> one gradient per input  (reverse mode: g ↦ Jᵀ g)
    jvp(primals, tangents, **attrs)  -> (out, tangent_out)      (forward mode: t ↦ J t)

``xs``/``primals`` are NumPy arrays (``None`` for an absent optional input such as a bias),
``attrs`` the op's non-array arguments (stride, axis, ...). ``residuals`` is whatever the forward
pass hands to the backward pass: micrograd's closure, made explicit. The JVP computes the primal
output *and* its tangent in one forward sweep; it never calls ``vjp`` or finite differences.

``tangents`` holds an array for every differentiable input (zeros where the caller has none) and
``None`` for an absent input or one without a derivative (integer labels).

The eager ``Tensor`` (graphm/tensor.py) and the compiled ``GraphM`` (graphm/graph.py) only
decide *when* to call these rules: neither holds a derivative of its own.

A ``vjp`` written with graphm's own operations (operators, Tensor methods, graphm.functional,
and :func:`call` for an op without a functional name) runs on whatever it is given: plain
arrays in an ordinary backward pass, Tensors under ``create_graph=True``, when the engine hands
it the cotangent and the residuals that are the op's inputs or output as Tensors on the tape.
The gradient is then recorded like any other computation and can be differentiated again.
Such ops set ``higher_order = True``.

Every ``jvp`` rule is written the same way, so that forward mode nests inside reverse mode and
the other way round: run on Tensors (or Vars) the tangent it computes is recorded, and the
gradient of a tangent (reverse over forward) or a Program built by forward mode comes out of
the same rule. Where a fused kernel matters the rule keeps a plain-array fast path (checked
with :func:`is_traced`). A linear op's tangent is the op itself applied to the tangent
(:func:`linear_jvp`); what a rule needs from the forward pass that has no derivative (a relu's
mask, max pooling's winners) it takes as a constant from :func:`forward_residual`, as the vjp
takes its residuals. Here is a whole op,
the elementwise product (graphm/ops/arithmetic.py)::

    class Mul(Op):
        name = "mul"
        inputs = ("a", "b")
        higher_order = True                      # the vjp below is written in graphm ops

        def shape(self, a, b):                   # NumPy broadcasting
            return broadcast_shape(a, b)

        def forward(self, a, b):                 # keep a and b for the VJP
            return a * b, (a, b)

        def vjp(self, residuals, g):             # product rule, summed back over broadcasting
            a, b = residuals
            return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)

        def jvp(self, primals, tangents):        # product rule, pushed forward
            (a, b), (da, db) = primals, tangents
            return a * b, da * b + a * db

    mul = register(Mul())
"""
from __future__ import annotations

import numpy as np

__all__ = ["Op", "ShapeError", "FLOAT_DTYPES", "OPS", "register", "unbroadcast",
           "broadcast_shape", "format_shape", "is_traced", "call", "linear_jvp",
           "forward_residual"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Every op instance by name; filled by ``register``.
OPS: dict[str, "Op"] = {}

#: Answers of the shape and dtype rules already asked: (op, shapes, dtypes, attrs) -> answer.
_INFERRED = {}


class ShapeError(ValueError):
    """An op was given inputs whose shapes do not fit together.

    graphm's stand-in for TorchLean's typed shapes: the compiled ``GraphM`` raises it while the
    graph is being *built*, so an ill-shaped model never gets as far as running.
    """


def format_shape(shape, dtype=None):
    """``float32[64,1,28,28]``: how graphm prints a shape (and dtype) in messages and programs."""
    dims = ",".join(str(d) for d in shape)
    return f"{np.dtype(dtype).name if dtype is not None else ''}[{dims}]"


class Op:
    """Base class of graphm's differentiable operations.

    Subclasses set ``name`` and ``inputs`` and write the four rules. Class attributes:

    name : str
        The op's name in programs and messages (``"conv"``, ``"relu"``, ...).
    inputs : tuple of str
        The array arguments, in order. Everything else is an attribute.
    optional : tuple of str
        Inputs that may be ``None`` (a bias).
    nondiff : tuple of str
        Inputs that carry no derivative (integer class labels): ``vjp`` returns ``None`` for them
        and ``jvp`` is given ``None`` as their tangent.
    """

    name: str = ""
    inputs: tuple = ("input",)
    optional: tuple = ()
    nondiff: tuple = ()
    #: Is ``vjp`` written with graphm ops (so that, run on Tensors, it is recorded and can be
    #: differentiated again)? ``backward(create_graph=True)`` refuses ops that say no.
    higher_order: bool = False

    # -- the four rules (subclasses override) ---------------------------------------------------

    def shape(self, *shapes, **attrs):
        """Output shape from input shapes (``None`` for an absent input); raise ShapeError."""
        raise NotImplementedError

    def forward(self, *xs, **attrs):
        """Return ``(out, residuals)``."""
        raise NotImplementedError

    def vjp(self, residuals, g, **attrs):
        """Return a tuple with one gradient (or None) per input: the cotangent pulled back."""
        raise NotImplementedError

    def jvp(self, primals, tangents, **attrs):
        """Return ``(out, tangent_out)``: the tangent pushed forward, alongside the primal."""
        raise NotImplementedError

    # -- the dtype rule (shared; override for ops with integer inputs) -------------------------

    def dtype(self, *dtypes, **attrs):
        """Output dtype: all floating inputs must share float32 or float64 (no silent promotion,
        as in graphm.functional). Non-differentiable inputs are checked by the op itself."""
        seen = {}
        for name, dtype in zip(self.inputs, dtypes):
            if dtype is None or name in self.nondiff:
                continue
            dtype = np.dtype(dtype)
            if dtype not in FLOAT_DTYPES:
                raise TypeError(f"{self.name}: input '{name}' must be float32 or float64, "
                                f"got {dtype}")
            seen[name] = dtype
        if len(set(seen.values())) > 1:
            listing = ", ".join(f"{n}: {d}" for n, d in seen.items())
            raise TypeError(f"{self.name}: inputs must share one dtype, got {listing}; graphm "
                            "never promotes silently: convert one (e.g. .astype(np.float32))")
        return next(iter(seen.values()))

    # -- used by both modes ---------------------------------------------------------------------

    def infer(self, shapes, dtypes, attrs):
        """Run the dtype and shape rules, as both modes do before running an op.

        A ValueError from the shape rule (including graphm.functional's argument checks, which
        some rules reuse) becomes a ShapeError that starts with the op's name, so a message
        reads the same in eager and compiled mode. The rules are pure functions of shapes,
        dtypes and attributes, so answers are remembered: a training loop that runs the same op
        on the same shapes asks once.
        """
        try:
            key = (self, tuple(shapes), tuple(dtypes),
                   tuple((name, _memo_key(value)) for name, value in attrs.items()))
            return _INFERRED[key]
        except TypeError:                        # an attribute that is not plain data: no memo
            key = None
        except KeyError:
            pass
        result = self._infer(shapes, dtypes, attrs)
        if key is not None:
            if len(_INFERRED) >= 1024:
                _INFERRED.clear()
            _INFERRED[key] = result
        return result

    def _infer(self, shapes, dtypes, attrs):
        for name, shape in zip(self.inputs, shapes):
            if shape is None and name not in self.optional:
                raise TypeError(f"{self.name}: input '{name}' is required, got None")
        dtype = self.dtype(*dtypes, **attrs)
        try:
            shape = tuple(self.shape(*shapes, **attrs))
        except (ValueError, IndexError) as error:
            message = str(error)
            if not message.startswith(self.name):
                message = f"{self.name}: {message}"
            raise ShapeError(message) from None
        return shape, dtype

    def differentiable(self, index):
        """Does input number ``index`` carry a derivative?"""
        return self.inputs[index] not in self.nondiff

    def __repr__(self):
        return f"<op {self.name}({', '.join(self.inputs)})>"


def _memo_key(value):
    """``value`` with its type, for plain data only (so that 2, 2.0 and True stay apart);
    TypeError for anything else (arrays, lists, NumPy scalars), which is then not memoised."""
    if type(value) in (type(None), bool, int, float, str):
        return type(value), value
    if type(value) is tuple:
        return tuple(_memo_key(v) for v in value)
    raise TypeError("not plain data")


def register(op):
    """List the op in ``OPS`` under its name and return it: ``relu = register(Relu())``."""
    if op.name in OPS:
        raise ValueError(f"an op named {op.name!r} is already registered")
    OPS[op.name] = op
    return op


# ------------------------------------------------------------------------------------------------
# Broadcasting, the one piece of bookkeeping that several ops share
# ------------------------------------------------------------------------------------------------

def broadcast_shape(*shapes):
    """NumPy's broadcast of ``shapes``; ShapeError listing them all when impossible."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ShapeError("shapes " + " and ".join(format_shape(s) for s in shapes)
                         + " cannot be broadcast together") from None


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the VJP of NumPy broadcasting.

    Broadcasting copies a value along new leading axes and along axes of length 1; the adjoint
    of a copy is a sum, so those axes are summed (the length-1 ones kept). On a Tensor this is
    the op ``sum_to`` (graphm/ops/reduction.py), whose own VJP is ``broadcast_to``.
    """
    if grad.shape == tuple(shape):
        return grad
    if is_traced(grad):
        return call(OPS["sum_to"], grad, shape=tuple(shape))
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    grad = grad.sum(axis=stretched, keepdims=True) if stretched else grad
    return np.asarray(grad)                     # a full reduction gives a NumPy scalar


# ------------------------------------------------------------------------------------------------
# Rules written in graphm's own ops
# ------------------------------------------------------------------------------------------------

def is_traced(value):
    """Is ``value`` a graphm Tensor (or a compiled graph's Var) rather than a plain array?"""
    return getattr(value, "__graphm_tensor__", False) is True


def call(op, *inputs, **attrs):
    """Run ``op`` inside a rule: on plain arrays its ``forward`` (today's NumPy speed), and when
    some input is a Tensor (or Var), through that kind's own way of applying an op, so that the
    rule is recorded like any other computation and can be differentiated again.

    This is what lets one rule serve every interpretation (Autodidax's "bind"): a ``vjp`` that
    says ``call(sum_to, g, shape=s)`` sums arrays, or records a ``sum_to`` node on the tape.
    """
    for value in inputs:
        if is_traced(value):
            return type(value)._graphm_apply(op, inputs, attrs)
    return op.forward(*inputs, **attrs)[0]


def linear_jvp(op, primals, tangents, on_arrays=None, **attrs):
    r"""The JVP of an op with one input that it maps linearly, :math:`\dot y = \mathrm{op}(\dot x)`
    (sums, reshapes, indexing, average pooling, ...): the op itself, run with :func:`call` on
    the primal and on the tangent, so that either may be an array, a Tensor or a Var.

    On plain arrays ``on_arrays(v)``, if given, is the op's value with its attributes already
    checked once for both (the forward rule would check them twice: for small arrays that is
    most of the time), else the forward rule."""
    x, dx = primals[0], tangents[0]
    if not (is_traced(x) or is_traced(dx)):
        if on_arrays is not None:
            return on_arrays(x), on_arrays(dx)
        return op.forward(x, **attrs)[0], op.forward(dx, **attrs)[0]
    return call(op, x, **attrs), call(op, dx, **attrs)


def forward_residual(op, primals, attrs, item=None):
    """Item ``item`` (all of them for None) of what ``op.forward(*primals, **attrs)`` hands its
    vjp: a relu's mask, max pooling's winners, a loss's target distribution. These depend on
    the numbers but carry no derivative of their own (a mask is piecewise constant), so a
    ``jvp`` rule that needs one beside traced primals uses it as a constant.

    On arrays and Tensors the numbers are known, and the residual is computed now, as an array
    (lifted to a constant wherever it is used). A compiled graph's Vars have no numbers yet: the
    residual is then a ``residual`` node of their graph, computed from the same inputs when the
    program runs, as in a derivative Program (graphm/graph.py). Its shape and dtype, which the
    node must declare, come from the forward rule run once on stand-in arrays.
    """
    if not any(is_traced(p) for p in primals):
        residuals = op.forward(*primals, **attrs)[1]
        return residuals if item is None else residuals[item]
    from graphm.graph import _RESIDUAL, Var        # graph.py imports this module
    if not any(isinstance(p, Var) for p in primals):
        arrays = [np.asarray(p) if is_traced(p) else p for p in primals]     # Tensors' values
        return forward_residual(op, arrays, attrs, item)
    stand_ins = [None if p is None else
                 (np.ones if np.dtype(p.dtype).kind == "f" else np.zeros)(p.shape, p.dtype)
                 for p in primals]
    with np.errstate(all="ignore"):
        example = np.asarray(forward_residual(op, stand_ins, attrs, item))
    var = next(p for p in primals if isinstance(p, Var))
    return var._graphm_apply(_RESIDUAL, primals, dict(of=op, of_attrs=dict(attrs), item=item,
                                                      shape=example.shape,
                                                      dtype=example.dtype.name))
