"""graphm.nn: every layer against torch.nn (forward and gradients), PyTorch's initialisation,
the Module API, and graphm.compile (eager and compiled give the same numbers and both train)."""
import math
import zlib

import numpy as np
import pytest

import graphm
import graphm.functional as F
from graphm import nn

torch = pytest.importorskip("torch")

RTOL = {np.float32: 2e-4, np.float64: 1e-10}


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def torch_twin(layer, torch_layer):
    """Copy the graphm layer's weights into the torch layer built with the same arguments."""
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            getattr(torch_layer, name).copy_(torch.from_numpy(parameter.data.copy()))
    return torch_layer


def close(actual, expected, dtype, what):
    expected = np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1e-30) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=what)


# (graphm layer factory, torch layer factory, input shape): the same arguments on both sides
LAYERS = {
    "conv1d": (lambda dt: nn.Conv1d(3, 4, 3, stride=2, padding=1, dtype=dt),
               lambda dt: torch.nn.Conv1d(3, 4, 3, stride=2, padding=1, dtype=dt), (2, 3, 9)),
    "conv1d_same_groups": (
        lambda dt: nn.Conv1d(4, 6, 3, groups=2, dilation=2, padding="same", bias=False, dtype=dt),
        lambda dt: torch.nn.Conv1d(4, 6, 3, groups=2, dilation=2, padding="same", bias=False,
                                   dtype=dt), (2, 4, 10)),
    "conv2d": (lambda dt: nn.Conv2d(3, 4, 3, padding=1, dtype=dt),
               lambda dt: torch.nn.Conv2d(3, 4, 3, padding=1, dtype=dt), (2, 3, 7, 6)),
    "conv2d_strided_groups": (
        lambda dt: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=2,
                             padding="valid", dtype=dt),
        lambda dt: torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=2,
                                   padding="valid", dtype=dt), (3, 4, 9, 8)),
    "conv2d_unbatched": (lambda dt: nn.Conv2d(2, 3, 3, stride=2, dtype=dt),
                         lambda dt: torch.nn.Conv2d(2, 3, 3, stride=2, dtype=dt), (2, 8, 7)),
    "conv3d": (lambda dt: nn.Conv3d(2, 3, 2, stride=2, padding=1, dtype=dt),
               lambda dt: torch.nn.Conv3d(2, 3, 2, stride=2, padding=1, dtype=dt),
               (2, 2, 5, 4, 5)),
    "conv_transpose1d": (
        lambda dt: nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=1, dtype=dt),
        lambda dt: torch.nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=1, dtype=dt),
        (2, 3, 5)),
    "conv_transpose2d": (
        lambda dt: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                      dtype=dt),
        lambda dt: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                            groups=2, dtype=dt), (2, 4, 4, 5)),
    "conv_transpose2d_dilated": (
        lambda dt: nn.ConvTranspose2d(2, 3, 2, stride=(1, 2), dilation=2, bias=False, dtype=dt),
        lambda dt: torch.nn.ConvTranspose2d(2, 3, 2, stride=(1, 2), dilation=2, bias=False,
                                            dtype=dt), (1, 2, 4, 3)),
    "conv_transpose3d": (
        lambda dt: nn.ConvTranspose3d(2, 3, 2, stride=2, dtype=dt),
        lambda dt: torch.nn.ConvTranspose3d(2, 3, 2, stride=2, dtype=dt), (2, 2, 3, 2, 3)),
    "linear": (lambda dt: nn.Linear(5, 3, dtype=dt),
               lambda dt: torch.nn.Linear(5, 3, dtype=dt), (4, 5)),
    "linear_3d_no_bias": (lambda dt: nn.Linear(5, 3, bias=False, dtype=dt),
                          lambda dt: torch.nn.Linear(5, 3, bias=False, dtype=dt), (2, 4, 5)),
    "relu": (lambda dt: nn.ReLU(), lambda dt: torch.nn.ReLU(), (3, 4, 5)),
    "sigmoid": (lambda dt: nn.Sigmoid(), lambda dt: torch.nn.Sigmoid(), (3, 4, 5)),
    "tanh": (lambda dt: nn.Tanh(), lambda dt: torch.nn.Tanh(), (3, 4, 5)),
    "max_pool1d": (lambda dt: nn.MaxPool1d(3, stride=2, padding=1),
                   lambda dt: torch.nn.MaxPool1d(3, stride=2, padding=1), (2, 3, 9)),
    "max_pool2d": (lambda dt: nn.MaxPool2d(2), lambda dt: torch.nn.MaxPool2d(2), (2, 3, 8, 7)),
    "max_pool2d_padded_ceil": (
        lambda dt: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        lambda dt: torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 8, 7)),
    "max_pool3d": (lambda dt: nn.MaxPool3d(2), lambda dt: torch.nn.MaxPool3d(2), (1, 2, 4, 5, 4)),
    "avg_pool1d": (lambda dt: nn.AvgPool1d(2), lambda dt: torch.nn.AvgPool1d(2), (2, 3, 9)),
    "avg_pool2d": (lambda dt: nn.AvgPool2d(2), lambda dt: torch.nn.AvgPool2d(2), (2, 3, 8, 7)),
    "avg_pool2d_exclude_pad": (
        lambda dt: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        lambda dt: torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        (2, 3, 8, 7)),
    "avg_pool3d": (lambda dt: nn.AvgPool3d(2, stride=1),
                   lambda dt: torch.nn.AvgPool3d(2, stride=1), (1, 2, 3, 4, 3)),
    "flatten": (lambda dt: nn.Flatten(), lambda dt: torch.nn.Flatten(), (2, 3, 4, 5)),
    "flatten_inner": (lambda dt: nn.Flatten(1, 2), lambda dt: torch.nn.Flatten(1, 2),
                      (2, 3, 4, 5)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_torch_forward_and_gradients(name, dtype):
    make, make_torch, input_shape = LAYERS[name]
    torch_dtype = torch.float32 if dtype is np.float32 else torch.float64
    graphm.manual_seed(1)
    layer = make(dtype)
    twin = torch_twin(layer, make_torch(torch_dtype))
    rng = rng_for(name)
    x = rng.standard_normal(input_shape).astype(dtype)

    tx = graphm.tensor(x, requires_grad=True)
    out = layer(tx)
    torch_x = torch.from_numpy(x.copy()).requires_grad_(True)
    torch_out = twin(torch_x)
    assert out.dtype == dtype and out.shape == tuple(torch_out.shape)
    close(out.numpy(), torch_out.detach().numpy(), dtype, f"{name} forward")

    g = rng.standard_normal(out.shape).astype(dtype)
    out.backward(g)
    torch_out.backward(torch.from_numpy(g))
    close(tx.grad, torch_x.grad.numpy(), dtype, f"{name} input gradient")
    for pname, parameter in layer.named_parameters():
        close(parameter.grad, getattr(twin, pname).grad.numpy(), dtype, f"{name} d{pname}")


def test_losses_match_torch():
    rng = rng_for("losses")
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    ours = nn.CrossEntropyLoss(label_smoothing=0.1)(graphm.tensor(logits), labels).item()
    theirs = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(torch.tensor(logits),
                                                            torch.tensor(labels)).item()
    assert ours == pytest.approx(theirs, rel=1e-6)
    target = rng.standard_normal((6, 4)).astype(np.float32)
    ours = nn.MSELoss()(graphm.tensor(logits), graphm.tensor(target)).item()
    assert ours == pytest.approx(torch.nn.MSELoss()(torch.tensor(logits),
                                                    torch.tensor(target)).item(), rel=1e-6)


# -- initialisation -------------------------------------------------------------------------------

@pytest.mark.parametrize("make, make_torch", [
    (lambda: nn.Conv2d(16, 32, 3), lambda: torch.nn.Conv2d(16, 32, 3)),
    (lambda: nn.Conv2d(16, 32, 3, groups=4), lambda: torch.nn.Conv2d(16, 32, 3, groups=4)),
    (lambda: nn.ConvTranspose2d(8, 24, 3, groups=2),
     lambda: torch.nn.ConvTranspose2d(8, 24, 3, groups=2)),
    (lambda: nn.Conv1d(6, 64, 5), lambda: torch.nn.Conv1d(6, 64, 5)),
    (lambda: nn.Linear(200, 120), lambda: torch.nn.Linear(200, 120)),
], ids=["conv2d", "conv2d_groups", "conv_transpose2d_groups", "conv1d", "linear"])
def test_default_init_has_pytorchs_bounds(make, make_torch):
    """kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    PyTorch's own layer, drawn with its generator, fills the same interval."""
    graphm.manual_seed(0)
    layer, twin = make(), make_torch()
    fan_in = math.prod(layer.weight.shape[1:])
    bound = 1 / math.sqrt(fan_in)
    for ours, theirs in ((layer.weight.data, twin.weight.detach().numpy()),
                         (layer.bias.data, twin.bias.detach().numpy())):
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        for values in (ours, theirs):
            assert np.abs(values).max() <= bound
            if values.size >= 500:     # uniform: the extremes reach the bound, the std is b/sqrt(3)
                assert np.abs(values).max() > 0.97 * bound
                assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_manual_seed_makes_initialisation_reproducible():
    graphm.manual_seed(7)
    first = nn.Conv2d(1, 4, 3).weight.data.copy()
    graphm.manual_seed(7)
    second = nn.Conv2d(1, 4, 3).weight.data.copy()
    third = nn.Conv2d(1, 4, 3).weight.data.copy()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(second, third)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        graphm.manual_seed(-1)


def test_init_functions():
    array = np.empty((64, 32), np.float64)
    nn.init.xavier_uniform_(array, generator=np.random.default_rng(0))
    assert np.abs(array).max() <= math.sqrt(6 / 96)
    nn.init.kaiming_normal_(array, nonlinearity="relu", generator=np.random.default_rng(0))
    assert array.std() == pytest.approx(math.sqrt(2 / 32), rel=0.05)
    parameter = nn.Parameter(np.ones(3, np.float32))
    assert nn.init.zeros_(parameter) is parameter and not parameter.data.any()
    assert nn.init.calculate_fan_in_and_fan_out((8, 4, 3, 3)) == (36, 72)
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.kaiming_uniform_(np.empty(3))


# -- the Module API -------------------------------------------------------------------------------

class TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 10)
        self.scale = 2.0                      # a plain attribute, not a parameter

    def forward(self, x):
        return self.head(self.features(x).flatten(1)) * self.scale


