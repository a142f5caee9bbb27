"""Every op's ``jvp`` rule runs unchanged on arrays, on eager Tensors and on a graph's Vars.

Forward mode nested in reverse mode (and the other way round) needs each rule to be written in
graphm's own operations, as the vjp rules are. For every op in ``graphm.ops.OPS``:

a. ``op.jvp`` on Tensors gives the numbers ``op.jvp`` gives on arrays;
b. it is recorded on the tape: the gradient of ``⟨c, ẏ(x, ẋ)⟩`` with respect to the primals and
   the tangents, by graphm's backward pass through the Tensor rule, matches
   ``torch.func.vjp`` of ``torch.func.jvp`` of the op's PyTorch counterpart (float64), or
   central differences of the arrays rule where PyTorch has no counterpart;
c. on Vars of a ``graphm.GraphM`` it builds a Program computing the same two outputs.

The inputs are not made up op by op: every op call that the cases of tests/test_ops.py make,
in their forward pass and in two ``create_graph`` backward sweeps (which call the adjoint ops:
conv_transpose, conv_weight_grad, max_pool_scatter, max_pool_gather, sum_to, ...), is recorded
with its real inputs and attributes, and so are the convolution geometries of
tests/test_higher_order.py (stride, padding incl. 'same', dilation, groups, output_padding,
d = 1, 2, 3, batched and unbatched). An op that no recorded call reaches must be added to
``EXTRA_CALLS``, or the coverage test fails.
"""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

import graphm
from graphm import engine
from graphm.graph import Var
from graphm.ops import OPS
from graphm.ops.reduction import normalize_axes
from graphm.ops.shape import resolve_shape
from test_higher_order import CONV_CONFIGS, _conv_case, _scalar_loss, _weights_and_vectors
from test_ops import CASES, graphm_fn

# the module (graphm.tensor is also the name of the function that makes a Tensor)
graphm_tensor = importlib.import_module("graphm.tensor")

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch",
                                        "ignore::UserWarning")

#: Ops that no case calls: (op name, inputs, attributes), inputs in float64.
_RNG = np.random.default_rng(11)
_AWAY = np.sign(_RNG.standard_normal((2, 3, 4))) * (0.1 + _RNG.uniform(size=(2, 3, 4)))
EXTRA_CALLS = [
    ("alias", [_RNG.standard_normal((3, 4))], {}),
    ("cast", [_RNG.standard_normal((3, 4))], {"dtype": "float32"}),
    ("cast", [_RNG.standard_normal((2, 3))], {"dtype": "float64"}),
    # more shapes (0-d included) for the ops that the cases call on one shape only
    ("relu", [_AWAY], {}),
    ("relu", [np.array(-0.7)], {}),
    ("exp", [np.array(0.3)], {}),
    ("log", [_RNG.uniform(0.5, 2.0, (2, 3, 4))], {}),
    ("tanh", [_RNG.standard_normal((2, 3, 4))], {}),
    ("sigmoid", [np.array(1.5)], {}),
    ("softplus", [3 * _AWAY], {"beta": 1.0, "threshold": 1.0}),
    ("mean", [_RNG.standard_normal((2, 3, 4))], {"axis": (0, 2), "keepdims": False}),
    ("nll_loss", [_RNG.standard_normal((6, 4)), np.array([0, 3, 1, 1, 2, 3]), None],
     {"ignore_index": 1, "reduction": "sum"}),
    ("nll_loss", [_RNG.standard_normal((2, 3, 3)), np.array([[0, 2, 1], [2, 2, 0]]), None],
     {"ignore_index": -100, "reduction": "none"}),
    ("cross_entropy", [_RNG.standard_normal((2, 3, 3)), np.array([[0, 2, 1], [2, 2, 0]]),
                       _RNG.uniform(0.5, 2.0, 3)],
     {"ignore_index": 0, "reduction": "mean", "label_smoothing": 0.1}),
]

#: How many distinct calls of one op are kept (the convolutions: every recorded geometry).
PER_OP = 4
PER_CONV_OP = 24
CONV_OPS = ("conv", "conv_transpose", "conv_weight_grad")


