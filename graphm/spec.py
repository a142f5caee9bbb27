r"""The math of graphm: convolution written straight from its definition.

This module is the bottom layer of graphm and the Python counterpart of TorchLean's
``NN/Spec/Layers/Conv.lean``. It holds two things:

* the **output-size formulas** :func:`conv_out_spatial` and :func:`conv_transpose_out_spatial`
  (TorchLean's ``Spec.convOutSpatial`` and ``Spec.convTransposeOutSpatial``), and
* **reference implementations** of convolution, transposed convolution and their gradients:
  slow, obviously-right loops that the fast Cython kernels, the tests and the tutorials are
  measured against.

Everything here imports only NumPy and the standard library. Nothing here is fast, and nothing
here tries to be: each function loops over output (or input) positions and kernel offsets exactly
as the formula in its docstring reads. Only the innermost contraction over batch and channels is
handed to :func:`numpy.einsum`, so that test-sized problems run in milliseconds.

The index map
-------------
One equation ties convolution and transposed convolution together. On every spatial axis, output
position :math:`i`, kernel offset :math:`\kappa` and input position :math:`j` meet when

.. math::

    j = i \cdot s - p + \kappa \cdot \delta

for stride :math:`s`, (leading) padding :math:`p` and dilation :math:`\delta`. Convolution reads
this equation as a *gather*: for each output position :math:`i` it fetches the inputs :math:`j`.
Transposed convolution reads the same equation the other way round, as a *scatter*: each input
position spreads its value to the outputs it touches. Positions :math:`j` that fall outside the
array are the zero padding. :func:`_kernel_taps` enumerates the triples :math:`(i, \kappa, j)`;
every reference below is a loop over them.

Zero padding and non-finite values
----------------------------------
graphm's rule, which its kernels follow too: **zero padding is an explicit value 0 with IEEE
arithmetic.** Finite inputs cannot tell the difference, but NaN and Inf can, since
:math:`0 \cdot \infty` and :math:`0 \cdot \mathrm{NaN}` are NaN:

* a *gather* over a padded input forms the product with the padded zero at every padded tap,
  exactly as ``np.pad`` followed by the correlation sum would. So in :func:`conv` a NaN or Inf
  weight meeting a padded tap makes that output NaN, and in the weight gradient of
  :func:`conv_backward` a NaN or Inf ``grad_output`` meeting a padded tap makes that weight
  gradient NaN. The same holds where a convolution runs inside the adjoints:
  :func:`conv_transpose_backward`'s input gradient (a convolution of ``grad_output`` with
  the weight) and its weight gradient (the input times the padded ``grad_output``).
* a *scatter* never forms the products that land in the padding: in :func:`conv_transpose`
  the positions cropped away by its padding are never computed, and neither are the
  input-gradient terms of :func:`conv_backward` that would belong to padded positions.

Layouts are PyTorch's: activations are channels-first, ``(N, C, *spatial)`` or, for one sample,
``(C, *spatial)``; a convolution weight is ``(out_channels, in_channels / groups, *kernel)`` and a
transposed-convolution weight is ``(in_channels, out_channels / groups, *kernel)``.
"""
import numbers
from typing import NamedTuple

import numpy as np

__all__ = [
    "ConvGradients",
    "conv",
    "conv_backward",
    "conv_out_spatial",
    "conv_transpose",
    "conv_transpose_backward",
    "conv_transpose_out_spatial",
    "same_padding",
]


class ConvGradients(NamedTuple):
    """The three gradients of a convolution-like op, as a named record (TorchLean returns one too).

    Attributes
    ----------
    grad_input : numpy.ndarray
        Gradient with respect to the input; same shape as the input.
    grad_weight : numpy.ndarray
        Gradient with respect to the weight; same shape as the weight.
    grad_bias : numpy.ndarray
        Gradient with respect to the bias, shape ``(out_channels,)``.
    """

    grad_input: np.ndarray
    grad_weight: np.ndarray
    grad_bias: np.ndarray


# --------------------------------------------------------------------------------------------
# Output-size formulas
# --------------------------------------------------------------------------------------------

