"""The graphm command end to end: short runs with their files checked, Ctrl-C and --resume,
a NaN loss, bad checkpoints, MNIST from IDX files, info and bench."""
import gzip
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import graphm
from graphm import cli
from graphm import train as training
from graphm.nn.models import make_cnn

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_png(path):
    assert os.path.getsize(path) > 1000
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE


def test_train_cnn_one_epoch_writes_everything(tmp_path, capsys):
    status, out, err = run(capsys, "train", "--epochs", "1", "--out", str(tmp_path))
    assert status == 0, err
    assert "epoch 1/1" in err                      # the progress bar (tqdm writes to stderr)
    assert "cnn on digits (1438 training, 359 test samples" in out
    accuracy = float(out.split("test accuracy: ")[1].split("%")[0])
    assert accuracy > 70                           # one epoch is enough to learn a lot
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "curves.png", "filters.png"]
    for name in ("curves.png", "filters.png"):
        assert_png(tmp_path / name)
        assert str(tmp_path / name) in out
    state = graphm.load(tmp_path / "checkpoint.npz")
    assert state["epoch"] == 1 and state["step"] == 23 and state["config"]["model"] == "cnn"
    assert state["history"]["test_accuracy"][0] == pytest.approx(accuracy / 100, abs=1e-4)
    header = graphm.checkpoint.load_header(tmp_path / "checkpoint.npz")
    model = graphm.nn.from_architecture(header["architecture"])
    model.load_state_dict(state["model"])      # a checkpoint is a usable model on its own


def test_train_autoencoder_compiled(tmp_path, capsys):
    status, out, err = run(capsys, "train", "--model", "autoencoder", "--epochs", "1",
                           "--mode", "compiled", "--quiet", "--out", str(tmp_path))
    assert status == 0, err
    assert err == ""                               # --quiet: no bars
    mse = float(out.split("test reconstruction MSE: ")[1].split()[0])
    assert 0 < mse < 0.1
    assert_png(tmp_path / "reconstructions.png")
    assert graphm.load(tmp_path / "checkpoint.npz")["normalization"] is None


def interrupt_at_call(monkeypatch, call):
    """Make the ``call``-th training step raise KeyboardInterrupt, as Ctrl-C would."""
    original = training.Runner.train_step
    calls = {"n": 0}

    def step(self, inputs, targets):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, inputs, targets)

    monkeypatch.setattr(training.Runner, "train_step", step)


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_matches_an_uninterrupted_run(
        tmp_path, capsys, monkeypatch):
    common = ["--epochs", "2", "--quiet", "--optimizer", "sgd", "--lr", "0.05", "--seed", "3"]
    status, _, err = run(capsys, "train", *common, "--out", str(tmp_path / "straight"))
    assert status == 0, err

    interrupt_at_call(monkeypatch, 23 + 5)         # in the middle of the second epoch
    status, _, err = run(capsys, "train", *common, "--out", str(tmp_path / "cut"))
    assert status == 130
    checkpoint = tmp_path / "cut" / "checkpoint.npz"
    assert f"last complete checkpoint (epoch 1) is {checkpoint}" in err
    assert f"graphm train --resume {checkpoint}" in err
    assert graphm.load(checkpoint)["epoch"] == 1
    monkeypatch.undo()

    status, out, err = run(capsys, "train", "--resume", str(checkpoint), "--quiet")
    assert status == 0, err
    assert f"resuming {checkpoint} after epoch 1 of 2" in out
    straight = graphm.load(tmp_path / "straight" / "checkpoint.npz")
    resumed = graphm.load(checkpoint)
    assert resumed["epoch"] == 2 and resumed["step"] == straight["step"] == 46
    for key, value in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][key], value, err_msg=key)
    assert resumed["history"] == straight["history"]


def test_ctrl_c_in_the_first_epoch(tmp_path, capsys, monkeypatch):
    interrupt_at_call(monkeypatch, 3)
    status, _, err = run(capsys, "train", "--quiet", "--out", str(tmp_path))
    assert status == 130 and "no checkpoint was written" in err
    assert os.listdir(tmp_path) == []


