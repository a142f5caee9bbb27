"""Eager mode: graphm.Tensor, its tape, backward, no_grad and the functional dispatch."""
from __future__ import annotations

import numpy as np
import pytest

import graphm
import graphm.functional as F
from graphm import ShapeError, Tensor, no_grad, tensor

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------------------------------------
# Making Tensors
# ------------------------------------------------------------------------------------------------

def test_dtypes_follow_torch_defaults():
    assert tensor([1.0, 2.0]).dtype == np.float32            # Python floats: float32
    assert tensor([1, 2]).dtype == np.int64                   # Python ints: int64
    assert tensor(np.zeros(3)).dtype == np.float64            # NumPy keeps its dtype
    assert tensor([1, 2], dtype="float64").dtype == np.float64
    assert tensor(3.5).shape == () and tensor(3.5).item() == 3.5


def test_tensor_copies_its_data():
    data = np.ones(3)
    t = tensor(data)
    data[0] = 5
    assert t.numpy()[0] == 1


def test_only_float_tensors_can_require_grad():
    with pytest.raises(TypeError, match="float32/float64"):
        tensor([1, 2], requires_grad=True)


def test_properties_and_conversions():
    t = tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.numel() == 6 and t.size(1) == 3
    assert len(t) == 2 and t.is_leaf and t.grad_fn is None
    assert (t * 2).grad_fn == "mul" and not (t * 2).is_leaf
    assert float(t.sum()) == 15.0 and t.sum().item() == 15.0
    assert t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    assert "requires_grad=True" in repr(t) and "grad_fn=<sum>" in repr(t.sum())
    d = t.detach()
    assert not d.requires_grad and d.numpy() is t.numpy()


# ------------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------------

def test_backward_matches_torch_on_a_small_expression():
    a_np, b_np = np.array([1.5, -2.0, 3.0]), np.array([0.5, 4.0, -1.0])
    a, b = tensor(a_np, requires_grad=True), tensor(b_np, requires_grad=True)
    loss = ((a * b + a / 2).exp() - b ** 2).sum() / 3
    loss.backward()
    at, bt = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    loss_t = ((at * bt + at / 2).exp() - bt ** 2).sum() / 3
    loss_t.backward()
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-12)
    np.testing.assert_allclose(a.grad, at.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad, bt.grad.numpy(), rtol=1e-12)


def test_a_tensor_used_twice_gets_both_contributions():
    x = tensor([2.0], requires_grad=True)
    y = x * x + x            # dy/dx = 2x + 1 = 5
    y.backward()
    np.testing.assert_array_equal(x.grad, [5.0])


def test_grad_accumulates_across_backward_calls_like_torch():
    x = tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3 + 2, 3 + 4])
    x.zero_grad()
    assert x.grad is None
    (x * 3).sum().backward()
    x.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


def test_backward_twice_raises_unless_the_graph_is_retained():
    x = tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
    loss = (x * x).sum()
    x.zero_grad()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])


def test_the_tape_is_freed_after_backward():
    x = tensor(np.ones(3), requires_grad=True)
    y = x.exp()
    loss = y.sum()
    loss.backward()
    assert loss._node.freed and loss._node.residuals is None and y._node.residuals is None


def test_non_scalar_backward_needs_a_gradient():
    x = tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3))
    y.backward(np.full((2, 3), 0.5))
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_backward_on_a_tensor_without_history_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tensor([1.0]).backward()


def test_only_leaves_keep_grad_unless_retained():
    x = tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    h2 = x * 3
    h2.retain_grad()
    (h * h2).sum().backward()
    assert h.grad is None
    np.testing.assert_array_equal(h2.grad, h.numpy())


def test_constants_get_no_grad_and_ints_are_cast_like_scalars():
    x = tensor([1.0, 2.0], requires_grad=True)
    c = tensor([3.0, 4.0])
    (x * c + np.array([1, 2])).sum().backward()
    assert c.grad is None and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_a_long_chain_does_not_hit_the_recursion_limit():
    x = tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0])


def test_gradient_dtype_and_shape_follow_the_leaf():
    x = tensor(np.ones((2, 1), np.float32), requires_grad=True)
    (x + np.ones((2, 3), np.float32)).sum().backward()          # broadcast: summed back
    assert x.grad.shape == (2, 1) and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [[3.0], [3.0]])
    assert x.grad.flags.writeable


# ------------------------------------------------------------------------------------------------
# no_grad
# ------------------------------------------------------------------------------------------------

def test_no_grad_records_nothing():
    x = tensor([1.0], requires_grad=True)
    with no_grad():
        y = x * 2
        assert not graphm.is_grad_enabled()
    assert graphm.is_grad_enabled()
    assert not y.requires_grad and y._node is None
    z = x * 2
    assert z.requires_grad


