"""graphm.verify: interval bounds and CROWN through convolutional networks.

Oracles: the program's own outputs on 10^4 points of each box and on the points a PGD attack
finds (soundness: every one inside both bounds, in float32 and float64); PyTorch at test time
for the dense matrices of affine layers (exact ranges) and for an independent dense-matrix
CROWN (the same relaxation, written with explicit Jacobians). auto_LiRPA 0.3, the only release
on PyPI, does not import beside NumPy 2 and torch 2.13 (it needs ``numpy.lib.arraysetops`` and
``torch.onnx.symbolic_helper._set_opset_version``), so the dense reference stands in for it.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphm
from graphm import nn
from graphm.ops.interval import Bounds, NoIntervalRule
from graphm.verify import certify, crown, ibp, linear_bounds, margin_spec

torch = pytest.importorskip("torch")
from graphm.interop import to_torch

# ------------------------------------------------------------------------------------------------
# Random small convolutional networks
# ------------------------------------------------------------------------------------------------

def _conv_layer(draw, dims, channels, transposed):
    groups = draw(st.sampled_from([g for g in (1, 2) if channels % g == 0]))
    out = groups * draw(st.integers(1, 3))
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    if transposed:
        padding = draw(st.integers(0, (dilation * (kernel - 1)) // 2))
        output_padding = draw(st.integers(0, max(stride, dilation) - 1))
        layer_type = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        return layer_type(channels, out, kernel, stride=stride, padding=padding,
                          output_padding=output_padding, groups=groups, dilation=dilation), out
    padding = draw(st.integers(0, 1))
    layer_type = nn.Conv1d if dims == 1 else nn.Conv2d
    return layer_type(channels, out, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=groups), out


@st.composite
def small_nets(draw, dtype, allow_pool=True, allow_relu=True):
    """A Sequential of conv / conv_transpose / relu / pools, then flatten and linear; with
    its input shape (1 or 2 spatial axes)."""
    dims = draw(st.sampled_from([1, 2]))
    channels = draw(st.integers(1, 3))
    size = draw(st.integers(4, 7))
    shape = (channels,) + (size,) * dims
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "conv", "conv_transpose"] +
                                    (["max_pool", "avg_pool"] if allow_pool else [])))
        if kind in ("conv", "conv_transpose"):
            layer, channels = _conv_layer(draw, dims, channels, kind == "conv_transpose")
        elif kind == "max_pool":
            layer = (nn.MaxPool1d if dims == 1 else nn.MaxPool2d)(
                2, stride=draw(st.integers(1, 2)))
        else:
            layer = (nn.AvgPool1d if dims == 1 else nn.AvgPool2d)(
                2, stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)))
        layers.append(layer)
        if allow_relu and draw(st.booleans()):
            layers.append(nn.ReLU())
    layers.append(nn.Flatten())
    probe = nn.Sequential(*layers)
    try:
        with graphm.no_grad():
            features = probe(graphm.tensor(np.zeros((1,) + shape, np.float32))).shape[1]
    except ValueError:
        from hypothesis import assume
        assume(False)
    layers.append(nn.Linear(features, draw(st.integers(2, 4))))
    if allow_relu and draw(st.booleans()):
        layers += [nn.ReLU(), nn.Linear(layers[-1].out_features, 3)]
    seed = draw(st.integers(0, 2 ** 16))
    graphm.manual_seed(seed)
    model = nn.Sequential(*layers)
    if dtype == np.float64:
        model = model.double()
    return model, shape, seed


def _box(rng, shape, dtype, eps=None, batch=1):
    centre = rng.standard_normal((batch,) + shape)
    radius = rng.uniform(0.01, 0.3, (batch,) + shape) if eps is None else np.full(
        (batch,) + shape, eps)
    return (centre - radius).astype(dtype), (centre + radius).astype(dtype)


def _run(model, x):
    with graphm.no_grad():
        return model(graphm.tensor(x)).numpy()


def _samples(rng, lower, upper, count):
    """Points of the box: half at random corners (where extremes of ReLU nets often are),
    half uniform inside; in the box's dtype, clipped into it."""
    shape = (count,) + lower.shape[1:]
    corners = np.where(rng.random(shape) < 0.5, lower, upper)
    inside = lower + rng.random(shape) * (upper - lower)
    points = np.where((np.arange(count) % 2 == 0).reshape((-1,) + (1,) * (lower.ndim - 1)),
                      corners, inside)
    return np.clip(points.astype(lower.dtype), lower, upper)


