r"""Initial values for parameters, as ``torch.nn.init``, drawn from graphm's seeded generator.

Every function fills its argument **in place** (a :class:`graphm.nn.Parameter`, a Tensor or a
NumPy array) and returns it. The random ones draw from ``graphm.manual_seed``'s generator unless
given ``generator=`` (a :class:`numpy.random.Generator`).

Why PyTorch's default looks the way it does
-------------------------------------------
A layer's output is a sum over ``fan_in`` products ``w * x``. With independent weights of
variance :math:`\sigma^2`, the output's variance is ``fan_in`` times :math:`\sigma^2` times the
input's: to keep activations from growing or shrinking layer after layer the weights need
:math:`\sigma^2 \propto 1/\text{fan\_in}`. Kaiming (He et al., 2015) uniform sets
:math:`W \sim U(-b, b)` with

.. math:: b = \text{gain} \cdot \sqrt{3 / \text{fan\_in}}, \qquad
          \text{gain} = \sqrt{2 / (1 + a^2)} \ \text{(leaky ReLU of slope } a\text{)}.

PyTorch's layers use :math:`a = \sqrt 5`, so :math:`\text{gain} = \sqrt{1/3}` and
:math:`b = 1/\sqrt{\text{fan\_in}}`, the bound of the bias too.
"""
from __future__ import annotations

import math

import numpy as np

from graphm import _random

__all__ = ["calculate_fan_in_and_fan_out", "calculate_gain", "uniform_", "normal_", "zeros_",
           "ones_", "constant_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
           "xavier_normal_"]


def _array(target):
    """The NumPy array behind a Parameter/Tensor (``.data``) or the array itself."""
    if isinstance(target, np.ndarray):
        return target
    array = getattr(target, "data", None)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"init: expected a Parameter, a Tensor or a NumPy array, got "
                        f"{type(target).__name__}")
    return array


def _generator(generator):
    return _random.default_generator() if generator is None else generator


def calculate_fan_in_and_fan_out(target):
    """``(fan_in, fan_out)`` of a weight, as PyTorch counts them.

    For a weight of shape ``(a, b, *kernel)``: ``fan_in = b * prod(kernel)`` and
    ``fan_out = a * prod(kernel)``. A Linear weight ``(out, in)`` gives ``(in, out)``. PyTorch
    uses the same rule for a transposed convolution, whose weight is ``(in, out/groups, *k)``,
    so there "fan_in" counts output channels; graphm keeps that, to initialise identically.
    """
    shape = target if isinstance(target, tuple) else _array(target).shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight with at least 2 dimensions, got "
                         f"shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity, param=None):
    """The factor that keeps activations' variance steady through ``nonlinearity``."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def uniform_(target, a=0.0, b=1.0, generator=None):
    """Fill with values drawn from :math:`U(a, b)`."""
    array = _array(target)
    array[...] = _generator(generator).uniform(a, b, size=array.shape)
    return target


def normal_(target, mean=0.0, std=1.0, generator=None):
    """Fill with values drawn from :math:`N(\\text{mean}, \\text{std}^2)`."""
    array = _array(target)
    array[...] = _generator(generator).normal(mean, std, size=array.shape)
    return target


def constant_(target, value):
    _array(target)[...] = value
    return target


def zeros_(target):
    return constant_(target, 0.0)


def ones_(target):
    return constant_(target, 1.0)


def _fan(target, mode):
    fan_in, fan_out = calculate_fan_in_and_fan_out(target)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"cannot initialise a weight of shape {_array(target).shape}: its "
                         f"{mode} is 0")
    return fan


def kaiming_uniform_(target, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    r"""He uniform: :math:`U(-b, b)`, :math:`b = \text{gain}\sqrt{3/\text{fan}}`."""
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(target, mode))
    return uniform_(target, -bound, bound, generator)


def kaiming_normal_(target, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    r"""He normal: :math:`N(0, \sigma^2)`, :math:`\sigma = \text{gain}/\sqrt{\text{fan}}`."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(target, mode))
    return normal_(target, 0.0, std, generator)


def xavier_uniform_(target, gain=1.0, generator=None):
    r"""Glorot uniform: :math:`b = \text{gain}\sqrt{6/(\text{fan\_in}+\text{fan\_out})}`."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(target)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(target, -bound, bound, generator)


def xavier_normal_(target, gain=1.0, generator=None):
    r"""Glorot normal: :math:`\sigma = \text{gain}\sqrt{2/(\text{fan\_in}+\text{fan\_out})}`."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(target)
    return normal_(target, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)
