"""
How robust is a digit classifier?
=================================

Bounds that hold for every input in a box: interval propagation and CROWN, layer by layer, and
the certified accuracy of a trained CNN.

A classifier that answers "7" for an image might answer "1" for the same image with a few
pixels nudged. *Testing* finds such nudges when it is lucky; *verification* proves there are
none: for every image within :math:`\\varepsilon` of the original (in the L∞ norm: no pixel
moved by more than :math:`\\varepsilon`), the network's answer stays the same.

:mod:`graphm.verify` proves it by running the network on *boxes* instead of images. It is one
more interpretation of the same program: evaluation maps arrays to arrays, differentiation
maps gradients to gradients, and bound propagation maps a box of inputs to a box that contains
every output they can produce, with the floating-point rounding of the program itself
accounted for.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import graphm
import graphm.data
import graphm.functional as F
import graphm.nn as nn
import graphm.optim as optim
from graphm.verify import certify, crown, ibp

_ = graphm.manual_seed(0)

# %%
# A small CNN, trained in a few seconds
# -------------------------------------
#
# The network has the shape of the one ``graphm train`` trains
# (:func:`graphm.nn.models.make_cnn`: conv, ReLU, max-pool, twice, then a linear layer),
# narrower so that this page runs in seconds. The inputs are standardised, so a ball of radius
# :math:`\varepsilon` in pixels (which lie in :math:`[0, 1]`) is a ball of radius
# :math:`\varepsilon / \sigma` for the network.

images, labels = graphm.data.load_digits()
x_train, x_test, y_train, y_test = graphm.data.train_test_split(
    images, labels, test_size=0.2, seed=0, stratify=labels)
mean, std = graphm.data.channel_stats(x_train)


def normalize(pixels):
    return graphm.data.normalize(pixels, mean, std)


model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # (N, 8, 4, 4)
    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # (N, 16, 2, 2)
    nn.Flatten(), nn.Linear(16 * 2 * 2, 10))
optimizer = optim.Adam(model.parameters(), lr=5e-3)
loader = graphm.data.DataLoader(normalize(x_train), y_train, batch_size=64, shuffle=True,
                                seed=0)
start = time.perf_counter()
for epoch in range(12):
    for xb, yb in loader:
        loss = F.cross_entropy(model(graphm.tensor(xb)), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
with graphm.no_grad():
    predicted = model(graphm.tensor(normalize(x_test))).numpy().argmax(axis=1)
print(f"trained in {time.perf_counter() - start:.1f} s; test accuracy "
      f"{np.mean(predicted == y_test):.1%}")

# %%
# A box through each layer
# ------------------------
#
# Take one test digit and every image within :math:`\varepsilon = 0.02` of it. Interval bound
# propagation (:func:`~graphm.verify.ibp`) pushes the box through the network op by op: a
# convolution maps the box with centre :math:`c` and radius :math:`r` to the box with centre
# :math:`w \star c + b` and radius :math:`|w| \star r`; a ReLU or a max-pool, being monotone,
# maps its corners. The box it gives after a layer contains every value that layer can take.
#
# But every layer forgets how the values in its box are related. A pixel that raises one
# feature lowers another, and the box lets both rise at once: the widths grow layer after
# layer. CROWN (:func:`~graphm.verify.crown`) keeps the relation: it bounds each output by a
# *linear function of the input*, pulled backward through the network as a gradient is, and
# only then looks at the box. Below, the mean width of the box after each layer, by both.

eps = 0.02
digit = 0
pixel = x_test[digit:digit + 1]
lower = normalize(np.clip(pixel - eps, 0, 1).astype(np.float32))
upper = normalize(np.clip(pixel + eps, 0, 1).astype(np.float32))

layers = list(model)
names, widths_ibp, widths_crown = [], [], []
for depth in range(1, len(layers) + 1):
    prefix = nn.Sequential(*layers[:depth])
    names.append(f"{depth}: {type(layers[depth - 1]).__name__}")
    widths_ibp.append(float(np.mean(ibp(prefix, lower, upper).width())))
    widths_crown.append(float(np.mean(crown(prefix, lower, upper).width())))
    print(f"{names[-1]:14s} IBP width {widths_ibp[-1]:8.4f}   CROWN width "
          f"{widths_crown[-1]:8.4f}   ratio {widths_crown[-1] / widths_ibp[-1]:.2f}")

fig, ax = plt.subplots(figsize=(8, 3.4))
positions = np.arange(len(names))
ax.bar(positions - 0.2, widths_ibp, 0.4, label="IBP")
ax.bar(positions + 0.2, widths_crown, 0.4, label="CROWN")
ax.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
ax.set_yscale("log")
ax.set_ylabel("mean width of the box")
ax.set_title(f"bounds after each layer, eps = {eps} around one digit", fontsize=10)
ax.legend()
fig.tight_layout()

# %%
# The two agree after the first convolution: for one affine layer the box *is* the exact range
# (up to the outward rounding that keeps it sound). After that IBP's boxes grow much faster.
# At a ReLU the boxes shrink (negative values are cut off); right after a ReLU CROWN can even
# be a hair looser than IBP, because it replaces the ReLU by two lines while IBP's
# :math:`[\max(l, 0), \max(u, 0)]` is exact for a box. CROWN profits most after the last
# linear layer, where the dependencies IBP forgot cancel out.
#
# Why CROWN's backward pass is a transposed convolution: to bound :math:`\lambda \cdot y` for
# :math:`y = w \star x + b`, CROWN rewrites it as :math:`(w^\top \lambda) \cdot x +
# \lambda \cdot b`, and :math:`w^\top \lambda` — the adjoint of the convolution applied to the
# coefficients — is ``conv_transpose(λ, w)``: the very kernel that computes a convolution's
# input gradient. The concepts page tells the whole story.
#
# Certified accuracy
# ------------------
#
# A digit is *certified* at :math:`\varepsilon` if a lower bound on every margin
# :math:`y_{\text{label}} - y_j` is positive over the whole ball. CROWN bounds those margins
# directly (its rows are :math:`e_{\text{label}} - e_j`), which is much tighter than
# subtracting bounds on separate logits as IBP must. Here are both, and CROWN-IBP (CROWN with
# interval bounds for the ReLUs' inputs: cheaper, a little looser), on 120 test digits.

subset = slice(0, 120)
eps_values = [0.0, 0.01, 0.02, 0.04, 0.06, 0.08]
curves = {"ibp": [], "crown-ibp": [], "crown": []}
start = time.perf_counter()
for eps_value in eps_values:
    pixels = x_test[subset]
    low = normalize(np.clip(pixels - eps_value, 0, 1).astype(np.float32))
    high = normalize(np.clip(pixels + eps_value, 0, 1).astype(np.float32))
    for method in curves:
        result = graphm.verify.certify_box(model, low, high, y_test[subset], method)
        curves[method].append(result.accuracy())
    print(f"eps {eps_value:.2f}: " + ", ".join(f"{m} {curves[m][-1]:.1%}" for m in curves))
print(f"certified {len(eps_values)} x 3 times in {time.perf_counter() - start:.1f} s")

fig, ax = plt.subplots(figsize=(6, 3.6))
graphm.verify.plot_certified_accuracy(eps_values, curves, ax=ax,
                                      clean=np.mean(predicted[subset] == y_test[subset]))
ax.set_title("certified accuracy of the trained CNN", fontsize=10)
fig.tight_layout()

# %%
# Proof and attack, side by side
# ------------------------------
#
# Certification gives a lower bound on robustness; an attack gives an upper bound. We take the
# correctly classified digit that stays certified at the largest :math:`\varepsilon` on a fine
# grid, then search beyond that radius with projected gradient descent (PGD: small signed
# gradient steps on the margin, projected back into the ball) until the label flips. The true
# robust radius lies between the two.

grid = np.round(np.arange(0.005, 0.25, 0.005), 3)
sample = x_test[subset]
lab = y_test[subset]
certified_radius = np.zeros(len(lab))
for eps_value in grid:
    still = certified_radius >= eps_value - 0.005 - 1e-9   # certified at the previous radius
    if not still.any():
        break
    idx = np.flatnonzero(still & (predicted[subset] == lab))
    if len(idx) == 0:
        break
    low = normalize(np.clip(sample[idx] - eps_value, 0, 1).astype(np.float32))
    high = normalize(np.clip(sample[idx] + eps_value, 0, 1).astype(np.float32))
    result = graphm.verify.certify_box(model, low, high, lab[idx], "crown-ibp")
    certified_radius[idx[result.certified]] = eps_value
best = int(np.argmax(certified_radius))
radius = certified_radius[best]
print(f"digit {best} (a {lab[best]}) is certified up to eps = {radius:.3f}")
# the same claim through graphm.verify.certify: a ball of radius eps / std in the network's
# (standardised) input space, clipped to the image of [0, 1]
domain = (float((0 - mean[0]) / std[0]), float((1 - mean[0]) / std[0]))
print("graphm.verify.certify agrees:",
      bool(certify(model, normalize(sample[best:best + 1]), lab[best:best + 1],
                   radius / std[0], "crown-ibp", domain=domain).certified[0]))


def pgd(pixels, label, eps_value, steps=60):
    """Lower the margin of ``label`` by signed gradient steps, staying within the ball."""
    x = pixels.copy()
    for step in range(steps):
        t = graphm.tensor(normalize(x), requires_grad=True)
        logits = model(t)
        values = logits.numpy()[0]
        others = np.delete(np.arange(10), label)
        rival = others[np.argmax(values[others])]
        (logits[0, rival] - logits[0, label]).backward()
        x = x + (eps_value / 10) * np.sign(t.grad) / std[0]
        x = np.clip(np.clip(x, pixels - eps_value, pixels + eps_value), 0, 1).astype(np.float32)
        if values.argmax() != label:
            break
    with graphm.no_grad():
        return x, int(model(graphm.tensor(normalize(x))).numpy().argmax())


found = None
for eps_value in np.round(np.arange(radius + 0.005, 0.5, 0.005), 3):
    adversarial, answer = pgd(sample[best:best + 1], lab[best], eps_value)
    if answer != lab[best]:
        found = eps_value
        break
print(f"PGD flips it to {answer} at eps = {found}" if found else "PGD found no attack")

fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
axes[0].imshow(sample[best, 0], cmap="gray_r", vmin=0, vmax=1)
axes[0].set_title(f"a {lab[best]}: certified\nfor every image within {radius:.3f}", fontsize=9)
axes[1].imshow(adversarial[0, 0], cmap="gray_r", vmin=0, vmax=1)
axes[1].set_title(f"PGD at eps {found}:\nread as a {answer}", fontsize=9)
difference = axes[2].imshow(adversarial[0, 0] - sample[best, 0], cmap="RdBu",
                            vmin=-(found or 1), vmax=found or 1)
axes[2].set_title("the change", fontsize=9)
fig.colorbar(difference, ax=axes[2], fraction=0.046)
for axis in axes:
    axis.axis("off")
fig.tight_layout()

# %%
# Sound means sound in floating point
# -----------------------------------
#
# A bound proven for real numbers is not yet a bound on what the computer computes: a
# convolution summing :math:`n` products in float32 can be off by up to
# :math:`\gamma_n \sum |w||x|`, :math:`\gamma_n = n u / (1 - n u)`, :math:`u = 2^{-24}`. Every
# rule in :mod:`graphm.verify` adds that error (and rounds its results outward), so the boxes
# above contain the network's float32 outputs, not only the exact ones. A check, on 20 000
# random images of the ball around our digit:

box = crown(model, lower, upper)
with graphm.no_grad():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-eps, eps, (20000,) + pixel.shape[1:]).astype(np.float32)
    outputs = model(graphm.tensor(normalize(np.clip(pixel + noise, 0, 1)))).numpy()
print("all inside:", bool(np.all((box.lower <= outputs) & (outputs <= box.upper))))