def test_no_grad_as_decorator_and_enable_grad_inside():
    x = tensor([1.0], requires_grad=True)

    @no_grad()
    def f():
        inner = x * 2
        with graphm.enable_grad():
            recorded = x * 3
        return inner, recorded

    inner, recorded = f()
    assert not inner.requires_grad and recorded.requires_grad


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert (tensor([1.0], requires_grad=True) * 2).requires_grad


# ------------------------------------------------------------------------------------------------
# Errors and interplay with NumPy
# ------------------------------------------------------------------------------------------------

def test_shape_errors_are_shape_errors_naming_the_op():
    a, b = tensor(np.ones((2, 3))), tensor(np.ones((4,)))
    with pytest.raises(ShapeError, match=r"add: shapes \[2,3\] and \[4\]"):
        a + b
    with pytest.raises(ShapeError, match="matmul: the inner dimensions"):
        a @ tensor(np.ones((2, 2)))
    with pytest.raises(ShapeError, match="conv2d"):
        F.conv2d(tensor(np.ones((1, 3, 5, 5))), tensor(np.ones((2, 2, 3, 3))))
    with pytest.raises(ShapeError, match="reshape"):
        a.reshape(4, 2)
    assert issubclass(ShapeError, ValueError)


def test_mixed_float_dtypes_are_an_error():
    a, b = tensor(np.ones(3, np.float32)), tensor(np.ones(3, np.float64))
    with pytest.raises(TypeError, match="share one dtype"):
        a + b
    with pytest.raises(TypeError, match="float32"):
        F.linear(a.reshape(1, 3), tensor(np.ones((2, 3), np.float64)))


def test_numpy_arrays_on_the_left_defer_to_tensors():
    x = tensor(np.ones(3), requires_grad=True)
    for result in (np.ones(3) + x, np.ones(3) * x, np.ones(3) - x, np.ones(3) / x,
                   np.eye(3) @ x):
        assert isinstance(result, Tensor) and result.requires_grad


def test_functional_is_numpy_in_numpy_out_and_tensor_in_tensor_out():
    data = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    plain = F.max_pool2d(F.relu(data), 2)
    assert type(plain) is np.ndarray
    t = F.max_pool2d(F.relu(tensor(data, requires_grad=True)), 2)
    assert isinstance(t, Tensor) and t.grad_fn == "max_pool"
    np.testing.assert_array_equal(plain, t.numpy())


def test_tensor_keyword_arguments_dispatch_too():
    x = tensor(np.ones((2, 3)), requires_grad=True)
    w = tensor(np.ones((4, 3)), requires_grad=True)
    y = F.linear(input=x, weight=w)
    assert isinstance(y, Tensor) and y.shape == (2, 4)


def test_unsupported_arguments_on_tensors_are_explained():
    x = tensor(np.ones((1, 1, 4, 4)))
    with pytest.raises(NotImplementedError, match="return_indices"):
        F.max_pool2d(x, 2, return_indices=True)


def test_methods_cover_torch_spellings():
    x_np = np.random.default_rng(1).standard_normal((2, 3, 4))
    x, xt = tensor(x_np), torch.tensor(x_np)
    pairs = [
        (x.sum(), xt.sum()), (x.sum(dim=1, keepdim=True), xt.sum(dim=1, keepdim=True)),
        (x.mean((0, 2)), xt.mean((0, 2))), (x.reshape(6, 4), xt.reshape(6, 4)),
        (x.reshape((4, -1)), xt.reshape((4, -1))), (x.view(-1), xt.view(-1)),
        (x.flatten(1), xt.flatten(1)), (x.permute(2, 0, 1), xt.permute(2, 0, 1)),
        (x.transpose(0, 1), xt.transpose(0, 1)), (x.T, xt.permute(2, 1, 0)),
        (x.softmax(-1), xt.softmax(-1)), (x.log_softmax(1), xt.log_softmax(1)),
        (x.relu(), xt.relu()), (x.sigmoid(), xt.sigmoid()), (x.tanh(), xt.tanh()),
        (x[0, 1:], xt[0, 1:]), (x.pow(2), xt.pow(2)), (x.exp(), xt.exp()),
        (-x, -xt), (x @ x.transpose(1, 2), xt @ xt.transpose(1, 2)),
        (x.add(x).mul(x).sub(x).div(x.exp()).neg(), xt.add(xt).mul(xt).sub(xt).div(xt.exp()).neg()),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)


def test_iterating_gives_rows_that_carry_gradients():
    x = tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    rows = list(x)
    assert len(rows) == 3 and rows[1].tolist() == [2.0, 3.0]
    (rows[0] * rows[2]).sum().backward()
    np.testing.assert_array_equal(x.grad, [[4.0, 5.0], [0.0, 0.0], [0.0, 1.0]])


def test_mixing_tensors_and_graph_vars_is_an_error():
    g = graphm.GraphM()
    v = g.input("v", (3,), "float64")
    with pytest.raises(TypeError, match="mix"):
        tensor(np.ones(3)) + v
