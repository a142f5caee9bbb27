"""graphm.functional: NumPy-level ops with torch.nn.functional's names and signatures.

Every function takes NumPy arrays and returns new NumPy arrays; the differentiable ones also
accept :class:`graphm.Tensor` and then return a Tensor (see ``_dispatch.py``).

==================  ===============================================================
module              what it holds
==================  ===============================================================
``convolution``     conv, conv_transpose (any rank, and 1-3d) and their adjoints
``activation``      relu, sigmoid, tanh, softplus, softmax, log_softmax
``linear_layer``    linear (a 1x1 convolution) and its adjoint
``pooling``         max_pool, avg_pool (1-3d) and their adjoints
``loss``            cross_entropy, nll_loss, mse_loss
``_checks``         the argument checks all of them share
==================  ===============================================================
"""
from graphm.functional.convolution import (ConvGradients, conv, conv1d, conv2d, conv3d,
                                           conv_backward, conv_output_shape, conv_transpose,
                                           conv_transpose1d, conv_transpose2d, conv_transpose3d,
                                           conv_transpose_backward, conv_transpose_output_shape,
                                           conv_weight_grad)
from graphm.functional.activation import log_softmax, relu, sigmoid, softmax, softplus, tanh
from graphm.functional.linear_layer import linear, linear_backward
from graphm.functional.pooling import (avg_pool1d, avg_pool2d, avg_pool3d, max_pool1d,
                                       max_pool2d, max_pool3d)
from graphm.functional.loss import cross_entropy, mse_loss, nll_loss

__all__ = ["ConvGradients", "conv", "conv1d", "conv2d", "conv3d", "conv_backward",
           "conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "conv_transpose_backward", "conv_weight_grad", "conv_output_shape", "conv_transpose_output_shape",
           "avg_pool1d", "avg_pool2d", "avg_pool3d", "cross_entropy", "linear",
           "linear_backward", "log_softmax", "max_pool1d", "max_pool2d", "max_pool3d",
           "mse_loss", "nll_loss", "relu", "sigmoid", "softmax", "softplus", "tanh"]
