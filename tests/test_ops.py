"""Every op, every way: finite differences, the dot-product test, PyTorch, and eager vs compiled.

Each case below is one small function written against a ``functional`` module ``F`` (graphm's or
torch's, same names) and a constant maker ``C``. The same code therefore runs

* on graphm Tensors (eager), through graphm.functional's dispatch and Tensor operators/methods,
* on graphm Vars (compiled GraphM), traced into a program,
* on torch tensors, as the oracle (forward, torch.autograd for the VJP, torch.func.jvp),

and each test below checks one of those against another.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest

import graphm
import graphm.functional as GF
from graphm.testing import check_jvp_vjp, gradcheck

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

# torch.func warns about torch.jit on import; that is PyTorch's business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")


@dataclass
class Case:
    name: str
    fn: object                          # fn(F, C, *inputs)
    shapes: list                        # one shape per float input
    kinds: list = field(default_factory=list)   # "normal" (default), "positive", "away"

    def arrays(self, dtype=np.float64, seed=0):
        rng = np.random.default_rng(seed)
        kinds = self.kinds or ["normal"] * len(self.shapes)
        out = []
        for shape, kind in zip(self.shapes, kinds):
            a = rng.standard_normal(shape)
            if kind == "positive":
                a = rng.uniform(0.5, 2.0, shape)
            elif kind == "away":             # |a| >= 0.1: no kink of relu/abs nearby
                a = np.sign(a) * (np.abs(a) + 0.1)
            out.append(a.astype(dtype))
        return out


LABELS = np.array([0, 3, 1, 1, 2, 3])
CLASS_WEIGHT = np.array([0.5, 1.0, 2.0, 1.5])
LABELS_2D = np.array([[0, 2, 1], [2, 2, 0]])


def _cases():
    c = []
    add = c.append
    # arithmetic (broadcasting both ways)
    add(Case("add", lambda F, C, a, b: a + b, [(3, 4), (4,)]))
    add(Case("add_column", lambda F, C, a, b: b + a, [(2, 3, 4), (3, 1)]))
    add(Case("sub", lambda F, C, a, b: a - b, [(2, 3, 4), (3, 1)]))
    add(Case("mul", lambda F, C, a, b: a * b, [(3, 4), (1, 4)]))
    add(Case("div", lambda F, C, a, b: a / b, [(3, 4), (3, 4)], ["normal", "positive"]))
    add(Case("neg", lambda F, C, a: -a, [(3, 4)]))
    add(Case("scalars", lambda F, C, a: (2.0 * a + 1.0) / 3.0 - 0.5, [(3, 4)]))
    add(Case("rdiv", lambda F, C, a: 2.0 / a, [(3, 4)], ["positive"]))
    add(Case("pow3", lambda F, C, a: a ** 3, [(3, 4)]))
    add(Case("pow_half", lambda F, C, a: a ** 0.5, [(3, 4)], ["positive"]))
    add(Case("exp", lambda F, C, a: a.exp(), [(3, 4)]))
    add(Case("log", lambda F, C, a: a.log(), [(3, 4)], ["positive"]))
    add(Case("matmul", lambda F, C, a, b: a @ b, [(3, 4), (4, 5)]))
    add(Case("matmul_batched", lambda F, C, a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]))
    add(Case("matmul_vector_left", lambda F, C, a, b: a @ b, [(4,), (2, 4, 3)]))
    add(Case("matmul_vector_right", lambda F, C, a, b: a @ b, [(2, 3, 4), (4,)]))
    add(Case("matmul_dot", lambda F, C, a, b: a @ b, [(4,), (4,)]))
    # activations
    add(Case("relu", lambda F, C, a: F.relu(a), [(3, 5)], ["away"]))
    add(Case("relu_method", lambda F, C, a: a.relu(), [(3, 5)], ["away"]))
    add(Case("sigmoid", lambda F, C, a: torch_or(F).sigmoid(a), [(3, 5)]))
    add(Case("tanh", lambda F, C, a: torch_or(F).tanh(a), [(3, 5)]))
    add(Case("softplus", lambda F, C, a: F.softplus(a * 4, beta=2.0, threshold=5.0), [(4, 5)]))
    # reductions and shapes
    add(Case("sum_all", lambda F, C, a: a.sum(), [(3, 4)]))
    add(Case("sum_dim", lambda F, C, a: a.sum(1), [(2, 3, 4)]))
    add(Case("sum_keepdim", lambda F, C, a: a.sum((0, 2), keepdim=True), [(2, 3, 4)]))
    add(Case("mean_all", lambda F, C, a: a.mean(), [(3, 4)]))
    add(Case("mean_dim", lambda F, C, a: a.mean(-1, keepdim=True), [(2, 3, 4)]))
    add(Case("reshape", lambda F, C, a: a.reshape(4, -1) * a.reshape(4, 6), [(2, 3, 4)]))
    add(Case("flatten", lambda F, C, a: a.flatten(1), [(2, 3, 4)]))
    add(Case("permute", lambda F, C, a: a.permute(2, 0, 1), [(2, 3, 4)]))
    add(Case("transpose", lambda F, C, a: a.transpose(0, 2), [(2, 3, 4)]))
    add(Case("index_basic", lambda F, C, a: a[1:, ::2], [(3, 5)]))
    add(Case("index_repeated", lambda F, C, a: a[C(np.array([0, 2, 0]))], [(3, 5)]))
    # network ops
    add(Case("linear", lambda F, C, x, w, b: F.linear(x, w, b), [(5, 4), (3, 4), (3,)]))
    add(Case("linear_3d_nobias", lambda F, C, x, w: F.linear(x, w), [(2, 5, 4), (3, 4)]))
    add(Case("linear_vector", lambda F, C, x, w, b: F.linear(x, w, b), [(4,), (3, 4), (3,)]))
    add(Case("softmax", lambda F, C, a: F.softmax(a, dim=1), [(3, 4, 2)]))
    add(Case("log_softmax", lambda F, C, a: F.log_softmax(a, dim=-1), [(3, 5)]))
    add(Case("cross_entropy", lambda F, C, x: F.cross_entropy(x, C(LABELS)), [(6, 4)]))
    add(Case("cross_entropy_options", lambda F, C, x: F.cross_entropy(
        x, C(LABELS), weight=C(CLASS_WEIGHT), ignore_index=2, label_smoothing=0.2), [(6, 4)]))
    add(Case("cross_entropy_sum", lambda F, C, x: F.cross_entropy(x, C(LABELS), reduction="sum"),
             [(6, 4)]))
    add(Case("cross_entropy_none", lambda F, C, x: F.cross_entropy(
        x, C(LABELS), weight=C(CLASS_WEIGHT), reduction="none"), [(6, 4)]))
    add(Case("cross_entropy_spatial", lambda F, C, x: F.cross_entropy(x, C(LABELS_2D)),
             [(2, 3, 3)]))
    add(Case("cross_entropy_unbatched", lambda F, C, x: F.cross_entropy(x, C(np.array(2))),
             [(4,)]))
    add(Case("nll_loss", lambda F, C, x: F.nll_loss(F.log_softmax(x, 1), C(LABELS),
                                                    weight=C(CLASS_WEIGHT)), [(6, 4)]))
    add(Case("mse_loss", lambda F, C, x, t: F.mse_loss(x, t), [(3, 4), (3, 4)]))
    add(Case("mse_loss_sum", lambda F, C, x, t: F.mse_loss(x, t, reduction="sum"),
             [(3, 4), (3, 4)]))
    add(Case("mse_loss_none", lambda F, C, x, t: F.mse_loss(x, t, reduction="none"),
             [(3, 4), (3, 4)]))
    add(Case("mse_loss_weighted", lambda F, C, x, t: F.mse_loss(
        x, t, weight=C(np.linspace(0.5, 2, 12).reshape(3, 4))), [(3, 4), (3, 4)]))
    # pooling
    add(Case("max_pool1d", lambda F, C, x: F.max_pool1d(x, 3, stride=2, padding=1),
             [(2, 2, 9)]))
    add(Case("max_pool2d", lambda F, C, x: F.max_pool2d(x, 2), [(2, 2, 4, 6)]))
    add(Case("max_pool2d_options", lambda F, C, x: F.max_pool2d(
        x, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), ceil_mode=True),
        [(1, 2, 7, 6)]))
    add(Case("max_pool2d_unbatched", lambda F, C, x: F.max_pool2d(x, 2, 1), [(2, 4, 4)]))
    add(Case("max_pool3d", lambda F, C, x: F.max_pool3d(x, 2, stride=1, padding=1),
             [(1, 2, 3, 3, 3)]))
    add(Case("avg_pool1d", lambda F, C, x: F.avg_pool1d(
        x, 3, stride=2, padding=1, count_include_pad=False, ceil_mode=True), [(2, 2, 8)]))
    add(Case("avg_pool2d", lambda F, C, x: F.avg_pool2d(x, 2), [(2, 2, 4, 6)]))
    add(Case("avg_pool2d_options", lambda F, C, x: F.avg_pool2d(
        x, 3, stride=2, padding=1, ceil_mode=True, divisor_override=5), [(1, 2, 6, 7)]))
    add(Case("avg_pool3d", lambda F, C, x: F.avg_pool3d(x, (2, 2, 1), padding=(1, 0, 0)),
             [(1, 2, 3, 4, 2)]))
    # convolutions
    add(Case("conv1d", lambda F, C, x, w, b: F.conv1d(x, w, b, stride=2, padding=1),
             [(2, 3, 7), (4, 3, 3), (4,)]))
    add(Case("conv2d", lambda F, C, x, w, b: F.conv2d(x, w, b, padding=1, dilation=(1, 2)),
             [(2, 2, 5, 6), (3, 2, 3, 2), (3,)]))
    add(Case("conv2d_groups_nobias", lambda F, C, x, w: F.conv2d(x, w, stride=(2, 1), groups=2),
             [(1, 4, 5, 5), (2, 2, 2, 3)]))
    add(Case("conv2d_same_unbatched", lambda F, C, x, w, b: F.conv2d(x, w, b, padding="same"),
             [(2, 4, 5), (3, 2, 2, 3), (3,)]))
    add(Case("conv3d", lambda F, C, x, w, b: F.conv3d(x, w, b, padding=(1, 0, 1)),
             [(1, 2, 3, 4, 3), (2, 2, 2, 2, 2), (2,)]))
    add(Case("conv_transpose1d", lambda F, C, x, w, b: F.conv_transpose1d(
        x, w, b, stride=2, padding=1, output_padding=1), [(2, 3, 4), (3, 2, 3), (2,)]))
    add(Case("conv_transpose2d", lambda F, C, x, w, b: F.conv_transpose2d(
        x, w, b, stride=2, groups=2, dilation=(1, 2)), [(1, 4, 3, 3), (4, 1, 2, 2), (2,)]))
    add(Case("conv_transpose3d_unbatched", lambda F, C, x, w: F.conv_transpose3d(
        x, w, stride=(1, 2, 1), padding=(0, 1, 0)), [(2, 2, 3, 2), (2, 2, 2, 2, 2)]))
    return c


def torch_or(F):
    """torch.sigmoid / torch.tanh are the PyTorch spellings (F.sigmoid is deprecated there)."""
    return torch if F is TF else F


CASES = _cases()
IDS = [case.name for case in CASES]


# ------------------------------------------------------------------------------------------------
# Running a case three ways
# ------------------------------------------------------------------------------------------------

def constants(dtype):
    """``C``: float constants (class weights) in the case's dtype, integer labels as they are."""
    return lambda a: a.astype(dtype) if a.dtype.kind == "f" else a


