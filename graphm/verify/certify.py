r"""Certified robustness of a classifier on an L∞ ball: is the label the same for every input?

A classifier keeps label :math:`y` on a set of inputs if the margin
:math:`y_y - y_j` is positive for every other class :math:`j`, everywhere on the set. Bounding
each logit separately and subtracting (:math:`l_y - u_j`) forgets that the two logits move
together; CROWN instead bounds the margins themselves, with the specification rows
:math:`C = e_y - e_j` pulled backward through the network (as auto_LiRPA does), which is much
tighter.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from graphm.ops.interval import Bounds, round_down, round_up, scalar_up
from graphm.verify._program import as_graph, check_box
from graphm.verify.crown import _linear_bounds
from graphm.verify.ibp import interval_values

__all__ = ["Certificate", "certify", "certify_box", "margin_spec", "plot_certified_accuracy"]

METHODS = ("crown", "crown-ibp", "ibp")


class Certificate(NamedTuple):
    """What :func:`certify` proves, per sample.

    Attributes
    ----------
    certified : ndarray of bool, shape (N,)
        The label is the model's answer for every input in the sample's box.
    margins : ndarray of float64, shape (N,)
        A lower bound on :math:`\\min_{j \\ne y} (y_y - y_j)` over the box: positive means
        certified.
    """
    certified: np.ndarray
    margins: np.ndarray

    def accuracy(self):
        """The fraction certified (certified accuracy)."""
        return float(np.mean(self.certified)) if len(self.certified) else 0.0


def margin_spec(labels, classes, dtype):
    """Rows :math:`e_y - e_j` for every :math:`j \\ne y`: shape (N, classes - 1, classes)."""
    labels = np.asarray(labels)
    batch = len(labels)
    spec = np.zeros((batch, classes - 1, classes), dtype)
    others = np.array([[j for j in range(classes) if j != y] for y in labels]).reshape(
        batch, classes - 1)
    spec[np.arange(batch)[:, None], np.arange(classes - 1)[None, :], others] = -1
    spec[np.arange(batch), :, labels] = 1
    return spec


def _check_labels(labels, batch, classes, function):
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{function}: labels must be integer class indices, got {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"{function}: labels must have shape ({batch},), one per sample, got "
                         f"{labels.shape}")
    if batch and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{function}: labels must be in 0..{classes - 1} (the model has "
                         f"{classes} outputs), got values from {labels.min()} to {labels.max()}")
    return labels.astype(np.int64)


def certify_box(model, lower, upper, labels, method="crown", *, params=None):
    """Like :func:`certify`, for any box (``lower``, ``upper`` shaped like the model's input)."""
    function = "certify"
    if method not in METHODS:
        raise ValueError(f"{function}: method must be one of {', '.join(METHODS)}, got "
                         f"{method!r}")
    box = check_box(lower, upper, function)
    graph = as_graph(model, box.lower, params, function)
    out_shape = next((s.shape for s in graph.steps if s.index == graph.output), None)
    if out_shape is None or len(out_shape) != 2:
        raise ValueError(f"{function}: the model must output (N, classes) logits, it outputs "
                         f"{out_shape}")
    batch, classes = out_shape
    labels = _check_labels(labels, batch, classes, function)
    if classes < 2:
        return Certificate(np.ones(batch, bool), np.full(batch, np.inf))
    if method == "ibp":
        logits = interval_values(graph, box, function)[graph.output]
        if not isinstance(logits, Bounds):
            logits = Bounds(logits, logits)
        rows = np.arange(batch)
        others = np.where(np.eye(classes, dtype=bool)[labels], -np.inf,
                          logits.upper.astype(np.float64))
        # l_y - max_j u_j, rounded down (float64 holds both exactly; the difference rounds once)
        margins = round_down(logits.lower[rows, labels].astype(np.float64)
                             - others.max(axis=1))
    else:
        spec = margin_spec(labels, classes, graph.dtype)
        found, _ = _linear_bounds(graph, box, spec,
                                  "crown" if method == "crown" else "ibp")
        margins = found.min(axis=1)
    return Certificate(margins > 0, margins)


def certify(model, x, labels, eps, method="crown", *, domain=None, params=None):
    r"""Which samples keep their label for every input within ``eps`` (L∞) of them?

    Parameters
    ----------
    model : graphm.nn.Module, CompiledModule or Program
        A classifier: ``(N, ...) -> (N, classes)`` logits.
    x : ndarray
        The samples, shaped like the model's input (batch first), float32 or float64.
    labels : ndarray of int, shape (N,)
        The label each sample must keep.
    eps : float
        The radius of the ball :math:`\{x' : \|x' - x\|_\infty \le \varepsilon\}`, >= 0.
    method : {"crown", "crown-ibp", "ibp"}
        ``"crown"`` bounds the margins :math:`y_y - y_j` directly (specification
        :math:`C = e_y - e_j` inside CROWN, the tightest); ``"crown-ibp"`` the same with
        interval pre-activation bounds (faster); ``"ibp"`` subtracts interval bounds of the
        logits, :math:`l_y - u_j`.
    domain : (float, float), optional
        Clip the ball to the inputs' valid range (pixels in ``[0, 1]``, say).
    params : dict, optional
        For a Program: its params by name.

    Returns
    -------
    Certificate
        ``certified`` (bool per sample) and ``margins`` (their lower bounds, float64).
        The ball's corners are rounded outward, so it contains the real ball; the margins hold
        for what the model computes in its own arithmetic (see :func:`graphm.verify.crown`).

    Raises
    ------
    ValueError
        ``eps`` negative or not a number; labels of the wrong shape or out of range; an ``x``
        that does not fit the model or holds NaN.

    Examples
    --------
    >>> import numpy as np, graphm
    >>> from graphm.verify import certify
    >>> model = graphm.nn.Linear(4, 3)
    >>> x = np.ones((2, 4), np.float32)
    >>> labels = model(graphm.tensor(x)).numpy().argmax(axis=1)
    >>> certify(model, x, labels, eps=0.0).certified.tolist()
    [True, True]
    """
    try:
        eps_value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"certify: eps must be a number, got {eps!r}") from None
    if not eps_value >= 0 or not np.isfinite(eps_value):
        raise ValueError(f"certify: eps must be a finite number >= 0, got {eps!r}")
    x = np.asarray(x)
    box = check_box(x, x, "certify")            # dtype, NaN
    dtype = box.lower.dtype
    radius = scalar_up(eps_value, dtype)
    with np.errstate(over="ignore"):
        lower = round_down(x - radius) if eps_value > 0 else x
        upper = round_up(x + radius) if eps_value > 0 else x
    if domain is not None:
        low, high = domain
        if not low <= high:
            raise ValueError(f"certify: domain must be (low, high) with low <= high, got "
                             f"{domain!r}")
        # clip with the domain's ends rounded outward (so no input of the domain is lost)
        lower = np.maximum(lower, round_down(np.asarray(low, dtype)))
        upper = np.minimum(upper, round_up(np.asarray(high, dtype)))
        if (x < low).any() or (x > high).any():
            raise ValueError(f"certify: x lies outside the domain {domain!r} (from {x.min()} "
                             f"to {x.max()})")
    return certify_box(model, lower, upper, labels, method, params=params)


def plot_certified_accuracy(eps, accuracies, path=None, *, clean=None, labels=None, ax=None):
    """Certified accuracy against eps (one curve per method), saved to ``path`` if given.

    Parameters
    ----------
    eps : sequence of float
    accuracies : sequence of float, or dict name -> sequence of float
        Fractions in [0, 1], one per eps (per method).
    path : str, optional
        A PNG to write.
    clean : float, optional
        The clean (eps = 0) accuracy, drawn as a dashed line.
    ax : matplotlib Axes, optional
        Draw into it instead of a new figure.

    Returns
    -------
    The Axes, or ``path`` when the figure was written.
    """
    import matplotlib
    if ax is None and path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    curves = accuracies if isinstance(accuracies, dict) else {"certified": accuracies}
    figure = None
    if ax is None:
        figure, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in curves.items():
        ax.plot(list(eps), [100 * v for v in values], marker="o", label=name)
    if clean is not None:
        ax.axhline(100 * clean, color="gray", linestyle="--", label="clean accuracy")
    ax.set_xlabel("eps (L∞ radius, pixel scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    if figure is not None and path is not None:
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path
    return ax
