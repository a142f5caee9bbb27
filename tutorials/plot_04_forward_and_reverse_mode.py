"""
Forward and reverse mode
========================

JVPs and VJPs of a convolution, checked against each other, and what each mode costs.

A derivative of a function :math:`f: \\mathbb{R}^n \\to \\mathbb{R}^m` at a point is its
Jacobian :math:`J`, an :math:`m \\times n` matrix.  Automatic differentiation never builds
:math:`J`; it computes products with it, in one of two directions:

* **forward mode** pushes a tangent :math:`\\dot x \\in \\mathbb{R}^n` through the program
  alongside the values and returns the **JVP** :math:`J \\dot x` — a directional derivative;
* **reverse mode** pulls a cotangent :math:`\\bar y \\in \\mathbb{R}^m` back from the outputs and
  returns the **VJP** :math:`J^\\top \\bar y` — for a scalar loss, the gradient.

This tutorial derives both for a convolution (the JVP by bilinearity, as TorchLean does),
checks them against each other, draws a directional derivative, and measures what each mode
costs as the number of inputs or outputs grows.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import graphm
import graphm.functional as F
from graphm.testing import check_jvp_vjp

rng = np.random.default_rng(0)

# %%
# The JVP of a convolution, by bilinearity
# ----------------------------------------
#
# :math:`\mathrm{conv}(x, w)` is *bilinear*: linear in :math:`x` for fixed :math:`w` and linear
# in :math:`w` for fixed :math:`x`.  Expand it at :math:`(x + \varepsilon\dot x,\,
# w + \varepsilon\dot w,\, b + \varepsilon\dot b)`:
#
# .. math::
#
#     \mathrm{conv}(x + \varepsilon\dot x, w + \varepsilon\dot w) + b + \varepsilon\dot b
#     = \underbrace{\mathrm{conv}(x, w) + b}_{\text{value}}
#     + \varepsilon\,\underbrace{\big(\mathrm{conv}(\dot x, w) + \mathrm{conv}(x, \dot w)
#       + \dot b\big)}_{\text{JVP}}
#     + \varepsilon^2\,\mathrm{conv}(\dot x, \dot w) .
#
# The coefficient of :math:`\varepsilon` is the JVP: two more convolutions, computed forward,
# next to the value.  That is TorchLean's rule ``d conv(k, b, x) = conv(k, 0, dx) +
# conv(dk, db, x)``, and graphm's (``graphm/ops/conv.py``).  :func:`graphm.jvp` runs it:

x = rng.standard_normal((2, 3, 12, 12))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
dx, dw, db = (rng.standard_normal(a.shape) for a in (x, w, b))


def layer(x, w, b):
    return F.conv2d(x, w, b, stride=2, padding=1)


value, tangent = graphm.jvp(layer, (x, w, b), (dx, dw, db))
by_hand = (F.conv2d(dx, w, stride=2, padding=1) + F.conv2d(x, dw, stride=2, padding=1)
           + db[:, None, None])
print("graphm.jvp vs bilinearity by hand:", np.abs(tangent - by_hand).max())

# %%
# Because the function is bilinear, the finite difference is wrong by *exactly* the
# :math:`\varepsilon^2` term — a rare case where we can predict the error of a finite
# difference to the last digit:

for eps in [1e-1, 1e-2, 1e-3]:
    moved = layer(x + eps * dx, w + eps * dw, b + eps * db)
    finite_difference = (moved - value) / eps
    predicted_error = eps * F.conv2d(dx, dw, stride=2, padding=1)
    print(f"eps={eps:g}: |FD - JVP| = {np.abs(finite_difference - tangent).max():.2e}, "
          f"|FD - JVP - eps*conv(dx, dw)| = "
          f"{np.abs(finite_difference - tangent - predicted_error).max():.1e}")

# %%
# The VJP, and the dot-product test
# ---------------------------------
#
# Reverse mode answers the transposed question: given :math:`\bar y` (the gradient of a loss
# with respect to the output), what are :math:`\bar x = J_x^\top \bar y`,
# :math:`\bar w = J_w^\top \bar y` and :math:`\bar b = J_b^\top \bar y`?  For a convolution,
# :math:`\bar x` is a transposed convolution of :math:`\bar y` and :math:`\bar w` a correlation
# of :math:`x` with :math:`\bar y` (the adjoint table in :doc:`/concepts`).
#
# JVP and VJP are products with the same :math:`J` and its transpose, so for any :math:`\dot x`
# and :math:`\bar y`,
#
# .. math::
#
#     \langle J\dot x,\ \bar y\rangle = \langle \dot x,\ J^\top \bar y\rangle .
#
# One random pair checks both rules at once; :func:`graphm.testing.check_jvp_vjp` does exactly
# that, and graphm's test-suite runs it for every op.

out, vjp_fn = graphm.vjp(layer, x, w, b)
y_bar = rng.standard_normal(out.shape)
x_bar, w_bar, b_bar = vjp_fn(y_bar)
forward = np.vdot(tangent, y_bar)
reverse = np.vdot(dx, x_bar) + np.vdot(dw, w_bar) + np.vdot(db, b_bar)
print(f"<J t, y_bar> = {forward:.12f}\n<t, J^T y_bar> = {reverse:.12f}")
print("check_jvp_vjp on a conv -> relu -> conv_transpose block:",
      check_jvp_vjp(lambda x, w: F.conv_transpose2d(F.relu(layer(x, w, b)), w, stride=2,
                                                    padding=1, output_padding=1), (x, w)))

# %%
# A directional derivative, drawn
# -------------------------------
#
# Take a scalar loss of an image, here the energy of a ReLU feature map,
# :math:`L(x) = \tfrac12\lVert \mathrm{relu}(\mathrm{conv}(x, w))\rVert^2`, and walk along a
# straight line :math:`x + s\,\dot x`.  The slope of :math:`s \mapsto L(x + s\dot x)` at
# :math:`s=0` is the directional derivative.  Forward mode gives it in one sweep,
# :math:`J\dot x`; reverse mode gives the whole gradient :math:`\nabla L = J^\top 1`, and the
# slope is then :math:`\langle \nabla L, \dot x\rangle` for *any* direction.


def loss(x):
    features = F.relu(F.conv2d(x, w, b, padding=1))
    return 0.5 * (features * features).sum()


x0 = rng.standard_normal((1, 3, 12, 12))
direction = rng.standard_normal(x0.shape)
direction /= np.linalg.norm(direction)
steps = np.linspace(-3, 3, 61)
curve = [graphm.jvp(loss, (x0 + s * direction,), (direction,))[0] for s in steps]
value0, slope_forward = graphm.jvp(loss, (x0,), (direction,))
gradient = graphm.grad(loss)(x0)
slope_reverse = np.vdot(gradient, direction)
print(f"slope by forward mode {float(slope_forward):.6f}, by reverse mode {slope_reverse:.6f}")

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(steps, curve, label=r"$L(x + s\,\dot x)$")
ax.plot(steps, value0 + slope_forward * steps, "--",
        label=fr"tangent, slope $J\dot x$ = {float(slope_forward):.2f}")
ax.plot([0], [value0], "ko")
ax.set_xlabel("step s along the direction")
ax.set_ylabel("loss")
ax.set_title("A directional derivative is the slope of a 1-d slice", fontsize=10)
ax.legend()
fig.tight_layout()

# %%
# The cost of each mode
# ---------------------
#
# One JVP costs about as much as one evaluation of :math:`f` (here: three convolutions instead
# of one), and so does one VJP.  The difference is what one sweep buys:
#
# * a JVP gives **one column** of :math:`J` (:math:`J e_j`), so the full Jacobian takes
#   :math:`n` forward sweeps — one per input;
# * a VJP gives **one row** (:math:`e_i^\top J`), so it takes :math:`m` reverse sweeps — one per
#   output.
#
# Training a network is the case :math:`m = 1` (a scalar loss) and :math:`n` = millions of
# parameters: one reverse sweep gives the whole gradient, where forward mode would need millions.
# That is why deep learning runs on reverse mode.  Forward mode wins in the opposite shape — few
# inputs, many outputs — and needs no tape, so its memory does not grow with depth.
#
# We measure it: a small two-layer network with :math:`n` input pixels and :math:`m` outputs,
# and the time to build its full Jacobian column by column (JVPs) and row by row (VJPs).  First
# :math:`m = 1` and growing :math:`n`, then a fixed input and growing :math:`m`.

w1 = rng.standard_normal((4, 1, 3, 3)) * 0.5
# These problems are tiny (a few hundred multiply-adds per convolution): waking a second thread
# would cost more than the arithmetic, and we want to count sweeps, not thread start-ups.
threads = graphm.get_num_threads()
graphm.set_num_threads(1)


def two_layers(x, w2):
    return F.conv2d(F.tanh(F.conv2d(x, w1, padding=1)), w2, padding=1)


def jacobian_forward(f, x, w2):
    """n JVPs, one per input coordinate: the Jacobian's columns."""
    columns = []
    for j in range(x.size):
        e_j = np.zeros(x.size)
        e_j[j] = 1.0
        columns.append(graphm.jvp(lambda x: f(x, w2), (x,), (e_j.reshape(x.shape),))[1].ravel())
    return np.stack(columns, axis=1)


