"""Function transforms (vjp, jvp, grad, value_and_grad) against torch.func, and graphm.testing."""
from __future__ import annotations

import numpy as np
import pytest

import graphm
import graphm.functional as F
from graphm.tensor import apply
from graphm.testing import GradcheckError, check_jvp_vjp, gradcheck

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

# torch.func warns about torch.jit on import; that is PyTorch's business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 6, 6))
W = RNG.standard_normal((4, 3, 3, 3))
B = RNG.standard_normal(4)


def f_graphm(x, w, b):
    return F.max_pool2d(F.conv2d(x, w, b, padding=1).tanh(), 2).sum(1)


def f_torch(x, w, b):
    return TF.max_pool2d(TF.conv2d(x, w, b, padding=1).tanh(), 2).sum(1)


def as_torch(*arrays):
    return tuple(torch.from_numpy(a) for a in arrays)


def test_vjp_matches_torch_func_vjp():
    out, vjp_fn = graphm.vjp(f_graphm, X, W, B)
    out_t, vjp_t = torch.func.vjp(f_torch, *as_torch(X, W, B))
    np.testing.assert_allclose(out, out_t.numpy(), rtol=1e-12)
    cotangent = RNG.standard_normal(out.shape)
    for got, want in zip(vjp_fn(cotangent), vjp_t(torch.from_numpy(cotangent))):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


def test_vjp_fn_can_be_called_again_and_does_not_touch_grad():
    out, vjp_fn = graphm.vjp(f_graphm, X, W, B)
    g = np.ones_like(out)
    first, second = vjp_fn(g), vjp_fn(2 * g)
    for a, b in zip(first, second):
        np.testing.assert_allclose(2 * a, b, rtol=1e-12)


def test_jvp_matches_torch_func_jvp():
    tangents = tuple(RNG.standard_normal(a.shape) for a in (X, W, B))
    out, tangent_out = graphm.jvp(f_graphm, (X, W, B), tangents)
    out_t, tangent_t = torch.func.jvp(f_torch, as_torch(X, W, B), as_torch(*tangents))
    np.testing.assert_allclose(out, out_t.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tangent_out, tangent_t.numpy(), rtol=1e-10, atol=1e-12)


def test_jvp_is_true_forward_mode(monkeypatch):
    """No op's vjp runs (and no tape is recorded) while computing a JVP."""
    def forbidden(*args, **kwargs):
        raise AssertionError("jvp used a reverse-mode rule")

    for op in graphm.ops.OPS.values():
        monkeypatch.setattr(op, "vjp", forbidden)
    tangents = tuple(np.ones_like(a) for a in (X, W, B))
    recorded = []
    _, tangent_out = graphm.jvp(lambda *a: recorded.append(f_graphm(*a)) or recorded[-1],
                                (X, W, B), tangents)
    assert recorded[-1]._node is None and tangent_out.shape == recorded[-1].shape


def test_jvp_with_some_tangents_missing_and_integer_inputs():
    labels = np.array([1, 0])
    logits = RNG.standard_normal((2, 3))

    def loss(z, y):
        return F.cross_entropy(z, y)

    out, tangent = graphm.jvp(loss, (logits, labels), (np.ones_like(logits), None))
    out_t, tangent_t = torch.func.jvp(lambda z: TF.cross_entropy(z, torch.from_numpy(labels)),
                                      (torch.from_numpy(logits),),
                                      (torch.ones(2, 3, dtype=torch.float64),))
    np.testing.assert_allclose(tangent, tangent_t.numpy(), atol=1e-12)
    _, tangent = graphm.jvp(lambda a, b: a * b, (X, X), (None, np.ones_like(X)))
    np.testing.assert_array_equal(tangent, X)