def conv_out_spatial(in_spatial, kernel, stride, padding, dilation=1):
    r"""Spatial size of a convolution's output (TorchLean's ``Spec.convOutSpatial``).

    On each spatial axis,

    .. math::

        \text{out} = \left\lfloor \frac{\text{in} + 2p - \delta\,(k - 1) - 1}{s} \right\rfloor + 1 ,

    where :math:`\delta\,(k - 1) + 1` is the extent of the dilated kernel. The floor is PyTorch's
    rule: when the stride does not tile the padded input, the positions left over at the end are
    dropped.

    Parameters
    ----------
    in_spatial : int or sequence of int
        Input extent(s), one per spatial axis.
    kernel, stride, padding, dilation : int or sequence of int
        Kernel extent (>= 1), stride (>= 1), zero padding added on *both* sides (>= 0) and
        dilation (>= 1). If ``in_spatial`` is an int these must be ints too; if it is a sequence,
        each may be an int (the same on every axis) or a sequence of the same length.

    Returns
    -------
    int or tuple of int
        An int if ``in_spatial`` is an int, else a tuple with one extent per axis. The formula is
        returned as is: a value below 1 means the dilated kernel does not fit in the padded input,
        which the convolution ops reject.

    Raises
    ------
    ValueError
        If ``kernel``, ``stride`` or ``dilation`` is below 1, ``padding`` or ``in_spatial`` is
        negative, or a sequence's length differs from ``len(in_spatial)``.
    TypeError
        If an argument is not an int (or a sequence of ints where that is allowed).

    Examples
    --------
    >>> conv_out_spatial(28, kernel=5, stride=1, padding=2)
    28
    >>> conv_out_spatial((32, 7), kernel=3, stride=2, padding=(1, 0))
    (16, 3)
    """
    rank = _spatial_rank(in_spatial)
    in_spatial = _per_axis("in_spatial", in_spatial, rank, minimum=0)
    kernel = _per_axis("kernel", kernel, rank, minimum=1)
    stride = _per_axis("stride", stride, rank, minimum=1)
    padding = _per_axis("padding", padding, rank, minimum=0)
    dilation = _per_axis("dilation", dilation, rank, minimum=1)
    # Python's // floors, also for a negative numerator, exactly as the formula says.
    out_spatial = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                        for n, k, s, p, d in zip(in_spatial, kernel, stride, padding, dilation))
    return out_spatial[0] if rank is None else out_spatial


def conv_transpose_out_spatial(in_spatial, kernel, stride, padding, output_padding=0,
                               dilation=1):
    r"""Spatial size of a transposed convolution's output (``Spec.convTransposeOutSpatial``).

    On each spatial axis,

    .. math::

        \text{out} = (\text{in} - 1)\,s - 2p + \delta\,(k - 1) + \text{output\_padding} + 1 .

    Read it as the convolution formula solved for ``in``: a strided convolution maps several input
    sizes to the same output size (the floor forgets the remainder), and ``output_padding`` picks
    which of them the transposed convolution should produce.

    Parameters
    ----------
    in_spatial : int or sequence of int
        Input extent(s) of the transposed convolution, one per spatial axis.
    kernel, stride, padding, output_padding, dilation : int or sequence of int
        Kernel extent (>= 1), stride (>= 1), padding (>= 0), extra size added at the high end of
        each axis (>= 0) and dilation (>= 1). Same broadcasting rules as :func:`conv_out_spatial`.

    Returns
    -------
    int or tuple of int
        An int if ``in_spatial`` is an int, else a tuple with one extent per axis.

    Raises
    ------
    ValueError, TypeError
        As for :func:`conv_out_spatial`; ``output_padding`` must be >= 0.

    Examples
    --------
    >>> conv_transpose_out_spatial(16, kernel=3, stride=2, padding=1, output_padding=1)
    32
    """
    rank = _spatial_rank(in_spatial)
    in_spatial = _per_axis("in_spatial", in_spatial, rank, minimum=0)
    kernel = _per_axis("kernel", kernel, rank, minimum=1)
    stride = _per_axis("stride", stride, rank, minimum=1)
    padding = _per_axis("padding", padding, rank, minimum=0)
    output_padding = _per_axis("output_padding", output_padding, rank, minimum=0)
    dilation = _per_axis("dilation", dilation, rank, minimum=1)
    out_spatial = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                        for n, k, s, p, op, d
                        in zip(in_spatial, kernel, stride, padding, output_padding, dilation))
    return out_spatial[0] if rank is None else out_spatial


