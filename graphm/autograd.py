"""``graphm.autograd.grad``: gradients of Tensors with respect to Tensors, as ``torch.autograd.grad``.

Where ``loss.backward()`` adds gradients into the leaves' ``.grad``, ``grad`` returns them and
touches nothing. With ``create_graph=True`` the backward sweep is itself recorded on the tape
(every op's VJP rule is written with graphm ops), so what comes back can be differentiated again::

    x = graphm.tensor([1.0, 2.0], requires_grad=True)
    y = (x ** 3).sum()
    (g,) = graphm.autograd.grad(y, x, create_graph=True)     # 3 x², a Tensor on the tape
    (h,) = graphm.autograd.grad(g.sum(), x)                   # 6 x
"""
from __future__ import annotations

import numpy as np

from graphm.tensor import Tensor, backpropagate

__all__ = ["grad"]


def _as_tensors(values, what):
    if isinstance(values, Tensor):
        return [values], True
    values = list(values)
    for i, value in enumerate(values):
        if not isinstance(value, Tensor):
            raise TypeError(f"grad(): {what}[{i}] must be a graphm Tensor, got "
                            f"{type(value).__name__}")
    return values, False


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs`` (a tuple, one per input).

    Parameters
    ----------
    outputs : Tensor or sequence of Tensor
        What to differentiate. A one-element output may go without a ``grad_outputs`` entry
        (it is then 1); any other needs one.
    inputs : Tensor or sequence of Tensor
        With respect to what: leaves or intermediate Tensors that ``outputs`` depend on.
    grad_outputs : array_like, Tensor or sequence of them, optional
        The cotangents to start from, one per output, shaped like it.
    retain_graph : bool, optional
        Keep the tape for another sweep; defaults to ``create_graph``.
    create_graph : bool, default False
        Record the sweep, so that the returned gradients are Tensors on the tape that can be
        differentiated again (higher-order derivatives).
    allow_unused : bool, default False
        Return None for an input that the outputs do not depend on, instead of raising.

    Returns
    -------
    tuple of Tensor
    """
    outputs, _ = _as_tensors(outputs, "outputs")
    inputs, _ = _as_tensors(inputs, "inputs")
    if retain_graph is None:
        retain_graph = create_graph
    if grad_outputs is None or isinstance(grad_outputs, (Tensor, np.ndarray)):
        grad_outputs = [grad_outputs] * len(outputs) if len(outputs) == 1 or grad_outputs is None \
            else [grad_outputs]
    grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad(): {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    roots, seeds = [], []
    for i, (output, seed) in enumerate(zip(outputs, grad_outputs)):
        if not output.requires_grad:
            raise RuntimeError(f"grad(): outputs[{i}] does not require grad and has no recorded "
                               "history (did an input set requires_grad=True?)")
        if seed is None:
            if output.data.size != 1:
                raise RuntimeError(f"grad(): grad can be implicitly created only for scalar "
                                   f"outputs; outputs[{i}] has shape {output.shape}, so pass "
                                   "grad_outputs")
            seed = np.ones_like(output.data)
        elif not (create_graph and isinstance(seed, Tensor)):
            seed = np.asarray(seed.data if isinstance(seed, Tensor) else seed,
                              dtype=output.dtype)
        if tuple(seed.shape) != output.shape:
            raise ValueError(f"grad(): grad_outputs[{i}] has shape {tuple(seed.shape)} but "
                             f"outputs[{i}] has shape {output.shape}")
        roots.append(output)
        seeds.append(seed)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad(): inputs[{i}] does not require grad")
    grads = backpropagate(roots, seeds, retain_graph=retain_graph, accumulate=False,
                          wrt=inputs, create_graph=create_graph)
    result = []
    for i, g in enumerate(grads):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad(): inputs[{i}] was not used to compute the outputs; "
                                   "pass allow_unused=True to get None for it")
            result.append(None)
        elif isinstance(g, Tensor):
            result.append(g)
        else:
            result.append(Tensor._wrap(np.array(g, dtype=inputs[i].dtype)))
    return tuple(result)
