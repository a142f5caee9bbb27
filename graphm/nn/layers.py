"""The layers: convolutions, linear, activations, pooling, flatten, losses.

Each layer keeps PyTorch's constructor arguments, parameter names and shapes (so state dicts
carry over name for name, see :mod:`graphm.interop`) and its default initialisation. Each
``forward`` is one call into :mod:`graphm.functional`, which differentiates it through
:mod:`graphm.ops`: a layer holds weights, never a derivative.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from graphm import functional as F
from graphm.functional._checks import LARGEST_PARAMETER, axis_entries, check_bool, check_size
from graphm.nn import init
from graphm.nn.module import Module, Parameter, _check_device, _dtype

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
           "Linear", "ReLU", "Sigmoid", "Tanh", "MaxPool1d", "MaxPool2d", "MaxPool3d",
           "AvgPool1d", "AvgPool2d", "AvgPool3d", "Flatten", "CrossEntropyLoss", "MSELoss"]


def _positive_int(layer, name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def _ntuple(layer, name, value, dims, minimum):
    """``3`` -> ``(3, 3)`` for dims 2; a tuple/list must have ``dims`` ints >= minimum (a
    1-tuple is broadcast, PyTorch's rule for the functional ops, see ``axis_entries``)."""
    if isinstance(value, numbers.Integral):
        values = (value,) * dims
    elif isinstance(value, (tuple, list)):
        values = tuple(axis_entries(value, dims))
    else:
        raise TypeError(f"{layer}: {name} must be an int or a tuple of {dims} ints, got "
                        f"{value!r} of type {type(value).__name__}")
    if len(values) != dims or any(isinstance(v, (bool, np.bool_)) or
                                  not isinstance(v, numbers.Integral) or v < minimum
                                  for v in values):
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{layer}: {name} must be a {bound} int or a tuple of {dims} such ints, "
                         f"got {value!r}")
    values = tuple(int(v) for v in values)
    if any(v > LARGEST_PARAMETER for v in values):
        raise ValueError(f"{layer}: {name}={values} is too large; each value must be at most "
                         f"2**31 - 1")
    return values


# --------------------------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------------------------

class _ConvNd(Module):
    """Shared by Conv{1,2,3}d and ConvTranspose{1,2,3}d: arguments, weights, initialisation."""

    dims = 0
    transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                 bias, padding_mode, device, dtype, output_padding=0):
        super().__init__()
        layer = type(self).__name__
        _check_device(layer, device)
        in_channels = _positive_int(layer, "in_channels", in_channels)
        out_channels = _positive_int(layer, "out_channels", out_channels)
        groups = _positive_int(layer, "groups", groups)
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(f"{layer}: {name}={channels} must be divisible by groups={groups}")
        if not isinstance(padding_mode, str) or padding_mode != "zeros":
            raise ValueError(f"{layer}: graphm supports padding_mode='zeros' only, got "
                             f"{padding_mode!r}")
        d = self.dims
        kernel_size = _ntuple(layer, "kernel_size", kernel_size, d, 1)
        stride = _ntuple(layer, "stride", stride, d, 1)
        dilation = _ntuple(layer, "dilation", dilation, d, 1)
        if isinstance(padding, str):
            if self.transposed or padding not in ("same", "valid"):
                allowed = "ints" if self.transposed else "ints, 'same' or 'valid'"
                raise ValueError(f"{layer}: padding must be {allowed}, got {padding!r}")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError(f"{layer}: padding='same' needs stride 1, got stride={stride}")
        else:
            padding = _ntuple(layer, "padding", padding, d, 0)
        dtype = _dtype(layer, dtype)

        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups, self.padding_mode = dilation, groups, padding_mode
        if self.transposed:
            self.output_padding = _ntuple(layer, "output_padding", output_padding, d, 0)
            # PyTorch's ConvTranspose layout: (inC, outC / groups, *k)
            weight_shape = (in_channels, out_channels // groups) + kernel_size
        else:
            weight_shape = (out_channels, in_channels // groups) + kernel_size
        check_size(layer, "weight", weight_shape,
                   f"in_channels={in_channels}, out_channels={out_channels}, groups={groups}, "
                   f"kernel_size={kernel_size}")
        self.weight = Parameter(np.empty(weight_shape, dtype))
        if check_bool(layer, "bias", bias):
            self.bias = Parameter(np.empty(out_channels, dtype))
        else:
            self.register_parameter("bias", None)
        self._config = dict(in_channels=in_channels, out_channels=out_channels,
                            kernel_size=kernel_size, stride=stride, padding=padding,
                            dilation=dilation, groups=groups, bias=bool(bias),
                            dtype=dtype.name)
        if self.transposed:
            self._config["output_padding"] = self.output_padding
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's default: kaiming-uniform with a = sqrt(5) (bound 1/sqrt(fan_in)), and the
        bias uniform in +-1/sqrt(fan_in)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * self.dims:
            text += f", padding={self.padding!r}"
        if self.transposed and self.output_padding != (0,) * self.dims:
            text += f", output_padding={self.output_padding}"
        if self.dilation != (1,) * self.dims:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class _Conv(_ConvNd):
    _function = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)

    def forward(self, input):
        return type(self)._function(input, self.weight, self.bias, self.stride, self.padding,
                                    self.dilation, self.groups)


class Conv1d(_Conv):
    """1-d convolution over ``(N, C_in, L)`` (or ``(C_in, L)``), as ``torch.nn.Conv1d``.

    Weight ``(C_out, C_in / groups, k)``, bias ``(C_out,)``.
    """

    dims = 1
    _function = staticmethod(F.conv1d)


class Conv2d(_Conv):
    """2-d convolution over ``(N, C_in, H, W)`` (or ``(C_in, H, W)``), as ``torch.nn.Conv2d``.

    Weight ``(C_out, C_in / groups, kH, kW)``, bias ``(C_out,)``.
    """

    dims = 2
    _function = staticmethod(F.conv2d)


class Conv3d(_Conv):
    """3-d convolution over ``(N, C_in, D, H, W)``, as ``torch.nn.Conv3d``.

    Weight ``(C_out, C_in / groups, kD, kH, kW)``, bias ``(C_out,)``.
    """

    dims = 3
    _function = staticmethod(F.conv3d)


class _ConvTranspose(_ConvNd):
    transposed = True
    _function = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype, output_padding=output_padding)

    def forward(self, input):
        return type(self)._function(input, self.weight, self.bias, self.stride, self.padding,
                                    self.output_padding, self.groups, self.dilation)


