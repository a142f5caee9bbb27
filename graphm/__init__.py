"""graphm: an educational deep-learning framework whose heart is convolution.

N-dimensional convolution and transposed convolution, their adjoints (reverse mode) and
tangents (forward mode), written as typed Cython loops parallelised with OpenMP.

The layers, bottom to top (nothing imports upward)::

    spec        the math: output-size formulas and slow, obviously-right reference loops
    _kernels    typed Cython + OpenMP loops (the only compiled code)
    functional  NumPy-level ops with argument checking and torch-compatible signatures
    ops         each differentiable op once: shape rule, forward, vjp, jvp
    tensor      the eager Tensor and its tape      graph   GraphM: builder -> SSA program
    transforms  vjp, jvp, grad as function transforms
    nn, optim, data, checkpoint, viz, cli           layers, optimizers, datasets, the demos
"""
from graphm._config import get_num_threads, openmp_enabled, set_num_threads
from graphm import spec, functional
from graphm.functional._checks import get_max_elements, set_max_elements
from graphm.ops import ShapeError
from graphm.tensor import Tensor, arange, enable_grad, from_numpy, is_grad_enabled, no_grad, ones, rand, randn, tensor, zeros  # noqa: E501
from graphm.graph import GraphM
from graphm.transforms import grad, hessian, jacfwd, jacrev, jvp, value_and_grad, vjp
from graphm import testing
from graphm._random import manual_seed
from graphm.checkpoint import load, save
from graphm import data
from graphm import nn
from graphm.nn import compile
from graphm import optim
from graphm import verify

__version__ = "0.1.0"

__all__ = ["GraphM", "ShapeError", "Tensor", "compile", "data", "enable_grad", "functional",
           "get_num_threads", "grad", "is_grad_enabled", "jvp", "load", "manual_seed", "nn",
           "no_grad", "openmp_enabled", "optim", "save", "set_num_threads", "spec", "tensor",
           "testing", "value_and_grad", "vjp", "__version__"]
__all__ += ["get_max_elements", "set_max_elements"]     # the bound on array sizes (issue 12)
__all__ += ["verify"]                                    # certified bounds (issue 10)