def _pgd(model, lower, upper, direction, steps=20):
    """Projected gradient ascent on ``direction · output`` within the box (graphm autograd)."""
    x = (lower + upper) / 2
    step = (upper - lower) / 4
    for _ in range(steps):
        t = graphm.tensor(x, requires_grad=True)
        (model(t) * graphm.tensor(direction)).sum().backward()
        x = np.clip(x + step * np.sign(t.grad), lower, upper).astype(lower.dtype)
        step = step * 0.8
    return x


def _attack_points(model, lower, upper, outputs, rng):
    points = []
    for k in range(outputs):
        for sign in (1, -1):
            direction = np.zeros((1, outputs), lower.dtype)
            direction[0, k] = sign
            points.append(_pgd(model, lower, upper, direction))
    return np.concatenate(points)


def _assert_inside(values, bounds, what):
    below = values < bounds.lower
    above = values > bounds.upper
    assert not below.any() and not above.any(), (
        f"{what}: {int(below.sum())} values below and {int(above.sum())} above the bounds; "
        f"worst excess {max(np.max(bounds.lower - values), np.max(values - bounds.upper))}")


# ------------------------------------------------------------------------------------------------
# Soundness
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=20)
@given(data=st.data())
def test_sampled_and_attacked_points_lie_inside_ibp_and_crown(dtype, data):
    model, shape, seed = data.draw(small_nets(dtype))
    rng = np.random.default_rng(seed)
    lower, upper = _box(rng, shape, dtype)
    methods = {"ibp": ibp(model, lower, upper), "crown": crown(model, lower, upper),
               "crown-ibp": crown(model, lower, upper, intermediate="ibp")}
    outputs = methods["ibp"].lower.shape[1]
    points = np.concatenate([_samples(rng, lower, upper, 10_000),
                             _attack_points(model, lower, upper, outputs, rng)])
    values = _run(model, points)
    for name, bounds in methods.items():
        assert bounds.lower.dtype == dtype and bounds.lower.shape == (1, outputs)
        _assert_inside(values, Bounds(bounds.lower[0], bounds.upper[0]), name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_batch_of_boxes_is_bounded_sample_by_sample(dtype):
    graphm.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(24, 5))
    if dtype == np.float64:
        model = model.double()
    rng = np.random.default_rng(0)
    lower, upper = _box(rng, (1, 8, 8), dtype, eps=0.05, batch=6)
    bounds = [ibp(model, lower, upper), crown(model, lower, upper)]
    for n in range(6):
        values = _run(model, _samples(rng, lower[n:n + 1], upper[n:n + 1], 2000))
        for b in bounds:
            _assert_inside(values, Bounds(b.lower[n], b.upper[n]), f"sample {n}")


def test_a_program_with_a_residual_connection_is_bounded():
    """A Program (a DAG: the input is read twice) with named params, walked node by node."""
    g = graphm.GraphM()
    x = g.input("x", (2, 2, 6), "float64")
    w1, b1 = g.param("w1", (2, 2, 3), "float64"), g.param("b1", (2,), "float64")
    w2 = g.param("w2", (3, 12), "float64")
    h = g.relu(g.conv(w1, b1, x, padding=1))
    y = g.linear(g.relu((g.add(h, x) * 0.5 - x).reshape((2, 12))), w2)
    program = g.compile(y)
    rng = np.random.default_rng(1)
    params = {"w1": rng.standard_normal((2, 2, 3)), "b1": rng.standard_normal(2),
              "w2": rng.standard_normal((3, 12))}
    lower, upper = _box(rng, (2, 6), np.float64, eps=0.2, batch=2)
    b_ibp = ibp(program, lower, upper, params=params)
    b_crown = crown(program, lower, upper, params=params)
    points = [_samples(rng, lower[n:n + 1], upper[n:n + 1], 1000) for n in range(2)]
    values = np.stack([program(x=np.stack([points[0][i], points[1][i]]), **params)
                       for i in range(1000)], axis=1)             # (2, 1000, 3)
    for n in range(2):
        for b in (b_ibp, b_crown):
            _assert_inside(values[n], Bounds(b.lower[n], b.upper[n]), "program")
    assert np.mean(b_crown.width()) < np.mean(b_ibp.width())


# ------------------------------------------------------------------------------------------------
# Exactness and tightness against dense matrices (PyTorch at test time)
# ------------------------------------------------------------------------------------------------