class ConvTranspose1d(_ConvTranspose):
    """1-d transposed convolution (the adjoint of Conv1d), as ``torch.nn.ConvTranspose1d``.

    Weight ``(C_in, C_out / groups, k)``, bias ``(C_out,)``.
    """

    dims = 1
    _function = staticmethod(F.conv_transpose1d)


class ConvTranspose2d(_ConvTranspose):
    """2-d transposed convolution (the adjoint of Conv2d), as ``torch.nn.ConvTranspose2d``.

    Weight ``(C_in, C_out / groups, kH, kW)``, bias ``(C_out,)``. With stride ``s`` it
    upsamples: ``out = (in - 1) s - 2p + d (k - 1) + output_padding + 1``.
    """

    dims = 2
    _function = staticmethod(F.conv_transpose2d)


class ConvTranspose3d(_ConvTranspose):
    """3-d transposed convolution, as ``torch.nn.ConvTranspose3d``.

    Weight ``(C_in, C_out / groups, kD, kH, kW)``, bias ``(C_out,)``.
    """

    dims = 3
    _function = staticmethod(F.conv_transpose3d)


# --------------------------------------------------------------------------------------------
# Linear
# --------------------------------------------------------------------------------------------

class Linear(Module):
    r"""``y = x W^T + b`` on the last axis, as ``torch.nn.Linear``.

    Weight ``(out_features, in_features)``, bias ``(out_features,)``, both initialised as in
    PyTorch (uniform in :math:`\pm 1/\sqrt{\text{in\_features}}`).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        _check_device("Linear", device)
        self.in_features = _positive_int("Linear", "in_features", in_features)
        self.out_features = _positive_int("Linear", "out_features", out_features)
        dtype = _dtype("Linear", dtype)
        check_size("Linear", "weight", (self.out_features, self.in_features),
                   f"in_features={self.in_features}, out_features={self.out_features}")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype))
        if check_bool("Linear", "bias", bias):
            self.bias = Parameter(np.empty(self.out_features, dtype))
        else:
            self.register_parameter("bias", None)
        self._config = dict(in_features=self.in_features, out_features=self.out_features,
                            bias=bool(bias), dtype=dtype.name)
        self.reset_parameters()

    reset_parameters = _ConvNd.reset_parameters

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# --------------------------------------------------------------------------------------------
# Activations, reshaping
# --------------------------------------------------------------------------------------------

class _Stateless(Module):
    """A layer without parameters whose constructor arguments are its whole description."""

    def __init__(self, **config):
        super().__init__()
        self._config = config
        for name, value in config.items():
            object.__setattr__(self, name, value)

    def extra_repr(self):
        return ", ".join(f"{key}={value!r}" for key, value in self._config.items())


class ReLU(_Stateless):
    """``max(x, 0)`` elementwise. ``inplace`` is accepted for PyTorch code and ignored."""

    def __init__(self, inplace=False):
        super().__init__()
        object.__setattr__(self, "inplace", check_bool("ReLU", "inplace", inplace))

    def forward(self, input):
        return F.relu(input)


class Sigmoid(_Stateless):
    """``1 / (1 + exp(-x))`` elementwise."""

    def __init__(self):   # no arguments, as in PyTorch (an unknown one is a TypeError)
        super().__init__()

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(_Stateless):
    """``tanh(x)`` elementwise."""

    def __init__(self):
        super().__init__()

    def forward(self, input):
        return F.tanh(input)


class Flatten(_Stateless):
    """Merge axes ``start_dim..end_dim`` into one; the default keeps the batch axis."""

    def __init__(self, start_dim=1, end_dim=-1):
        for name, dim in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
                raise TypeError(f"Flatten: {name} must be an int, got {dim!r}")
        super().__init__(start_dim=int(start_dim), end_dim=int(end_dim))

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------

class _MaxPool(_Stateless):
    _function = None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        if return_indices:
            raise ValueError(f"{type(self).__name__}: return_indices=True is not supported; call "
                             f"graphm.functional.max_pool{self.dims}d(..., return_indices=True) "
                             "on NumPy arrays")
        # PyTorch stores stride=None as the kernel size (non-overlapping windows); so do we
        super().__init__(kernel_size=kernel_size,
                         stride=kernel_size if stride is None else stride, padding=padding,
                         dilation=dilation,
                         ceil_mode=check_bool(type(self).__name__, "ceil_mode", ceil_mode))

    def forward(self, input):
        return type(self)._function(input, self.kernel_size, self.stride, self.padding,
                                    self.dilation, self.ceil_mode)


class MaxPool1d(_MaxPool):
    """The maximum over each window of ``(N, C, L)``, as ``torch.nn.MaxPool1d``."""
    dims = 1
    _function = staticmethod(F.max_pool1d)


class MaxPool2d(_MaxPool):
    """The maximum over each window of ``(N, C, H, W)``; ``stride`` defaults to the kernel."""
    dims = 2
    _function = staticmethod(F.max_pool2d)


class MaxPool3d(_MaxPool):
    """The maximum over each window of ``(N, C, D, H, W)``, as ``torch.nn.MaxPool3d``."""
    dims = 3
    _function = staticmethod(F.max_pool3d)


class _AvgPool(_Stateless):
    _function = None

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        stride = kernel_size if stride is None else stride
        if self.dims == 1:   # PyTorch's AvgPool1d keeps 1-tuples; mirrored for exact round trips
            kernel_size, stride, padding = (tuple(v) if isinstance(v, (tuple, list)) else (v,)
                                            for v in (kernel_size, stride, padding))
        config = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                      ceil_mode=check_bool(type(self).__name__, "ceil_mode", ceil_mode),
                      count_include_pad=check_bool(type(self).__name__, "count_include_pad",
                                                   count_include_pad))
        if self.dims != 1:   # PyTorch's AvgPool1d has no divisor_override
            config["divisor_override"] = divisor_override
        elif divisor_override is not None:
            raise ValueError("AvgPool1d: divisor_override is not an argument of AvgPool1d")
        super().__init__(**config)

    def forward(self, input):
        extra = () if self.dims == 1 else (self.divisor_override,)
        return type(self)._function(input, self.kernel_size, self.stride, self.padding,
                                    self.ceil_mode, self.count_include_pad, *extra)


class AvgPool1d(_AvgPool):
    """The mean over each window of ``(N, C, L)``, as ``torch.nn.AvgPool1d``."""
    dims = 1
    _function = staticmethod(F.avg_pool1d)


class AvgPool2d(_AvgPool):
    """The mean over each window of ``(N, C, H, W)``; ``stride`` defaults to the kernel."""
    dims = 2
    _function = staticmethod(F.avg_pool2d)


class AvgPool3d(_AvgPool):
    """The mean over each window of ``(N, C, D, H, W)``, as ``torch.nn.AvgPool3d``."""
    dims = 3
    _function = staticmethod(F.avg_pool3d)


# --------------------------------------------------------------------------------------------
# Losses (the functional forms are graphm.functional.cross_entropy / mse_loss)
# --------------------------------------------------------------------------------------------

class CrossEntropyLoss(_Stateless):
    """Cross-entropy of logits ``(N, classes)`` against integer labels ``(N,)``, mean over N."""

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction=reduction, label_smoothing=float(label_smoothing))

    def forward(self, input, target):
        return F.cross_entropy(input, target, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


class MSELoss(_Stateless):
    """Mean squared error between two arrays of one shape."""

    def __init__(self, reduction="mean"):
        super().__init__(reduction=reduction)

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)