def same_padding(kernel, dilation=1):
    r"""Zero padding ``(before, after)`` that makes a stride-1 convolution keep its input size.

    ``padding='same'`` pads each axis by the dilated kernel's extent minus one in total, the
    smaller half before and the larger half after (PyTorch's rule):

    .. math::

        p_{\text{total}} = \delta\,(k - 1), \qquad
        p_{\text{before}} = \lfloor p_{\text{total}} / 2 \rfloor, \qquad
        p_{\text{after}} = p_{\text{total}} - p_{\text{before}} .

    With stride 1 the output size is then
    :math:`\text{in} + p_{\text{total}} - \delta\,(k - 1) - 1 + 1 = \text{in}`. For an even kernel
    :math:`p_{\text{total}}` is odd and the padding is asymmetric, one more zero after than before.

    Parameters
    ----------
    kernel : int or sequence of int
        Kernel extent(s), >= 1.
    dilation : int or sequence of int, optional
        Dilation(s), >= 1; an int applies to every axis.

    Returns
    -------
    (before, after) : (int, int) or (tuple of int, tuple of int)
        Ints if ``kernel`` is an int, else one tuple entry per axis.

    Examples
    --------
    >>> same_padding(3)
    (1, 1)
    >>> same_padding((4, 3), dilation=(1, 2))
    ((1, 2), (2, 2))
    """
    rank = _spatial_rank(kernel, name="kernel")
    kernel = _per_axis("kernel", kernel, rank, minimum=1)
    dilation = _per_axis("dilation", dilation, rank, minimum=1)
    total = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
    before = tuple(t // 2 for t in total)
    after = tuple(t - b for t, b in zip(total, before))
    if rank is None:
        return before[0], after[0]
    return before, after


# --------------------------------------------------------------------------------------------
# Reference implementations
# --------------------------------------------------------------------------------------------

def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    r"""N-d convolution (cross-correlation), written from its definition.

    Same signature and semantics as :func:`torch.nn.functional.conv2d` and its siblings, for any
    spatial rank :math:`d` = ``weight.ndim - 2`` >= 1. With ``groups`` = :math:`G`, the channels are
    split into :math:`G` independent blocks: output channel :math:`o` belongs to group
    :math:`g = \lfloor o / (C_{\text{out}}/G) \rfloor` and reads only the
    :math:`C_g = C_{\text{in}}/G` input channels of that group:

    .. math::

        y[n, o, i] = b[o] + \sum_{c=0}^{C_g - 1} \sum_{\kappa}
                     w[o, c, \kappa] \; x[n,\; g C_g + c,\; i \cdot s - p + \kappa \cdot \delta] ,

    where :math:`i` and :math:`\kappa` are multi-indices over the spatial axes, the index
    arithmetic is per axis, and :math:`x` is zero outside its bounds (the padding): an explicit
    zero that is multiplied, so a NaN or Inf weight meeting a padded tap gives NaN (see "Zero
    padding and non-finite values" in the module docstring).

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C_in, *in_spatial)`` or, for a single sample, ``(C_in, *in_spatial)``.
    weight : numpy.ndarray
        ``(C_out, C_in / groups, *kernel)``.
    bias : numpy.ndarray, optional
        ``(C_out,)``.
    stride, dilation : int or tuple of int
        One value for every axis, or one per axis.
    padding : int, tuple of int, 'valid' or 'same'
        Zeros added on both sides of each axis. ``'valid'`` means 0; ``'same'`` (stride 1 only)
        pads so that the output has the input's size, see :func:`same_padding`.
    groups : int
        Number of channel groups; divides both ``C_in`` and ``C_out``.

    Returns
    -------
    numpy.ndarray
        ``(N, C_out, *out_spatial)``, or ``(C_out, *out_spatial)`` for an unbatched input, with
        ``out_spatial`` from :func:`conv_out_spatial`. Computed in float64, returned in the
        input's floating dtype.
    """
    weight = _float_array("weight", weight)
    rank = _rank_of_weight(weight)
    x, unbatched = _batched("input", _float_array("input", input), rank)
    result_dtype = np.result_type(x, weight)

    batch, in_channels, *in_spatial = x.shape
    out_channels, in_per_group, *kernel = weight.shape
    out_per_group = _check_groups(groups, in_channels, out_channels, in_per_group, transposed=False)
    stride, dilation, pad_before, out_spatial = _conv_geometry(
        in_spatial, kernel, stride, padding, dilation)

    # Split the channel axes into (group, channel within the group), so the sum over c runs
    # over one group only: x -> (N, G, C_g, *in), w -> (G, O_g, C_g, *k), y -> (N, G, O_g, *out).
    x_grouped = x.astype(np.float64).reshape(batch, groups, in_per_group, *in_spatial)
    w_grouped = weight.astype(np.float64).reshape(groups, out_per_group, in_per_group, *kernel)
    y_grouped = np.zeros((batch, groups, out_per_group, *out_spatial))

    # Gather: each output position i collects w[κ] · x[i·s − p + κ·δ] over the kernel offsets κ;
    # a tap in the padding reads an explicit 0 (so a NaN or Inf weight there gives NaN).
    padding_zeros = np.zeros((batch, groups, in_per_group))
    for out_index, kernel_index, in_index in _kernel_taps(
            out_spatial, kernel, stride, pad_before, dilation, bounds=in_spatial, padded=True):
        x_here = padding_zeros if in_index is None else x_grouped[(...,) + in_index]
        # (N, G, C_g) · (G, O_g, C_g) -> (N, G, O_g): contract the channels c of each group g.
        y_grouped[(...,) + out_index] += np.einsum(
            "ngc,goc->ngo", x_here, w_grouped[(...,) + kernel_index])

    y = y_grouped.reshape(batch, out_channels, *out_spatial)
    if bias is not None:
        y += _bias_column(bias, out_channels, rank)
    return _finish(y, unbatched, result_dtype)


def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                   dilation=1):
    r"""N-d transposed convolution, written from its own definition (a scatter).

    Same signature and semantics as :func:`torch.nn.functional.conv_transpose2d` and its
    siblings, for any spatial rank :math:`d` = ``weight.ndim - 2`` >= 1. Each input element
    spreads a copy of the kernel, scaled by its value, into the output:

    .. math::

        y[n,\; g O_g + o,\; i \cdot s - p + \kappa \cdot \delta] \mathrel{+}=
            x[n,\; g C_g + c,\; i] \; w[g C_g + c,\; o,\; \kappa]

    for every input position :math:`i`, kernel offset :math:`\kappa`, group :math:`g`, input
    channel :math:`c < C_g = C_{\text{in}}/G` and output channel :math:`o < O_g`, starting from
    :math:`y[n, o, \cdot] = b[o]`; contributions that land outside the output are dropped (that is
    what ``padding`` crops). It is the adjoint of :func:`conv` with the same weight,
    :math:`\langle \mathrm{conv}(x, w), y \rangle = \langle x, \mathrm{conv\_transpose}(y, w)
    \rangle`, but it is deliberately *not* computed that way here, so that the two references can
    check each other.

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C_in, *in_spatial)`` or ``(C_in, *in_spatial)``.
    weight : numpy.ndarray
        ``(C_in, C_out / groups, *kernel)`` (PyTorch's layout for transposed convolution).
    bias : numpy.ndarray, optional
        ``(C_out,)``.
    stride, padding, dilation : int or tuple of int
        As for :func:`conv`; padding strings are not allowed (PyTorch rejects them too).
    output_padding : int or tuple of int
        Extra size at the high end of each axis; must be smaller than the stride or the dilation.
    groups : int
        Number of channel groups.

    Returns
    -------
    numpy.ndarray
        ``(N, C_out, *out_spatial)`` or ``(C_out, *out_spatial)``, with ``out_spatial`` from
        :func:`conv_transpose_out_spatial`, in the input's floating dtype.
    """
    weight = _float_array("weight", weight)
    rank = _rank_of_weight(weight)
    x, unbatched = _batched("input", _float_array("input", input), rank)
    result_dtype = np.result_type(x, weight)

    batch, in_channels, *in_spatial = x.shape
    weight_in_channels, out_per_group, *kernel = weight.shape
    in_per_group = _check_groups(groups, in_channels, weight_in_channels, out_per_group,
                                 transposed=True)
    out_channels = groups * out_per_group
    stride, padding, output_padding, dilation, out_spatial = _conv_transpose_geometry(
        in_spatial, kernel, stride, padding, output_padding, dilation)

    # x -> (N, G, C_g, *in), w -> (G, C_g, O_g, *k), y -> (N, G, O_g, *out).
    x_grouped = x.astype(np.float64).reshape(batch, groups, in_per_group, *in_spatial)
    w_grouped = weight.astype(np.float64).reshape(groups, in_per_group, out_per_group, *kernel)
    y_grouped = np.zeros((batch, groups, out_per_group, *out_spatial))

    # Scatter: each input position i adds x[i] · w[κ] to the output at i·s − p + κ·δ.
    for in_index, kernel_index, out_index in _kernel_taps(
            in_spatial, kernel, stride, padding, dilation, bounds=out_spatial):
        # (N, G, C_g) · (G, C_g, O_g) -> (N, G, O_g): contract the input channels c of group g.
        y_grouped[(...,) + out_index] += np.einsum(
            "ngc,gco->ngo", x_grouped[(...,) + in_index], w_grouped[(...,) + kernel_index])

    y = y_grouped.reshape(batch, out_channels, *out_spatial)
    if bias is not None:
        y += _bias_column(bias, out_channels, rank)
    return _finish(y, unbatched, result_dtype)


