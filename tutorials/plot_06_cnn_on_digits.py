"""
Training a CNN on handwritten digits
====================================

A small CNN trained on 8 x 8 digits in seconds: curves, learned filters, feature maps, mistakes.

Everything so far comes together: a small convolutional network, written with
:mod:`graphm.nn`, trained with :mod:`graphm.optim` on the 8 x 8 handwritten digits that ship
with graphm (no download), in a few seconds on two cores.  We watch it learn — loss and
accuracy curves — and then open it up: the filters it learned, the feature maps they produce,
and the mistakes it still makes (a confusion matrix).

This is what ``graphm train`` does from the command line, written out step by step.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import graphm
import graphm.data
import graphm.functional as F
import graphm.nn as nn
import graphm.optim as optim

_ = graphm.manual_seed(0)  # seeds the layers' initial weights; returns the generator

# %%
# The data
# --------
#
# 1797 grey-scale digits of 8 x 8 pixels with values in :math:`[0, 1]`, shaped
# ``(N, 1, 8, 8)`` — channels first, as graphm's convolutions expect.  We keep a quarter aside
# for testing (stratified: every digit in the same proportion), and standardise with the mean
# and standard deviation of the *training* part only, so that nothing about the test set leaks
# into training.

images, labels = graphm.data.load_digits()
x_train, x_test, y_train, y_test = graphm.data.train_test_split(
    images, labels, test_size=0.25, seed=0, stratify=labels)
mean, std = graphm.data.channel_stats(x_train)
x_train_n = graphm.data.normalize(x_train, mean, std)
x_test_n = graphm.data.normalize(x_test, mean, std)
print(f"train {x_train.shape}, test {x_test.shape}, classes {np.bincount(y_train)}")

fig, axes = plt.subplots(2, 10, figsize=(9, 2.2))
fig.suptitle("two training examples of each digit", fontsize=10)
for digit in range(10):
    for row in range(2):
        axes[row, digit].imshow(x_train[np.flatnonzero(y_train == digit)[row], 0],
                                cmap="gray_r")
        axes[row, digit].axis("off")

# %%
# The network
# -----------
#
# Two 3 x 3 convolutions (padding 1 keeps the 8 x 8 size) detect strokes and then combinations
# of strokes; max pooling halves the resolution, keeping the strongest response in each 2 x 2
# window; a linear layer maps the :math:`16 \times 4 \times 4 = 256` features to 10 class
# scores.  ``nn.Conv2d(in, out, kernel)`` holds a weight ``(out, in, 3, 3)`` and a bias, drawn
# as PyTorch does (Kaiming-uniform) from the generator seeded by :func:`graphm.manual_seed`.

model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),       # (N, 8, 8, 8)
    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),      # (N, 16, 8, 8)
    nn.MaxPool2d(2),                                # (N, 16, 4, 4)
    nn.Flatten(),                                   # (N, 256)
    nn.Linear(16 * 4 * 4, 10),                      # (N, 10) class scores
)
print(model)
print("parameters:", sum(p.numpy().size for p in model.parameters()))

# %%
# Training
# --------
#
# The loss is the cross-entropy between the softmax of the scores and the true class,
#
# .. math::
#
#     L = -\frac{1}{B}\sum_{n=1}^{B} \log \frac{e^{z_{n, y_n}}}{\sum_j e^{z_{n, j}}},
#
# averaged over a minibatch of :math:`B = 64` images.  Each step is the same four lines as in
# PyTorch: forward, ``zero_grad``, ``backward``, ``step``.  Adam adapts the step size of each
# weight from running averages of its gradient and squared gradient.

loader = graphm.data.DataLoader(x_train_n, y_train, batch_size=64, shuffle=True, seed=0)
optimizer = optim.Adam(model.parameters(), lr=3e-3)


def accuracy(x, y):
    with graphm.no_grad():
        return float((model(graphm.tensor(x)).numpy().argmax(axis=1) == y).mean())


EPOCHS = 12
history = {"loss": [], "train": [], "test": []}
start = time.perf_counter()
for epoch in range(EPOCHS):
    model.train()
    losses = []
    for xb, yb in loader:
        loss = F.cross_entropy(model(graphm.tensor(xb)), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    history["loss"].append(np.mean(losses))
    history["train"].append(accuracy(x_train_n, y_train))
    history["test"].append(accuracy(x_test_n, y_test))
    print(f"epoch {epoch + 1:>2}: loss {history['loss'][-1]:.3f}, "
          f"train accuracy {history['train'][-1]:.1%}, test accuracy {history['test'][-1]:.1%}")
print(f"trained in {time.perf_counter() - start:.1f} s on {graphm.get_num_threads()} threads")

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.3))
epochs = np.arange(1, EPOCHS + 1)
left.plot(epochs, history["loss"], "o-")
left.set_xlabel("epoch")
left.set_ylabel("mean training loss")
left.set_yscale("log")
right.plot(epochs, history["train"], "o-", label="train")
right.plot(epochs, history["test"], "s-", label="test")
right.set_xlabel("epoch")
right.set_ylabel("accuracy")
right.legend()
fig.suptitle("learning curves", fontsize=10)
fig.tight_layout()

# %%
# What the first layer learned
# ----------------------------
#
# The first layer's weight is ``(8, 1, 3, 3)``: eight 3 x 3 filters, one per output channel.
# Each is a small pattern; the convolution responds where the image looks like it.  On images
# this small, the filters are mostly oriented edge and stroke detectors (blue: negative weights,
# red: positive).

filters = model[0].weight.numpy()[:, 0]
limit = np.abs(filters).max()
fig, axes = plt.subplots(1, 8, figsize=(9, 1.6))
fig.suptitle("first-layer filters", fontsize=10)
for i, ax in enumerate(axes):
    ax.imshow(filters[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"filter {i}", fontsize=8)
    ax.axis("off")

# %%
# Feature maps
# ------------
#
# Run one test digit through the network and look at what each layer passes on.  A
# ``Sequential`` can be indexed like a list, so the first two modules are "conv 1 + ReLU".

digit = x_test_n[:1]
with graphm.no_grad():
    after_first = model[1](model[0](graphm.tensor(digit))).numpy()[0]    # (8, 8, 8)
    after_second = model[3](model[2](graphm.tensor(after_first[None]))).numpy()[0]  # (16, 8, 8)

fig, axes = plt.subplots(2, 9, figsize=(10, 2.8))
for row, (maps, title) in enumerate([(after_first, "conv 1 + ReLU (all 8 channels)"),
                                     (after_second[::2], "conv 2 + ReLU (8 of 16 channels)")]):
    axes[row, 0].imshow(x_test[0, 0], cmap="gray_r")
    axes[row, 0].set_title(f"input: a {y_test[0]}", fontsize=8)
    for i in range(8):
        axes[row, i + 1].imshow(maps[i], cmap="viridis")
    axes[row, 1].set_title(title, fontsize=8, loc="left")
for ax in axes.ravel():
    ax.axis("off")
fig.tight_layout()

# %%
# The confusion matrix
# --------------------
#
# Row :math:`i`, column :math:`j` counts the test digits of class :math:`i` that the network
# called :math:`j`; a perfect classifier has everything on the diagonal.  The off-diagonal
# cells show which digits it confuses — usually pairs that look alike at 8 x 8 pixels.

with graphm.no_grad():
    predictions = model(graphm.tensor(x_test_n)).numpy().argmax(axis=1)
confusion = np.zeros((10, 10), dtype=int)
np.add.at(confusion, (y_test, predictions), 1)
print(f"test accuracy {np.trace(confusion) / confusion.sum():.1%}")

fig, ax = plt.subplots(figsize=(4.8, 4.2))
ax.imshow(confusion, cmap="Blues")
for (i, j), count in np.ndenumerate(confusion):
    if count:
        ax.text(j, i, count, ha="center", va="center", fontsize=7,
                color="white" if count > confusion.max() / 2 else "black")
ax.set_xticks(range(10))
ax.set_yticks(range(10))
ax.set_xlabel("predicted")
ax.set_ylabel("true")
ax.set_title("confusion matrix (test set)", fontsize=10)
fig.tight_layout()

# %%
# The misclassified digits themselves:

wrong = np.flatnonzero(predictions != y_test)[:8]
fig, axes = plt.subplots(1, max(len(wrong), 1), figsize=(9, 1.7), squeeze=False)
for ax, i in zip(axes[0], wrong):
    ax.imshow(x_test[i, 0], cmap="gray_r")
    ax.set_title(f"true {y_test[i]}, said {predictions[i]}", fontsize=8)
for ax in axes[0]:
    ax.axis("off")

# %%
# The same model, compiled
# ------------------------
#
# :func:`graphm.compile` traces the model's ``forward`` into a :class:`graphm.GraphM` program
# that shares its weights.  Shapes are checked once, at trace time, and the program can be
# printed, evaluated and differentiated — it gives the same numbers as the eager model.

compiled = graphm.compile(model, x_test_n)
print(compiled.program)
with graphm.no_grad():
    eager_scores = model(graphm.tensor(x_test_n)).numpy()
print("largest difference, eager vs compiled scores:",
      np.abs(compiled(x_test_n) - eager_scores).max())

# %%
# What to remember
# ----------------
#
# * A training step is forward, ``zero_grad``, ``backward``, ``step``; graphm spells it as
#   PyTorch does.
# * Standardise with training statistics only; keep a test set the model never trains on.
# * Look inside: learned filters, feature maps and the confusion matrix tell you what the
#   network does, and where it fails.
