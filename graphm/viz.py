"""Pictures of training: loss and accuracy curves, learned filters, inputs beside reconstructions.

Each function draws one PNG file with matplotlib's Agg renderer, through the object-oriented
``Figure`` API rather than ``pyplot``: no window opens, no global backend is switched, so these
work on a server, in a test, and inside a notebook without disturbing it.
"""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["plot_curves", "plot_filters", "plot_reconstructions"]


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    path = os.fspath(path)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_curves(history, path, metric="accuracy"):
    """Loss (left) and ``metric`` (right) per epoch, training and test, into a PNG.

    Parameters
    ----------
    history : dict of lists
        ``train_loss``, ``test_loss`` and ``train_<metric>``, ``test_<metric>`` (any missing
        curve is skipped), one value per epoch.
    path : str or os.PathLike
    metric : str or None
        ``"accuracy"`` (plotted in percent) or another name such as ``"mse"``. None draws the
        loss alone, in one panel: for a model whose loss *is* its metric (an autoencoder's
        MSE), a second panel would repeat the first.
    """
    panels = [("loss", "loss")] + ([] if metric in (None, "loss") else [(metric, metric)])
    from matplotlib.ticker import MaxNLocator
    figure = _figure(5 * len(panels), 4)
    axes_list = np.atleast_1d(figure.subplots(1, len(panels)))
    for axes, (key, title) in zip(axes_list, panels):
        for split, style in (("train", "-o"), ("test", "-s")):
            values = history.get(f"{split}_{key}")
            if values:
                values = np.asarray(values, dtype=float)
                if key == "accuracy":
                    values = 100 * values
                axes.plot(np.arange(1, len(values) + 1), values, style, markersize=3,
                          label=split)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))     # epochs are whole
        axes.set_ylabel(f"{title} (%)" if key == "accuracy" else title)
        if key == "loss" or key == "mse":
            axes.set_yscale("log")
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle("training curves")
    return _save(figure, path)


def plot_filters(weight, path, title="first-layer filters"):
    """The kernels of a 2-d convolution, one small image per output channel, into a PNG.

    ``weight`` has shape ``(out_channels, in_channels, kH, kW)``; channels beyond the first input
    channel are averaged. Colours are symmetric around zero (red positive, blue negative), so a
    filter's sign pattern, the edge or blob it responds to, can be read off directly; the colour
    bar beside them gives the weight a colour stands for.
    """
    weight = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight, dtype=float)
    if weight.ndim != 4:
        raise ValueError(f"plot_filters: expected a 2-d convolution weight (out, in, kH, kW), "
                         f"got shape {weight.shape}")
    kernels = weight.mean(axis=1)
    count = len(kernels)
    columns = min(count, 8)
    rows = math.ceil(count / columns)
    figure = _figure(1.2 * columns, 1.2 * rows + 0.4)
    limit = float(np.abs(kernels).max()) or 1.0
    every_axes, image = [], None
    for index in range(rows * columns):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_axis_off()
        every_axes.append(axes)
        if index < count:
            image = axes.imshow(kernels[index], cmap="RdBu_r", vmin=-limit, vmax=limit,
                                interpolation="nearest")
            axes.set_title(str(index), fontsize=7)
    # one scale for every filter (they share vmin/vmax), so one colour bar reads them all
    figure.colorbar(image, ax=every_axes, shrink=0.8, label="weight")
    figure.suptitle(f"{title} ({count} of {weight.shape[2]}x{weight.shape[3]})")
    return _save(figure, path)


def plot_reconstructions(inputs, outputs, path, count=10):
    """The first ``count`` inputs (top row) above their reconstructions (bottom row), as PNG.

    ``inputs`` and ``outputs`` have shape ``(N, 1, H, W)`` (or ``(N, H, W)``) with values in
    ``[0, 1]``.
    """
    inputs = np.asarray(inputs, dtype=float)
    outputs = np.asarray(outputs, dtype=float)
    if inputs.shape != outputs.shape:
        raise ValueError(f"plot_reconstructions: inputs {inputs.shape} and outputs "
                         f"{outputs.shape} must have one shape")
    images = [a.reshape(len(a), *a.shape[-2:]) for a in (inputs, outputs)]
    count = min(count, len(inputs))
    figure = _figure(1.1 * count, 2.6)
    for row, (label, batch) in enumerate(zip(("input", "reconstruction"), images)):
        for column in range(count):
            axes = figure.add_subplot(2, count, row * count + column + 1)
            axes.imshow(batch[column], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(label, fontsize=8)
    mse = float(((inputs[:count] - outputs[:count]) ** 2).mean())
    figure.suptitle(f"inputs and reconstructions (MSE of these {count}: {mse:.4f})")
    return _save(figure, path)
