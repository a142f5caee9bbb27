"""``Module`` and ``Parameter``: how a network holds its weights, as in ``torch.nn``.

A Module is an object whose attributes may be Parameters (trainable arrays) or other Modules.
Assigning ``self.conv1 = Conv2d(...)`` registers the child; assigning ``self.weight =
Parameter(...)`` registers the weight. From that registry come ``parameters()`` (what an
optimizer updates), ``state_dict()`` (what a checkpoint stores, under dotted names such as
``features.0.weight``) and ``architecture()`` (what a checkpoint says the network *is*).

``forward`` is written once with :mod:`graphm.functional`. Called on a :class:`graphm.Tensor` it
runs eagerly and records the tape; :func:`graphm.compile` calls the same ``forward`` with the
Vars of a :class:`graphm.GraphM` instead, which traces it into a compiled program.
"""
from __future__ import annotations

import json
from collections import OrderedDict, namedtuple

import numpy as np

from graphm.ops.base import FLOAT_DTYPES
from graphm.tensor import Tensor

__all__ = ["Parameter", "Module", "Sequential", "from_architecture", "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A Tensor that is a weight of a Module: it requires a gradient and is registered by
    assignment to a Module attribute.

    Parameters
    ----------
    data : array_like
        Copied; float32 or float64.
    requires_grad : bool, default True
    """

    def __init__(self, data, requires_grad=True):
        super().__init__(data)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"Parameter: data must be float32 or float64, got {self.dtype}")
        self.requires_grad_(requires_grad)


def _dtype(fname, dtype):
    """float32 unless told otherwise (PyTorch's default dtype); only float32/float64."""
    try:
        dtype = np.dtype(np.float32 if dtype is None else dtype)
    except TypeError:
        raise TypeError(f"{fname}: dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fname}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _check_device(fname, device):
    if device not in (None, "cpu"):
        raise ValueError(f"{fname}: graphm runs on the CPU only, got device={device!r} (to train "
                         "elsewhere, move the model to PyTorch with graphm.interop.to_torch)")


def _as_dtype(value):
    """``value`` as a NumPy dtype if it names one (``np.float64``, ``"float64"``, ``float``,
    ``torch.float64``), else None (it may be a device)."""
    if value is None:
        return None
    if type(value).__module__ == "torch":       # torch.float64 -> "float64", without torch
        value = str(value).removeprefix("torch.")
    try:
        return np.dtype(value)
    except TypeError:
        return None


def _values(value):
    """The NumPy array of a state-dict entry (an array, or a Tensor whose values are ``.data``)."""
    return value.data if isinstance(value, Tensor) else np.asarray(value)


class Module:
    """Base class of every layer and network.

    Subclasses call ``super().__init__()`` first, assign their Parameters and child Modules as
    attributes, and define ``forward``. Calling the module calls ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration -----------------------------------------------------------------------------

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called: "
                                 f"call super().__init__() first in {type(self).__name__}.__init__")
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            self._parameters.pop(name, None)
            self._modules[name] = value
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} "
                                "(a Parameter or None is required)")
            self._parameters[name] = None
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to child module {name!r}"
                                " (a Module or None is required)")
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # called only when normal lookup fails: parameters and children live in the registries
        registries = self.__dict__
        if "_parameters" in registries and name in registries["_parameters"]:
            return registries["_parameters"][name]
        if "_modules" in registries and name in registries["_modules"]:
            return registries["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name, parameter):
        """Register ``parameter`` (a Parameter, or None for an absent bias) under ``name``."""
        if parameter is not None and not isinstance(parameter, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got "
                            f"{type(parameter).__name__}")
        self.__dict__.pop(name, None)
        self._parameters[name] = parameter

    def add_module(self, name, module):
        """Register a child module under ``name`` (``None`` keeps the slot empty)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        self.__dict__.pop(name, None)
        self._modules[name] = module

    # -- running ----------------------------------------------------------------------------------

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    # -- walking the tree -----------------------------------------------------------------------

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix="", memo=None):
        """This module and every descendant, with dotted names (``""`` for this one); a module
        used in several places is listed once, at its first place (as in PyTorch)."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self.named_children():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix="", recurse=True):
        """``(dotted name, Parameter)`` pairs, each Parameter once, in registration order."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, parameter in module._parameters.items():
                if parameter is None or id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                yield (f"{module_prefix}.{name}" if module_prefix else name), parameter

    def parameters(self, recurse=True):
        for _, parameter in self.named_parameters(recurse=recurse):
            yield parameter

    # -- modes and gradients ------------------------------------------------------------------------

    def train(self, mode=True):
        """Set training mode here and below (graphm's layers behave the same in both modes;
        the flag is kept for models and code written for PyTorch)."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients of every parameter (``grad = None``, or zeros)."""
        for parameter in self.parameters():
            parameter.zero_grad(set_to_none)

    def to(self, *args, **kwargs):
        """Convert every parameter (and its gradient) to a dtype, in place, as PyTorch's
        ``Module.to``; returns self.

        Called as ``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(tensor)`` (that
        tensor's dtype) or with the keywords ``device=``, ``dtype=`` and ``non_blocking=``
        (accepted and ignored: graphm copies at once). A dtype is float32 or float64, as a
        NumPy dtype, its name, or a ``torch.float32``/``torch.float64``; a device is ``"cpu"``
        (``"cpu:0"``, ``torch.device("cpu")``), since graphm runs on the CPU only. The
        Parameters stay the same objects, so an optimizer built before still updates them.

        Raises
        ------
        ValueError
            A device other than the CPU.
        TypeError
            A dtype other than float32 and float64, or arguments ``Module.to`` does not take.
        """
        fname = f"{type(self).__name__}.to"
        unknown = sorted(set(kwargs) - {"device", "dtype", "non_blocking"})
        if unknown or len(args) > 2:
            raise TypeError(f"{fname}: takes (device, dtype), (dtype) or (tensor) and the "
                            f"keywords device, dtype, non_blocking; got {len(args)} positional "
                            f"arguments{' and ' + ', '.join(unknown) if unknown else ''}")
        device, dtype = kwargs.get("device"), kwargs.get("dtype")
        for argument in args:
            if isinstance(argument, Tensor):
                dtype = argument.dtype
            elif _as_dtype(argument) is not None:
                dtype = argument
            else:
                device = argument
        if device is not None:
            kind = getattr(device, "type", device)      # torch.device("cpu").type == "cpu"
            if not (isinstance(kind, str) and kind.split(":")[0] == "cpu"):
                raise ValueError(f"{fname}: graphm runs on the CPU only, got device={device!r} "
                                 "(to train elsewhere, move the model to PyTorch with "
                                 "graphm.interop.to_torch)")
        if dtype is None:
            return self
        as_numpy = _as_dtype(dtype)
        dtype = _dtype(fname, dtype if as_numpy is None else as_numpy)
        for parameter in self.parameters():
            parameter.data = parameter.data.astype(dtype, copy=False)
            if parameter.grad is not None:
                parameter.grad = parameter.grad.astype(dtype, copy=False)
        return self

    def cpu(self):
        """The module itself: graphm runs on the CPU (``Module.cpu`` in PyTorch)."""
        return self

    def cuda(self, device=None):
        """Always an error: graphm runs on the CPU only."""
        raise ValueError(f"{type(self).__name__}.cuda: graphm runs on the CPU only (to train "
                         "on a GPU, move the model to PyTorch with graphm.interop.to_torch)")

    def float(self):
        """Convert the parameters to float32 in place; returns self."""
        return self.to(np.float32)

    def double(self):
        """Convert the parameters to float64 in place; returns self."""
        return self.to(np.float64)

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self):
        """``{dotted name: copy of the values}`` for every parameter, in registration order.

        Copies, so a state taken for a checkpoint does not change as training goes on.
        """
        return OrderedDict((name, parameter.data.copy())
                           for name, parameter in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from ``state_dict`` into the parameters, in place.

        Parameters
        ----------
        state_dict : mapping of dotted name -> array
        strict : bool, default True
            Require exactly the module's keys. With ``strict=False`` missing and unexpected keys
            are returned instead of raising. A shape mismatch always raises.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, as PyTorch.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a mapping name -> array, got "
                            f"{type(state_dict).__name__}")
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing key(s) {missing}")
            if unexpected:
                parts.append(f"unexpected key(s) {unexpected}")
            raise KeyError(f"load_state_dict for {type(self).__name__}: {'; '.join(parts)} "
                           f"(this module has {list(own)})")
        mismatched = []
        for name, parameter in own.items():
            if name in state_dict:
                value = _values(state_dict[name])
                if value.shape != parameter.shape:
                    mismatched.append(f"{name}: checkpoint {value.shape}, model {parameter.shape}")
        if mismatched:
            raise ValueError(f"load_state_dict for {type(self).__name__}: shape mismatch for "
                             + "; ".join(mismatched))
        for name, parameter in own.items():
            if name in state_dict:
                value = _values(state_dict[name])
                parameter.data[...] = value    # in place: optimizers keep pointing at it
        return IncompatibleKeys(missing, unexpected)

    # -- describing -------------------------------------------------------------------------------

    def architecture(self):
        """A JSON-like description of the network: layer types and constructor arguments.

        Built-in layers and Sequential can be rebuilt from it with :func:`from_architecture`;
        a custom Module is described by its class path and its children's descriptions.
        """
        config = getattr(self, "_config", None)
        if config is not None:
            return {"type": type(self).__name__, "args": json.loads(json.dumps(config))}
        cls = type(self)
        return {"type": f"{cls.__module__}.{cls.__qualname__}",
                "children": {name: child.architecture() for name, child in self.named_children()}}

    def extra_repr(self):
        """The text inside ``Layer(...)`` in ``repr``; layers override it."""
        return ""

    def __repr__(self):
        lines = []
        for name, child in self.named_children():
            child_lines = repr(child).split("\n")
            lines.append(f"({name}): " + "\n  ".join(child_lines))
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


class Sequential(Module):
    """Modules applied one after another: ``Sequential(Conv2d(1, 8, 3), ReLU(), ...)``.

    Also accepts one ``OrderedDict`` of named modules. Supports ``len``, indexing (an int gives
    the layer, a slice a new Sequential sharing the layers) and iteration.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, module in items:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: item {name!r} is a {type(module).__name__}, not a "
                                "Module")
            self.add_module(name, module)

    def forward(self, input):
        for module in self.children():
            input = module(input)
        return input

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, index):
        modules = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(modules[index]))
        try:
            return modules[index][1]
        except (IndexError, TypeError):
            raise IndexError(f"Sequential index {index!r} out of range for {len(modules)} "
                             "layers") from None

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def architecture(self):
        names = list(self._modules)
        description = {"type": "Sequential",
                       "layers": [child.architecture() for child in self.children()]}
        if names != [str(i) for i in range(len(names))]:
            description["names"] = names
        return description


def from_architecture(description):
    """Rebuild a network from :meth:`Module.architecture`'s description (fresh initial weights).

    Only built-in layers and ``Sequential`` can be rebuilt; load the weights afterwards with
    ``load_state_dict``.
    """
    from graphm import nn  # the layer classes, by name
    if not isinstance(description, dict) or "type" not in description:
        raise ValueError(f"from_architecture: expected a dict with a 'type', got {description!r}")
    kind = description["type"]
    if kind == "Sequential":
        layers = [from_architecture(layer) for layer in description.get("layers", [])]
        names = description.get("names")
        if names is not None:
            return Sequential(OrderedDict(zip(names, layers)))
        return Sequential(*layers)
    cls = getattr(nn, kind, None) if kind in nn.__all__ else None
    if cls is None or "args" not in description:
        raise ValueError(f"from_architecture: cannot rebuild a {kind!r}; only graphm.nn's "
                         "built-in layers and Sequential can be rebuilt from a description")
    args = {key: tuple(value) if isinstance(value, list) else value
            for key, value in description["args"].items()}
    return cls(**args)