def conv_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1):
    r"""The three gradients of :func:`conv` (with a bias), written from its definition.

    :func:`conv` is a sum of products :math:`w[o, c, \kappa]\, x[n, c, j]` with
    :math:`j = i \cdot s - p + \kappa \cdot \delta` (channel :math:`c` taken within the group of
    :math:`o`). Differentiating term by term and weighting each output by its incoming gradient
    :math:`g = \partial L / \partial y` gives

    .. math::

        \frac{\partial L}{\partial x}[n, c, j] &= \sum_{o, i, \kappa \,:\,
            j = i s - p + \kappa \delta} g[n, o, i] \; w[o, c, \kappa] , \\
        \frac{\partial L}{\partial w}[o, c, \kappa] &= \sum_{n, i}
            g[n, o, i] \; x[n, c, i s - p + \kappa \delta] , \\
        \frac{\partial L}{\partial b}[o] &= \sum_{n, i} g[n, o, i] .

    The loop below is the forward loop of :func:`conv` with each product's two partial
    derivatives accumulated instead of the product itself.

    Parameters
    ----------
    grad_output : numpy.ndarray
        :math:`\partial L / \partial y`, shaped like ``conv(input, weight, ...)``.
    input, weight, stride, padding, dilation, groups
        As for :func:`conv`. ``input`` and ``grad_output`` are both batched or both unbatched.

    Returns
    -------
    ConvGradients
        ``(grad_input, grad_weight, grad_bias)`` shaped like ``input``, ``weight`` and
        ``(C_out,)``.
    """
    weight = _float_array("weight", weight)
    rank = _rank_of_weight(weight)
    x, unbatched = _batched("input", _float_array("input", input), rank)
    g, grad_unbatched = _batched("grad_output", _float_array("grad_output", grad_output), rank)
    _check_same_batching(unbatched, grad_unbatched)
    result_dtype = np.result_type(g, x, weight)

    batch, in_channels, *in_spatial = x.shape
    out_channels, in_per_group, *kernel = weight.shape
    out_per_group = _check_groups(groups, in_channels, out_channels, in_per_group, transposed=False)
    stride, dilation, pad_before, out_spatial = _conv_geometry(
        in_spatial, kernel, stride, padding, dilation)
    _check_grad_output_shape(g, (batch, out_channels, *out_spatial))

    x_grouped = x.astype(np.float64).reshape(batch, groups, in_per_group, *in_spatial)
    w_grouped = weight.astype(np.float64).reshape(groups, out_per_group, in_per_group, *kernel)
    g_grouped = g.astype(np.float64).reshape(batch, groups, out_per_group, *out_spatial)
    grad_x = np.zeros_like(x_grouped)
    grad_w = np.zeros_like(w_grouped)

    padding_zeros = np.zeros((batch, groups, in_per_group))
    for out_index, kernel_index, in_index in _kernel_taps(
            out_spatial, kernel, stride, pad_before, dilation, bounds=in_spatial, padded=True):
        g_here = g_grouped[(...,) + out_index]                            # (N, G, O_g)
        if in_index is not None:
            # The term w[o,c,κ]·x[n,c,j] has ∂/∂x = w[o,c,κ]: (N,G,O_g)·(G,O_g,C_g) -> (N,G,C_g)
            # (a padded position j has no gradient: that term is never formed).
            grad_x[(...,) + in_index] += np.einsum(
                "ngo,goc->ngc", g_here, w_grouped[(...,) + kernel_index])
        # ... and ∂/∂w = x[n,c,j], summed over the batch: (N,G,O_g)·(N,G,C_g) -> (G,O_g,C_g),
        # with the padded zero where j is in the padding (a NaN or Inf g there gives NaN).
        x_here = padding_zeros if in_index is None else x_grouped[(...,) + in_index]
        grad_w[(...,) + kernel_index] += np.einsum("ngo,ngc->goc", g_here, x_here)

    spatial_axes = tuple(range(2, 2 + rank))
    grad_b = g.astype(np.float64).sum(axis=(0,) + spatial_axes)
    return ConvGradients(
        grad_input=_finish(grad_x.reshape(x.shape), unbatched, result_dtype),
        grad_weight=grad_w.reshape(weight.shape).astype(result_dtype),
        grad_bias=grad_b.astype(result_dtype),
    )


