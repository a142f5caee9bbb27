"""graphm.nn: layers and networks with PyTorch's names, arguments and initialisation.

::

    import graphm, graphm.nn as nn, graphm.functional as F

    graphm.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # (N, 16, 4, 4)
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    loss = F.cross_entropy(model(graphm.tensor(x)), y)                  # eager: records a tape
    loss.backward()                                                     # fills p.grad
    compiled = graphm.compile(model, x, loss=F.cross_entropy)           # the same weights, traced

=================  ===========================================================================
module             contents
=================  ===========================================================================
``module``         Parameter, Module, Sequential, from_architecture
``layers``         Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear, ReLU, Sigmoid, Tanh,
                   MaxPool1d/2d/3d, AvgPool1d/2d/3d, Flatten, CrossEntropyLoss, MSELoss
``init``           PyTorch's initialisers, drawn from ``graphm.manual_seed``'s generator
``compiled``       compile (a Module traced into a GraphM program), CompiledModule
=================  ===========================================================================
"""
from graphm.nn import init
from graphm.nn.module import IncompatibleKeys, Module, Parameter, Sequential, from_architecture
from graphm.nn.layers import (AvgPool1d, AvgPool2d, AvgPool3d, Conv1d, Conv2d, Conv3d,
                              ConvTranspose1d, ConvTranspose2d, ConvTranspose3d,
                              CrossEntropyLoss, Flatten, Linear, MaxPool1d, MaxPool2d, MaxPool3d,
                              MSELoss, ReLU, Sigmoid, Tanh)
from graphm.nn.compiled import CompiledModule, compile

__all__ = ["init", "IncompatibleKeys", "Module", "Parameter", "Sequential", "from_architecture",
           "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
           "Linear", "ReLU", "Sigmoid", "Tanh", "MaxPool1d", "MaxPool2d", "MaxPool3d",
           "AvgPool1d", "AvgPool2d", "AvgPool3d", "Flatten", "CrossEntropyLoss", "MSELoss",
           "CompiledModule", "compile"]