def _dense(torch_layer, in_shape):
    """(W, b) of an affine torch layer on one flattened sample, in float64."""
    size = math.prod(in_shape)
    layer = torch_layer.double()
    with torch.no_grad():
        b = layer(torch.zeros((1,) + in_shape, dtype=torch.float64)).reshape(-1)
        basis = torch.eye(size, dtype=torch.float64).reshape((size,) + in_shape)
        columns = layer(basis).reshape(size, -1) - b
    return columns.T.numpy(), b.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer, in_shape", [
    (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1, groups=2), (2, 7, 7)),
    (lambda: nn.Conv1d(3, 2, 2, dilation=2, padding=1), (3, 9)),
    (lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
     (2, 4, 4)),
    (lambda: nn.Linear(11, 5), (11,)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 6, 6)),
])
def test_ibp_on_one_affine_layer_is_its_exact_range(dtype, layer, in_shape):
    graphm.manual_seed(1)
    module = layer()
    if dtype == np.float64 and list(module.parameters()):
        module = module.double()
    rng = np.random.default_rng(2)
    lower, upper = _box(rng, in_shape, dtype, batch=3)
    W, b = _dense(to_torch(module), in_shape)
    c = (lower.astype(np.float64) + upper) / 2
    r = (upper.astype(np.float64) - lower) / 2
    centre = c.reshape(3, -1) @ W.T + b
    radius = r.reshape(3, -1) @ np.abs(W).T
    exact_low, exact_high = centre - radius, centre + radius    # the range, in exact arithmetic
    for bounds in (ibp(module, lower, upper), crown(module, lower, upper)):
        low = bounds.lower.reshape(3, -1).astype(np.float64)
        high = bounds.upper.reshape(3, -1).astype(np.float64)
        scale = np.abs(c).reshape(3, -1) @ np.abs(W).T + radius + np.abs(b) + 1
        # contains the range, and exceeds it by no more than the outward rounding
        slack = (5e-5 if dtype == np.float32 else 1e-13) * scale
        assert np.all(low <= exact_low + 1e-300) and np.all(high >= exact_high)
        assert np.all(exact_low - low <= slack) and np.all(high - exact_high <= slack)


@pytest.mark.parametrize("pool", [
    lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: nn.MaxPool2d(2, dilation=2),
    lambda: nn.MaxPool1d(3, stride=2, ceil_mode=True), lambda: nn.MaxPool2d(2),
    lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)])
def test_pools_on_a_point_box_give_the_forward_pass(pool):
    layer = pool()
    rng = np.random.default_rng(0)
    shape = (2, 3, 7) if isinstance(layer, nn.MaxPool1d) else (2, 3, 7, 7)
    x = rng.standard_normal(shape)
    bounds = ibp(layer, x, x)
    expected = _run(layer, x)
    if isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)):
        assert np.array_equal(bounds.lower, expected) and np.array_equal(bounds.upper, expected)
    else:
        assert np.all(bounds.lower <= expected) and np.all(expected <= bounds.upper)
        np.testing.assert_allclose(bounds.width(), 0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=15)
@given(data=st.data())
def test_crown_is_exact_and_no_wider_than_ibp_on_affine_networks(dtype, data):
    """Without ReLUs a network is one affine map: CROWN gives its exact range, IBP
    |W_k|...|W_1| r, never narrower (CROWN is guaranteed at least as tight here)."""
    model, shape, seed = data.draw(small_nets(dtype, allow_pool=False, allow_relu=False))
    rng = np.random.default_rng(seed)
    lower, upper = _box(rng, shape, dtype, batch=2)
    W, b = _dense(to_torch(model), shape)
    c = ((lower.astype(np.float64) + upper) / 2).reshape(2, -1)
    r = ((upper.astype(np.float64) - lower) / 2).reshape(2, -1)
    centre, radius = c @ W.T + b, r @ np.abs(W).T
    b_crown, b_ibp = crown(model, lower, upper), ibp(model, lower, upper)
    scale = np.abs(centre) + radius + 1
    slack = (2e-4 if dtype == np.float32 else 1e-12) * scale
    assert np.all(b_crown.lower <= centre - radius) and np.all(b_crown.upper >= centre + radius)
    assert np.all(b_crown.upper - b_crown.lower <= 2 * radius + 2 * slack)
    assert np.all(b_crown.upper - b_crown.lower <= b_ibp.upper - b_ibp.lower + 2 * slack)