def graphm_fn(case, dtype=np.float64):
    """The case as f(*tensors) on graphm Tensors (for graphm.vjp / jvp / gradcheck)."""
    return lambda *xs: case.fn(GF, constants(dtype), *xs)


def torch_fn(case, dtype=np.float64):
    return lambda *xs: case.fn(TF, lambda a: torch.from_numpy(constants(dtype)(a)), *xs)


def run_compiled(case, arrays, cotangent, tangents):
    """Trace the case into a GraphM; return (value, {input: vjp}, jvp tangent)."""
    g = graphm.GraphM()
    variables = [g.input(f"x{i}", a.shape, a.dtype) for i, a in enumerate(arrays)]
    program = g.compile(case.fn(GF, np.asarray, *variables))
    feed = {f"x{i}": a for i, a in enumerate(arrays)}
    value = program(**feed)
    grads = program.vjp(feed, cotangent)
    _, tangent_out = program.jvp(feed, {f"x{i}": t for i, t in enumerate(tangents)})
    return value, [grads[f"x{i}"] for i in range(len(arrays))], tangent_out


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck(case):
    """graphm's VJP agrees with central differences in float64."""
    assert gradcheck(graphm_fn(case), case.arrays())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jvp_vjp_dot_product(case):
    """<J t, g> = <t, J^T g>: forward-mode and reverse-mode rules are transposes."""
    assert check_jvp_vjp(graphm_fn(case), case.arrays(seed=1), seed=2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch_float64(case):
    """Forward, torch.autograd VJP and torch.func.jvp, to float64 round-off."""
    arrays = case.arrays(seed=3)
    rng = np.random.default_rng(4)
    tangents = [rng.standard_normal(a.shape) for a in arrays]
    out, vjp_fn = graphm.vjp(graphm_fn(case), *arrays)
    cotangent = rng.standard_normal(out.shape)
    grads = vjp_fn(cotangent)
    _, tangent_out = graphm.jvp(graphm_fn(case), tuple(arrays), tuple(tangents))

    xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = torch_fn(case)(*xs)
    expected_grads = torch.autograd.grad(expected, xs, torch.from_numpy(cotangent),
                                         allow_unused=True)
    _, expected_tangent = torch.func.jvp(torch_fn(case), tuple(torch.from_numpy(a) for a in arrays),
                                         tuple(torch.from_numpy(t) for t in tangents))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for i, (got, want) in enumerate(zip(grads, expected_grads)):
        want = np.zeros_like(arrays[i]) if want is None else want.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"input {i}")
    np.testing.assert_allclose(tangent_out, expected_tangent.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eager_and_compiled_agree(case):
    """A GraphM traced from the same code gives the same value, VJP and JVP as eager mode."""
    arrays = case.arrays(seed=5)
    rng = np.random.default_rng(6)
    tangents = [rng.standard_normal(a.shape) for a in arrays]
    out, vjp_fn = graphm.vjp(graphm_fn(case), *arrays)
    cotangent = rng.standard_normal(out.shape)
    grads = vjp_fn(cotangent)
    _, tangent_out = graphm.jvp(graphm_fn(case), tuple(arrays), tuple(tangents))
    value, compiled_grads, compiled_tangent = run_compiled(case, arrays, cotangent, tangents)
    np.testing.assert_allclose(value, out, rtol=1e-14, atol=1e-15)
    for got, want in zip(compiled_grads, grads):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(compiled_tangent, tangent_out, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_keeps_its_dtype(case):
    """float32 in, float32 out (values, gradients, tangents), close to PyTorch in float32."""
    arrays = case.arrays(np.float32, seed=7)
    f = graphm_fn(case, np.float32)
    out, vjp_fn = graphm.vjp(f, *arrays)
    grads = vjp_fn(np.ones_like(out))
    _, tangent = graphm.jvp(f, tuple(arrays), tuple(np.ones_like(a) for a in arrays))
    assert out.dtype == np.float32 and tangent.dtype == np.float32
    assert all(g.dtype == np.float32 and g.shape == a.shape for g, a in zip(grads, arrays))
    expected = torch_fn(case, np.float32)(*[torch.from_numpy(a) for a in arrays]).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * max(1, np.abs(expected).max()))


# ------------------------------------------------------------------------------------------------
# Functional on NumPy arrays and on Tensors
# ------------------------------------------------------------------------------------------------

FUNCTIONAL_CASES = [c for c in CASES if c.name.startswith((
    "relu", "softplus", "linear", "softmax", "log_softmax", "cross_entropy", "nll_loss",
    "mse_loss", "max_pool", "avg_pool", "conv")) and c.name != "relu_method"]


@pytest.mark.parametrize("case", FUNCTIONAL_CASES, ids=[c.name for c in FUNCTIONAL_CASES])
def test_functional_numpy_in_numpy_out(case):
    """graphm.functional on NumPy arrays returns NumPy arrays, equal to its Tensor results."""
    arrays = case.arrays(seed=8)
    plain = case.fn(GF, np.asarray, *arrays)
    tensor_result = case.fn(GF, np.asarray, *[graphm.tensor(a) for a in arrays])
    assert isinstance(plain, np.ndarray) and isinstance(tensor_result, graphm.Tensor)
    np.testing.assert_allclose(plain, tensor_result.numpy(), rtol=1e-14, atol=1e-15)


def test_max_pool_ties_route_to_the_first_maximum_like_torch():
    x = np.array([[[[1., 3., 3., 0.], [3., 2., 1., 1.], [0., 0., 5., 5.], [0., 0., 5., 5.]]]])
    xt = torch.tensor(x, requires_grad=True)
    TF.max_pool2d(xt, 2, stride=1).sum().backward()
    (grad,) = graphm.vjp(lambda a: GF.max_pool2d(a, 2, stride=1).sum(), x)[1](np.array(1.0))
    np.testing.assert_array_equal(grad, xt.grad.numpy())
    _, indices = GF.max_pool2d(x, 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(indices, TF.max_pool2d(torch.from_numpy(x), 2, stride=1,
                                                         return_indices=True)[1].numpy())


def test_max_pool_with_negative_infinity_and_padding_picks_a_real_element():
    x = np.full((1, 1, 3, 3), -np.inf)
    out, indices = GF.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    expected = TF.max_pool2d(torch.from_numpy(x), 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(out, expected[0].numpy())
    np.testing.assert_array_equal(indices, expected[1].numpy())


def test_relu_gradient_at_zero_is_zero_like_torch():
    x = np.array([-1.0, 0.0, 2.0])
    (grad,) = graphm.vjp(lambda a: GF.relu(a), x)[1](np.ones(3))
    np.testing.assert_array_equal(grad, [0.0, 0.0, 1.0])


def test_pow_zero_exponent_has_zero_gradient():
    (grad,) = graphm.vjp(lambda a: a ** 0, np.array([0.0, 2.0]))[1](np.ones(2))
    np.testing.assert_array_equal(grad, [0.0, 0.0])


def test_non_contiguous_inputs():
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((2, 3, 6, 5)))[:, :, ::2]
    for fn in (lambda a: GF.max_pool2d(a, 2), lambda a: GF.avg_pool2d(a, 2),
               lambda a: GF.relu(a), lambda a: GF.softmax(a, 1)):
        out, vjp_fn = graphm.vjp(fn, x)
        (grad,) = vjp_fn(np.ones_like(out))
        xc = np.ascontiguousarray(x)
        out_c, vjp_c = graphm.vjp(fn, xc)
        np.testing.assert_array_equal(out, out_c)
        np.testing.assert_array_equal(grad, vjp_c(np.ones_like(out_c))[0])
        assert out.flags.c_contiguous


def test_every_registered_op_is_exercised():
    """Each op in graphm.ops.OPS appears in some case above (by running them all), or, for the
    adjoint ops (sum_to, conv_weight_grad, index_add, ...), in the derivatives of those cases
    up to third order, taken with graphm ops (create_graph=True) and inside a nested transform."""
    seen = set()
    original = graphm.ops.Op.infer

    def spy(self, *args, **kwargs):
        seen.add(self.name)
        return original(self, *args, **kwargs)

    graphm.ops.Op.infer = spy
    try:
        for case in CASES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inputs = [graphm.tensor(a, requires_grad=True) for a in case.arrays()]
                out = case.fn(GF, np.asarray, *inputs)
                for _ in range(3):                   # first, second and third derivatives
                    grads = graphm.autograd.grad((out * out).sum(), inputs, create_graph=True,
                                                 allow_unused=True)
                    live = [(g * g).sum() for g in grads if g is not None and g.requires_grad]
                    if not live:
                        break
                    out = live[0]
                    for extra in live[1:]:
                        out = out + extra
        graphm.grad(lambda x: graphm.grad(lambda y: (y * y).sum())(x).sum())(np.ones(2))
        graphm.tensor(np.ones(2, np.float32)).double()
    finally:
        graphm.ops.Op.infer = original
    assert seen == set(graphm.ops.OPS), set(graphm.ops.OPS) - seen


# ------------------------------------------------------------------------------------------------
# Pooling configurations drawn at random, against PyTorch (values, indices and gradients)
# ------------------------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import examples  # noqa: E402


@st.composite
def pool_configs(draw):
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    return dict(
        dims=dims, kernel=kernel,
        stride=tuple(draw(st.integers(1, 3)) for _ in range(dims)),
        padding=tuple(draw(st.integers(0, k // 2)) for k in kernel),
        dilation=tuple(draw(st.integers(1, 2)) for _ in range(dims)),
        ceil_mode=draw(st.booleans()),
        count_include_pad=draw(st.booleans()),
        spatial=tuple(draw(st.integers(3, 7)) for _ in range(dims)),
        batched=draw(st.booleans()),
        special=draw(st.sampled_from(["none", "ties", "nan", "-inf"])),
        seed=draw(st.integers(0, 2 ** 16)),
    )


def _torch_or_none(fn):
    try:
        return fn()
    except RuntimeError:             # PyTorch rejects the configuration (e.g. output too small)
        return None


@settings(max_examples=examples(120))
@given(pool_configs())
def test_pools_match_torch(config):
    d = config["dims"]
    rng = np.random.default_rng(config["seed"])
    shape = ((2,) if config["batched"] else ()) + (3,) + config["spatial"]
    x = rng.standard_normal(shape)
    if config["special"] == "ties":
        x = np.round(x)
    elif config["special"] == "nan":
        x[rng.random(shape) < 0.1] = np.nan
    elif config["special"] == "-inf":
        x[rng.random(shape) < 0.3] = -np.inf
    max_args = dict(kernel_size=config["kernel"], stride=config["stride"],
                    padding=config["padding"], dilation=config["dilation"],
                    ceil_mode=config["ceil_mode"])
    xt = torch.tensor(x, requires_grad=True)
    expected = _torch_or_none(
        lambda: getattr(TF, f"max_pool{d}d")(xt, return_indices=True, **max_args))
    if expected is None:
        with pytest.raises(ValueError):
            getattr(GF, f"max_pool{d}d")(x, **max_args)
    else:
        out, indices = getattr(GF, f"max_pool{d}d")(x, return_indices=True, **max_args)
        np.testing.assert_array_equal(out, expected[0].detach().numpy())
        np.testing.assert_array_equal(indices, expected[1].numpy())
        g = rng.standard_normal(out.shape)
        (grad,) = graphm.vjp(lambda a: getattr(GF, f"max_pool{d}d")(a, **max_args), x)[1](g)
        (grad_t,) = torch.autograd.grad(expected[0], xt, torch.from_numpy(g))
        np.testing.assert_allclose(grad, grad_t.numpy(), rtol=1e-12, atol=1e-12)

    avg_args = dict(kernel_size=config["kernel"], stride=config["stride"],
                    padding=config["padding"], ceil_mode=config["ceil_mode"],
                    count_include_pad=config["count_include_pad"])
    x = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    expected = _torch_or_none(lambda: getattr(TF, f"avg_pool{d}d")(xt, **avg_args))
    if expected is None:
        with pytest.raises(ValueError):
            getattr(GF, f"avg_pool{d}d")(x, **avg_args)
        return
    out, vjp_fn = graphm.vjp(lambda a: getattr(GF, f"avg_pool{d}d")(a, **avg_args), x)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(out.shape)
    (grad_t,) = torch.autograd.grad(expected, xt, torch.from_numpy(g))
    np.testing.assert_allclose(vjp_fn(g)[0], grad_t.numpy(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# The conv ops over randomly drawn configurations (the conv core's own strategy)
# ------------------------------------------------------------------------------------------------

from conftest import conv_cases  # noqa: E402


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("d", [1, 2, 3])
@settings(max_examples=examples(15))
@given(data=st.data())
def test_conv_ops_on_random_configurations(d, transpose, data):
    """Build-time shape == run-time shape; VJP and JVP equal PyTorch's; <Jt, g> = <t, J^T g>."""
    case = data.draw(conv_cases(d, transpose))
    x, w, b, _ = case.arrays(np.float64)
    name = f"conv_transpose{d}d" if transpose else f"conv{d}d"
    kwargs = case.kwargs()

    def f_graphm(*args):
        return getattr(GF, name)(*args, **kwargs)

    def f_torch(*args):
        return getattr(TF, name)(*args, **kwargs)

    primals = (x, w) if b is None else (x, w, b)
    g = graphm.GraphM()
    var = f_graphm(*[g.input(f"a{i}", a.shape, a.dtype) for i, a in enumerate(primals)])
    assert var.shape == case.output_shape

    rng = np.random.default_rng(case.seed % 2 ** 32)
    tangents = tuple(rng.standard_normal(a.shape) for a in primals)
    out, vjp_fn = graphm.vjp(f_graphm, *primals)
    assert out.shape == case.output_shape
    cotangent = rng.standard_normal(out.shape)
    grads = vjp_fn(cotangent)
    _, tangent_out = graphm.jvp(f_graphm, primals, tangents)

    leaves = [torch.tensor(a, requires_grad=True) for a in primals]
    expected = f_torch(*leaves)
    expected_grads = torch.autograd.grad(expected, leaves, torch.from_numpy(cotangent))
    _, expected_tangent = torch.func.jvp(f_torch, tuple(torch.from_numpy(a) for a in primals),
                                         tuple(torch.from_numpy(t) for t in tangents))
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10,
                                   atol=1e-10 * max(1.0, np.abs(want.numpy()).max()))
    np.testing.assert_allclose(tangent_out, expected_tangent.numpy(), rtol=1e-10,
                               atol=1e-10 * max(1.0, np.abs(expected_tangent.numpy()).max()))
    assert check_jvp_vjp(f_graphm, primals, seed=case.seed % 1000)


# ------------------------------------------------------------------------------------------------
# linear runs on the convolution kernels: same bits for any thread count, edge cases as PyTorch
# ------------------------------------------------------------------------------------------------

def test_linear_and_its_backward_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 300)).astype(np.float32)
    w = rng.standard_normal((70, 300)).astype(np.float32)
    b = rng.standard_normal(70).astype(np.float32)
    g = rng.standard_normal((37, 70)).astype(np.float32)
    before = graphm.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            graphm.set_num_threads(threads)
            results.append((GF.linear(x, w, b), *GF.linear_backward(g, x, w)))
    finally:
        graphm.set_num_threads(before)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    TF.linear(xt, wt, bt).backward(torch.from_numpy(g))
    for got, want in zip(results[0][1:], (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_linear_edge_cases():
    w, b = np.ones((3, 4)), np.arange(3.0)
    np.testing.assert_array_equal(GF.linear(np.ones((0, 4)), w, b), np.zeros((0, 3)))
    np.testing.assert_array_equal(GF.linear(np.ones((2, 0)), np.ones((3, 0)), b),
                                  np.tile(b, (2, 1)))
    np.testing.assert_array_equal(GF.linear(np.ones(4), w, np.array(1.0)), [5.0, 5.0, 5.0])
    grads = GF.linear_backward(np.ones((0, 3)), np.ones((0, 4)), w)
    assert grads.grad_input.shape == (0, 4) and not grads.grad_weight.any()
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        GF.linear_backward(np.ones((2, 2)), np.ones((2, 4)), w)
    with pytest.raises(TypeError, match="share one dtype"):
        GF.linear(np.ones((2, 4), np.float32), w)