def conv_transpose_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0,
                            groups=1, dilation=1):
    r"""The three gradients of :func:`conv_transpose` (with a bias), from its definition.

    :func:`conv_transpose` adds :math:`x[n, c, i]\, w[c, o, \kappa]` to the output at
    :math:`j = i \cdot s - p + \kappa \cdot \delta` (channels within one group). With
    :math:`g = \partial L / \partial y`, term by term:

    .. math::

        \frac{\partial L}{\partial x}[n, c, i] &= \sum_{o, \kappa}
            g[n, o, i s - p + \kappa \delta] \; w[c, o, \kappa] , \\
        \frac{\partial L}{\partial w}[c, o, \kappa] &= \sum_{n, i}
            x[n, c, i] \; g[n, o, i s - p + \kappa \delta] , \\
        \frac{\partial L}{\partial b}[o] &= \sum_{n, j} g[n, o, j] ,

    where terms whose output position :math:`j` falls outside the output are absent.

    Parameters
    ----------
    grad_output : numpy.ndarray
        :math:`\partial L / \partial y`, shaped like ``conv_transpose(input, weight, ...)``.
    input, weight, stride, padding, output_padding, groups, dilation
        As for :func:`conv_transpose`.

    Returns
    -------
    ConvGradients
        ``(grad_input, grad_weight, grad_bias)`` shaped like ``input``, ``weight`` and
        ``(C_out,)``.
    """
    weight = _float_array("weight", weight)
    rank = _rank_of_weight(weight)
    x, unbatched = _batched("input", _float_array("input", input), rank)
    g, grad_unbatched = _batched("grad_output", _float_array("grad_output", grad_output), rank)
    _check_same_batching(unbatched, grad_unbatched)
    result_dtype = np.result_type(g, x, weight)

    batch, in_channels, *in_spatial = x.shape
    weight_in_channels, out_per_group, *kernel = weight.shape
    in_per_group = _check_groups(groups, in_channels, weight_in_channels, out_per_group,
                                 transposed=True)
    out_channels = groups * out_per_group
    stride, padding, output_padding, dilation, out_spatial = _conv_transpose_geometry(
        in_spatial, kernel, stride, padding, output_padding, dilation)
    _check_grad_output_shape(g, (batch, out_channels, *out_spatial))

    x_grouped = x.astype(np.float64).reshape(batch, groups, in_per_group, *in_spatial)
    w_grouped = weight.astype(np.float64).reshape(groups, in_per_group, out_per_group, *kernel)
    g_grouped = g.astype(np.float64).reshape(batch, groups, out_per_group, *out_spatial)
    grad_x = np.zeros_like(x_grouped)
    grad_w = np.zeros_like(w_grouped)

    # A term whose output position j is cropped away is not in the forward pass, but the
    # gradients gather over a zero-padded g (they are convolutions of g): there the product
    # with the padded zero is formed, so a NaN or Inf weight (for ∂/∂x) or input (for ∂/∂w)
    # meeting it gives NaN, as the module docstring says.
    padding_zeros = np.zeros((batch, groups, out_per_group))
    for in_index, kernel_index, out_index in _kernel_taps(
            in_spatial, kernel, stride, padding, dilation, bounds=out_spatial, padded=True):
        g_here = padding_zeros if out_index is None else g_grouped[(...,) + out_index]
        # The term x[n,c,i]·w[c,o,κ] has ∂/∂x = w[c,o,κ]: (N,G,O_g)·(G,C_g,O_g) -> (N,G,C_g).
        grad_x[(...,) + in_index] += np.einsum(
            "ngo,gco->ngc", g_here, w_grouped[(...,) + kernel_index])
        # ... and ∂/∂w = x[n,c,i], summed over the batch: (N,G,C_g)·(N,G,O_g) -> (G,C_g,O_g).
        grad_w[(...,) + kernel_index] += np.einsum(
            "ngc,ngo->gco", x_grouped[(...,) + in_index], g_here)

    spatial_axes = tuple(range(2, 2 + rank))
    grad_b = g.astype(np.float64).sum(axis=(0,) + spatial_axes)
    return ConvGradients(
        grad_input=_finish(grad_x.reshape(x.shape), unbatched, result_dtype),
        grad_weight=grad_w.reshape(weight.shape).astype(result_dtype),
        grad_bias=grad_b.astype(result_dtype),
    )