def _reference_crown(model, lower, upper):
    """Dense-matrix CROWN in float64 for (affine, relu)*, affine networks, written from the
    paper: the same relaxation (chord above, adaptive slope below), pre-activation bounds by
    CROWN on the neurons IBP leaves unstable, intersected with the interval box."""
    layers, current, shape = [], [], tuple(lower.shape[1:])
    for child in model:
        if isinstance(child, nn.ReLU):
            layers.append(("affine", current, shape))
            layers.append(("relu",))
            current = []
        else:
            current.append(child)
    layers.append(("affine", current, shape))
    # compose consecutive affine layers into one dense map per stage
    stages, in_shape = [], tuple(lower.shape[1:])
    for item in layers:
        if item[0] == "relu":
            stages.append("relu")
            continue
        seq = torch.nn.Sequential(*[to_torch(m) for m in item[1]])
        W, b = _dense(seq, in_shape)
        stages.append((W, b))
        with torch.no_grad():
            in_shape = tuple(seq.double()(torch.zeros((1,) + in_shape,
                                                      dtype=torch.float64)).shape[1:])
    results = []
    for n in range(lower.shape[0]):
        l0, u0 = lower[n].reshape(-1).astype(np.float64), upper[n].reshape(-1).astype(np.float64)
        pre = []                                  # (W, b, l, u) of each relu's input
        affines = [s for s in stages if s != "relu"]

        def backward(A, k, affines=affines, pre=pre, l0=l0, u0=u0):
            """Lower bound of A z_k (z_k the input of affine k's output...) via layers < k."""
            const = np.zeros(A.shape[0])
            for i in range(k, -1, -1):
                W, b = affines[i]
                const += A @ b
                A = A @ W
                if i == 0:
                    break
                lo, hi = pre[i - 1]
                unstable = (lo < 0) & (hi > 0)
                slope = np.where(unstable, hi / np.where(unstable, hi - lo, 1), lo >= 0)
                alpha = np.where(unstable, hi >= -lo, lo >= 0).astype(float)
                neg = A < 0
                const += np.sum(np.where(neg & unstable, A * slope * -lo, 0), axis=1)
                A = np.where(neg, A * slope, A * alpha)
            return const + np.sum(np.where(A >= 0, A * l0, A * u0), axis=1)

        box_lo, box_hi = l0, u0
        for k, (W, b) in enumerate(affines[:-1]):
            c, r = (box_lo + box_hi) / 2, (box_hi - box_lo) / 2
            lo, hi = W @ c + b - np.abs(W) @ r, W @ c + b + np.abs(W) @ r
            if k > 0:
                unstable = (lo < 0) & (hi > 0)
                eye = np.eye(len(lo))
                crown_lo = backward(eye, k)
                crown_hi = -backward(-eye, k)
                lo = np.where(unstable, np.maximum(lo, crown_lo), lo)
                hi = np.where(unstable, np.minimum(hi, crown_hi), hi)
            pre.append((lo, hi))
            box_lo, box_hi = np.maximum(lo, 0), np.maximum(hi, 0)
        size = affines[-1][0].shape[0]
        eye = np.eye(size)
        results.append((backward(eye, len(affines) - 1), -backward(-eye, len(affines) - 1)))
    return results


@settings(max_examples=20)
@given(data=st.data())
def test_crown_agrees_with_a_dense_reference_implementation(data):
    model, shape, seed = data.draw(small_nets(np.float64, allow_pool=False))
    rng = np.random.default_rng(seed)
    lower, upper = _box(rng, shape, np.float64, batch=2)
    mine = crown(model, lower, upper)
    for n, (low, high) in enumerate(_reference_crown(model, lower, upper)):
        scale = np.abs(low) + np.abs(high) + 1
        np.testing.assert_array_less(mine.lower[n] - 1e-30, low + 1e-9 * scale)
        np.testing.assert_allclose(mine.lower[n], low, rtol=0, atol=1e-9 * scale.max())
        np.testing.assert_allclose(mine.upper[n], high, rtol=0, atol=1e-9 * scale.max())


