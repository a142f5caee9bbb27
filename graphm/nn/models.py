"""The two networks the ``graphm`` command trains, ready to use from Python.

::

    from graphm.nn.models import make_cnn, make_autoencoder
    model = make_cnn((1, 28, 28))              # an MNIST classifier: (N, 1, 28, 28) -> (N, 10)

Both are plain :class:`~graphm.nn.Sequential` stacks of built-in layers, so a checkpoint of
either can be rebuilt from its architecture alone (:func:`graphm.nn.from_architecture`).
"""
from __future__ import annotations

from graphm.nn.layers import (Conv2d, ConvTranspose2d, Flatten, Linear, MaxPool2d, ReLU,
                              Sigmoid)
from graphm.nn.module import Sequential

__all__ = ["make_cnn", "make_autoencoder"]


def make_cnn(input_shape=(1, 8, 8), classes=10):
    """Two conv-ReLU-maxpool stages and a linear classifier (LeNet's shape, smaller).

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one image.
    classes : int
        The number of logits.

    Returns
    -------
    graphm.nn.Sequential
        ``(N, C, H, W) -> (N, 32, H/2, W/2) -> (N, 64, H/4, W/4) -> (N, classes)`` logits
        (the sizes halve with floor division at each max-pool).
    """
    channels, height, width = input_shape
    return Sequential(
        Conv2d(channels, 32, 3, padding=1), ReLU(), MaxPool2d(2),
        Conv2d(32, 64, 3, padding=1), ReLU(), MaxPool2d(2),
        Flatten(), Linear(64 * (height // 4) * (width // 4), classes))


def make_autoencoder(input_shape=(1, 8, 8)):
    """Strided convolutions down to ``(32, H/4, W/4)``, transposed convolutions back up.

    Each ``ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`` exactly doubles the
    size, undoing its ``Conv2d(k=3, stride=2, padding=1)``; a sigmoid keeps outputs in [0, 1].

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)``; height and width should be multiples of 4 for the output
        to have the input's size.

    Returns
    -------
    graphm.nn.Sequential
        ``(N, C, H, W) -> (N, C, H, W)``.
    """
    channels = input_shape[0]
    return Sequential(
        Conv2d(channels, 16, 3, stride=2, padding=1), ReLU(),
        Conv2d(16, 32, 3, stride=2, padding=1), ReLU(),
        ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), ReLU(),
        ConvTranspose2d(16, channels, 3, stride=2, padding=1, output_padding=1), Sigmoid())