def test_real_sigint_stops_cleanly(tmp_path):
    """SIGINT (what Ctrl-C sends) to a real `python -m graphm train`: status 130, and the
    checkpoint on disk is complete."""
    # A shell may start background jobs with SIGINT ignored, and Python then keeps ignoring it:
    # restore the default (KeyboardInterrupt) first, as an interactive terminal would have it.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from graphm.cli import main; sys.exit(main(sys.argv[1:]))")
    process = subprocess.Popen(
        [sys.executable, "-c", code, "train", "--epochs", "200", "--quiet", "--out",
         str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "checkpoint.npz"
    deadline = time.monotonic() + 90
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted: the last complete checkpoint (epoch" in err
    assert graphm.load(checkpoint)["epoch"] >= 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_with_the_step(tmp_path, capsys):
    status, _, err = run(capsys, "train", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3",
                         "--quiet", "--out", str(tmp_path))
    assert status == 1
    assert "the loss became" in err and "at step" in err and "Try a smaller --lr" in err
    step = int(err.split("at step ")[1].split()[0])
    assert 1 < step <= 69


def test_resume_refuses_conflicts_and_bad_files(tmp_path, capsys):
    status, _, err = run(capsys, "train", "--epochs", "1", "--quiet", "--out", str(tmp_path))
    assert status == 0, err
    checkpoint = str(tmp_path / "checkpoint.npz")
    status, _, err = run(capsys, "train", "--resume", checkpoint, "--model", "autoencoder")
    assert status == 1 and "trained with --model cnn, but --model autoencoder" in err
    status, _, err = run(capsys, "train", "--resume", checkpoint, "--quiet")
    assert status == 1 and "already trained 1 epoch; pass --epochs N with N > 1" in err

    with open(checkpoint, "r+b") as handle:     # cut the file short
        handle.truncate(os.path.getsize(checkpoint) // 2)
    status, _, err = run(capsys, "train", "--resume", checkpoint, "--epochs", "2")
    assert status == 1 and "not a readable checkpoint" in err
    status, _, err = run(capsys, "train", "--resume", str(tmp_path / "missing.npz"))
    assert status == 1 and "no checkpoint at" in err
    other = tmp_path / "plain.npz"
    graphm.save({"w": np.zeros(2)}, other)
    status, _, err = run(capsys, "train", "--resume", str(other), "--epochs", "2")
    assert status == 1 and "not one written by `graphm train`" in err


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_train_on_mnist_idx_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 32)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for digit in range(10):          # a learnable pattern: a bright row at the label
            images[labels == digit, 2 * digit + 4, :] = 255
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    status, out, err = run(capsys, "train", "--dataset", "mnist", "--data", str(tmp_path),
                           "--epochs", "1", "--batch-size", "32", "--quiet", "--out",
                           str(tmp_path / "run"))
    assert status == 0, err
    assert "cnn on mnist (96 training, 32 test samples of shape (1, 28, 28))" in out
    status, _, err = run(capsys, "train", "--dataset", "mnist", "--quiet")
    assert status == 1 and "--dataset mnist needs --data PATH" in err


def test_bad_arguments_exit_2(capsys):
    for argv in (["train", "--epochs", "0"], ["train", "--lr", "nan"], ["train", "--model", "x"],
                 []):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_info(tmp_path, capsys):
    status, out, _ = run(capsys, "info")
    assert status == 0
    assert f"graphm {graphm.__version__}" in out
    assert f"OpenMP: {'on' if graphm.openmp_enabled() else 'off'}" in out
    assert "threads:" in out and f"numpy {np.__version__}, BLAS:" in out
    graphm.save(make_cnn(), tmp_path / "m.npz")
    status, out, _ = run(capsys, "info", str(tmp_path / "m.npz"))
    assert status == 0 and "(0) Conv2d(in_channels=1, out_channels=32" in out


def test_bench_runs_the_training_benchmark(capsys):
    pytest.importorskip("torch")
    status, out, err = run(capsys, "bench", "train", "--epochs", "1")
    assert status == 0, err
    assert "ratio" in out and "graphm compiled" in out
    status, out, _ = run(capsys, "bench", "--help")
    assert status == 0 and "conv" in out and "step" in out and "train" in out


def test_python_dash_m_and_console_script():
    result = subprocess.run([sys.executable, "-m", "graphm", "--help"], capture_output=True,
                            text=True, check=True)
    assert "{train,info,bench}" in result.stdout