# --------------------------------------------------------------------------------------------
# The index map, and the small helpers the references share
# --------------------------------------------------------------------------------------------

def _kernel_taps(positions, kernel, stride, padding, dilation, bounds, padded=False):
    r"""Yield every ``(position, kernel_index, target)`` with target inside ``bounds``.

    ``target = position · stride − padding + kernel_index · dilation`` on each axis: the index map
    of the module docstring. :func:`conv` walks it with ``positions`` = output positions and
    ``target`` = the input position read (a gather); :func:`conv_transpose` walks it with
    ``positions`` = input positions and ``target`` = the output position written (a scatter).
    Triples whose target falls outside ``bounds`` touch only zero padding (or are cropped away):
    a scatter skips them; with ``padded=True`` (a gather, which multiplies by the padded zero)
    they are yielded with ``target`` None.
    """
    for position in np.ndindex(*positions):
        for kernel_index in np.ndindex(*kernel):
            target = tuple(i * s - p + k * d for i, k, s, p, d
                           in zip(position, kernel_index, stride, padding, dilation))
            if all(0 <= t < extent for t, extent in zip(target, bounds)):
                yield position, kernel_index, target
            elif padded:
                yield position, kernel_index, None


def _conv_geometry(in_spatial, kernel, stride, padding, dilation):
    """Resolve a convolution's per-axis stride, dilation, leading padding and output size."""
    rank = len(in_spatial)
    stride = _per_axis("stride", stride, rank, minimum=1)
    dilation = _per_axis("dilation", dilation, rank, minimum=1)
    _per_axis("kernel", kernel, rank, minimum=1)   # TorchLean's hypothesis kernel[i] ≠ 0
    if isinstance(padding, str):
        if padding == "valid":
            pad_before = (0,) * rank
            out_spatial = conv_out_spatial(in_spatial, kernel, stride, 0, dilation)
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' needs stride 1 on every axis (as in PyTorch), "
                                 f"got stride={stride}")
            pad_before, _ = same_padding(tuple(kernel), dilation)
            out_spatial = tuple(in_spatial)    # that is what 'same' means; see same_padding
        else:
            raise ValueError(f"padding must be an int, a tuple of ints, 'valid' or 'same'; "
                             f"got padding={padding!r}")
    else:
        pad_before = _per_axis("padding", padding, rank, minimum=0)
        out_spatial = conv_out_spatial(in_spatial, kernel, stride, pad_before, dilation)
    _check_output_extent(out_spatial, in_spatial, kernel)
    return stride, dilation, pad_before, out_spatial


