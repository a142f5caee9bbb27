"""
Transposed convolution is the adjoint of convolution
====================================================

A transposed convolution is a convolution's matrix transposed; why strides leave checkerboards.

"Transposed convolution" sounds like a new operation.  It is not: for a fixed kernel, a
convolution is a linear map :math:`x \\mapsto A x`, so it *is* a matrix, and the transposed
convolution is the map :math:`y \\mapsto A^\\top y` with the same kernel.  That one fact is why
graphm needs only three compiled kernels for two ops and both of their gradients.

This tutorial builds the matrix, checks the transpose numerically (the dot-product test), and
explains the checkerboard pattern that strided transposed convolutions are famous for.
"""

import matplotlib.pyplot as plt
import numpy as np

import graphm.functional as F
from graphm import spec

rng = np.random.default_rng(0)

# %%
# A convolution is a matrix
# -------------------------
#
# Any linear map :math:`f: \mathbb{R}^n \to \mathbb{R}^m` is the matrix whose column :math:`j` is
# :math:`f(e_j)`, the image of the :math:`j`-th unit vector.  We apply that recipe to a 1-d
# convolution with a kernel of size 3, stride 2 and padding 1 on a signal of length 8 ...

length, stride, padding = 8, 2, 1
w = np.array([[[1.0, 2.0, 3.0]]])                 # (C_out=1, C_in=1, k=3)


def conv(x):
    return F.conv1d(x[None], w, stride=stride, padding=padding)[0]


def as_matrix(linear_map, n):
    """The matrix of a linear map of R^n: column j is linear_map(e_j)."""
    return np.stack([linear_map(np.eye(n)[j]).ravel() for j in range(n)], axis=1)


A = as_matrix(lambda e: conv(e[None]), length)
out_length = A.shape[0]
print(f"conv1d maps R^{length} -> R^{out_length}: A is {A.shape}")
print(A.astype(int))

# %%
# ... and to the transposed convolution with the *same* kernel, from :math:`\mathbb{R}^4` back to
# :math:`\mathbb{R}^8`.  Note ``output_padding``: a stride-2 convolution maps inputs of length 7
# *and* 8 to 4 outputs (the floor in the output-size formula forgets which), so the transposed
# op must be told which length to produce:
#
# .. math::
#
#     \text{out} = (\text{in} - 1)s - 2p + \delta(k - 1) + \text{output\_padding} + 1
#     = 3 \cdot 2 - 2 + 2 + \text{output\_padding} + 1 .

output_padding = length - spec.conv_transpose_out_spatial(out_length, 3, stride, padding)
print("output_padding needed:", output_padding)


def conv_transpose(y):
    return F.conv_transpose1d(y[None], w, stride=stride, padding=padding,
                              output_padding=output_padding)[0]


B = as_matrix(lambda e: conv_transpose(e[None]), out_length)
print(f"conv_transpose1d maps R^{out_length} -> R^{length}: B is {B.shape}")
print("B == A.T exactly:", np.array_equal(B, A.T))

fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), gridspec_kw={"width_ratios": [2, 1.1]})
for ax, matrix, title in [(axes[0], A, "conv1d: A"), (axes[1], B, "conv_transpose1d: B = A$^T$")]:
    ax.imshow(matrix, cmap="viridis")
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_xlabel("input index")
    ax.set_ylabel("output index")
fig.tight_layout()

# %%
# Read the rows of :math:`A`: each output is the kernel ``1 2 3`` placed over its window, the
# window moving by the stride, and the first window hanging over the padding (its weight ``1``
# falls off the edge).  Read the rows of :math:`A^\top`: each *input* of the convolution collects
# the kernel weights of every window it took part in.  A convolution **gathers**; its transpose
# **scatters** the same weights back along the same wires.
#
# The dot-product test
# --------------------
#
# We never need the matrix to check a transpose.  For every :math:`x` and :math:`y`,
#
# .. math::
#
#     \langle A x, y \rangle = \langle x, A^\top y \rangle ,
#
# so :math:`\langle \mathrm{conv}(x, w), y\rangle = \langle x, \mathrm{conv\_transpose}(y, w)\rangle`
# for random arrays, in float64, up to rounding.  This "dot-product test" is how graphm's
# test-suite ties every VJP to its forward map.  Here it is over 2-d configurations with batch,
# channels, stride, padding, dilation and groups:

configs = [  # (N, C_in, C_out, size, k, stride, padding, dilation, groups)
    (2, 3, 4, 9, 3, 1, 1, 1, 1),
    (2, 4, 6, 11, 3, 2, 1, 1, 2),
    (1, 2, 2, 12, 4, 3, 0, 1, 1),
    (3, 6, 6, 10, 3, 1, 2, 2, 6),
    (2, 4, 8, 13, 5, 2, 2, 2, 4),
]
print(f"{'config':<38} {'<conv x, y>':>14} {'<x, convT y>':>14}  rel. error")
for n, c_in, c_out, size, k, s, p, d, g in configs:
    x = rng.standard_normal((n, c_in, size, size))
    weight = rng.standard_normal((c_out, c_in // g, k, k))
    y_shape = (n, c_out) + spec.conv_out_spatial((size, size), k, s, p, d)
    y = rng.standard_normal(y_shape)
    out_pad = size - spec.conv_transpose_out_spatial(y_shape[2], k, s, p, dilation=d)
    lhs = np.vdot(F.conv2d(x, weight, stride=s, padding=p, dilation=d, groups=g), y)
    rhs = np.vdot(x, F.conv_transpose2d(y, weight, stride=s, padding=p, output_padding=out_pad,
                                        groups=g, dilation=d))
    label = f"k={k} s={s} p={p} d={d} groups={g}"
    print(f"{label:<38} {lhs:>14.6f} {rhs:>14.6f}  {abs(lhs - rhs) / abs(lhs):.1e}")

# %%
# The same fact, read as calculus: the gradient of a loss :math:`L(Ax)` with respect to
# :math:`x` is :math:`A^\top \nabla_y L`.  So the input gradient of a convolution *is* a
# transposed convolution of the output gradient, and graphm computes both with the same kernel:

x = rng.standard_normal((2, 3, 10, 10))
weight = rng.standard_normal((5, 3, 3, 3))
grad_y = rng.standard_normal(F.conv2d(x, weight, stride=2, padding=1).shape)
grad_x = F.conv_backward(grad_y, x, weight, stride=2, padding=1).grad_input
same = F.conv_transpose2d(grad_y, weight, stride=2, padding=1, output_padding=1)
print("conv_backward(...).grad_input == conv_transpose2d(grad_output, weight):",
      np.array_equal(grad_x, same))

# %%
# The checkerboard
# ----------------
#
# Transposed convolutions are the usual way to *upsample* in decoders and generators: a stride-2
# transposed convolution doubles the size.  Each input pixel stamps a copy of the kernel, scaled
# by its value, onto the output, and neighbouring stamps are :math:`s` pixels apart.  If the
# kernel size :math:`k` is not a multiple of the stride, the stamps overlap unevenly: some output
# pixels are covered by more stamps than their neighbours.
#
# The overlap count is easy to compute with graphm: a transposed convolution of an all-ones input
# with an all-ones kernel.  With :math:`k=3, s=2`, pixels in even rows and columns are covered
# :math:`2 \times 2 = 4` times, odd ones once or twice: a checkerboard.  With :math:`k=4, s=2`
# every interior pixel is covered exactly 4 times.  A network must learn weights that cancel the
# uneven overlap, and in practice it rarely manages, so the pattern leaks into generated
# images (Odena, Dumoulin and Olah, *Deconvolution and Checkerboard Artifacts*, 2016).

ones = np.ones((1, 1, 8, 8))
fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4))
for ax, k in zip(axes, [3, 4]):
    coverage = F.conv_transpose2d(ones, np.ones((1, 1, k, k)), stride=2)[0, 0]
    image = ax.imshow(coverage, cmap="magma", vmin=0, vmax=4.5)
    ax.set_title(f"overlap count, k={k}, stride 2\noutput {coverage.shape[0]} x "
                 f"{coverage.shape[1]}", fontsize=9)
    ax.axis("off")
