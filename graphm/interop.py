"""The way out to PyTorch and back: ``to_torch(module)`` and ``from_torch(torch_module)``.

graphm's layers keep PyTorch's constructor arguments, parameter names and weight layouts
(a Conv2d weight is ``(out, in / groups, kH, kW)`` in both, a ConvTranspose2d weight
``(in, out / groups, kH, kW)``), so converting is a matter of building the same layers and
copying arrays: no transposition, no renaming. Outputs then match to float32 rounding, and a
round trip (graphm -> torch -> graphm) gives back the same arrays bit for bit.

Supported: ``Sequential`` (nested too, names kept), ``Conv1d/2d/3d``,
``ConvTranspose1d/2d/3d``, ``Linear``, ``ReLU``, ``Sigmoid``, ``Tanh``, ``MaxPool1d/2d/3d``,
``AvgPool1d/2d/3d``, ``Flatten``, ``CrossEntropyLoss``, ``MSELoss``. A custom Module's
``forward`` is code, which cannot be translated: convert its layers one by one instead.

This is the only graphm module that imports torch, and only when one of its functions is called;
without PyTorch it raises an ImportError saying how to install it. From a PyTorch model, the
PyTorch ecosystem (``torch.distributed``, DDP, FSDP, export) takes it further than one machine.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["to_torch", "from_torch"]

_INSTALL_HINT = "pip install torch==2.13.0"

_CONV = ("Conv1d", "Conv2d", "Conv3d")
_CONV_TRANSPOSE = ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
_STATELESS = ("ReLU", "Sigmoid", "Tanh", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d",
              "AvgPool2d", "AvgPool3d", "Flatten", "CrossEntropyLoss", "MSELoss")
SUPPORTED = ("Sequential", "Linear") + _CONV + _CONV_TRANSPOSE + _STATELESS


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"graphm.interop needs PyTorch, which is not installed: "
                          f"{_INSTALL_HINT}") from error
    return torch


def _unsupported(module, direction):
    raise TypeError(f"{direction}: cannot convert a {type(module).__module__}."
                    f"{type(module).__qualname__}; supported layers are {', '.join(SUPPORTED)}. "
                    "A custom Module's forward() is code: rebuild it on the other side and "
                    "convert its layers one by one")


def _torch_dtype(torch, dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dtype]


def _copy_to_torch(torch, parameter, array):
    """Copy ``array`` into the torch Parameter (exact: same dtype, same layout)."""
    with torch.no_grad():
        parameter.copy_(torch.from_numpy(np.array(array, copy=True)))


def to_torch(module):
    """The equivalent ``torch.nn`` module, with identical weights (copied, not shared).

    Parameters
    ----------
    module : graphm.nn.Module
        A supported layer, or a Sequential of them.

    Returns
    -------
    torch.nn.Module
        In training mode if ``module`` is, with parameters of the same dtype.
    """
    torch = _torch()
    from graphm import nn
    kind = type(module).__name__
    if isinstance(module, nn.Sequential) and type(module) is nn.Sequential:
        converted = torch.nn.Sequential(OrderedDict(
            (name, to_torch(child)) for name, child in module.named_children()))
    elif kind in _CONV + _CONV_TRANSPOSE and type(module) is getattr(nn, kind):
        options = dict(stride=module.stride, padding=module.padding, dilation=module.dilation,
                       groups=module.groups, bias=module.bias is not None,
                       dtype=_torch_dtype(torch, module.weight.dtype))
        if kind in _CONV_TRANSPOSE:
            options["output_padding"] = module.output_padding
        converted = getattr(torch.nn, kind)(module.in_channels, module.out_channels,
                                            module.kernel_size, **options)
    elif kind == "Linear" and type(module) is nn.Linear:
        converted = torch.nn.Linear(module.in_features, module.out_features,
                                    bias=module.bias is not None,
                                    dtype=_torch_dtype(torch, module.weight.dtype))
    elif kind in _STATELESS and type(module) is getattr(nn, kind):
        converted = getattr(torch.nn, kind)(**module._config)
    else:
        _unsupported(module, "to_torch")
    for name, parameter in module._parameters.items():
        if parameter is not None:
            _copy_to_torch(torch, getattr(converted, name), parameter.data)
    converted.train(module.training)
    return converted


def _torch_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else value


def from_torch(torch_module):
    """The equivalent graphm module, with identical weights (copied, not shared).

    Parameters
    ----------
    torch_module : torch.nn.Module
        A supported layer, or a ``torch.nn.Sequential`` of them, on the CPU, in float32 or
        float64, with ``padding_mode='zeros'``.

    Returns
    -------
    graphm.nn.Module
    """
    torch = _torch()
    from graphm import nn
    kind = type(torch_module).__name__
    if type(torch_module) is torch.nn.Sequential:
        converted = nn.Sequential(OrderedDict(
            (name, from_torch(child)) for name, child in torch_module.named_children()))
    elif kind in _CONV + _CONV_TRANSPOSE and type(torch_module) is getattr(torch.nn, kind):
        m = torch_module
        options = dict(stride=m.stride, padding=_torch_tuple(m.padding), dilation=m.dilation,
                       groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                       dtype=_numpy_dtype(m.weight))
        if kind in _CONV_TRANSPOSE:
            options["output_padding"] = m.output_padding
        converted = getattr(nn, kind)(m.in_channels, m.out_channels, m.kernel_size, **options)
    elif kind == "Linear" and type(torch_module) is torch.nn.Linear:
        m = torch_module
        converted = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                              dtype=_numpy_dtype(m.weight))
    elif kind in ("ReLU", "Sigmoid", "Tanh") and type(torch_module) is getattr(torch.nn, kind):
        converted = getattr(nn, kind)()
    elif kind == "Flatten" and type(torch_module) is torch.nn.Flatten:
        converted = nn.Flatten(torch_module.start_dim, torch_module.end_dim)
    elif kind.startswith("MaxPool") and type(torch_module) is getattr(torch.nn, kind, None):
        m = torch_module
        converted = getattr(nn, kind)(m.kernel_size, m.stride, m.padding, m.dilation,
                                      m.return_indices, m.ceil_mode)
    elif kind.startswith("AvgPool") and type(torch_module) is getattr(torch.nn, kind, None):
        m = torch_module
        extra = {} if kind == "AvgPool1d" else {"divisor_override": m.divisor_override}
        converted = getattr(nn, kind)(_torch_tuple(m.kernel_size), _torch_tuple(m.stride),
                                      _torch_tuple(m.padding), m.ceil_mode,
                                      m.count_include_pad, **extra)
    elif kind in ("CrossEntropyLoss", "MSELoss") and \
            type(torch_module) is getattr(torch.nn, kind):
        m = torch_module
        converted = nn.CrossEntropyLoss(m.reduction, m.label_smoothing) \
            if kind == "CrossEntropyLoss" else nn.MSELoss(m.reduction)
    else:
        _unsupported(torch_module, "from_torch")
    for name, parameter in converted._parameters.items():
        if parameter is not None:
            source = getattr(torch_module, name)
            parameter.data[...] = source.detach().cpu().numpy()
    converted.train(torch_module.training)
    return converted


def _numpy_dtype(parameter):
    dtype = np.dtype(str(parameter.dtype).replace("torch.", ""))
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"from_torch: graphm holds float32 or float64 weights, this layer has "
                        f"{parameter.dtype}; convert it first (module.float())")
    if parameter.device.type != "cpu":
        raise ValueError(f"from_torch: the layer is on {parameter.device}; move it to the CPU "
                         "first (module.cpu())")
    return dtype
