"""
A convolutional autoencoder
===========================

Convolutions down to a two-number code, transposed convolutions back up: the latent space drawn.

An autoencoder learns to copy its input through a narrow bottleneck.  The *encoder* squeezes an
image into a few numbers, the *latent code*; the *decoder* rebuilds the image from the code.
Nothing tells it what the code should mean — it only has to make the reconstruction close to
the input — and yet similar images end up with similar codes.

Convolutions shrink the image in the encoder; **transposed convolutions**, the adjoints of the
first tutorials, grow it back in the decoder.  We train one on the 8 x 8 digits with a
two-dimensional code, so that the whole latent space can be drawn.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import graphm
import graphm.data
import graphm.functional as F
import graphm.nn as nn
import graphm.optim as optim
from graphm import spec

_ = graphm.manual_seed(0)  # seeds the layers' initial weights; returns the generator

# %%
# The data
# --------
#
# The digits, pixel values in :math:`[0, 1]` (no standardisation: the decoder ends with a
# sigmoid, whose outputs are in :math:`[0, 1]` too).

images, labels = graphm.data.load_digits()
x_train, x_test, y_train, y_test = graphm.data.train_test_split(
    images, labels, test_size=0.25, seed=0, stratify=labels)
print(f"train {x_train.shape}, test {x_test.shape}, values in [{images.min()}, {images.max()}]")

# %%
# Down with convolutions, up with transposed convolutions
# -------------------------------------------------------
#
# A stride-2 convolution halves each side; a stride-2 *transposed* convolution doubles it.  With
# kernel 4 and padding 1, the output-size formulas give exactly the sizes we want — and a kernel
# that is a multiple of the stride avoids the checkerboard of the transposed-convolution
# tutorial:

print("encoder 8 -> ", spec.conv_out_spatial(8, kernel=4, stride=2, padding=1), "->",
      spec.conv_out_spatial(4, kernel=4, stride=2, padding=1))
print("decoder 2 -> ", spec.conv_transpose_out_spatial(2, kernel=4, stride=2, padding=1), "->",
      spec.conv_transpose_out_spatial(4, kernel=4, stride=2, padding=1))

# %%
# The model is a :class:`graphm.nn.Module` of our own: two ``Sequential`` halves and a
# ``forward`` that reshapes the decoder's vector back into feature maps.  Written with graphm
# operations, it runs eagerly and could be compiled with :func:`graphm.compile` unchanged.

LATENT = 2


class AutoEncoder(nn.Module):
    def __init__(self, latent=LATENT):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),     # (N, 16, 4, 4)
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),    # (N, 32, 2, 2)
            nn.Flatten(), nn.Linear(32 * 2 * 2, latent),             # (N, latent)
        )
        self.expand = nn.Sequential(nn.Linear(latent, 32 * 2 * 2), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),   # (N, 16, 4, 4)
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1), nn.Sigmoid(), # (N, 1, 8, 8)
        )

    def encode(self, x):
        return self.encoder(x)

    def decode(self, code):
        return self.decoder(self.expand(code).reshape(-1, 32, 2, 2))

    def forward(self, x):
        return self.decode(self.encode(x))


model = AutoEncoder()
print(model)

# %%
# Training
# --------
#
# The loss is the mean squared error between reconstruction and input,
# :math:`L = \frac{1}{B\cdot 64}\sum_{n,i} (\hat x_{n,i} - x_{n,i})^2`.  The gradient flows from
# the reconstruction back through the decoder — where the transposed convolutions' own VJPs are
# ordinary convolutions (the adjoint table) — and through the bottleneck into the encoder.

loader = graphm.data.DataLoader(x_train, y_train, batch_size=64, shuffle=True, seed=0)
optimizer = optim.Adam(model.parameters(), lr=1e-2)


def test_mse():
    with graphm.no_grad():
        return float(((model(graphm.tensor(x_test)).numpy() - x_test) ** 2).mean())


EPOCHS = 60
train_curve, test_curve = [], []
start = time.perf_counter()
for epoch in range(EPOCHS):
    losses = []
    for xb, _ in loader:
        x = graphm.tensor(xb)
        loss = F.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    train_curve.append(np.mean(losses))
    test_curve.append(test_mse())
    if epoch % 10 == 9:
        print(f"epoch {epoch + 1:>2}: train MSE {train_curve[-1]:.4f}, test MSE "
              f"{test_curve[-1]:.4f}")
print(f"trained in {time.perf_counter() - start:.1f} s; for scale, predicting every image as "
      f"the mean image gives MSE {((x_test - x_train.mean(axis=0)) ** 2).mean():.4f}")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(range(1, EPOCHS + 1), train_curve, label="train")
ax.plot(range(1, EPOCHS + 1), test_curve, label="test")
ax.set_xlabel("epoch")
ax.set_ylabel("reconstruction MSE")
ax.set_yscale("log")
ax.legend()
fig.tight_layout()

# %%
# Reconstructions
# ---------------
#
# Top row: test digits; bottom row: what the autoencoder rebuilds from just **two numbers**
# each.  The reconstructions are blurry — two numbers cannot store 64 pixels — but they keep
# the identity of most digits: the code has captured what matters most for the pixels.

with graphm.no_grad():
    reconstructions = model(graphm.tensor(x_test[:10])).numpy()
fig, axes = plt.subplots(2, 10, figsize=(9, 2.2))
for i in range(10):
    axes[0, i].imshow(x_test[i, 0], cmap="gray_r", vmin=0, vmax=1)
    axes[1, i].imshow(reconstructions[i, 0], cmap="gray_r", vmin=0, vmax=1)
    axes[0, i].set_title(str(y_test[i]), fontsize=8)
axes[0, 0].text(-1.5, 3.5, "input", rotation=90, va="center", ha="right", fontsize=8)
axes[1, 0].text(-1.5, 3.5, "output", rotation=90, va="center", ha="right", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")

# %%
# The latent space
# ----------------
#
# Each test digit, placed at its two-number code and coloured by its true label (which the
# autoencoder never saw): digits of one class gather in one region.  On the right, the decoder
# applied to a regular grid of codes spanning the same region — a map of everything the decoder
# can draw, one digit shape smoothly morphing into the next.

with graphm.no_grad():
    codes = model.encode(graphm.tensor(x_test)).numpy()

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
scatter = left.scatter(codes[:, 0], codes[:, 1], c=y_test, cmap="tab10", s=8)
left.legend(*scatter.legend_elements(), fontsize=7, title="digit", title_fontsize=7,
            loc="best", markerscale=0.8)
left.set_xlabel("code 1")
left.set_ylabel("code 2")
left.set_title("test digits in the latent space", fontsize=10)

steps = 12
low, high = np.percentile(codes, 5, axis=0), np.percentile(codes, 95, axis=0)
grid_1, grid_2 = np.meshgrid(np.linspace(low[0], high[0], steps),
                             np.linspace(high[1], low[1], steps))
grid = np.stack([grid_1.ravel(), grid_2.ravel()], axis=1).astype(np.float32)
with graphm.no_grad():
    decoded = model.decode(graphm.tensor(grid)).numpy()[:, 0]       # (steps^2, 8, 8)
tiles = np.pad(decoded, ((0, 0), (1, 1), (1, 1)))              # a blank frame around each
tile = tiles.shape[-1]
mosaic = (tiles.reshape(steps, steps, tile, tile).transpose(0, 2, 1, 3)
          .reshape(steps * tile, steps * tile))
right.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1)
right.set_xticks([tile / 2, steps * tile - tile / 2], [f"{low[0]:.1f}", f"{high[0]:.1f}"])
right.set_yticks([tile / 2, steps * tile - tile / 2], [f"{high[1]:.1f}", f"{low[1]:.1f}"])
right.set_xlabel("code 1")
right.set_ylabel("code 2")
right.set_title(f"the decoder on a {steps} x {steps} grid of codes", fontsize=10)
fig.tight_layout()

# %%
# What to remember
# ----------------
#
# * Stride-2 convolutions shrink, stride-2 transposed convolutions grow; the output-size formulas
#   (:func:`graphm.spec.conv_out_spatial`, :func:`graphm.spec.conv_transpose_out_spatial`) tell
#   you the kernel, stride and padding that make the sizes meet.
# * Kernel 4 with stride 2 keeps the transposed convolutions free of the checkerboard.
# * Trained only to reconstruct, the autoencoder still organises its codes by digit: the
#   structure of the data shows up in the latent space.