# ------------------------------------------------------------------------------------------------
# Recording the op calls
# ------------------------------------------------------------------------------------------------

def _key(op, arrays, attrs):
    return (op.name, tuple(None if a is None else (a.shape, a.dtype.str) for a in arrays),
            repr(sorted(attrs.items())))


def _recorded_calls():
    """{op name: [(inputs, attrs), ...]} from the cases, their double backward and the conv
    geometries, run eagerly with graphm.tensor.apply wrapped to note each call."""
    calls, seen = {}, set()
    original = graphm_tensor.apply

    def recording(op, inputs, attrs=None):
        attrs = {} if attrs is None else attrs
        if OPS.get(op.name) is op:
            lifted = engine.lift(op, inputs, lambda v: isinstance(v, graphm.Tensor),
                                 graphm.Tensor._wrap, "Tensor")
            arrays = [None if t is None else np.array(t.data) for t in lifted]
            key = _key(op, arrays, attrs)
            cap = PER_CONV_OP if op.name in CONV_OPS else PER_OP
            if key not in seen and len(calls.setdefault(op.name, [])) < cap:
                seen.add(key)
                calls[op.name].append((arrays, dict(attrs)))
        return original(op, inputs, attrs)

    def differentiate_twice(f, arrays):
        inputs = [graphm.tensor(a, requires_grad=True) for a in arrays]
        out = f(*inputs)
        rng = np.random.default_rng(5)
        loss = _scalar_loss(out, rng.standard_normal(out.shape))
        first = graphm.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
        inner = sum((g * rng.standard_normal(g.shape)).sum() for g in first
                    if g is not None and g.requires_grad)
        if isinstance(inner, graphm.Tensor) and inner.requires_grad:
            graphm.autograd.grad(inner, inputs, create_graph=True, allow_unused=True)

    graphm_tensor.apply = recording
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for config in CONV_CONFIGS:           # first, so that every geometry is kept
                name, x_shape, w_shape, cout, kwargs = _conv_case(config)
                rng = np.random.default_rng(3)
                arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape),
                          rng.standard_normal(cout)]
                differentiate_twice(
                    lambda x, w, b, name=name, kwargs=kwargs:
                    getattr(graphm.functional, name)(x, w, b, **kwargs), arrays)
            for case in CASES:
                differentiate_twice(graphm_fn(case), case.arrays())
    finally:
        graphm_tensor.apply = original
    for name, inputs, attrs in EXTRA_CALLS:
        calls.setdefault(name, []).append((inputs, attrs))
    return calls


CALLS = _recorded_calls()
SAMPLES = [(name, k) for name in CALLS for k in range(len(CALLS[name]))]
SAMPLE_IDS = [f"{name}-{k}" for name, k in SAMPLES]


def test_every_op_is_covered():
    """An op added to graphm.ops without a recorded or extra call makes this fail."""
    assert set(CALLS) == set(OPS)


# ------------------------------------------------------------------------------------------------
# Running one rule three ways
# ------------------------------------------------------------------------------------------------

def _sample(name, k):
    """(op, primals, tangents, attrs, cotangent of the tangent out) for call k of op ``name``."""
    op = OPS[name]
    primals, attrs = CALLS[name][k]
    rng = np.random.default_rng(100 + k)
    tangents = [rng.standard_normal(p.shape).astype(p.dtype)
                if p is not None and op.differentiable(i) else None
                for i, p in enumerate(primals)]
    _, tangent_out = op.jvp(primals, tangents, **attrs)
    tangent_out = np.asarray(tangent_out)
    cotangent = rng.standard_normal(tangent_out.shape).astype(tangent_out.dtype)
    return op, primals, tangents, attrs, cotangent


def _as_tensors(op, arrays, requires_grad):
    return [None if a is None else
            graphm.tensor(a, requires_grad=requires_grad and op.differentiable(i))
            for i, a in enumerate(arrays)]


