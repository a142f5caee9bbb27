"""
Convolution from the definition
===============================

The formula of a convolution, its output-size rule, and what stride, padding, dilation, groups do.

A convolution slides a small array of weights, the *kernel*, over an input and takes a weighted
sum at every stop.  This tutorial writes that sentence as a formula, checks graphm against a
loop written from the formula, derives the output-size rule, and draws what ``stride``,
``padding``, ``dilation`` and ``groups`` do on a small input.

Everything is computed by :mod:`graphm.functional`; the pictures are drawn with matplotlib.
"""

import matplotlib.pyplot as plt
import numpy as np

import graphm.functional as F
from graphm import spec

rng = np.random.default_rng(0)

# %%
# The definition, in one dimension
# --------------------------------
#
# Take a signal :math:`x` of length ``in`` and a kernel :math:`w` of length :math:`k`.  With
# stride :math:`s`, zero padding :math:`p` on both ends and dilation :math:`\delta`, output
# :math:`i` is
#
# .. math::
#
#     y[i] = \sum_{\kappa=0}^{k-1} w[\kappa]\; x[\,i\,s - p + \kappa\,\delta\,]
#
# where :math:`x` is zero outside :math:`0 \le j < \text{in}`.  (Deep-learning frameworks do not
# flip the kernel, so mathematicians would call this a *cross-correlation*; everyone else calls
# it a convolution.)  The loop below is that formula and nothing else.


def conv1d_by_definition(x, w, stride=1, padding=0, dilation=1):
    """One channel, one sample: y[i] = sum_k w[k] * x[i*stride - padding + k*dilation]."""
    k = len(w)
    out = spec.conv_out_spatial(len(x), k, stride, padding, dilation)
    y = np.zeros(out)
    for i in range(out):
        for kappa in range(k):
            j = i * stride - padding + kappa * dilation
            if 0 <= j < len(x):          # outside the signal: the zero padding
                y[i] += w[kappa] * x[j]
    return y


x = rng.standard_normal(11)
w = np.array([1.0, -2.0, 1.0])
for stride, padding, dilation in [(1, 0, 1), (2, 1, 1), (1, 2, 2), (3, 1, 2)]:
    ours = conv1d_by_definition(x, w, stride, padding, dilation)
    # graphm wants (C_in, L) for one sample and (C_out, C_in, k) for the weight
    theirs = F.conv1d(x[None], w[None, None], stride=stride, padding=padding,
                      dilation=dilation)[0]
    print(f"stride={stride} padding={padding} dilation={dilation}: "
          f"{len(ours)} outputs, max |loop - graphm| = {np.max(np.abs(ours - theirs)):.1e}")

# %%
# The output size
# ---------------
#
# Where does ``out`` come from?  The dilated kernel covers :math:`\delta(k-1)+1` input
# positions.  Its first stop starts at position :math:`-p`; stop :math:`i` starts at
# :math:`is - p` and must end at or before the last padded position
# :math:`\text{in} - 1 + p`:
#
# .. math::
#
#     i s - p + \delta(k-1) \le \text{in} - 1 + p
#     \quad\Longleftrightarrow\quad
#     i \le \frac{\text{in} + 2p - \delta(k-1) - 1}{s}.
#
# Counting :math:`i = 0, 1, \dots` up to that bound gives TorchLean's ``Spec.convOutSpatial``,
# :func:`graphm.spec.conv_out_spatial`:
#
# .. math::
#
#     \text{out} = \left\lfloor \frac{\text{in} + 2p - \delta(k-1) - 1}{s} \right\rfloor + 1 .
#
# The floor matters: when the stride does not tile the input, the last few inputs are never the
# start of a window and are simply dropped.  Here is the formula next to the shape graphm
# actually returns, for a 2-d input of 9 x 10:

image = rng.standard_normal((1, 1, 9, 10))
print(f"{'kernel':>6} {'stride':>6} {'padding':>7} {'dilation':>8}  formula   graphm")
for k, s, p, d in [(3, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (4, 3, 0, 1), (3, 1, 0, 3),
                   (5, 2, 2, 2)]:
    formula = spec.conv_out_spatial((9, 10), k, s, p, d)
    shape = F.conv2d(image, np.ones((1, 1, k, k)), stride=s, padding=p, dilation=d).shape[2:]
    print(f"{k:>6} {s:>6} {p:>7} {d:>8}  {str(formula):<9} {shape}")

# %%
# Drawing where each output looks
# -------------------------------
#
# Which inputs does one output read?  Ask graphm.  The gradient of output :math:`y[i]` with
# respect to the input is nonzero exactly at the inputs :math:`y[i]` reads, and
# :func:`graphm.functional.conv_backward` computes it when we feed it a *one-hot* output gradient
# (1 at :math:`i`, 0 elsewhere).  With a kernel of ones, the gradient even counts how often each
# input is read.
#
# Below, a 7 x 7 input (white) with its zero padding (grey ring).  The coloured cells are read by
# two neighbouring outputs, ``(0, 0)`` in blue and ``(0, 1)`` in orange; the step between them
# is the stride.


def footprint(in_size, k, stride, padding, dilation, out_index):
    """Which cells of the *padded* input output ``out_index`` reads (a 0/1 array)."""
    padded = in_size + 2 * padding
    x = np.zeros((1, 1, padded, padded))            # the padding drawn as real cells
    weight = np.ones((1, 1, k, k))
    out = spec.conv_out_spatial((padded, padded), k, stride, 0, dilation)
    grad_output = np.zeros((1, 1) + out)
    grad_output[(0, 0) + out_index] = 1.0
    grads = F.conv_backward(grad_output, x, weight, stride=stride, dilation=dilation)
    return grads.grad_input[0, 0] > 0, out


def draw_footprint(ax, in_size, k, stride, padding, dilation, title):
    padded = in_size + 2 * padding
    picture = np.ones((padded, padded, 3))
    picture[:padding, :] = picture[-padding or padded:, :] = 0.85       # padding ring: grey
    picture[:, :padding] = picture[:, -padding or padded:] = 0.85
    first, out = footprint(in_size, k, stride, padding, dilation, (0, 0))
    second, _ = footprint(in_size, k, stride, padding, dilation, (0, 1))
    picture[first] = (0.30, 0.50, 0.90)
    picture[second] = (0.95, 0.55, 0.20)
    picture[first & second] = (0.55, 0.35, 0.65)                        # read by both
    ax.imshow(picture)
    ax.set_xticks(np.arange(-0.5, padded), minor=True)
    ax.set_yticks(np.arange(-0.5, padded), minor=True)
    ax.grid(which="minor", color="0.6", linewidth=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(f"{title}\nout = {out[0]} x {out[1]}", fontsize=9)


fig, axes = plt.subplots(1, 4, figsize=(11, 3.2))
draw_footprint(axes[0], 7, 3, 1, 0, 1, "k=3")
draw_footprint(axes[1], 7, 3, 2, 0, 1, "k=3, stride 2")
draw_footprint(axes[2], 7, 3, 1, 1, 1, "k=3, padding 1")
draw_footprint(axes[3], 7, 3, 1, 0, 2, "k=3, dilation 2")
fig.suptitle("Inputs read by output (0, 0) (blue) and (0, 1) (orange); purple: both")
fig.tight_layout(rect=(0, 0, 1, 0.93))

# %%
# * **stride** moves the window by :math:`s` cells per output, so the output shrinks by about
#   :math:`s` per axis;
# * **padding** adds a ring of zeros, so windows may hang over the edge and border pixels are
#   read as often as central ones; ``padding=(k-1)/2`` with stride 1 keeps the size
#   (``padding='same'`` does this for you);
# * **dilation** spreads the kernel's taps :math:`\delta` cells apart: the same 9 weights see a
#   5 x 5 region.  This is how a network grows its receptive field without more weights (see the
#   receptive-field tutorial).
#
# Channels and groups
# -------------------
#
# Real inputs have channels (RGB, or the feature maps of the previous layer).  Every output
# channel :math:`o` sums over the input channels it is connected to:
#
# .. math::
#
#     y[o, \mathbf{i}] = b[o] + \sum_{c} \sum_{\boldsymbol\kappa} w[o, c, \boldsymbol\kappa]\,
#     x[c, \mathbf{i}\mathbf{s} - \mathbf{p} + \boldsymbol\kappa\boldsymbol\delta].
#
# With ``groups = G`` the channels are split into :math:`G` independent convolutions: output
# channel :math:`o` only sees the :math:`C_{in}/G` input channels of its own group, and the
# weight shrinks to ``(C_out, C_in / G, k, k)``.  ``groups = C_in`` is a *depthwise* convolution.
# Again we let graphm tell us who is connected to whom: the input gradient of one output channel
# is nonzero on exactly the input channels it reads.


def connectivity(channels, groups):
    """connected[o, c] is True when output channel o reads input channel c."""
    x = np.zeros((1, channels, 3, 3))
    weight = np.ones((channels, channels // groups, 3, 3))
    connected = np.zeros((channels, channels), dtype=bool)
    for o in range(channels):
        grad_output = np.zeros((1, channels, 1, 1))
        grad_output[0, o] = 1.0
        grad_input = F.conv_backward(grad_output, x, weight, groups=groups).grad_input
        connected[o] = np.abs(grad_input[0]).sum(axis=(1, 2)) > 0
    return connected, weight.shape


# constrained layout leaves room for every label and the title (square images fix the axes'
# aspect, which tight_layout cannot shrink into the figure's height).
fig, axes = plt.subplots(1, 3, figsize=(9, 3.6), layout="constrained")
for ax, groups in zip(axes, [1, 2, 8]):
    connected, weight_shape = connectivity(8, groups)
    ax.imshow(connected, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_xlabel("input channel")
    ax.set_ylabel("output channel")
    ax.set_title(f"groups={groups}\nweight {weight_shape}", fontsize=9)
_ = fig.suptitle("Which input channels each output channel reads")

# %%
# Filters on a picture
# --------------------
#
# A kernel is a small pattern detector: the output is large where the input looks like the
# kernel.  Below, a synthetic picture (a disk and a square) goes through two hand-made 3 x 3
# filters, stacked as the two output channels of *one* ``conv2d`` call: a vertical-edge detector
# (Sobel) and its transpose, a horizontal-edge detector.  The last panel is the
# vertical-edge filter with stride 2: the same response, on a grid half as fine.

size = 48
rows, cols = np.mgrid[0:size, 0:size]
picture = ((rows - 30) ** 2 + (cols - 16) ** 2 < 10 ** 2).astype(np.float64)
picture[8:22, 26:42] = 1.0

sobel_x = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
filters = np.stack([sobel_x, sobel_x.T])[:, None]          # (C_out=2, C_in=1, 3, 3)
edges = F.conv2d(picture[None], filters, padding=1)          # (2, 48, 48), one sample
edges_strided = F.conv2d(picture[None], filters[:1], stride=2, padding=1)
print("picture", picture.shape, "-> edges", edges.shape, "; stride 2 ->", edges_strided.shape)

fig, axes = plt.subplots(1, 4, figsize=(11, 3.3))
panels = [(picture, "input"), (edges[0], "vertical edges"), (edges[1], "horizontal edges"),
          (edges_strided[0], "vertical edges, stride 2")]
for ax, (image, title) in zip(axes, panels):
    ax.imshow(image, cmap="gray" if title == "input" else "RdBu_r")
    ax.set_title(f"{title}\n{image.shape[0]} x {image.shape[1]}", fontsize=9)
    ax.axis("off")
fig.tight_layout()

# %%
# What to remember
# ----------------
#
# * A convolution is a weighted sum over a sliding window:
#   :math:`y[i] = \sum_\kappa w[\kappa]\, x[is - p + \kappa\delta]`, summed over the input
#   channels of the output channel's group.
# * Every spatial axis follows
#   :math:`\text{out} = \lfloor(\text{in} + 2p - \delta(k-1) - 1)/s\rfloor + 1`
#   (:func:`graphm.spec.conv_out_spatial`).
# * The input gradient of one output is that output's footprint — a first glimpse of the
#   *adjoint*, the subject of the transposed-convolution tutorial.