_ = fig.colorbar(image, ax=axes, shrink=0.8)

# %%
# The artefact is not special to all-ones kernels.  Upsample a *smooth* input (a slow ramp) with
# a random 3 x 3 kernel and stride 2, then look at the result with the ramp's trend removed: a
# periodic 2 x 2 pattern remains.  The right-hand panel repeats the experiment with a random
# 4 x 4 kernel whose four stride "phases" (the taps ``kernel[a::2, b::2]`` that land on output
# pixels of one parity) were made to sum to the same value.  That is exactly the condition under
# which a constant input upsamples to a constant output; on the ramp the ripple becomes tens of
# times smaller (what is left comes from each phase's taps sitting at slightly different
# places).

rows, cols = np.mgrid[0:12, 0:12]
ramp = ((rows + cols) / 22.0)[None, None]
kernel3 = rng.uniform(0.5, 1.5, (1, 1, 3, 3))
up3 = F.conv_transpose2d(ramp, kernel3, stride=2)[0, 0]

kernel4 = rng.uniform(0.5, 1.5, (1, 1, 4, 4))
for a in range(2):                           # equalise the sum of each stride phase
    for b in range(2):
        kernel4[0, 0, a::2, b::2] /= kernel4[0, 0, a::2, b::2].sum()
up4 = F.conv_transpose2d(ramp, kernel4, stride=2)[0, 0]


def detrend(image):
    """Subtract the best-fitting plane, leaving what a smooth upsampler should not make."""
    r, c = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    design = np.stack([np.ones(image.size), r.ravel(), c.ravel()], axis=1)
    coeffs, *_ = np.linalg.lstsq(design, image.ravel(), rcond=None)
    return image - (design @ coeffs).reshape(image.shape)


inner = (slice(3, -3), slice(3, -3))      # away from the border, where fewer stamps overlap
ripples = [detrend(up3[inner]), detrend(up4[inner])]
limit = np.abs(ripples[0]).max()
fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4))
for ax, ripple, title in zip(axes, ripples, ["random k=3", "phase-balanced random k=4"]):
    image = ax.imshow(ripple, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
_ = fig.colorbar(image, ax=axes, shrink=0.8)
fig.suptitle("a ramp upsampled by a stride-2 transposed conv, best plane removed", fontsize=10)
print(f"interior ripple, k=3 random kernel:       {np.ptp(detrend(up3[inner])):.3f}")
print(f"interior ripple, k=4 phase-balanced kernel: {np.ptp(detrend(up4[inner])):.3f}")

# %%
# Remedies used in practice: choose :math:`k` divisible by :math:`s` (4 x 4 with stride 2), or
# upsample by nearest-neighbour repetition and then apply an ordinary convolution.
#
# What to remember
# ----------------
#
# * For a fixed kernel, convolution is a sparse, banded matrix :math:`A`; transposed
#   convolution with the same kernel is :math:`A^\top`, not an inverse.
# * :math:`\langle \mathrm{conv}(x, w), y\rangle = \langle x, \mathrm{conv\_transpose}(y, w)\rangle`
#   — the dot-product test, which graphm's tests run for every op.
# * The input gradient of a convolution is a transposed convolution, and vice versa: one kernel
#   serves two ops (the adjoint table in :doc:`/concepts`).
# * ``output_padding`` picks the output length the floor of a strided convolution forgot.
# * Stride-2 transposed convolutions with odd kernels overlap unevenly: the checkerboard.
