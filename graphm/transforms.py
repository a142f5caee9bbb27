"""Function transforms: ``vjp``, ``jvp``, ``grad``, ``value_and_grad``, ``jacrev``, ``jacfwd`` and
``hessian``, as in torch.func / JAX.

A transform takes a Python function ``f`` written with graphm operations (graphm.functional,
Tensor operators and methods) and returns derivatives of it, on NumPy arrays in and out::

    out, vjp_fn = graphm.vjp(f, x, w)        # reverse mode: vjp_fn(ȳ) = (x̄, w̄) = Jᵀ ȳ
    out, tangent = graphm.jvp(f, (x, w), (ẋ, ẇ))   # forward mode: J (ẋ, ẇ), in one sweep
    dx = graphm.grad(f)(x, w)                # gradient of a scalar f w.r.t. argument 0

Inside, ``f`` is called with graphm Tensors in place of the arrays: ``vjp`` records the tape and
sweeps it backward (as many times as ``vjp_fn`` is called); ``jvp`` attaches a tangent to each
input and lets every op's ``jvp`` rule carry it forward alongside the value, with no tape at all.

**Transforms compose.** Every VJP and JVP rule is written with graphm ops, so a rule run on
Tensors is itself computed by ops: recorded on the tape, or carrying tangents of its own. A
transform called *inside* another one (or on Tensors that require grad or carry tangents)
therefore works on Tensors: it differentiates with respect to fresh aliases of its inputs, so
that nested derivatives never confuse whose derivative is whose, and it returns Tensors, which
the outer transform differentiates again::

    graphm.grad(graphm.grad(f))              # a second derivative
    graphm.jvp(graphm.grad(f), (x,), (v,))   # Hessian-vector product, forward over reverse
    graphm.grad(lambda x: graphm.jvp(f, (x,), (v,))[1])   # the same, reverse over forward
    graphm.hessian(f)(x)                     # jacfwd(jacrev(f)), as in JAX

Each ``jvp`` is one forward *level* (:class:`graphm.tensor.forward_level`): a Tensor carries one
tangent per level, so nested forward modes never add up each other's tangents, and the textbook
perturbation-confusion case ``d/dx [x · d/dy (x + y)] = 1`` comes out right. Forward over
reverse runs the inner backward pass on Tensors that carry the outer tangents, without
recording it (nothing will differentiate it): one forward and one backward sweep, each with its
tangents, as torch.func does.
"""
from __future__ import annotations

import math
import numbers
import threading

import numpy as np

from graphm import ops
from graphm.ops.base import FLOAT_DTYPES
from graphm import autograd as _autograd  # noqa: F401  (so that graphm.autograd comes with graphm)
from graphm.tensor import (Tensor, apply, backpropagate, enable_grad, forward_level,
                           live_tangents, no_grad)

__all__ = ["vjp", "jvp", "grad", "value_and_grad", "jacrev", "jacfwd", "hessian"]

# Said whenever f hands back plain values.
_NOT_A_TENSOR = (" (a value taken out of a Tensor with .numpy(), .item() or NumPy functions "
                 "carries no derivative)")


# ------------------------------------------------------------------------------------------------
# Nesting: which transforms are running right now (per thread)
# ------------------------------------------------------------------------------------------------

class _Nesting(threading.local):
    depth = 0                 # transforms running now (either mode)
    reverse = 0               # reverse-mode transforms among them


_nesting = _Nesting()


class _Level:
    """``with _Level(reverse):`` marks a transform as running, so that transforms inside it
    trace (work on Tensors and hand Tensors back)."""

    def __init__(self, reverse):
        self.reverse = int(reverse)

    def __enter__(self):
        _nesting.depth += 1
        _nesting.reverse += self.reverse

    def __exit__(self, *exc_info):
        _nesting.depth -= 1
        _nesting.reverse -= self.reverse


def _carries_derivatives(value):
    """Is ``value`` a Tensor on a tape or carrying a live forward-mode tangent?"""
    return isinstance(value, Tensor) and (value.requires_grad or bool(live_tangents(value)))


