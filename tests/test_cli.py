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
    assert "{train,info,bench,certify}" in result.stdout


# --------------------------------------------------------------------------------------------
# Every failure is one line, `graphm <command>: error: ...`, with the documented exit status
# (issue 11, section 2): 2 bad arguments, 1 a failure at run time, 130 interrupted.
# --------------------------------------------------------------------------------------------

def run_any(capsys, *argv):
    """Status, stdout and stderr of cli.main, whether it returns or argparse exits."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(err, command, *fragments):
    """stderr is exactly one line `graphm <command>: error: ...` holding every fragment."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"graphm {command}: error: "), err
    assert "Traceback" not in err and "bug in graphm" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a training step runs: the error must come before training starts."""
    def step(self, inputs, targets):
        raise AssertionError("training started before the problem was found")
    monkeypatch.setattr(training.Runner, "train_step", step)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/sys and /proc are Linux's")
@pytest.mark.parametrize("out, reason", [
    ("/sys/graphm-run", "cannot write there"),          # sysfs: no new folders
    ("/proc/graphm-run", "cannot write there"),         # procfs: no new folders
    ("/proc", "cannot write there"),                    # exists, but no files may be made
])
def test_out_that_cannot_be_written_is_found_before_training(out, reason, capsys, no_training):
    status, _, err = run_any(capsys, "train", "--quiet", "--out", out)
    assert status == 1
    assert_one_error_line(err, "train", f"--out {out}: {reason}", "give a folder you can write")


def test_out_on_a_read_only_file_system(tmp_path, capsys, monkeypatch, no_training):
    """A read-only file system (EROFS, as `mount -o ro` gives) refuses the probe file that
    check_output_folder writes before training; simulated, since mounting needs privileges."""
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    status, _, err = run_any(capsys, "train", "--quiet", "--out", str(tmp_path / "run"))
    assert status == 1
    assert_one_error_line(err, "train", f"--out {tmp_path / 'run'}: cannot write there",
                          "Read-only file system")


def test_out_that_is_a_file(tmp_path, capsys, no_training):
    (tmp_path / "taken").write_text("x")
    status, _, err = run_any(capsys, "train", "--quiet", "--out", str(tmp_path / "taken"))
    assert status == 1
    assert_one_error_line(err, "train", "that is a file; give a folder")


def fill_disk_at_save(monkeypatch, call):
    """From the ``call``-th checkpoint on, writing stops half way with ENOSPC (a full disk)."""
    import errno
    original = graphm.checkpoint._write_npz
    calls = {"n": 0}

    def write(stream, entries):
        calls["n"] += 1
        if calls["n"] >= call:
            stream.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(stream, entries)
    monkeypatch.setattr(graphm.checkpoint, "_write_npz", write)


def test_full_disk_keeps_the_last_complete_checkpoint(tmp_path, capsys, monkeypatch):
    fill_disk_at_save(monkeypatch, 2)                   # epoch 1 fits, epoch 2 does not
    status, out, err = run_any(capsys, "train", "--epochs", "3", "--quiet", "--out",
                               str(tmp_path))
    checkpoint = tmp_path / "checkpoint.npz"
    assert status == 1
    assert_one_error_line(
        err, "train", f"could not write the checkpoint of epoch 2 to {checkpoint}",
        "no space left on the device",
        f"the last complete checkpoint (epoch 1) is {checkpoint}, intact",
        f"continue with: graphm train --resume {checkpoint}")
    assert "epoch 1/3" in out and "epoch 2/3" not in out
    assert os.listdir(tmp_path) == ["checkpoint.npz"]   # the half-written temporary is gone
    assert graphm.load(checkpoint)["epoch"] == 1        # the survivor is whole and readable
    monkeypatch.undo()                                  # room made: the advice works
    status, out, err = run_any(capsys, "train", "--resume", str(checkpoint), "--quiet")
    assert status == 0, err
    assert graphm.load(checkpoint)["epoch"] == 3


def test_full_disk_at_the_first_checkpoint(tmp_path, capsys, monkeypatch):
    fill_disk_at_save(monkeypatch, 1)
    status, _, err = run_any(capsys, "train", "--epochs", "2", "--quiet", "--out",
                             str(tmp_path))
    assert status == 1
    assert_one_error_line(err, "train", "could not write the checkpoint of epoch 1",
                          "no space left on the device", "no checkpoint was written")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag, value, expected", [
    ("--threads", "2147483648", "expected a whole number from 1 to 1024"),     # C int + 1
    ("--threads", "9223372036854775808", "expected a whole number from 1 to 1024"),  # int64+1
    ("--threads", "0", "expected a whole number from 1 to 1024"),
    ("--threads", "1025", "expected a whole number from 1 to 1024"),
    ("--threads", "two", "expected a whole number from 1 to 1024"),
    ("--seed", "-1", "expected a whole number from 0 to 18446744073709551615"),
    ("--seed", "18446744073709551616", "expected a whole number from 0 to"),
    ("--epochs", "1.5", "expected a whole number 1 or more"),
    ("--batch-size", "0", "expected a whole number 1 or more"),
    ("--lr", "-1", "expected a positive number"),
    ("--lr", "inf", "expected a positive number"),
    ("--test-size", "0", "expected a fraction between 0 and 1 (exclusive)"),
    ("--test-size", "1", "expected a fraction between 0 and 1 (exclusive)"),
    ("--test-size", "nan", "expected a fraction between 0 and 1 (exclusive)"),
    ("--out", "", "expected a folder name"),
    ("--out", "   ", "expected a folder name"),
])
def test_bad_values_exit_2_naming_the_argument_and_the_value(flag, value, expected, capsys,
                                                             no_training):
    status, _, err = run_any(capsys, "train", flag, value)
    assert status == 2
    assert_one_error_line(err, "train", f"argument {flag}: {expected}", f"got {value!r}",
                          "(see graphm train --help)")
    # argparse's own wording names the type function: `invalid _positive_int value`
    assert "invalid" not in err and "_int" not in err and "value:" not in err


@pytest.mark.parametrize("value, empty", [("0.999", "training"), ("1e-9", "test")])
def test_test_size_leaving_a_part_empty_exits_2_before_training(value, empty, capsys,
                                                                no_training):
    status, _, err = run_any(capsys, "train", "--quiet", "--test-size", value)
    assert status == 2
    assert_one_error_line(err, "train", f"--test-size {float(value)} leaves no {empty} samples",
                          "such as 0.2")


def test_empty_out_writes_nothing_to_the_default_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, _ = run_any(capsys, "train", "--out", "", "--epochs", "1", "--quiet")
    assert status == 2 and os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("argv", [["info", "{fifo}"], ["train", "--resume", "{fifo}"]])
def test_a_fifo_is_refused_without_hanging(tmp_path, argv):
    """Opening a FIFO for reading blocks until a writer comes: the real command, in a
    subprocess with a timeout, must refuse it at once."""
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    argv = [part.format(fifo=fifo) for part in argv]
    result = subprocess.run([sys.executable, "-m", "graphm", *argv], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert_one_error_line(result.stderr, argv[0], str(fifo), "a FIFO (named pipe), not a "
                          "checkpoint file")


def crafted_checkpoints():
    """(name, change to a real checkpoint's state, words the message must hold)."""
    def setter(key, value):
        return lambda state: state.__setitem__(key, value)

    def deleter(key):
        return lambda state: state.pop(key)

    def history(change):
        def apply(state):
            state["history"] = change(dict(state["history"]))
        return apply
    return [
        ("config-a-list", setter("config", [1, 2]), "configuration is damaged (it is a list"),
        ("config-a-string", setter("config", "cnn"), "configuration is damaged (it is a str"),
        ("config-lacks-model", lambda s: s["config"].pop("model"), "model missing"),
        ("config-bad-epochs", lambda s: s["config"].update(epochs=True), "epochs is True"),
        ("config-bad-lr", lambda s: s["config"].update(lr=-1.0), "lr is -1.0"),
        ("no-model", deleter("model"), "the checkpoint's 'model' is missing or damaged"),
        ("no-history", deleter("history"), "the checkpoint's 'history' is missing or damaged"),
        ("history-a-list", setter("history", [1]), "'history' is missing or damaged"),
        ("history-empty", setter("history", {}), "history is damaged (it has no keys"),
        ("history-lacks-a-key", history(lambda h: {k: v for k, v in h.items()
                                                   if k != "train_accuracy"}),
         "history is damaged (it has test_accuracy, test_loss, train_loss, not"),
        ("history-not-numbers", history(lambda h: dict(h, test_loss=["a"])),
         "test_loss is not a list of 1 number, one per epoch"),
        ("history-too-short", history(lambda h: dict(h, train_loss=[])),
         "train_loss is not a list of 1 number"),
        ("negative-epoch", setter("epoch", -5), "the checkpoint's 'epoch' is missing"),
        ("epoch-a-bool", setter("epoch", True), "the checkpoint's 'epoch' is missing"),
        ("optimizer-damaged", setter("optimizer", {"state": 3}),
         "weights or optimizer state do not fit this run"),
        ("weights-missing", lambda s: s["model"].pop("0.weight"),
         "weights or optimizer state do not fit this run"),
    ]


@pytest.mark.parametrize("name, change, message", crafted_checkpoints(),
                         ids=[case[0] for case in crafted_checkpoints()])
def test_crafted_resume_checkpoints_are_refused_in_one_line(name, change, message, tmp_path,
                                                            capsys, no_training, trained_once):
    state = graphm.load(trained_once)
    change(state)
    path = tmp_path / f"{name}.npz"
    graphm.save(state, path, architecture=graphm.checkpoint.load_header(
        trained_once)["architecture"])
    status, _, err = run_any(capsys, "train", "--resume", str(path), "--epochs", "2",
                             "--quiet", "--out", str(tmp_path / "out"))
    assert status == 1
    assert_one_error_line(err, "train", str(path), message)


def test_resume_with_another_network(tmp_path, capsys, no_training, trained_once):
    path = tmp_path / "other.npz"
    state = graphm.load(trained_once)
    graphm.save(state, path, architecture=make_cnn((1, 28, 28)).architecture())
    status, _, err = run_any(capsys, "train", "--resume", str(path), "--epochs", "2")
    assert status == 1
    assert_one_error_line(err, "train", f"--resume {path}: the checkpoint's network is not "
                          "the cnn this run builds for inputs of shape (1, 8, 8)")
    assert len(err) < 400                     # not the whole architecture, twice


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A real checkpoint of `graphm train --epochs 1`, shared by the tests that damage it."""
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out / "checkpoint.npz"


def test_info_of_a_crafted_checkpoint_does_not_fail(tmp_path, capsys, trained_once):
    state = graphm.load(trained_once)
    state["history"] = {}
    graphm.save(state, tmp_path / "c.npz")
    status, out, err = run_any(capsys, "info", str(tmp_path / "c.npz"))
    assert status == 0, err
    assert "trained epochs: 1" in out and "last test metrics" not in out


def test_output_cut_short_by_its_reader_ends_quietly():
    """`python -m graphm info | head -3`: the reader goes away. Here the pipe's read end is
    closed before graphm writes, so the first write fails (EPIPE) every time."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "graphm", "info"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""                 # no BrokenPipeError, no "Exception ignored"


def test_head_of_a_real_pipeline():
    """The shell pipeline itself: head's status, and nothing on stderr."""
    result = subprocess.run(f"'{sys.executable}' -m graphm info | head -3", shell=True,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 3 and result.stdout.startswith("graphm ")
    assert result.stderr == ""


def test_version(capsys):
    status, out, _ = run_any(capsys, "--version")
    assert status == 0 and out == f"graphm {graphm.__version__}\n"


@pytest.mark.parametrize("epochs, threads, words", [
    ("1", "1", ("1 epoch,", "1 thread,", "after 1 epoch,")),
    ("2", "2", ("2 epochs,", "2 threads,", "after 2 epochs,")),
])
def test_plurals(epochs, threads, words, tmp_path, capsys):
    status, out, err = run_any(capsys, "train", "--epochs", epochs, "--threads", threads,
                               "--quiet", "--out", str(tmp_path))
    assert status == 0, err
    for word in words:
        assert word in out
    assert "1 epochs" not in out and "1 threads" not in out


def test_epoch_lines_label_each_epochs_own_time(tmp_path, capsys, monkeypatch):
    """Each epoch line says `epoch <its own seconds> s, total <since the start> s`; the
    epoch's own time is not the running total."""
    slow = training.Runner.train_step

    def step(self, inputs, targets):          # 23 steps x 10 ms: epochs of at least 0.23 s
        time.sleep(0.01)
        return slow(self, inputs, targets)
    monkeypatch.setattr(training.Runner, "train_step", step)
    status, out, err = run_any(capsys, "train", "--epochs", "3", "--quiet", "--out",
                               str(tmp_path))
    assert status == 0, err
    import re
    times = [tuple(map(float, found)) for found in
             re.findall(r"\| epoch (\d+\.\d) s, total (\d+\.\d) s$", out, re.MULTILINE)]
    assert len(times) == 3, out
    own, total = zip(*times)
    assert all(t >= 0.2 for t in own)
    assert list(total) == sorted(total) and total[2] >= sum(own) - 0.15   # rounding
    assert own[2] < total[2] - 0.3            # a running total would equal it


def test_epoch_record_seconds_are_the_epochs_own(tmp_path):
    """The library's records: each epoch's ``seconds`` fits between two consecutive yields,
    which a running total could not."""
    config = training.resolve_config({"epochs": 3})
    run_ = training.Training(config, str(tmp_path))
    last = time.perf_counter()
    for record in run_.epochs():
        now = time.perf_counter()
        assert 0 < record["seconds"] <= now - last
        last = now


def test_models_and_training_live_in_the_library():
    """cli.py only parses and reports (issue 11, section 4): the networks are in
    graphm.nn.models, the loop in graphm.train, and nothing imports them from the command."""
    import pathlib
    import re
    assert not any(hasattr(cli, name) for name in ("make_cnn", "make_autoencoder", "Runner"))
    root = pathlib.Path(__file__).resolve().parent.parent
    # (running the command itself, ``from graphm.cli import main``, is what a test of it does)
    pattern = re.compile(r"from graphm\.cli import (?!main\b)|from graphm import cli\b|"
                         r"graphm\.cli\.(?!main\b)\w")
    offenders = [str(path.relative_to(root)) for folder in ("tutorials", "benchmarks", "tests",
                                                            "examples")
                 for path in sorted((root / folder).rglob("*.py"))
                 if path.name != "test_cli.py" and pattern.search(path.read_text())]
    assert offenders == []