def _assert_same(ours, expected, what):
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype, what
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("name,k", SAMPLES, ids=SAMPLE_IDS)
def test_jvp_on_tensors_equals_jvp_on_arrays(name, k):
    op, primals, tangents, attrs, _ = _sample(name, k)
    out, tangent_out = op.jvp(primals, tangents, **attrs)
    out_t, tangent_out_t = op.jvp(_as_tensors(op, primals, True),
                                  _as_tensors(op, tangents, True), **attrs)
    assert isinstance(out_t, graphm.Tensor) and isinstance(tangent_out_t, graphm.Tensor)
    _assert_same(out_t.data, out, "primal out")
    _assert_same(tangent_out_t.data, tangent_out, "tangent out")


@pytest.mark.parametrize("traced", ["primals", "tangents"])
@pytest.mark.parametrize("name,k", SAMPLES, ids=SAMPLE_IDS)
def test_jvp_on_tensors_mixed_with_arrays(name, k, traced):
    """Nested transforms hand a rule Tensor primals with array tangents, or the other way."""
    op, primals, tangents, attrs, _ = _sample(name, k)
    out, tangent_out = op.jvp(primals, tangents, **attrs)
    if traced == "primals":
        mixed = op.jvp(_as_tensors(op, primals, True), tangents, **attrs)
    else:
        mixed = op.jvp(primals, _as_tensors(op, tangents, True), **attrs)
    for value, expected, what in zip(mixed, (out, tangent_out), ("primal out", "tangent out")):
        _assert_same(value.data if isinstance(value, graphm.Tensor) else value, expected, what)


@pytest.mark.parametrize("name,k", SAMPLES, ids=SAMPLE_IDS)
def test_jvp_on_vars_builds_a_program(name, k):
    op, primals, tangents, attrs, _ = _sample(name, k)
    out, tangent_out = op.jvp(primals, tangents, **attrs)
    g = graphm.GraphM()
    primal_vars = [None if p is None else g.input(f"p{i}", p.shape, p.dtype)
                   for i, p in enumerate(primals)]
    tangent_vars = [None if t is None else g.input(f"t{i}", t.shape, t.dtype)
                    for i, t in enumerate(tangents)]
    out_v, tangent_out_v = op.jvp(primal_vars, tangent_vars, **attrs)
    assert isinstance(out_v, Var) and isinstance(tangent_out_v, Var)
    program = g.compile((out_v, tangent_out_v))
    feed = {f"p{i}": p for i, p in enumerate(primals) if p is not None}
    feed.update({f"t{i}": t for i, t in enumerate(tangents) if t is not None})
    out_p, tangent_out_p = program(feed)
    _assert_same(out_p, out, "primal out")
    _assert_same(tangent_out_p, tangent_out, "tangent out")


# ------------------------------------------------------------------------------------------------
# Reverse over forward: graphm's backward through the Tensor rule against an oracle
# ------------------------------------------------------------------------------------------------

def _torch_index(index):
    if isinstance(index, tuple):
        return tuple(_torch_index(i) for i in index)
    return torch.from_numpy(index) if isinstance(index, np.ndarray) else index


def _plain_padding(padding):
    """Padding torch's conv functions take: a string, an int, or one int per axis."""
    return isinstance(padding, (str, int)) or all(isinstance(p, int) for p in padding)