def _traced(values):
    """Must this transform work on Tensors (inside another transform, or given Tensors that
    require grad or carry tangents), rather than on plain arrays?"""
    return _nesting.depth > 0 or any(_carries_derivatives(v) for v in values)


def _differentiated_outside(values):
    """Will a reverse transform (or a tape the caller made) differentiate what this transform
    computes? Not so under forward modes alone: their tangents ride along without a tape."""
    return _nesting.reverse > 0 or any(isinstance(v, Tensor) and v.requires_grad for v in values)


def _fresh_input(value, position):
    """A traced transform's input: a fresh alias node of a Tensor that carries derivatives (so
    that the gradient asked for is this transform's own, and outer tangents ride along), or a
    fresh leaf for anything else."""
    if _carries_derivatives(value):
        alias = apply(ops.alias, (value,))
        if not alias.requires_grad and alias.dtype in FLOAT_DTYPES:
            alias.requires_grad_()        # a leaf of this transform's own, with the tangents
        return alias
    array = _as_primal(value, position)
    return Tensor._wrap(array).requires_grad_(array.dtype in FLOAT_DTYPES)


def _as_primal(value, position):
    """A transform's input as an array; Tensors are read (detached), scalars become arrays."""
    if isinstance(value, Tensor):
        value = value.data
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"argument {position} must be a NumPy array or a number, got "
                        f"{type(value).__name__}")
    return array


def _outputs(result, fname):
    """``f``'s result as a list of Tensors plus a function rebuilding its structure."""
    if isinstance(result, Tensor):
        return [result], lambda arrays: arrays[0]
    if isinstance(result, (tuple, list)) and result and all(
            isinstance(r, Tensor) for r in result):
        return list(result), lambda arrays: type(result)(arrays)
    raise TypeError(f"{fname}: f must return a graphm Tensor or a tuple of Tensors (compute "
                    f"with graphm.functional, Tensor operators and methods), got "
                    f"{type(result).__name__}{_NOT_A_TENSOR}")


def _check_cotangent(value, output, index, traced=False):
    if traced and isinstance(value, Tensor):
        if value.shape != output.shape:
            raise ValueError(f"vjp_fn: cotangent {index} has shape {value.shape} but output "
                             f"{index} has shape {output.shape}")
        return value
    cotangent = np.asarray(value.data if isinstance(value, Tensor) else value)
    if cotangent.shape != output.shape:
        raise ValueError(f"vjp_fn: cotangent {index} has shape {cotangent.shape} but output "
                         f"{index} has shape {output.shape}")
    return cotangent.astype(output.dtype, copy=False)


def vjp(f, *primals):
    """Evaluate ``f(*primals)`` and return a function pulling cotangents back (reverse mode).

    Parameters
    ----------
    f : callable
        Takes Tensors (one per primal) and returns a Tensor or a tuple of Tensors.
    *primals : ndarray
        Where to evaluate; float arrays are differentiated, integer ones (labels) are passed
        as constants and get no cotangent (None).

    Returns
    -------
    out : ndarray or tuple of ndarray
        ``f(*primals)``.
    vjp_fn : callable
        ``vjp_fn(cotangent)`` (one array per output, shaped like it) returns a tuple with one
        array per primal: :math:`J^{\\top}\\bar y`. It may be called any number of times.

    Examples
    --------
    >>> out, vjp_fn = graphm.vjp(lambda x: (x * x).sum(), np.array([1.0, 2.0]))
    >>> vjp_fn(np.array(1.0))
    (array([2., 4.]),)
    """
    traced = _traced(primals)
    outside = _differentiated_outside(primals)
    if traced:
        inputs = [_fresh_input(p, i) for i, p in enumerate(primals)]
    else:
        arrays = [_as_primal(p, i) for i, p in enumerate(primals)]
        inputs = [Tensor._wrap(a).requires_grad_(a.dtype in FLOAT_DTYPES) for a in arrays]
    with _Level(reverse=True), enable_grad():
        result = f(*inputs)
    outputs, rebuild = _outputs(result, "vjp")

    def vjp_fn(*cotangents):
        if len(outputs) == 1 and len(cotangents) == 1:
            cotangents = list(cotangents)
        elif len(cotangents) == 1 and isinstance(cotangents[0], (tuple, list)):
            cotangents = list(cotangents[0])
        if len(cotangents) != len(outputs):
            raise ValueError(f"vjp_fn: expected {len(outputs)} cotangent(s), one per output of "
                             f"f, got {len(cotangents)}")
        seeds = [_check_cotangent(c, o, i, traced)
                 for i, (c, o) in enumerate(zip(cotangents, outputs))]
        live = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
        # Traced, the rules run on Tensors; they are recorded only if something outside will
        # differentiate this backward pass (under forward modes alone, their tangents ride
        # along unrecorded: forward over reverse).
        record = outside or _nesting.reverse > 0 or any(
            isinstance(s, Tensor) and s.requires_grad for s in seeds)
        grads = backpropagate([o for o, _ in live], [s for _, s in live], retain_graph=True,
                              accumulate=False, wrt=inputs, create_graph=traced,
                              record=record) if live else [None] * len(inputs)
        if traced:                  # Tensors on the tape, for the transform around this one
            return tuple(
                (g if g is not None else Tensor._wrap(np.zeros_like(t.data))) if t.requires_grad
                else None for g, t in zip(grads, inputs))
        return tuple(
            (np.array(g) if g is not None else np.zeros_like(t.data)) if t.requires_grad
            else None for g, t in zip(grads, inputs))

    if traced:
        return rebuild(outputs), vjp_fn
    return rebuild([o.data for o in outputs]), vjp_fn