class TorchTwoStage(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.MaxPool2d(2))
        self.head = torch.nn.Linear(4 * 4 * 4, 10)


def test_names_and_state_dict_keys_match_pytorch():
    model = TwoStage()
    assert list(model.state_dict()) == list(TorchTwoStage().state_dict())
    assert [name for name, _ in model.named_parameters()] == list(model.state_dict())
    assert len(list(model.parameters())) == 4
    assert [name for name, _ in model.named_modules()] == \
        ["", "features", "features.0", "features.1", "features.2", "head"]
    assert model.scale == 2.0 and "scale" not in model.state_dict()


def test_state_dict_round_trip_and_strictness():
    graphm.manual_seed(0)
    source, target = TwoStage(), TwoStage()
    weight_object = target.head.weight
    state = source.state_dict()
    state["head.bias"][0] += 1          # a copy: the model is untouched
    assert source.head.bias.data[0] != state["head.bias"][0]
    assert target.load_state_dict(state) == ([], [])
    assert target.head.weight is weight_object   # in place: optimizers keep their parameters
    np.testing.assert_array_equal(target.head.bias.data, state["head.bias"])

    partial = dict(state)
    del partial["head.bias"]
    partial["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing key\(s\) \['head.bias'\]; unexpected key\(s\) "
                                       r"\['extra'\]"):
        target.load_state_dict(partial)
    assert target.load_state_dict(partial, strict=False) == (["head.bias"], ["extra"])
    state["head.weight"] = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"head.weight: checkpoint \(10, 3\), model \(10, 64\)"):
        target.load_state_dict(state)