def jacobian_reverse(f, x, w2):
    """m VJPs, one per output coordinate: the Jacobian's rows (one tape, swept m times)."""
    out, vjp_fn = graphm.vjp(lambda x: f(x, w2), x)
    rows = []
    for i in range(out.size):
        e_i = np.zeros(out.size)
        e_i[i] = 1.0
        rows.append(vjp_fn(e_i.reshape(out.shape))[0].ravel())
    return np.stack(rows, axis=0)


def seconds(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


# m = 1: the output is one pixel of one channel; n grows with the image.
sizes = [2, 4, 6, 8, 10]
n_inputs, forward_by_n, reverse_by_n = [], [], []
for size in sizes:
    x = rng.standard_normal((1, 1, size, size))
    w2 = rng.standard_normal((1, 4, size, size)) * 0.5     # "valid": one output pixel
    t_fwd, jac_fwd = seconds(lambda: jacobian_forward(
        lambda x, w2: F.conv2d(F.tanh(F.conv2d(x, w1, padding=1)), w2), x, w2))
    t_rev, jac_rev = seconds(lambda: jacobian_reverse(
        lambda x, w2: F.conv2d(F.tanh(F.conv2d(x, w1, padding=1)), w2), x, w2))
    assert np.allclose(jac_fwd, jac_rev)
    n_inputs.append(x.size)
    forward_by_n.append(t_fwd)
    reverse_by_n.append(t_rev)

# n fixed (a 6 x 6 image): m grows with the number of output channels.
x = rng.standard_normal((1, 1, 6, 6))
m_outputs, forward_by_m, reverse_by_m = [], [], []
for channels in [1, 2, 4, 8]:
    w2 = rng.standard_normal((channels, 4, 3, 3)) * 0.5
    t_fwd, jac_fwd = seconds(jacobian_forward, two_layers, x, w2)
    t_rev, jac_rev = seconds(jacobian_reverse, two_layers, x, w2)
    assert np.allclose(jac_fwd, jac_rev)
    m_outputs.append(jac_fwd.shape[0])
    forward_by_m.append(t_fwd)
    reverse_by_m.append(t_rev)

graphm.set_num_threads(threads)

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
left.plot(n_inputs, forward_by_n, "o-", label="forward mode (n JVPs)")
left.plot(n_inputs, reverse_by_n, "s-", label="reverse mode (1 VJP)")
left.set_xlabel("inputs n (m = 1 output)")
left.set_ylabel("seconds for the full Jacobian")
left.set_title("a scalar output: reverse mode wins", fontsize=10)
left.legend()
right.plot(m_outputs, forward_by_m, "o-", label="forward mode (n = 36 JVPs)")
right.plot(m_outputs, reverse_by_m, "s-", label="reverse mode (m VJPs)")
right.set_xlabel("outputs m (n = 36 inputs)")
right.set_title("many outputs, few inputs: forward mode wins", fontsize=10)
right.legend()
fig.tight_layout()

# %%
# Both modes build the same Jacobian (the ``assert np.allclose`` above); only the number of
# sweeps differs.  With :math:`m = 1` the reverse-mode time stays flat while forward mode grows
# linearly in :math:`n`; with :math:`n` fixed, forward mode stays flat and reverse mode grows
# linearly in :math:`m`.  The lines cross where :math:`m` sweeps back cost as much as :math:`n`
# sweeps forward.  That is not exactly at :math:`m = n`: here the tape is recorded once and
# swept back :math:`m` times, while every forward sweep recomputes the values along with the
# tangents, so one reverse sweep is the cheaper of the two.
#
# What to remember
# ----------------
#
# * JVP :math:`J\dot x` (forward mode) is a directional derivative; VJP :math:`J^\top\bar y`
#   (reverse mode) is a gradient when :math:`\bar y = 1` and :math:`m = 1`.
# * A convolution's JVP follows from bilinearity: :math:`\mathrm{conv}(\dot x, w) +
#   \mathrm{conv}(x, \dot w) + \dot b`.
# * :math:`\langle J\dot x, \bar y\rangle = \langle \dot x, J^\top\bar y\rangle` ties the two
#   modes together: the dot-product test.
# * A full Jacobian costs :math:`n` forward sweeps or :math:`m` reverse sweeps: pick the mode by
#   the shape of the problem.