def _torch_counterpart(op, primals, attrs):
    """The op as a torch function of its differentiable inputs (the others closed over), or
    None where torch has no counterpart (graphm's adjoint ops, conv geometries given as
    (low, high) padding pairs)."""
    name, a = op.name, attrs
    fixed = [None if p is None else torch.from_numpy(p) for p in primals]
    elementwise = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
                   "neg": torch.neg, "exp": torch.exp, "log": torch.log, "matmul": torch.matmul,
                   "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                   "linear": TF.linear, "alias": torch.clone}
    if name in elementwise:
        return elementwise[name]
    if name == "pow":
        return lambda x: x ** a["exponent"]
    if name == "softplus":
        return lambda x: TF.softplus(x, a["beta"], a["threshold"])
    if name in ("sum", "mean"):
        axes = normalize_axes(a.get("axis"), primals[0].ndim, name)
        reduce = torch.sum if name == "sum" else torch.mean
        return (lambda x: reduce(x, dim=axes, keepdim=a.get("keepdims", False))) if axes else \
            (lambda x: x.clone())
    if name == "sum_to":
        return lambda x: x.sum_to_size(a["shape"]) if a["shape"] else x.sum()
    if name == "broadcast_to":
        return lambda x: torch.broadcast_to(x, a["shape"])
    if name == "reshape":
        return lambda x: x.reshape(resolve_shape(primals[0].shape, a["shape"]))
    if name == "permute":
        return lambda x: x.permute(*a["dims"])
    if name == "index":
        return lambda x: x[_torch_index(a["index"])]
    if name == "cast":
        return lambda x: x.to(getattr(torch, a["dtype"]))
    if name in ("softmax", "log_softmax"):
        return lambda x: getattr(torch, name)(x, a["dim"])
    if name == "max_pool":
        pool = getattr(TF, f"max_pool{a['dims']}d")
        return lambda x: pool(x, a["kernel_size"], a.get("stride"), a.get("padding", 0),
                              a.get("dilation", 1), a.get("ceil_mode", False))
    if name == "avg_pool":
        if a["dims"] == 1 and a.get("divisor_override") is not None:
            return None
        extra = () if a["dims"] == 1 else (a.get("divisor_override"),)
        pool = getattr(TF, f"avg_pool{a['dims']}d")
        return lambda x: pool(x, a["kernel_size"], a.get("stride"), a.get("padding", 0),
                              a.get("ceil_mode", False), a.get("count_include_pad", True),
                              *extra)
    if name == "cross_entropy":
        return lambda x: TF.cross_entropy(x, fixed[1], fixed[2], **a)
    if name == "nll_loss":
        return lambda x: TF.nll_loss(x, fixed[1], fixed[2], **a)
    if name == "mse_loss":
        return lambda x, t: TF.mse_loss(x, t, reduction=a.get("reduction", "mean"),
                                        weight=fixed[2])
    if name in ("conv", "conv_transpose") and _plain_padding(a.get("padding", 0)):
        rank = primals[1].ndim - 2
        if name == "conv":
            return lambda x, w, b=None: getattr(TF, f"conv{rank}d")(
                x, w, b, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1),
                a.get("groups", 1))
        return lambda x, w, b=None: getattr(TF, f"conv_transpose{rank}d")(
            x, w, b, a.get("stride", 1), a.get("padding", 0), a.get("output_padding", 0),
            a.get("groups", 1), a.get("dilation", 1))
    return None                     # index_add, the pool adjoints, conv_weight_grad, pairs


def _reverse_over_forward_torch(function, primals, tangents, cotangent):
    """∂⟨c, ẏ⟩/∂(x, ẋ) by torch.func.vjp of torch.func.jvp."""
    xs = [torch.from_numpy(p) for p in primals]
    ts = [torch.from_numpy(t) for t in tangents]
    count = len(xs)

    def tangent_out(*values):
        return torch.func.jvp(function, tuple(values[:count]), tuple(values[count:]))[1]

    _, pull = torch.func.vjp(tangent_out, *xs, *ts)
    return [g.numpy() for g in pull(torch.from_numpy(cotangent))]


def _reverse_over_forward_differences(op, primals, tangents, attrs, cotangent, positions,
                                      step=1e-6):
    """∂⟨c, ẏ⟩/∂(x, ẋ) by central differences of the arrays rule, in float64."""
    def objective(xs, ts):
        full_p, full_t = list(primals), list(tangents)
        for i, x, t in zip(positions, xs, ts):
            full_p[i], full_t[i] = x, t
        return float(np.sum(cotangent * np.asarray(op.jvp(full_p, full_t, **attrs)[1])))

    values = [primals[i] for i in positions] + [tangents[i] for i in positions]
    count = len(positions)
    grads = []
    for j, value in enumerate(values):
        grad = np.zeros(value.shape)
        for flat in range(value.size):
            shifted = []
            for sign in (1, -1):
                moved = [v.copy() for v in values]
                moved[j].reshape(-1)[flat] += sign * step
                shifted.append(objective(moved[:count], moved[count:]))
            grad.reshape(-1)[flat] = (shifted[0] - shifted[1]) / (2 * step)
        grads.append(grad)
    return grads


