"""
Receptive fields
================

How much of the image one unit of a convolution stack sees, in theory and as measured by a VJP.

A unit deep inside a convolutional network only "sees" part of the image: its **receptive
field**.  How big that part is decides what the network can recognise — a 3 x 3 window cannot
tell a 7 from a 1 — so architectures are designed around it.

This tutorial computes the *theoretical* receptive field of a stack of convolutions from the
layer hyper-parameters, then measures the *effective* receptive field with a vector-Jacobian
product: the gradient of one centre output with respect to the input shows how much each input
pixel actually influences it.  The two turn out to be very different.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import graphm
import graphm.functional as F
from graphm import spec

rng = np.random.default_rng(0)

# %%
# The theoretical receptive field
# -------------------------------
#
# Describe layer :math:`l` by its kernel size :math:`k_l`, stride :math:`s_l` and dilation
# :math:`\delta_l`.  Two numbers, updated layer by layer from the input side, give the receptive
# field :math:`r` of one unit of the last layer:
#
# * the **jump** :math:`j_l = j_{l-1}\,s_l` (with :math:`j_0 = 1`): how many input pixels lie
#   between two neighbouring units of layer :math:`l`;
# * the **size** :math:`r_l = r_{l-1} + \delta_l\,(k_l - 1)\,j_{l-1}` (with :math:`r_0 = 1`): a
#   kernel of :math:`k` taps, :math:`\delta` units apart, spans :math:`\delta(k-1)` more units of
#   the layer below, and each of those is :math:`j_{l-1}` input pixels from the next.
#
# So plain 3 x 3 layers grow the field by 2 pixels each (linearly), while strides and dilations
# multiply the growth of every layer after them.


def theoretical_rf(layers):
    """Receptive-field size of one output unit of a stack of (kernel, stride, dilation)."""
    size, jump = 1, 1
    for kernel, stride, dilation in layers:
        size += dilation * (kernel - 1) * jump
        jump *= stride
    return size


STACKS = {
    "1 layer 3x3": [(3, 1, 1)],
    "2 layers 3x3": [(3, 1, 1)] * 2,
    "4 layers 3x3": [(3, 1, 1)] * 4,
    "8 layers 3x3": [(3, 1, 1)] * 8,
    "4 layers, stride 2 at 1-2": [(3, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1)],
    "4 layers, stride 2 at 3-4": [(3, 1, 1), (3, 1, 1), (3, 2, 1), (3, 2, 1)],
    "4 layers, dilation 2,2,2,2": [(3, 1, 2)] * 4,
    "4 layers, dilation 1,2,4,8": [(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)],
}
for name, layers in STACKS.items():
    print(f"{name:<28} receptive field {theoretical_rf(layers):>3} x {theoretical_rf(layers)}")

# %%
# The effective receptive field, measured with a VJP
# --------------------------------------------------
#
# The theoretical field says which pixels *can* influence a unit.  How much each one *does* is
# a derivative: for a centre output :math:`y_c` of the network :math:`y = f(x)`,
#
# .. math::
#
#     \frac{\partial y_c}{\partial x} = J^\top e_c ,
#
# the vector-Jacobian product of :math:`f` with the one-hot cotangent :math:`e_c`.  One reverse
# sweep gives it for every input pixel at once — exactly what :func:`graphm.vjp` computes (and
# what ``loss.backward()`` computes when the loss is :math:`y_c`).
#
# We build each stack as a small network: ``channels`` feature maps, Gaussian weights scaled as
# He et al. recommend for ReLU, a ReLU after every layer but the last, padding
# :math:`\delta(k-1)/2` so that the centre stays the centre.  The input is a batch of random
# images; we average :math:`|\partial y_c / \partial x|` over the batch and the input channels.

SIZE = 65          # odd, so that a stride-2 layer maps the centre pixel onto a centre unit


def make_network(layers, channels=4):
    weights = []
    in_channels = 1
    for kernel, _, _ in layers:
        fan_in = in_channels * kernel * kernel
        weights.append(rng.standard_normal((channels, in_channels, kernel, kernel))
                       * np.sqrt(2.0 / fan_in))
        in_channels = channels

    def network(x):
        for i, ((kernel, stride, dilation), weight) in enumerate(zip(layers, weights)):
            x = F.conv2d(x, weight, stride=stride, padding=dilation * (kernel - 1) // 2,
                         dilation=dilation)
            if i < len(layers) - 1:
                x = F.relu(x)
        return x

    return network


def effective_rf(network, batch=32):
    """Mean |d y_centre / d x| over a batch of random inputs, via one VJP."""
    x = rng.standard_normal((batch, 1, SIZE, SIZE))
    y, vjp_fn = graphm.vjp(network, x)
    cotangent = np.zeros_like(y)
    centre = y.shape[-1] // 2
    cotangent[:, 0, centre, centre] = 1.0            # e_c: output channel 0, centre unit
    (grad_x,) = vjp_fn(cotangent)
    return np.abs(grad_x).mean(axis=(0, 1))


def draw(ax, erf, layers, title, half_width=18):
    """The central (2 half_width + 1)^2 pixels of the influence map, the field outlined."""
    centre = SIZE // 2
    crop = erf[centre - half_width:centre + half_width + 1,
               centre - half_width:centre + half_width + 1]
    ax.imshow(crop / crop.max(), cmap="inferno", vmin=0, vmax=1)
    r = theoretical_rf(layers)
    corner = half_width - r // 2 - 0.5
    ax.add_patch(Rectangle((corner, corner), r, r, fill=False, edgecolor="cyan", linewidth=1))
    ax.set_title(f"{title}\ntheoretical {r} x {r}", fontsize=8)
    ax.axis("off")


fig, axes = plt.subplots(2, 4, figsize=(11, 6.6))
for ax, (name, layers) in zip(axes.ravel(), STACKS.items()):
    draw(ax, effective_rf(make_network(layers)), layers, name)
fig.suptitle("|d y_centre / d x| (normalised), central 37 x 37 pixels; "
             "cyan: the theoretical receptive field", fontsize=10)
fig.tight_layout(rect=(0, 0, 1, 0.95), h_pad=2.0)

# %%
# Three things stand out:
#
# * the gradient is **zero outside the theoretical field** (the cyan square) — it is a hard
#   limit;
# * inside, the influence is **concentrated in the middle** and fades towards the edges: a
#   centre pixel reaches the output through many paths, a corner pixel through one;
# * stride and dilation grow the field fast.  Where the stride sits matters: downsampling in
#   the first layers multiplies the growth of every later layer (23 pixels against 11 for the
#   same four layers), and leaves a grid pattern of stronger and weaker pixels;
# * dilation can leave **holes**: four layers of dilation 2 only ever read pixels at even
#   offsets from the centre — the odd ones have exactly zero influence (the "gridding" problem).
#   Dilations 1, 2, 4, 8 reach every offset up to 15 and fill the field without holes.
#
# The field grows like :math:`L`, its effective part like :math:`\sqrt{L}`
# -------------------------------------------------------------------------
#
# Take the simplest stack: :math:`L` linear layers whose 3 x 3 kernels all equal 1/9.  Each
# layer averages, so the influence of the input on the centre is the :math:`L`-fold convolution
# of a box with itself — by the central limit theorem, a Gaussian whose standard deviation grows
# like :math:`\sqrt{L}`, while the theoretical size grows like :math:`2L + 1`.  The *fraction* of
# the receptive field that matters shrinks as the network gets deeper (Luo, Li, Urtasun and
# Zemel, *Understanding the Effective Receptive Field in Deep CNNs*, 2016).  We measure both with
# the same VJP; the spread is the standard deviation of :math:`|\partial y_c/\partial x|` seen
# as a distribution over the pixels.


def averaging_stack(depth):
    box = np.full((1, 1, 3, 3), 1.0 / 9.0)

    def network(x):
        for _ in range(depth):
            x = F.conv2d(x, box, padding=1)
        return x

    return network


def spread(erf):
    """Standard deviation (in pixels, along one axis) of the influence distribution."""
    weights = erf / erf.sum()
    offsets = np.arange(SIZE) - SIZE // 2
    return float(np.sqrt((weights.sum(axis=0) * offsets ** 2).sum()))


depths = np.arange(1, 17)
measured_spread, support = [], []
for depth in depths:
    erf = effective_rf(averaging_stack(depth), batch=1)
    measured_spread.append(spread(erf))
    support.append(int((erf.sum(axis=0) > 0).sum()))   # width of the nonzero region
theoretical = [theoretical_rf([(3, 1, 1)] * d) for d in depths]
print("nonzero width == theoretical size for every depth:", support == theoretical)

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
left.plot(depths, np.array(theoretical) / 2, "o-", label="theoretical half-width (L)")
left.plot(depths, measured_spread, "s-", label="effective: std of |dy/dx|")
left.plot(depths, np.sqrt(depths * 2 / 3), "k:", label=r"$\sqrt{2L/3}$ (central limit)")
left.set_xlabel("depth L (3x3 layers)")
left.set_ylabel("pixels")
left.legend(fontsize=8)
left.set_title("receptive field vs depth", fontsize=10)
for depth in (2, 8, 16):
    profile = effective_rf(averaging_stack(depth), batch=1)[SIZE // 2]
    right.plot(np.arange(SIZE) - SIZE // 2, profile / profile.max(), label=f"L = {depth}")
right.set_xlim(-20, 20)
right.set_xlabel("input offset from the centre (pixels)")
right.set_title("profile through the centre", fontsize=10)
right.legend(fontsize=8)
fig.tight_layout()

# %%
# The dotted line is the central-limit prediction: one layer spreads by the variance of a
# uniform choice among offsets :math:`\{-1, 0, 1\}`, which is :math:`2/3`, and :math:`L`
# independent layers add their variances.
#
# A check with the output-size formula
# ------------------------------------
#
# The stride-2 stack above shrinks the 65 x 65 input; :func:`graphm.spec.conv_out_spatial` says
# by how much, and why the centre stays the centre for odd sizes:

size = SIZE
for kernel, stride, dilation in STACKS["4 layers, stride 2 at 1-2"]:
    new = spec.conv_out_spatial(size, kernel, stride, dilation * (kernel - 1) // 2, dilation)
    print(f"{size:>3} -> {new:>3}   centre {size // 2:>2} -> {new // 2:>2}")
    size = new

# %%
# What to remember
# ----------------
#
# * Theoretical receptive field: :math:`r_l = r_{l-1} + \delta_l(k_l-1)j_{l-1}`,
#   :math:`j_l = j_{l-1}s_l`.  Stride and dilation multiply the growth.
# * The effective receptive field is a VJP with a one-hot cotangent: one reverse sweep gives the
#   influence of every pixel.
# * Influence is Gaussian-like and concentrated: its width grows like :math:`\sqrt{L}`, not
#   :math:`L`.
