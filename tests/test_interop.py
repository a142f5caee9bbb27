"""graphm.interop: to PyTorch and back, outputs equal, round trips exact, clear errors."""
import sys
from collections import OrderedDict

import numpy as np
import pytest

import graphm
from graphm import nn
from graphm.nn.models import make_autoencoder, make_cnn
from graphm.interop import from_torch, to_torch

torch = pytest.importorskip("torch")


def models():
    graphm.manual_seed(0)
    return {
        "cnn": (make_cnn(), (4, 1, 8, 8)),
        "autoencoder": (make_autoencoder(), (4, 1, 8, 8)),
        "mnist_cnn": (make_cnn((1, 28, 28)), (2, 1, 28, 28)),
        "every_layer": (nn.Sequential(OrderedDict([
            ("conv", nn.Conv1d(2, 4, 3, groups=2, padding="same")),
            ("act", nn.Tanh()),
            ("pool", nn.AvgPool1d(2)),
            ("up", nn.ConvTranspose1d(4, 2, 3, stride=2, output_padding=1, bias=False)),
            ("maxpool", nn.MaxPool1d(2, stride=1)),
            ("flat", nn.Flatten()),
            ("inner", nn.Sequential(nn.Linear(22, 6), nn.Sigmoid(), nn.Linear(6, 3))),
        ])), (3, 2, 11)),
        "3d": (nn.Sequential(nn.Conv3d(1, 2, 2), nn.ReLU(), nn.MaxPool3d(2), nn.AvgPool3d(1),
                             nn.ConvTranspose3d(2, 1, 2, stride=2)), (2, 1, 5, 5, 5)),
        "float64": (nn.Sequential(nn.Conv2d(1, 3, 3, dtype=np.float64), nn.AvgPool2d(2),
                                  nn.Flatten(), nn.Linear(3, 2, dtype=np.float64)),
                    (2, 1, 4, 4)),
    }


@pytest.mark.parametrize("name", list(models()))
def test_to_torch_gives_the_same_outputs_and_round_trips_exactly(name):
    model, shape = models()[name]
    dtype = next(model.parameters()).dtype
    x = np.random.default_rng(0).random(shape).astype(dtype)
    converted = to_torch(model)
    assert isinstance(converted, torch.nn.Module)
    ours = model(graphm.tensor(x)).numpy()
    with torch.no_grad():
        theirs = converted(torch.from_numpy(x)).numpy()
    assert theirs.dtype == ours.dtype
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    assert list(converted.state_dict()) == list(model.state_dict())

    back = from_torch(converted)
    assert back.architecture() == model.architecture()
    for (key, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, err_msg=key)
    # the weights are copies: changing one side leaves the other alone
    next(back.parameters()).data[...] = 0
    assert next(model.parameters()).data.any()


def test_from_torch_of_a_pytorch_model():
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, stride=2, dilation=1, groups=2), torch.nn.Tanh(),
        torch.nn.Flatten(), torch.nn.Linear(16 * 3 * 3, 10))
    model = from_torch(torch_model.eval())
    assert not model.training
    x = np.random.default_rng(1).standard_normal((3, 1, 14, 14)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(graphm.tensor(x)).numpy(), expected, atol=1e-5, rtol=1e-5)
    again = to_torch(model)
    for key, value in torch_model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_losses_convert():
    loss = to_torch(nn.CrossEntropyLoss(label_smoothing=0.2))
    assert isinstance(loss, torch.nn.CrossEntropyLoss) and loss.label_smoothing == 0.2
    assert isinstance(from_torch(torch.nn.MSELoss(reduction="sum")), nn.MSELoss)


def test_unsupported_modules_are_named():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match=r"to_torch: cannot convert a .*Custom; supported"):
        to_torch(nn.Sequential(nn.ReLU(), Custom()))
    with pytest.raises(TypeError, match=r"from_torch: cannot convert a torch.nn.*BatchNorm2d"):
        from_torch(torch.nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="padding_mode='zeros' only"):
        from_torch(torch.nn.Conv2d(1, 1, 3, padding_mode="reflect"))
    with pytest.raises(TypeError, match="float32 or float64 weights"):
        from_torch(torch.nn.Linear(2, 2).half())


def test_without_torch_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)      # makes `import torch` fail
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        to_torch(nn.ReLU())
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        from_torch(object())


def test_graphm_imports_no_torch_at_run_time():
    import subprocess
    code = ("import sys, graphm, graphm.nn, graphm.optim, graphm.data, graphm.cli, "
            "graphm.train, graphm.nn.models, "
            "graphm.interop, graphm.viz; graphm.data.load_digits(); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