def test_crown_is_tighter_than_ibp_on_average_over_random_networks(capsys):
    ratios = []
    rng = np.random.default_rng(0)
    for seed in range(12):
        graphm.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                              nn.ConvTranspose2d(4, 2, 2, stride=2), nn.ReLU(),
                              nn.Flatten(), nn.Linear(2 * 8 * 8, 5))
        lower, upper = _box(rng, (1, 8, 8), np.float32, eps=0.05, batch=2)
        width_crown = crown(model, lower, upper).width()
        width_ibp = ibp(model, lower, upper).width()
        ratios.append(float(np.mean(width_crown / width_ibp)))
    with capsys.disabled():
        print(f"\nCROWN / IBP output width, mean over 12 random conv nets: {np.mean(ratios):.3f} "
              f"(min {np.min(ratios):.3f}, max {np.max(ratios):.3f})")
    assert np.mean(ratios) < 0.9


# ------------------------------------------------------------------------------------------------
# Certification
# ------------------------------------------------------------------------------------------------

def _classifier(seed=0):
    graphm.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 4))


def test_certify_margins_bound_the_margins_of_sampled_and_attacked_points():
    model = _classifier()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    labels = _run(model, x).argmax(axis=1)
    eps = 0.02
    result = certify(model, x, labels, eps)
    ibp_result = certify(model, x, labels, eps, method="ibp")
    assert result.certified.dtype == bool and result.margins.shape == (5,)
    for n in range(5):
        lower, upper = x[n:n + 1] - np.float32(eps), x[n:n + 1] + np.float32(eps)
        logits = _run(model, _samples(rng, lower, upper, 3000))
        others = np.delete(logits, labels[n], axis=1)
        margins = logits[:, labels[n]] - others.max(axis=1)
        for j in range(4):          # PGD on each margin
            if j == labels[n]:
                continue
            direction = np.zeros((1, 4), np.float32)
            direction[0, labels[n]], direction[0, j] = -1, 1
            point = _pgd(model, lower, upper, direction)
            out = _run(model, point)[0]
            margins = np.append(margins, out[labels[n]] - np.delete(out, labels[n]).max())
        assert result.margins[n] <= margins.min()
        assert ibp_result.margins[n] <= margins.min()
    # the margin specification inside CROWN is tighter than subtracting logit bounds
    assert np.all(result.margins >= ibp_result.margins - 1e-6)
    assert result.margins.mean() > ibp_result.margins.mean()
    spec = margin_spec(labels, 4, np.float32)
    found = linear_bounds(model, x - np.float32(eps), x + np.float32(eps), spec)
    assert np.all(result.margins <= found.min(axis=1))


@pytest.mark.parametrize("method", ["crown", "crown-ibp", "ibp"])
def test_certify_at_eps_zero_certifies_exactly_the_correct_predictions(method):
    model = _classifier(1)
    x = np.random.default_rng(5).standard_normal((8, 1, 8, 8)).astype(np.float32)
    logits = _run(model, x)
    predicted = logits.argmax(axis=1)
    labels = predicted.copy()
    labels[::2] = (labels[::2] + 1) % 4
    result = certify(model, x, labels, 0.0, method)
    assert result.certified.tolist() == (labels == predicted).tolist()
    assert result.accuracy() == np.mean(labels == predicted)
    # at a point the margin bounds are the margins, up to rounding
    top_other = np.where(np.eye(4, dtype=bool)[labels], -np.inf, logits).max(axis=1)
    margins = logits[np.arange(8), labels] - top_other
    assert np.all(result.margins <= margins)
    np.testing.assert_allclose(result.margins, margins, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

def test_bad_boxes_are_named():
    model = _classifier()
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"lower > upper at 1 of 128 entries.*\(1, 0, 2, 3\)"):
        bad = x.copy()
        bad[1, 0, 2, 3] = 1
        ibp(model, bad, x)
    with pytest.raises(ValueError, match="upper holds NaN"):
        nan = x.copy()
        nan[0, 0, 0, 0] = np.nan
        crown(model, x, nan)
    with pytest.raises(ValueError, match=r"one shape, got lower \(2, 1, 8, 8\) and upper"):
        ibp(model, x, x[:1])
    with pytest.raises(ValueError, match=r"shape \(2, 1, 7, 8\), which does not fit the model"):
        ibp(model, x[..., :7, :], x[..., :7, :])
    with pytest.raises(TypeError, match="lower and upper are float64, the model's"):
        ibp(model, x.astype(np.float64), x.astype(np.float64))
    with pytest.raises(TypeError, match="lower must be float32 or float64"):
        ibp(model, x.astype(int), x)