def test_module_modes_zero_grad_dtype_and_repr():
    model = TwoStage()
    assert model.training and model.eval() is model and not model.features[1].training
    model.train()
    assert model.head.training
    loss = model(graphm.tensor(np.ones((2, 1, 8, 8), np.float32))).sum()
    loss.backward()
    assert model.head.weight.grad is not None
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.double()
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model(graphm.tensor(np.ones((2, 1, 8, 8)))).dtype == np.float64
    text = repr(model)
    assert "(features): Sequential(" in text and "(0): Conv2d(1, 4, kernel_size=(3, 3)" in text
    assert isinstance(model.head.weight, nn.Parameter)
    assert not isinstance(graphm.tensor([1.0]), nn.Parameter)


def test_module_registration_errors():
    class Forgot(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="call super\\(\\).__init__\\(\\) first"):
        Forgot()
    model = TwoStage()
    with pytest.raises(TypeError, match="cannot assign a ndarray to parameter 'weight'"):
        model.head.weight = np.zeros((10, 64))
    with pytest.raises(NotImplementedError, match="does not define forward"):
        nn.Module()(1)
    with pytest.raises(TypeError, match="Sequential: item '0' is a int"):
        nn.Sequential(3)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "in_channels=3 must be divisible by groups=2"),
    (lambda: nn.Conv2d(0, 4, 3), "in_channels must be a positive int"),
    (lambda: nn.Conv2d(2, 4, (3, 3, 3)), "kernel_size must be a positive int or a tuple of 2"),
    (lambda: nn.Conv2d(2, 4, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
    (lambda: nn.Conv2d(2, 4, 3, padding="full"), "padding must be ints, 'same' or 'valid'"),
    (lambda: nn.Conv2d(2, 4, 3, padding_mode="reflect"), "padding_mode='zeros' only"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, padding="same"), "padding must be ints"),
    (lambda: nn.Conv1d(2, 4, 3, dtype=np.int32), "dtype must be float32 or float64"),
    (lambda: nn.Linear(2, 4, device="cuda"), "CPU only"),
    (lambda: nn.MaxPool2d(2, return_indices=True), "return_indices=True is not supported"),
])
def test_constructor_errors(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_shape_errors_name_the_layer_arguments():
    with pytest.raises(graphm.ShapeError, match="weight"):
        nn.Conv2d(3, 4, 3)(graphm.tensor(np.zeros((1, 2, 5, 5), np.float32)))


# -- architecture descriptions and checkpoints ------------------------------------------------------

def test_architecture_rebuilds_the_same_network(tmp_path):
    from graphm.nn.models import make_autoencoder, make_cnn
    for model in (make_cnn(), make_autoencoder(), nn.Sequential(nn.Conv1d(2, 3, 2), nn.Tanh())):
        rebuilt = nn.from_architecture(model.architecture())
        assert rebuilt.architecture() == model.architecture()
        assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    with pytest.raises(ValueError, match="cannot rebuild"):
        nn.from_architecture(TwoStage().architecture())
    assert TwoStage().architecture()["type"].endswith("TwoStage")


def test_save_and_load_a_module(tmp_path):
    from graphm.nn.models import make_cnn
    graphm.manual_seed(0)
    model = make_cnn()
    graphm.save(model, tmp_path / "m.npz")
    graphm.manual_seed(1)
    other = make_cnn()
    other.load_state_dict(graphm.load(tmp_path / "m.npz", architecture=other))
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    rebuilt = nn.from_architecture(graphm.checkpoint.load_header(tmp_path / "m.npz")["architecture"])
    rebuilt.load_state_dict(graphm.load(tmp_path / "m.npz"))
    with pytest.raises(graphm.checkpoint.CheckpointError, match="another architecture.*"
                                                                "out_channels is 32"):
        graphm.load(tmp_path / "m.npz", architecture=make_cnn().__class__(
            nn.Conv2d(1, 8, 3, padding=1), *list(make_cnn())[1:]))


# -- compile --------------------------------------------------------------------------------------

def lenet_and_batch(seed=0, n=16):
    from graphm.nn.models import make_cnn
    graphm.manual_seed(seed)
    rng = rng_for("lenet")
    return make_cnn(), rng.standard_normal((n, 1, 8, 8)).astype(np.float32), \
        rng.integers(0, 10, n)


def test_compiled_equals_eager_forward_and_gradients():
    model, x, y = lenet_and_batch()
    loss = F.cross_entropy(model(graphm.tensor(x)), y)
    loss.backward()
    eager = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.zero_grad()
    compiled = graphm.compile(model, x, loss=F.cross_entropy)
    value, output = compiled.forward_backward(x, y)
    assert value == pytest.approx(loss.item(), rel=1e-6)
    np.testing.assert_allclose(output, model(graphm.tensor(x)).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(compiled(x), output, rtol=1e-6, atol=1e-7)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, eager[name], rtol=1e-5, atol=1e-7, err_msg=name)
    text = str(compiled.program)
    assert "conv(" in text and "linear(" in text and "max_pool(" in text
    assert set(compiled.param_names.values()) == set(model.state_dict())


def test_compiled_retraces_for_a_new_batch_size_and_reads_current_weights():
    model, x, y = lenet_and_batch()
    compiled = graphm.compile(model, x)
    small = x[:5]
    np.testing.assert_allclose(compiled(small), model(graphm.tensor(small)).numpy(),
                               rtol=1e-6, atol=1e-7)
    model[-1].bias.data += 1.0     # the program holds no weights of its own
    np.testing.assert_allclose(compiled(small), model(graphm.tensor(small)).numpy(),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="has no loss"):
        compiled.forward_backward(x, y)
    with pytest.raises(TypeError, match="expected a graphm.nn.Module"):
        graphm.compile(lambda v: v, x)


@pytest.mark.parametrize("kind", ["cnn", "autoencoder"])
def test_eager_and_compiled_training_stay_together(kind):
    """Three Adam steps in each mode, from the same weights: the same weights after."""
    from graphm.nn.models import make_autoencoder, make_cnn
    make = make_cnn if kind == "cnn" else make_autoencoder
    loss_function = F.cross_entropy if kind == "cnn" else F.mse_loss
    rng = rng_for(kind)
    x = rng.random((8, 1, 8, 8)).astype(np.float32)
    target = rng.integers(0, 10, 8) if kind == "cnn" else x
    models = []
    for mode in ("eager", "compiled"):
        graphm.manual_seed(3)
        model = make()
        optimizer = graphm.optim.Adam(model.parameters(), lr=1e-2)
        compiled = graphm.compile(model, x, loss=loss_function)
        for _ in range(3):
            optimizer.zero_grad()
            if mode == "eager":
                loss_function(model(graphm.tensor(x)), target).backward()
            else:
                compiled.forward_backward(x, target)
            optimizer.step()
        models.append(model)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6, err_msg=name)


