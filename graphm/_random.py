"""graphm's one source of randomness for initialisation: ``manual_seed`` and the default generator.

PyTorch seeds its default generator with ``torch.manual_seed(s)``, and every layer constructed
afterwards draws its initial weights from it, in construction order. graphm does the same with a
NumPy :class:`numpy.random.Generator` (PCG64): ``graphm.manual_seed(0)`` followed by building the
same model gives the same weights on every machine. (The *values* differ from PyTorch's, whose
generator is another algorithm; the *distributions* are the same.)

Data shuffling does not use this generator: a :class:`graphm.data.DataLoader` takes its own seed,
so that reading the data never shifts the initial weights of a model built afterwards.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["manual_seed", "default_generator", "initial_seed"]

_seed = 0
_generator = np.random.default_rng(_seed)


def manual_seed(seed):
    """Reseed the generator that graphm's layers draw their initial weights from.

    Parameters
    ----------
    seed : int
        A non-negative integer.

    Returns
    -------
    numpy.random.Generator
        The freshly seeded default generator (as ``torch.manual_seed`` returns its generator).
    """
    global _seed, _generator
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"manual_seed: seed must be an int, got {seed!r} of type "
                        f"{type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"manual_seed: seed must be >= 0, got {seed}")
    _seed = int(seed)
    _generator = np.random.default_rng(_seed)
    return _generator


def initial_seed():
    """The seed last given to :func:`manual_seed` (0 if it was never called)."""
    return _seed


def default_generator():
    """The generator that :mod:`graphm.nn.init` draws from unless given another one."""
    return _generator
