"""graphm.functional: NumPy-level ops with torch.nn.functional's names and signatures.

Every function takes NumPy arrays and returns new NumPy arrays; the differentiable ones also
accept :class:`graphm.Tensor` and then return a Tensor (see ``_dispatch.py``).
"""
from graphm.functional.convolution import (ConvGrads, conv, conv1d, conv2d, conv3d, conv_backward,
                                    conv_transpose, conv_transpose1d, conv_transpose2d,
                                    conv_transpose3d, conv_transpose_backward)

__all__ = ["ConvGrads", "conv", "conv1d", "conv2d", "conv3d", "conv_backward", "conv_transpose",
           "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose_backward"]