def _conv_transpose_geometry(in_spatial, kernel, stride, padding, output_padding, dilation):
    """Resolve a transposed convolution's per-axis arguments and its output size."""
    rank = len(in_spatial)
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r}: padding strings are not supported by transposed "
                         f"convolution (PyTorch rejects them too); give an int or a tuple of ints")
    stride = _per_axis("stride", stride, rank, minimum=1)
    padding = _per_axis("padding", padding, rank, minimum=0)
    output_padding = _per_axis("output_padding", output_padding, rank, minimum=0)
    dilation = _per_axis("dilation", dilation, rank, minimum=1)
    for axis, (op, s, d) in enumerate(zip(output_padding, stride, dilation)):
        # Larger values would only add output positions that no input reaches (PyTorch's rule).
        if op >= max(s, d):
            raise ValueError(f"output_padding={output_padding} must be smaller than the stride or "
                             f"the dilation on each axis; on axis {axis} it is {op}, with "
                             f"stride {s} and dilation {d}")
    out_spatial = conv_transpose_out_spatial(in_spatial, kernel, stride, padding, output_padding,
                                             dilation)
    _check_output_extent(out_spatial, in_spatial, kernel)
    return stride, padding, output_padding, dilation, out_spatial


def _spatial_rank(value, name="in_spatial"):
    """None for a scalar (int) argument, else the length of the sequence."""
    if _is_integer(value):
        return None
    try:
        return len(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}") from None