def test_bad_certify_arguments_are_named():
    model = _classifier()
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, got -0.1"):
        certify(model, x, [0, 1], -0.1)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, got nan"):
        certify(model, x, [0, 1], float("nan"))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        certify(model, x, [0, 1, 2], 0.1)
    with pytest.raises(ValueError, match=r"labels must be in 0..3"):
        certify(model, x, [0, 4], 0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        certify(model, x, [0, 1], 0.1, method="lp")


def test_an_op_without_an_interval_rule_is_named():
    g = graphm.GraphM()
    x = g.input("x", (1, 3), "float64")
    program = g.compile(g.softmax(x, 1))
    box = np.zeros((1, 3)), np.ones((1, 3))
    with pytest.raises(NoIntervalRule, match="op 'softmax' .*has no interval rule"):
        ibp(program, *box)
    with pytest.raises(NoIntervalRule, match="op 'softmax'"):
        crown(program, *box)


def test_a_program_needs_its_params():
    g = graphm.GraphM()
    x = g.input("x", (1, 3), "float64")
    w = g.param("w", (2, 3), "float64")
    program = g.compile(g.linear(x, w))
    box = np.zeros((1, 3)), np.ones((1, 3))
    with pytest.raises(ValueError, match="param 'w'.*has no value"):
        ibp(program, *box)
    with pytest.raises(ValueError, match=r"params\['w'\] must have shape \(2, 3\)"):
        ibp(program, *box, params={"w": np.ones((3, 2))})
    bounds = ibp(program, *box, params={"w": np.ones((2, 3))})
    # the range is [0, 3]; outward rounding widens it by a few ulps of 3
    assert np.all(bounds.lower <= 0) and np.all(bounds.lower > -1e-13)
    assert np.all(bounds.upper >= 3) and np.all(bounds.upper < 3 + 1e-13)


# ------------------------------------------------------------------------------------------------
# graphm certify
# ------------------------------------------------------------------------------------------------

def _checkpoint(tmp_path, model="cnn"):
    from graphm import train as training
    from graphm.nn.models import make_autoencoder, make_cnn
    config = training.resolve_config({"model": model, "epochs": 1})
    graphm.manual_seed(0)
    network = make_cnn((1, 8, 8)) if model == "cnn" else make_autoencoder((1, 8, 8))
    state = {"config": config, "model": network.state_dict(), "history": {}, "epoch": 1,
             "normalization": {"mean": np.array([0.3], np.float32),
                               "std": np.array([0.4], np.float32)} if model == "cnn" else None}
    path = tmp_path / "checkpoint.npz"
    graphm.save(state, path, architecture=network.architecture())
    return path, network


def test_graphm_certify_prints_certified_accuracy_per_eps_and_writes_a_figure(tmp_path, capsys):
    from graphm.cli import main
    path, _ = _checkpoint(tmp_path)
    status = main(["certify", "--checkpoint", str(path), "--eps", "0", "0.01", "--limit", "12",
                   "--quiet", "--out", str(tmp_path / "figures")])
    out = capsys.readouterr().out
    assert status == 0, out
    lines = [line for line in out.splitlines() if line.startswith("eps ")]
    assert [line.split(":")[0] for line in lines] == ["eps 0", "eps 0.01"]
    clean = float(out.split("clean accuracy: ")[1].split("%")[0])
    at_zero = float(lines[0].split("certified accuracy ")[1].split("%")[0])
    at_eps = float(lines[1].split("certified accuracy ")[1].split("%")[0])
    assert at_zero == clean and at_eps <= at_zero        # eps 0 certifies the correct ones
    assert (tmp_path / "figures" / "certified_accuracy.png").stat().st_size > 1000


@pytest.mark.parametrize("arguments, message, status", [
    (["--eps", "-0.1"], "graphm certify: error: --eps -0.1: expected numbers >= 0", 2),
    (["--eps", "nan"], "graphm certify: error: --eps nan", 2),
])
def test_graphm_certify_reports_bad_arguments_on_one_line(tmp_path, capsys, arguments, message,
                                                          status):
    from graphm.cli import main
    path, _ = _checkpoint(tmp_path)
    assert main(["certify", "--checkpoint", str(path)] + arguments) == status
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_graphm_certify_refuses_an_autoencoder_and_a_missing_file(tmp_path, capsys):
    from graphm.cli import main
    path, _ = _checkpoint(tmp_path, "autoencoder")
    assert main(["certify", "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "holds an autoencoder, and only a classifier can be certified" in err
    assert main(["certify", "--checkpoint", str(tmp_path / "none.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("graphm certify: error: ") and err.count("\n") == 1