def test_compile_a_model_that_uses_one_layer_twice():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    compiled = graphm.compile(model, x)
    assert isinstance(shared.weight, nn.Parameter)          # the trace put the Parameters back
    eager = model(graphm.tensor(x)).data
    np.testing.assert_array_equal(np.asarray(getattr(compiled(graphm.tensor(x)), "data",
                                                     compiled(graphm.tensor(x)))), eager)
    assert [name for name, _ in model.named_modules()] == ["", "0", "1"]


# -- Module.to / cpu / float / double, as PyTorch (issue 11, section 4) ---------------------------

def module_to_cases():
    """Ways PyTorch code calls ``Module.to``, with the dtype each leaves the parameters in
    (None: unchanged, float32)."""
    cases = [
        ((np.float64,), {}, np.float64), (("float64",), {}, np.float64),
        ((float,), {}, np.float64), ((np.dtype(np.float32),), {}, np.float32),
        (("cpu",), {}, None), (("cpu:0",), {}, None),
        (("cpu", np.float64), {}, np.float64), ((), {"dtype": "float64"}, np.float64),
        ((), {"device": "cpu", "dtype": np.float64, "non_blocking": True}, np.float64),
        ((graphm.tensor(np.zeros(2)),), {}, np.float64),             # to(tensor): its dtype
    ]
    try:
        import torch
    except ImportError:
        return cases
    return cases + [((torch.float64,), {}, np.float64),
                    ((torch.device("cpu"),), {}, None),
                    ((torch.device("cpu"), torch.float64), {}, np.float64)]