def test_grad_and_value_and_grad():
    def loss(x, w, b):
        return (f_graphm(x, w, b) ** 2).mean()

    gw = graphm.grad(loss, argnums=1)(X, W, B)
    gx, gb = graphm.grad(loss, argnums=(0, 2))(X, W, B)
    value, (gw2,) = graphm.value_and_grad(loss, argnums=(1,))(X, W, B)
    expected = torch.func.grad(lambda x, w, b: (f_torch(x, w, b) ** 2).mean(),
                               argnums=(0, 1, 2))(*as_torch(X, W, B))
    np.testing.assert_allclose(gx, expected[0].numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gw, expected[1].numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gb, expected[2].numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(gw, gw2)
    assert value.shape == () and np.isclose(value, loss(*map(graphm.tensor, (X, W, B))).item())


def test_grad_with_aux():
    def loss(x):
        y = (x * x).sum()
        return y, y.item() + 1

    g, aux = graphm.grad(loss, has_aux=True)(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(g, [2.0, 4.0])
    assert aux == 6.0


def test_grad_rejects_non_scalar_outputs_and_integer_arguments():
    with pytest.raises(TypeError, match="one-element"):
        graphm.grad(lambda x: x * 2)(np.ones(3))
    with pytest.raises(TypeError, match="dtype int64"):
        graphm.grad(lambda x, i: x.sum(), argnums=1)(np.ones(3), np.ones(3, np.int64))
    with pytest.raises(TypeError, match="must return a graphm Tensor"):
        graphm.vjp(lambda x: np.sum(x.numpy()), np.ones(3))


def test_outputs_that_do_not_depend_on_an_input_get_zeros():
    _, vjp_fn = graphm.vjp(lambda a, b: a * 2, np.ones(2), np.ones(3))
    ga, gb = vjp_fn(np.ones(2))
    np.testing.assert_array_equal(gb, np.zeros(3))
    _, tangent = graphm.jvp(lambda a: graphm.tensor(np.ones(2)) * 1.0, (np.ones(2),),
                            (np.ones(2),))
    np.testing.assert_array_equal(tangent, np.zeros(2))


def test_multiple_outputs():
    def f(x):
        return x.exp(), x.sum()

    (e, s), vjp_fn = graphm.vjp(f, np.array([0.0, 1.0]))
    (g,) = vjp_fn((np.ones(2), np.array(2.0)))
    np.testing.assert_allclose(g, np.exp([0.0, 1.0]) + 2)
    _, (te, ts) = graphm.jvp(f, (np.array([0.0, 1.0]),), (np.ones(2),))
    np.testing.assert_allclose(ts, 2.0)


# ------------------------------------------------------------------------------------------------
# graphm.testing: the tools must also catch mistakes
# ------------------------------------------------------------------------------------------------

class _WrongExp(graphm.ops.Op):
    """exp with a deliberately wrong VJP (2 * y instead of y) and a right JVP."""
    name = "wrong_exp"

    def shape(self, x):
        return x

    def forward(self, x):
        y = np.exp(x)
        return y, y

    def vjp(self, y, g):
        return (2 * g * y,)

    def jvp(self, primals, tangents):
        y = np.exp(primals[0])
        return y, y * tangents[0]


def _wrong_exp(x):
    return apply(_WrongExp(), (x,))


def test_gradcheck_passes_right_rules_and_reports_a_wrong_one():
    assert gradcheck(f_graphm, (X[:1, :, :4, :4], W[:2], B[:2]))
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(3,\)\) at index"):
        gradcheck(lambda x: _wrong_exp(x).sum(), (np.array([0.1, 0.2, 0.3]),))
    assert gradcheck(lambda x: _wrong_exp(x).sum(), (np.array([0.1]),),
                     raise_exception=False) is False


def test_dot_product_test_catches_a_vjp_that_disagrees_with_the_jvp():
    assert check_jvp_vjp(f_graphm, (X, W, B))
    with pytest.raises(GradcheckError, match="dot-product test failed"):
        check_jvp_vjp(lambda x: _wrong_exp(x), (np.array([0.1, 0.2]),))


def test_checkers_accept_a_list_of_outputs():
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert gradcheck(lambda a: [a * 2.0, a.sum()], (x,))
    assert check_jvp_vjp(lambda a: [a * 2.0, a.sum()], (x,))


def test_a_transform_inside_f_composes():
    """Transforms nest (they used to refuse): grad of grad, and jvp of grad, give the Hessian."""
    inner = graphm.grad(lambda x: (x * x * x).sum())             # 3 x²
    x = np.array([1.0, 2.0, -0.5])
    np.testing.assert_allclose(graphm.grad(lambda x: inner(x).sum())(x), 6 * x)
    _, hvp = graphm.jvp(inner, (x,), (np.ones(3),))
    np.testing.assert_allclose(hvp, 6 * x)