def jvp(f, primals, tangents):
    """Evaluate ``f`` and its directional derivative in one forward sweep (forward mode).

    Parameters
    ----------
    f : callable
        Takes Tensors (one per primal) and returns a Tensor or a tuple of Tensors.
    primals : tuple of ndarray
    tangents : tuple of ndarray
        One per primal, of its shape (None, or an integer primal's: no tangent).

    Returns
    -------
    out : ndarray or tuple of ndarray
        ``f(*primals)``.
    tangent_out : ndarray or tuple of ndarray
        :math:`J\\,\\dot x`, computed by each op's ``jvp`` rule as the values are computed:
        no tape, no reverse sweep, no finite differences.
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp(f, primals, tangents): primals and tangents must be tuples")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    traced = _traced(tuple(primals) + tuple(tangents))
    with forward_level(_differentiated_outside(tuple(primals) + tuple(tangents))) as level, \
            _Level(reverse=False):
        inputs = [_dual_input(p, t, i, level) for i, (p, t) in enumerate(zip(primals, tangents))]
        if traced:
            result = f(*inputs)
        else:
            with no_grad():       # forward mode needs no tape (a transform inside makes its own)
                result = f(*inputs)
        outputs, rebuild = _outputs(result, "jvp")
        tangent_out = [(o._tangents or {}).get(level) for o in outputs]
    tangent_out = [np.zeros_like(o.data) if t is None else t
                   for t, o in zip(tangent_out, outputs)]
    if traced:                    # Tensors, for the transform around this one
        return (rebuild([_strip_level(o, level) for o in outputs]),
                rebuild([t if isinstance(t, Tensor) else Tensor._wrap(np.asarray(t))
                         for t in tangent_out]))
    return (rebuild([o.data for o in outputs]),
            rebuild([np.asarray(t.data if isinstance(t, Tensor) else t) for t in tangent_out]))


def _dual_input(primal, tangent, position, level):
    """``primal`` as a Tensor carrying ``tangent`` at ``level`` (beside any tangents of outer
    levels, and in the same place on the tape as a Tensor that requires grad)."""
    if _carries_derivatives(primal):
        dual = apply(ops.alias, (primal,))
    else:
        dual = Tensor._wrap(_as_primal(primal, position))
    if tangent is None or dual.dtype not in FLOAT_DTYPES:
        return dual
    if not _carries_derivatives(tangent):
        tangent = np.asarray(tangent.data if isinstance(tangent, Tensor) else tangent)
    if tuple(tangent.shape) != dual.shape:
        raise ValueError(f"jvp: tangent {position} has shape {tuple(tangent.shape)} but primal "
                         f"{position} has shape {dual.shape}")
    if isinstance(tangent, np.ndarray):
        tangent = tangent.astype(dual.dtype, copy=False)
    elif tangent.dtype != dual.dtype:
        raise TypeError(f"jvp: tangent {position} has dtype {tangent.dtype} but primal "
                        f"{position} has dtype {dual.dtype}")
    dual._tangents = {**(dual._tangents or {}), level: tangent}
    return dual


def _strip_level(tensor, level):
    """An output of a traced jvp without the tangent of its (finished) level."""
    if not tensor._tangents or level not in tensor._tangents:
        return tensor
    rest = {m: t for m, t in tensor._tangents.items() if m != level} or None
    if tensor._node is None and tensor.requires_grad:      # a leaf returned as it is
        return tensor
    return Tensor._wrap(tensor.data, tensor._node, rest)


def _check_argnums(argnums, count, fname):
    single = isinstance(argnums, numbers.Integral)
    positions = (argnums,) if single else tuple(argnums)
    for a in positions:
        if not -count <= a < count:
            raise ValueError(f"{fname}: argnums {argnums!r} out of range for {count} arguments")
    return single, tuple(a % count for a in positions)


def value_and_grad(f, argnums=0, has_aux=False):
    """Like :func:`grad`, but the returned function gives ``(value, gradient)``.

    With ``has_aux=True``, ``f`` returns ``(scalar, aux)`` and the result is
    ``((value, aux), gradient)``, as in JAX.
    """
    def value_and_gradient(*args):
        single, positions = _check_argnums(argnums, len(args), "grad")
        aux_box = []

        def scalar_part(*inputs):
            result = f(*inputs)
            if has_aux:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise TypeError("grad(has_aux=True): f must return (scalar, aux)")
                result, aux = result
                aux_box.append(aux)
            if not isinstance(result, Tensor):
                raise TypeError(f"grad: f must return a one-element Tensor (a scalar loss), got "
                                f"{type(result).__name__}{_NOT_A_TENSOR}")
            if result.data.size != 1:
                raise TypeError(f"grad: f must return a one-element Tensor (a scalar loss), got "
                                f"shape {result.shape}; use graphm.vjp for other outputs")
            return result

        value, vjp_fn = vjp(scalar_part, *args)
        grads = vjp_fn(np.ones_like(value))
        for p in positions:
            if grads[p] is None:
                raise TypeError(f"grad: argument {p} has dtype {np.asarray(args[p]).dtype}; "
                                "only float32/float64 arguments can be differentiated")
        picked = grads[positions[0]] if single else tuple(grads[p] for p in positions)
        value = value.reshape(()) if value.ndim else value
        return ((value, aux_box[0]) if has_aux else value), picked

    return value_and_gradient


def grad(f, argnums=0, has_aux=False):
    """The gradient of a scalar-valued ``f``, as a function: ``graphm.grad(f)(x, w)``.

    Parameters
    ----------
    f : callable
        Takes Tensors and returns a one-element Tensor (a loss).
    argnums : int or tuple of int, default 0
        Which arguments to differentiate; a tuple gives a tuple of gradients.
    has_aux : bool, default False
        ``f`` returns ``(scalar, aux)``; the result is then ``(gradient, aux)``.

    Returns
    -------
    callable
        Taking the same arguments as ``f`` (NumPy arrays) and returning NumPy gradients.
    """
    value_and_gradient = value_and_grad(f, argnums, has_aux)

    def gradient(*args):
        value, picked = value_and_gradient(*args)
        return (picked, value[1]) if has_aux else picked

    return gradient


# ------------------------------------------------------------------------------------------------
# Jacobians and the Hessian, built from the two modes
# ------------------------------------------------------------------------------------------------

def _one_hot(shape, position, dtype):
    e = np.zeros(math.prod(shape), dtype)
    e[position] = 1
    return e.reshape(shape)


def _assemble(pieces, out_shape, in_shape, dtype, by_rows):
    """A Jacobian of shape ``out_shape + in_shape`` from its rows (one per output element,
    ``in_shape`` each: reverse mode) or columns (one per input element, ``out_shape`` each:
    forward mode). Tensor pieces are combined with ops (Σ one-hot ⊗ piece), so that the
    Jacobian stays on the tape for the transform around this one."""
    out_shape, in_shape = tuple(out_shape), tuple(in_shape)
    if not any(isinstance(p, Tensor) for p in pieces):
        stacked = np.stack([np.asarray(p) for p in pieces], axis=0 if by_rows else -1)
        return stacked.reshape(out_shape + in_shape)
    ones_out, ones_in = (1,) * len(out_shape), (1,) * len(in_shape)
    total = None
    for position, piece in enumerate(pieces):
        if by_rows:
            term = (_one_hot(out_shape, position, dtype).reshape(out_shape + ones_in)
                    * piece.reshape(ones_out + in_shape))
        else:
            term = (piece.reshape(out_shape + ones_in)
                    * _one_hot(in_shape, position, dtype).reshape(ones_out + in_shape))
        total = term if total is None else total + term
    return total


def _float_argument(args, p, fname):
    if np.asarray(args[p].data if isinstance(args[p], Tensor) else args[p]).dtype \
            not in FLOAT_DTYPES:
        dtype = np.asarray(args[p].data if isinstance(args[p], Tensor) else args[p]).dtype
        raise TypeError(f"{fname}: argument {p} has dtype {dtype}; only float32/float64 "
                        "arguments can be differentiated")


def jacrev(f, argnums=0):
    """The Jacobian of ``f`` by reverse mode, one VJP per output element (JAX's ``jacrev``).

    ``jacrev(f)(*args)`` has shape ``f(*args).shape + args[argnums].shape``; a tuple
    ``argnums`` gives a tuple of Jacobians. ``f`` returns one Tensor.
    """
    def jacobian(*args):
        single, positions = _check_argnums(argnums, len(args), "jacrev")
        for p in positions:
            _float_argument(args, p, "jacrev")
        out, vjp_fn = vjp(f, *args)
        if isinstance(out, (tuple, list)):
            raise TypeError("jacrev: f must return one Tensor, got a tuple of outputs")
        rows = [vjp_fn(_one_hot(out.shape, i, out.dtype)) for i in range(math.prod(out.shape))]
        result = tuple(_assemble([r[p] for r in rows], out.shape, np.shape(args[p]), out.dtype,
                                 by_rows=True) for p in positions)
        return result[0] if single else result

    return jacobian


def jacfwd(f, argnums=0):
    """The Jacobian of ``f`` by forward mode, one JVP per input element (JAX's ``jacfwd``).

    Same shapes as :func:`jacrev`; when ``f`` returns a tuple, the result is a tuple with one
    entry per output (each a Jacobian, or a tuple of them for a tuple ``argnums``).
    """
    def jacobian(*args):
        single, positions = _check_argnums(argnums, len(args), "jacfwd")
        per_argument = []
        for p in positions:
            _float_argument(args, p, "jacfwd")
            in_shape = np.shape(args[p])
            dtype = np.asarray(args[p].data if isinstance(args[p], Tensor) else args[p]).dtype
            columns = []
            for j in range(math.prod(in_shape)):
                tangents = tuple(_one_hot(in_shape, j, dtype) if i == p else None
                                 for i in range(len(args)))
                out, column = jvp(f, tuple(args), tangents)
                columns.append(column)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            cols = [list(c) if isinstance(c, (tuple, list)) else [c] for c in columns]
            per_argument.append([
                _assemble([c[k] for c in cols], np.shape(o), in_shape, dtype, by_rows=False)
                for k, o in enumerate(outs)])
        many_outputs = isinstance(out, (tuple, list))
        by_output = [tuple(per_argument[a][k] for a in range(len(positions)))
                     for k in range(len(per_argument[0]))]
        by_output = [entry[0] if single else entry for entry in by_output]
        return tuple(by_output) if many_outputs else by_output[0]

    return jacobian


def hessian(f, argnums=0):
    """The Hessian of a scalar ``f``: ``jacfwd(jacrev(f, argnums), argnums)``, as in JAX.

    Forward over reverse: each column is a Hessian-vector product, a JVP of the gradient.
    ``hessian(f)(x)`` has shape ``x.shape + x.shape``.
    """
    return jacfwd(jacrev(f, argnums), argnums)
