"""Function transforms: ``vjp``, ``jvp``, ``grad`` and ``value_and_grad``, as in torch.func / JAX.

A transform takes a Python function ``f`` written with graphm operations (graphm.functional,
Tensor operators and methods) and returns derivatives of it, on NumPy arrays in and out::

    out, vjp_fn = graphm.vjp(f, x, w)        # reverse mode: vjp_fn(ȳ) = (x̄, w̄) = Jᵀ ȳ
    out, tangent = graphm.jvp(f, (x, w), (ẋ, ẇ))   # forward mode: J (ẋ, ẇ), in one sweep
    dx = graphm.grad(f)(x, w)                # gradient of a scalar f w.r.t. argument 0

Inside, ``f`` is called with graphm Tensors in place of the arrays: ``vjp`` records the tape and
sweeps it backward (as many times as ``vjp_fn`` is called); ``jvp`` attaches a tangent to each
input and lets every op's ``jvp`` rule carry it forward alongside the value, with no tape at all.
"""
from __future__ import annotations

import numbers

import numpy as np

from graphm.ops.base import FLOAT_DTYPES
from graphm.tensor import Tensor, backpropagate, enable_grad, no_grad

__all__ = ["vjp", "jvp", "grad", "value_and_grad"]

# Said whenever f hands back plain values: the usual cause is a transform inside f.
_NOT_COMPOSABLE = (" (if f calls graphm.grad, vjp or jvp, note that graphm's transforms do not "
                   "compose: they return NumPy arrays, and there are no higher-order derivatives)")


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
                    f"{type(result).__name__}{_NOT_COMPOSABLE}")


def _check_cotangent(value, output, index):
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
    arrays = [_as_primal(p, i) for i, p in enumerate(primals)]
    inputs = [Tensor._wrap(a).requires_grad_(a.dtype in FLOAT_DTYPES) for a in arrays]
    with enable_grad():
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
        seeds = [_check_cotangent(c, o, i) for i, (c, o) in enumerate(zip(cotangents, outputs))]
        live = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
        grads = backpropagate([o for o, _ in live], [s for _, s in live], retain_graph=True,
                              accumulate=False, wrt=inputs) if live else [None] * len(inputs)
        return tuple(
            (np.array(g) if g is not None else np.zeros_like(t.data)) if t.requires_grad
            else None for g, t in zip(grads, inputs))

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
    inputs = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        array = _as_primal(p, i)
        tensor = Tensor._wrap(array)
        if t is not None and array.dtype in FLOAT_DTYPES:
            tangent = np.asarray(t.data if isinstance(t, Tensor) else t)
            if tangent.shape != array.shape:
                raise ValueError(f"jvp: tangent {i} has shape {tangent.shape} but primal {i} "
                                 f"has shape {array.shape}")
            tensor._tangent = tangent.astype(array.dtype, copy=False)
        inputs.append(tensor)
    with no_grad():                   # forward mode needs no tape
        result = f(*inputs)
    outputs, rebuild = _outputs(result, "jvp")
    tangent_out = [o._tangent if o._tangent is not None else np.zeros_like(o.data)
                   for o in outputs]
    return rebuild([o.data for o in outputs]), rebuild(tangent_out)


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
                                f"{type(result).__name__}{_NOT_COMPOSABLE}")
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
