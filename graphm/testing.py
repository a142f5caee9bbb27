r"""Checking derivatives: tools for students, used by graphm's own test-suite.

Two questions can be asked of any function ``f`` written with graphm ops:

* Is the reverse mode right? :func:`gradcheck` compares graphm's VJP with central finite
  differences, in float64, and reports the worst element.
* Do the two modes agree? :func:`check_jvp_vjp` runs the *dot-product test*: for any tangent
  :math:`t` and cotangent :math:`g`, the forward and reverse modes must give the same number

  .. math:: \langle J t,\; g \rangle \;=\; \langle t,\; J^{\top} g \rangle ,

  because :math:`J^{\top}` is the transpose of :math:`J`. One random pair tests the whole
  Jacobian at once: a wrong rule would have to be wrong in a direction orthogonal to a random
  vector to slip through.

Both take ``f(*tensors) -> Tensor or tuple of Tensors`` and a tuple of NumPy arrays, like
:func:`graphm.vjp`. Integer arrays (class labels) are passed through unchanged.
"""
from __future__ import annotations

import numpy as np

from graphm.ops.base import FLOAT_DTYPES
from graphm.tensor import Tensor, no_grad
from graphm.transforms import jvp, vjp

__all__ = ["gradcheck", "check_jvp_vjp", "GradcheckError"]


class GradcheckError(AssertionError):
    """A derivative check failed; the message says where and by how much."""


def _as_float64(inputs):
    arrays = []
    for value in inputs:
        array = np.asarray(value.data if isinstance(value, Tensor) else value)
        arrays.append(array.astype(np.float64) if array.dtype in FLOAT_DTYPES else array)
    return arrays


def _as_list(value):
    """The outputs of ``f`` as a list: a tuple or list of outputs, or a single one."""
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _evaluate(f, arrays):
    """``f`` on plain values (no tape): a list of output arrays."""
    with no_grad():
        result = f(*[Tensor._wrap(a) for a in arrays])
    return [r.data for r in _as_list(result)]


def gradcheck(f, inputs, *, eps=1e-6, atol=1e-6, rtol=1e-4, seed=0, raise_exception=True):
    r"""Compare ``graphm.vjp(f)`` with central differences, in float64.

    For a random cotangent :math:`g`, the VJP :math:`J^{\top} g` is the gradient of the scalar
    :math:`s(x) = \langle f(x), g \rangle`; each of its elements is compared with

    .. math:: \frac{s(x + \epsilon e_k) - s(x - \epsilon e_k)}{2 \epsilon}

    and must match within ``atol + rtol * |numeric|``.

    Parameters
    ----------
    f : callable
        ``f(*tensors)`` returning a Tensor or a tuple of Tensors.
    inputs : tuple of ndarray
        The point to check at. Float arrays are converted to float64 and checked; integer
        arrays are passed through.
    eps, atol, rtol : float
    seed : int
        For the random cotangent.
    raise_exception : bool, default True
        Raise :class:`GradcheckError` on failure; otherwise return False.

    Returns
    -------
    bool
        True if every element agrees.

    Notes
    -----
    It costs two evaluations of ``f`` per input element: check on small shapes.
    """
    arrays = _as_float64(inputs)
    out, vjp_fn = vjp(f, *arrays)
    outputs = _as_list(out)
    rng = np.random.default_rng(seed)
    cotangents = [rng.standard_normal(o.shape) for o in outputs]
    analytic = vjp_fn(*cotangents) if len(outputs) > 1 else vjp_fn(cotangents[0])

    def projected(values):
        return sum(float(np.sum(o * c)) for o, c in zip(_evaluate(f, values), cotangents))

    worst = None                               # (excess, input, index, analytic, numeric)
    for position, array in enumerate(arrays):
        if array.dtype not in FLOAT_DTYPES:
            continue
        numeric = np.empty_like(array)
        for k in range(array.size):
            shifted = [a.copy() if i == position else a for i, a in enumerate(arrays)]
            shifted[position].flat[k] = array.flat[k] + eps
            plus = projected(shifted)
            shifted[position].flat[k] = array.flat[k] - eps
            minus = projected(shifted)
            numeric.flat[k] = (plus - minus) / (2 * eps)
        error = np.abs(analytic[position] - numeric)
        allowed = atol + rtol * np.abs(numeric)
        excess = np.where(np.isnan(error), np.inf, error / allowed)
        if excess.size and (worst is None or excess.max() > worst[0]):
            k = int(np.argmax(excess))
            index = np.unravel_index(k, array.shape)
            worst = (float(excess.flat[k]), position, index, float(analytic[position].flat[k]),
                     float(numeric.flat[k]))
    if worst is None or worst[0] <= 1:
        return True
    excess, position, index, a, n = worst
    message = (f"gradcheck failed for input {position} (shape {arrays[position].shape}) at "
               f"index {tuple(int(i) for i in index)}: analytic {a:.10g}, numeric {n:.10g}, "
               f"|difference| {abs(a - n):.3g} exceeds atol + rtol*|numeric| = "
               f"{atol + rtol * abs(n):.3g} ({excess:.3g} times the tolerance)")
    if raise_exception:
        raise GradcheckError(message)
    return False


