"""
Second derivatives of a convolution
===================================

The gradient of a convolution is made of convolutions: the input gradient is a transposed
convolution, the weight gradient is the kernel :math:`K_w`.  graphm writes every derivative
rule with its own ops, and :math:`K_w` is an op too, bilinear in (input, output gradient) with
derivatives that are again ``conv``, ``conv_transpose`` and ``conv_weight_grad``:

.. math::

    \\langle K_w(x, g),\\, \\bar W \\rangle = \\langle g,\\, \\mathrm{conv}(x, \\bar W) \\rangle
    = \\langle x,\\, \\mathrm{conv\\_transpose}(g, \\bar W) \\rangle .

So the Hessian of a convolutional network needs no fourth kernel, and graphm's transforms
compose: ``graphm.jvp(graphm.grad(loss), params, v)`` is a Hessian-vector product.  This
tutorial checks one against PyTorch-free finite differences, follows the *sharpness* of a
small CNN's loss (its top Hessian eigenvalue, by power iteration) through training, and prints
the gradient of a compiled Program, which is a Program too.
"""

import matplotlib.pyplot as plt
import numpy as np

import graphm
import graphm.functional as F

rng = np.random.default_rng(0)

# %%
# A small CNN and its loss as a function of the parameters
# --------------------------------------------------------
#
# Three classes of 8x8 images: a bright row, a bright column, or a bright diagonal, plus noise.

def make_images(count):
    labels = rng.integers(0, 3, count)
    images = 0.3 * rng.standard_normal((count, 1, 8, 8))
    for image, label in zip(images, labels):
        k = rng.integers(1, 7)
        if label == 0:
            image[0, k, :] += 1.0
        elif label == 1:
            image[0, :, k] += 1.0
        else:
            image[0] += np.eye(8)
    return images, labels


images, labels = make_images(96)
shapes = [(4, 1, 3, 3), (4,), (3, 64), (3,)]
params = [0.3 * rng.standard_normal(s) for s in shapes]


def loss(conv_weight, conv_bias, linear_weight, linear_bias):
    h = F.max_pool2d(F.relu(F.conv2d(images, conv_weight, conv_bias, padding=1)), 2)
    return F.cross_entropy(F.linear(h.flatten(1), linear_weight, linear_bias), labels)


everything = tuple(range(len(params)))
gradient = graphm.grad(loss, argnums=everything)


def hvp(params, vectors):
    """H v, forward over reverse: the JVP of the gradient."""
    return graphm.jvp(gradient, tuple(params), tuple(vectors))[1]


# %%
# The Hessian-vector product against finite differences of the gradient
# ---------------------------------------------------------------------

v = [rng.standard_normal(s) for s in shapes]
eps = 1e-5
plus = gradient(*[p + eps * d for p, d in zip(params, v)])
minus = gradient(*[p - eps * d for p, d in zip(params, v)])
finite = [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
exact = hvp(params, v)
error = max(np.abs(a - b).max() for a, b in zip(exact, finite))
print(f"largest difference from central differences: {error:.2e}")

# %%
# The top eigenvalue by power iteration
# -------------------------------------
#
# Repeatedly apply H to a vector and normalise it; the Rayleigh quotient converges to the
# eigenvalue of largest magnitude (for a loss near a minimum, the largest curvature).

def top_eigenvalue(params, iterations=15):
    vector = [rng.standard_normal(s) for s in shapes]
    value = 0.0
    for _ in range(iterations):
        norm = np.sqrt(sum(np.vdot(a, a) for a in vector))
        vector = [a / norm for a in vector]
        image = hvp(params, vector)
        value = sum(np.vdot(a, b) for a, b in zip(vector, image))
        vector = image
    return value


print(f"sharpness at initialisation: {top_eigenvalue(params):.3f}")

# %%
# Sharpness through training
# --------------------------
#
# Gradient descent with a larger learning rate tends to settle where the loss is flatter (the
# "edge of stability": the sharpness hovers near 2 / learning rate).

epochs = 12
figure, axis = plt.subplots(figsize=(6, 3.5))
for learning_rate in (0.2, 1.0):
    current = [p.copy() for p in params]
    sharpness = []
    for epoch in range(epochs):
        for _ in range(5):
            grads = gradient(*current)
            current = [p - learning_rate * g for p, g in zip(current, grads)]
        sharpness.append(top_eigenvalue(current, iterations=10))
    print(f"lr {learning_rate}: final loss {float(loss(*[graphm.tensor(p) for p in current])):.3f}"
          f", sharpness {sharpness[-1]:.3f}")
    axis.plot(range(1, epochs + 1), sharpness, marker="o", label=f"lr = {learning_rate}")
axis.set_xlabel("epoch (5 full-batch steps each)")
axis.set_ylabel("top Hessian eigenvalue")
axis.set_title("Sharpness of a small CNN's loss during training")
axis.legend()
figure.tight_layout()
plt.show()

# %%
# The gradient of a Program is a Program
# --------------------------------------
#
# In compiled mode the same rules, run on a graph's Vars, *record* the backward pass: the
# gradient of a Program is another Program, and printing it shows compiled backprop as SSA
# code. The convolution's weight gradient is a ``conv_weight_grad`` node, max pooling's
# adjoint a ``max_pool_scatter`` that reads the winners a ``residual[max_pool]`` node finds,
# and ReLU's derivative a product with the mask ``residual[relu]``. One sample keeps it short.

g = graphm.GraphM()
x_var = g.input("x", (1, 1, 8, 8), "float64")
y_var = g.input("y", (1,), "int64")
param_vars = [g.param(name, s, "float64") for name, s in zip(("w", "b", "v", "c"), shapes)]
h = F.max_pool2d(F.relu(F.conv2d(x_var, param_vars[0], param_vars[1], padding=1)), 2)
loss_program = g.compile(F.cross_entropy(F.linear(h.flatten(1), *param_vars[2:]), y_var))
gradient_program = loss_program.grad_program(["w", "b", "v", "c"])
print(gradient_program)

# %%
# Being a Program, it can be differentiated again: ``jvp_program`` of the gradient Program is a
# compiled Hessian-vector product, which agrees with the eager one.

hvp_program = gradient_program.jvp_program(["w", "b", "v", "c"])
feed = {"x": images[:1], "y": labels[:1], **dict(zip("wbvc", params))}
vectors = [rng.standard_normal(s) for s in shapes]
compiled_hvp = hvp_program({**feed, **{f"tangent_{n}": v for n, v in zip("wbvc", vectors)}})


def one_sample_loss(*p):
    h = F.max_pool2d(F.relu(F.conv2d(images[:1], p[0], p[1], padding=1)), 2)
    return F.cross_entropy(F.linear(h.flatten(1), p[2], p[3]), labels[:1])


_, eager_hvp = graphm.jvp(graphm.grad(one_sample_loss, argnums=everything), tuple(params),
                          tuple(vectors))
difference = max(float(np.abs(a - b).max()) for a, b in zip(compiled_hvp, eager_hvp))
print(f"{hvp_program!r}; largest difference from eager: {difference:.1e}")
