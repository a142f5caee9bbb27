"""The linear (fully connected) layer, computed as a 1x1 convolution on graphm's kernels."""
import math

import numpy as np

from graphm.functional._checks import check_float_array, check_same_dtype, check_size
from graphm.functional._dispatch import tensor_aware
from graphm.functional.convolution import ConvGradients, conv1d, conv_backward

__all__ = ['linear', 'linear_backward']


# --------------------------------------------------------------------------------------------
# Linear layer
# --------------------------------------------------------------------------------------------

def _linear_shape(input_shape, weight_shape, bias_shape):
    """Output shape of ``linear``; ValueError naming every dimension when they do not fit."""
    if len(weight_shape) != 2:
        raise ValueError(f"linear(): weight must be 2-D (out_features, in_features), "
                         f"got shape {weight_shape}")
    if len(input_shape) < 1 or input_shape[-1] != weight_shape[1]:
        raise ValueError(f"linear(): input's last dimension must equal weight.shape[1] "
                         f"(in_features); got input {input_shape} and weight {weight_shape}")
    if bias_shape is not None and tuple(bias_shape) not in ((weight_shape[0],), ()):
        raise ValueError(f"linear(): bias must have shape ({weight_shape[0]},) "
                         f"(out_features), got {bias_shape} with weight {weight_shape}")
    return check_size("linear()", "output", tuple(input_shape[:-1]) + (weight_shape[0],),
                      f"input {tuple(input_shape)}, weight {tuple(weight_shape)}")


def _linear_arguments(fname, input, weight, bias, grad_output=None):
    """Check linear's arrays; return them with the bias as (out_features,) or None."""
    required = ("input", "weight") + (("grad_output",) if fname == "linear_backward" else ())
    for name, value in (("input", input), ("weight", weight), ("bias", bias),
                        ("grad_output", grad_output)):
        if value is not None or name in required:
            check_float_array(fname, name, value)
    check_same_dtype(fname, input=input, weight=weight, bias=bias, grad_output=grad_output)
    out_shape = _linear_shape(input.shape, weight.shape, None if bias is None else bias.shape)
    if grad_output is not None and grad_output.shape != out_shape:
        raise ValueError(f"{fname}(): grad_output must have the output's shape {out_shape}, "
                         f"got {grad_output.shape}")
    if bias is not None and bias.shape == ():
        bias = np.full(weight.shape[0], bias, dtype=bias.dtype)
    return out_shape, bias


def _as_positions(rows):
    """(M, features) rows as one sample of a 1-d convolution: (1, features, M) positions."""
    return np.ascontiguousarray(rows.T)[None]


@tensor_aware
def linear(input, weight, bias=None):
    r"""Affine map of the last axis, as ``torch.nn.functional.linear``.

    .. math:: y = x W^{\top} + b

    A linear layer is a 1x1 convolution: with the leading axes of ``x`` flattened into M rows,
    the rows are M positions of a single sample whose channels are the features, and ``W`` is a
    kernel of width 1. graphm computes it exactly so, on its convolution kernels: all of
    graphm's arithmetic then runs on one thread pool (a BLAS library's own threads would compete
    with it for the cores) and gives the same bits for any thread count.

    Parameters
    ----------
    input : ndarray, shape ``(*, in_features)``
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), optional

    Returns
    -------
    ndarray, shape ``(*, out_features)``
    """
    out_shape, bias = _linear_arguments("linear", input, weight, bias)
    rows = input.reshape(math.prod(input.shape[:-1]), weight.shape[1])   # (M, in)
    if rows.shape[0] == 0 or rows.shape[1] == 0:                         # nothing to convolve
        out = rows @ weight.T + (0 if bias is None else bias)
    else:
        out = conv1d(_as_positions(rows), weight[:, :, None], bias)[0].T  # (out, M) -> (M, out)
    return np.ascontiguousarray(out.reshape(out_shape))


def linear_backward(grad_output, input, weight):
    r"""The three gradients of :func:`linear` (with a bias), as ``conv_backward`` for a conv.

    With the leading axes flattened into rows, X (M, in) and :math:`\bar Y` (M, out):

    .. math:: \bar X = \bar Y W, \qquad \bar W = \bar Y^{\top} X, \qquad
              \bar b = \textstyle\sum_{\text{rows}} \bar Y

    computed, like the forward pass, as a 1x1 convolution (``conv_backward``).

    Returns
    -------
    ConvGradients
        ``(grad_input, grad_weight, grad_bias)``, shaped like input, weight and (out_features,).
    """
    _linear_arguments("linear_backward", input, weight, None, grad_output)
    count = math.prod(input.shape[:-1])
    rows_g = grad_output.reshape(count, weight.shape[0])                # (M, out)
    rows_x = input.reshape(count, weight.shape[1])                      # (M, in)
    if rows_x.shape[0] == 0 or rows_x.shape[1] == 0:
        return ConvGradients((rows_g @ weight).reshape(input.shape), rows_g.T @ rows_x,
                         rows_g.sum(axis=0))
    grads = conv_backward(_as_positions(rows_g), _as_positions(rows_x), weight[:, :, None])
    return ConvGradients(np.ascontiguousarray(grads.grad_input[0].T).reshape(input.shape),
                     grads.grad_weight[:, :, 0], grads.grad_bias)
