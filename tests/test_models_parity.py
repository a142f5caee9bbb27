"""Whole models: a LeNet-style CNN and a convolutional autoencoder, eager vs compiled vs PyTorch.

Each model is written once with graphm.functional and runs three ways: eagerly on Tensors,
traced into a GraphM program (Vars), and, with torch.nn.functional in place of graphm's, in
PyTorch. Checked: the loss, every parameter gradient, and a JVP along random parameter
directions (forward mode, against torch.func.jvp).
"""
from __future__ import annotations

import numpy as np
import pytest

import graphm
import graphm.functional as GF

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

# torch.func warns about torch.jit on import; that is PyTorch's business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")


def lenet(F, x, p, labels):
    """conv, relu, max_pool, flatten, linear, cross_entropy."""
    h = F.max_pool2d(F.relu(F.conv2d(x, p["c1w"], p["c1b"], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p["c2w"], p["c2b"])), 2)
    h = F.relu(F.linear(h.flatten(1), p["f1w"], p["f1b"]))
    return F.cross_entropy(F.linear(h, p["f2w"], p["f2b"]), labels)


LENET = {"c1w": (4, 1, 5, 5), "c1b": (4,), "c2w": (6, 4, 3, 3), "c2b": (6,),
         "f1w": (16, 6 * 4 * 4), "f1b": (16,), "f2w": (10, 16), "f2b": (10,)}


def autoencoder(F, x, p, _unused=None):
    """conv, conv_transpose, sigmoid, mse_loss (reconstruct the input)."""
    h = F.relu(F.conv2d(x, p["e1w"], p["e1b"], stride=2, padding=1))           # 16 -> 8
    z = F.relu(F.conv2d(h, p["e2w"], p["e2b"], stride=2, padding=1))
    h = F.relu(F.conv_transpose2d(z, p["d1w"], p["d1b"], stride=2, padding=1,
                                  output_padding=1))
    y = sigmoid(F, F.conv_transpose2d(h, p["d2w"], p["d2b"], stride=2, padding=1,
                                      output_padding=1))
    return F.mse_loss(y, x)


AUTOENCODER = {"e1w": (4, 1, 3, 3), "e1b": (4,), "e2w": (8, 4, 3, 3), "e2b": (8,),
               "d1w": (8, 4, 3, 3), "d1b": (4,), "d2w": (4, 1, 3, 3), "d2b": (1,)}


def sigmoid(F, x):
    return torch.sigmoid(x) if F is TF else F.sigmoid(x)


MODELS = {
    "lenet": (lenet, LENET, (6, 1, 20, 20), True),
    "autoencoder": (autoencoder, AUTOENCODER, (3, 1, 16, 16), False),
}


def make(model, dtype, seed=0):
    fn, shapes, x_shape, has_labels = MODELS[model]
    rng = np.random.default_rng(seed)
    params = {n: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 4)
                  ).astype(dtype) for n, s in shapes.items()}
    x = rng.uniform(0, 1, x_shape).astype(dtype)
    labels = rng.integers(0, 10, x_shape[0]) if has_labels else None
    tangents = {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}
    return fn, x, labels, params, tangents


def run_eager(fn, x, labels, params, tangents):
    names = list(params)

    def loss(*values):
        return fn(GF, x, dict(zip(names, values)), labels)

    value, grads = graphm.value_and_grad(loss, argnums=tuple(range(len(names))))(
        *params.values())
    _, tangent = graphm.jvp(loss, tuple(params.values()), tuple(tangents.values()))
    return value, dict(zip(names, grads)), tangent


def run_compiled(fn, x, labels, params, tangents):
    g = graphm.GraphM()
    x_var = g.input("x", x.shape, x.dtype)
    label_var = g.input("labels", labels.shape, "int64") if labels is not None else None
    p = {n: g.param(n, v.shape, v.dtype) for n, v in params.items()}
    program = g.compile(fn(GF, x_var, p, label_var))
    feed = {"x": x, **params}
    if labels is not None:
        feed["labels"] = labels
    value, grads = program.value_and_grad(feed)
    _, tangent = program.jvp(feed, tangents)
    return value, grads, tangent, program


def run_torch(fn, x, labels, params, tangents):
    names = list(params)
    xt = torch.from_numpy(x)
    lt = torch.from_numpy(labels) if labels is not None else None

    def loss(*values):
        return fn(TF, xt, dict(zip(names, values)), lt)

    leaves = [torch.tensor(v, requires_grad=True) for v in params.values()]
    value = loss(*leaves)
    grads = torch.autograd.grad(value, leaves)
    _, tangent = torch.func.jvp(loss, tuple(torch.from_numpy(v) for v in params.values()),
                                tuple(torch.from_numpy(t) for t in tangents.values()))
    return value.item(), {n: g.numpy() for n, g in zip(names, grads)}, tangent.item()


@pytest.mark.parametrize("model", list(MODELS))
def test_eager_and_compiled_agree_exactly(model):
    """Same ops, same order, same kernels: eager and compiled give identical numbers."""
    fn, x, labels, params, tangents = make(model, np.float32)
    value, grads, tangent = run_eager(fn, x, labels, params, tangents)
    value_c, grads_c, tangent_c, program = run_compiled(fn, x, labels, params, tangents)
    assert value_c.dtype == np.float32 and tangent_c.dtype == np.float32
    np.testing.assert_array_equal(value, value_c)
    np.testing.assert_array_equal(tangent, tangent_c)
    assert set(grads_c) == set(grads) | {"x"}
    for name in params:
        np.testing.assert_array_equal(grads[name], grads_c[name], err_msg=name)
        assert grads_c[name].dtype == np.float32


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("model", list(MODELS))
def test_matches_pytorch(model, dtype, rtol):
    fn, x, labels, params, tangents = make(model, dtype, seed=1)
    value_t, grads_t, tangent_t = run_torch(fn, x, labels, params, tangents)
    value, grads, tangent = run_eager(fn, x, labels, params, tangents)
    value_c, grads_c, tangent_c, _ = run_compiled(fn, x, labels, params, tangents)
    for v in (value, value_c):
        np.testing.assert_allclose(v, value_t, rtol=rtol)
    for t in (tangent, tangent_c):
        np.testing.assert_allclose(t, tangent_t, rtol=rtol * 10, atol=rtol * abs(tangent_t))
    for name in params:
        scale = np.abs(grads_t[name]).max()
        for g in (grads[name], grads_c[name]):
            np.testing.assert_allclose(g, grads_t[name], rtol=rtol, atol=rtol * scale,
                                       err_msg=name)


@pytest.mark.parametrize("model", list(MODELS))
def test_model_gradients_pass_the_checks(model):
    """Finite differences and the dot-product test on the whole model (float64, small)."""
    fn, x, labels, params, _ = make(model, np.float64, seed=2)
    names = list(params)

    def loss(*values):
        return fn(GF, x, dict(zip(names, values)), labels)

    assert graphm.testing.check_jvp_vjp(loss, tuple(params.values()))
    # finite differences on the smallest tensors (each element costs two model evaluations)
    small = [n for n in names if np.prod(params[n].shape) <= 16]

    def loss_of_small(*values):
        return fn(GF, x, {**params, **dict(zip(small, values))}, labels)

    assert graphm.testing.gradcheck(loss_of_small, tuple(params[n] for n in small))