def _per_axis(name, value, rank, minimum):
    """``value`` as a tuple of ints, one per spatial axis (``rank`` None: a single int).

    An int is broadcast to every axis; a sequence must have one entry per axis. Every entry must
    be at least ``minimum``. Errors name the argument and show its value.
    """
    if _is_integer(value):
        values = (int(value),) * (1 if rank is None else rank)
    elif rank is None:
        raise TypeError(f"{name} must be an int when in_spatial is an int, got {name}={value!r}")
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a sequence of {rank} ints, "
                            f"got {name}={value!r}") from None
        if len(values) != rank:
            raise ValueError(f"{name}={value!r} has {len(values)} entries, but there are {rank} "
                             f"spatial axes; give one int, or {rank} of them")
        if not all(_is_integer(v) for v in values):
            raise TypeError(f"{name} must hold ints, got {name}={value!r}")
        values = tuple(int(v) for v in values)
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {name}={value!r}")
    return values


def _is_integer(value):
    # bool is an int subclass in Python, but stride=True is surely a mistake.
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _float_array(name, array):
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return array


def _rank_of_weight(weight):
    if weight.ndim < 3:
        raise ValueError(f"weight must have shape (C_out, C_in / groups, *kernel) with at least one "
                         f"spatial axis, got shape {weight.shape}")
    return weight.ndim - 2


def _batched(name, array, rank):
    """Add a batch axis to an unbatched ``(C, *spatial)`` array; say whether one was added."""
    if array.ndim == rank + 1:
        return array[np.newaxis], True
    if array.ndim == rank + 2:
        return array, False
    raise ValueError(f"{name} must have shape (N, C, *spatial) or (C, *spatial) with {rank} "
                     f"spatial axes (weight.ndim - 2 = {rank}), got shape {array.shape}")


def _check_groups(groups, in_channels, weight_channels_0, weight_channels_1, transposed):
    """Check the channel bookkeeping; return the channels per group the weight does not show.

    For conv the weight is ``(C_out, C_in/G, ...)``: return ``C_out/G``. For conv_transpose it is
    ``(C_in, C_out/G, ...)``: return ``C_in/G``.
    """
    if not _is_integer(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got groups={groups!r}")
    if transposed:
        if weight_channels_0 != in_channels:
            raise ValueError(f"input has {in_channels} channels, but weight.shape[0] = "
                             f"{weight_channels_0} (weight is (C_in, C_out / groups, *kernel))")
        if in_channels == 0 or in_channels % groups:
            raise ValueError(f"groups={groups} must divide the {in_channels} input channels "
                             f"(and there must be at least one)")
        return in_channels // groups
    if weight_channels_1 == 0:
        raise ValueError("weight.shape[1] (input channels per group) must be at least 1")
    if weight_channels_1 * groups != in_channels:
        raise ValueError(f"input has {in_channels} channels, but weight.shape[1] * groups = "
                         f"{weight_channels_1} * {groups} = {weight_channels_1 * groups}")
    if weight_channels_0 % groups:
        raise ValueError(f"groups={groups} must divide the {weight_channels_0} output channels")
    return weight_channels_0 // groups


def _check_output_extent(out_spatial, in_spatial, kernel):
    if any(extent < 1 for extent in out_spatial):
        raise ValueError(f"the output would have spatial size {tuple(out_spatial)} (input "
                         f"{tuple(in_spatial)}, kernel {tuple(kernel)}); every extent must be >= 1")


def _check_same_batching(input_unbatched, grad_unbatched):
    if input_unbatched != grad_unbatched:
        raise ValueError("input and grad_output must both be batched or both be unbatched")


def _check_grad_output_shape(grad_output, expected_shape):
    if grad_output.shape != tuple(expected_shape):
        raise ValueError(f"grad_output has shape {grad_output.shape}, but the op's output has "
                         f"shape {tuple(expected_shape)}")


def _bias_column(bias, out_channels, rank):
    """The bias shaped ``(C_out, 1, ..., 1)``, so it broadcasts over the spatial axes."""
    bias = _float_array("bias", bias)
    if bias.shape != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got shape {bias.shape}")
    return bias.astype(np.float64).reshape((out_channels,) + (1,) * rank)


def _finish(batched_result, unbatched, dtype):
    """Drop the batch axis we added for an unbatched input; cast back to the input's dtype."""
    result = batched_result[0] if unbatched else batched_result
    return np.ascontiguousarray(result, dtype=dtype)