def _oracle(op, primals, tangents, attrs, cotangent, positions):
    """The expected gradients of ⟨c, ẏ⟩ with respect to the differentiable primals, then
    their tangents, with the tolerances that fit how they were computed."""
    function = _torch_counterpart(op, primals, attrs)
    if function is None:
        return (_reverse_over_forward_differences(op, primals, tangents, attrs, cotangent,
                                                  positions), 1e-6, 1e-7)
    expected = _reverse_over_forward_torch(function, [primals[i] for i in positions],
                                           [tangents[i] for i in positions], cotangent)
    float32 = cotangent.dtype == np.float32
    return (expected,) + ((1e-6, 1e-6) if float32 else (1e-9, 1e-10))


@pytest.mark.parametrize("name,k", SAMPLES, ids=SAMPLE_IDS)
def test_reverse_over_forward_matches_torch_or_differences(name, k):
    """graphm's backward pass through the rule run on Tensors (the rule is recorded)."""
    op, primals, tangents, attrs, cotangent = _sample(name, k)
    primal_tensors = _as_tensors(op, primals, True)
    tangent_tensors = _as_tensors(op, tangents, True)
    _, tangent_out = op.jvp(primal_tensors, tangent_tensors, **attrs)
    positions = [i for i, t in enumerate(tangents) if t is not None]
    wrt = [primal_tensors[i] for i in positions] + [tangent_tensors[i] for i in positions]
    grads = graphm.autograd.grad(tangent_out, wrt, grad_outputs=cotangent, allow_unused=True)
    expected, rtol, atol = _oracle(op, primals, tangents, attrs, cotangent, positions)
    for g, e, w in zip(grads, expected, wrt):
        ours = np.zeros(w.shape) if g is None else g.data
        assert ours.shape == w.shape
        np.testing.assert_allclose(ours, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name,k", SAMPLES, ids=SAMPLE_IDS)
def test_reverse_over_forward_in_compiled_mode(name, k):
    """The rule run on Vars is a Program that differentiates like any other: its vjp, and its
    vjp_program (the derivative as a Program), against the same oracle."""
    op, primals, tangents, attrs, cotangent = _sample(name, k)
    g = graphm.GraphM()
    primal_vars = [None if p is None else g.input(f"p{i}", p.shape, p.dtype)
                   for i, p in enumerate(primals)]
    tangent_vars = [None if t is None else g.input(f"t{i}", t.shape, t.dtype)
                    for i, t in enumerate(tangents)]
    program = g.compile(op.jvp(primal_vars, tangent_vars, **attrs)[1])
    feed = {f"p{i}": p for i, p in enumerate(primals) if p is not None}
    feed.update({f"t{i}": t for i, t in enumerate(tangents) if t is not None})
    positions = [i for i, t in enumerate(tangents) if t is not None]
    names = [f"p{i}" for i in positions] + [f"t{i}" for i in positions]
    expected, rtol, atol = _oracle(op, primals, tangents, attrs, cotangent, positions)
    grads = program.vjp(feed, cotangent)
    used = [n for n in names if n in program.inputs]
    derivative = program.vjp_program(used)
    built = derivative({**{n: v for n, v in feed.items() if n in program.inputs},
                        "cotangent": cotangent})
    built = dict(zip(used, [built] if len(used) == 1 else built))
    for n, e in zip(names, expected):
        for ours in (grads.get(n, np.zeros_like(e)), built.get(n, np.zeros_like(e))):
            np.testing.assert_allclose(ours, e, rtol=rtol, atol=atol, err_msg=n)