@pytest.mark.parametrize("args, kwargs, dtype", module_to_cases())
def test_module_to_as_pytorch(args, kwargs, dtype):
    model = TwoStage()
    optimizer = graphm.optim.SGD(model.parameters(), lr=0.1)
    model(graphm.tensor(np.ones((2, 1, 8, 8), np.float32))).sum().backward()
    before = [p.data.copy() for p in model.parameters()]
    identities = [id(p) for p in model.parameters()]
    assert model.to(*args, **kwargs) is model
    expected = np.dtype(dtype or np.float32)
    for parameter, values in zip(model.parameters(), before):
        assert parameter.dtype == expected and parameter.grad.dtype == expected
        np.testing.assert_array_equal(parameter.data, values.astype(expected))
    assert [id(p) for p in model.parameters()] == identities     # the optimizer's still
    optimizer.step()                                              # updates them, in place
    assert model(graphm.tensor(np.ones((2, 1, 8, 8), expected))).dtype == expected


def test_module_cpu_float_double():
    model = TwoStage()
    assert model.cpu() is model
    assert model.double() is model and all(p.dtype == np.float64 for p in model.parameters())
    assert model.float() is model and all(p.dtype == np.float32 for p in model.parameters())


@pytest.mark.parametrize("call, error, message", [
    (lambda m: m.to("cuda"), ValueError, "graphm runs on the CPU only, got device='cuda'"),
    (lambda m: m.to("cuda:0", np.float64), ValueError, "CPU only, got device='cuda:0'"),
    (lambda m: m.to(device="mps"), ValueError, "CPU only, got device='mps'"),
    (lambda m: m.to(0), ValueError, "CPU only, got device=0"),
    (lambda m: m.cuda(), ValueError, "TwoStage.cuda: graphm runs on the CPU only"),
    (lambda m: m.to(np.int32), TypeError, "TwoStage.to: dtype must be float32 or float64, "
                                          "got int32"),
    (lambda m: m.to("float16"), TypeError, "dtype must be float32 or float64, got float16"),
    (lambda m: m.to(np.float64, memory_format=1), TypeError, "keywords device, dtype, "
                                                             "non_blocking"),
    (lambda m: m.to("cpu", np.float64, False), TypeError, "got 3 positional arguments"),
])
def test_module_to_errors(call, error, message):
    model = TwoStage()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(model)
    assert all(p.dtype == np.float32 for p in model.parameters())     # nothing changed