def check_jvp_vjp(f, inputs, *, rtol=1e-9, atol=1e-12, seed=0, raise_exception=True):
    r"""The dot-product test :math:`\langle J t, g\rangle = \langle t, J^{\top} g\rangle`.

    Draws a random tangent :math:`t` (one array per float input) and cotangent :math:`g` (one per
    output), computes :math:`J t` with :func:`graphm.jvp` (forward mode) and :math:`J^\top g`
    with :func:`graphm.vjp` (reverse mode), in float64, and compares the two inner products.
    It also checks that the JVP's primal output equals ``f``'s.

    Parameters
    ----------
    f : callable
        ``f(*tensors)`` returning a Tensor or a tuple of Tensors.
    inputs : tuple of ndarray
    rtol, atol : float
        Tolerance on the difference of the two inner products, relative to their size.
    seed : int
    raise_exception : bool, default True

    Returns
    -------
    bool
    """
    arrays = _as_float64(inputs)
    rng = np.random.default_rng(seed)
    tangents = [rng.standard_normal(a.shape) if a.dtype in FLOAT_DTYPES else None
                for a in arrays]
    out, tangent_out = jvp(f, tuple(arrays), tuple(tangents))
    outputs, tangent_outs = _as_list(out), _as_list(tangent_out)
    cotangents = [rng.standard_normal(o.shape) for o in outputs]
    out_reverse, vjp_fn = vjp(f, *arrays)
    pulled = vjp_fn(*cotangents) if len(outputs) > 1 else vjp_fn(cotangents[0])
    for k, (a, b) in enumerate(zip(outputs, _as_list(out_reverse))):
        if not np.allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True):
            message = f"jvp's primal output {k} differs from f's output"
            if raise_exception:
                raise GradcheckError(message)
            return False
    forward = sum(float(np.sum(jt * g)) for jt, g in zip(tangent_outs, cotangents))
    reverse = sum(float(np.sum(t * jg)) for t, jg in zip(tangents, pulled) if t is not None)
    scale = max(abs(forward), abs(reverse),
                sum(float(np.sum(np.abs(jt * g))) for jt, g in zip(tangent_outs, cotangents)))
    if abs(forward - reverse) <= atol + rtol * scale:
        return True
    message = (f"dot-product test failed: <J t, g> = {forward:.15g} (forward mode) but "
               f"<t, J^T g> = {reverse:.15g} (reverse mode); difference "
               f"{abs(forward - reverse):.3g}, allowed {atol + rtol * scale:.3g}")
    if raise_exception:
        raise GradcheckError(message)
    return False
