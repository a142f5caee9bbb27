"""graphm.save / graphm.load: round trip, atomic writes, and a clear error for each kind of damage."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import graphm
from graphm import checkpoint
from graphm.checkpoint import CheckpointError


def sample_state():
    rng = np.random.default_rng(0)
    return {
        "model": {"0.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
                  "0.bias": np.zeros(4, np.float32)},
        "optimizer": {"state": [{"step": 3, "exp_avg": np.ones((2, 2))}, {}],
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "nesterov": False}]},
        "epoch": 7, "best": float("inf"), "loss": float("nan"), "name": "cnn", "note": None,
        "labels": np.arange(5, dtype=np.int64), "flags": np.array([True, False]),
    }


def assert_same_state(loaded, saved):
    if isinstance(saved, dict):
        assert isinstance(loaded, dict) and set(loaded) == set(saved)
        for key in saved:
            assert_same_state(loaded[key], saved[key])
    elif isinstance(saved, (list, tuple)):
        assert isinstance(loaded, list) and len(loaded) == len(saved)  # tuples come back as lists
        for a, b in zip(loaded, saved):
            assert_same_state(a, b)
    elif isinstance(saved, np.ndarray):
        assert isinstance(loaded, np.ndarray) and loaded.dtype == saved.dtype
        np.testing.assert_array_equal(loaded, saved)
    elif isinstance(saved, float) and np.isnan(saved):
        assert np.isnan(loaded)
    else:
        assert loaded == saved and type(loaded) is type(saved)


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "run.ckpt"           # any name: no suffix is added
    state = sample_state()
    graphm.save(state, path, architecture={"type": "Sequential", "layers": [{"type": "ReLU"}]})
    assert os.listdir(tmp_path) == ["run.ckpt"]
    assert_same_state(graphm.load(path), state)
    header = checkpoint.load_header(path)
    assert header["format"] == "graphm-checkpoint" and header["version"] == 1
    assert header["graphm_version"] == graphm.__version__
    assert header["architecture"] == {"type": "Sequential", "layers": [{"type": "ReLU"}]}


def test_file_is_a_plain_npz_readable_without_pickle(tmp_path):
    path = tmp_path / "c.npz"
    graphm.save(sample_state(), path)
    with np.load(path, allow_pickle=False) as npz:
        assert "model/0.weight" in npz.files and "__graphm__" in npz.files
        assert json.loads(str(npz["__graphm__"][()]))["format"] == "graphm-checkpoint"


def test_save_rejects_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="cannot save a set at model"):
        graphm.save({"model": {1, 2}}, tmp_path / "c")
    with pytest.raises(TypeError, match="dtype object"):
        graphm.save({"a": np.array([None, 1])}, tmp_path / "c")
    with pytest.raises(TypeError, match="keys must be str"):
        graphm.save({1: 2}, tmp_path / "c")
    with pytest.raises(ValueError, match="reserved"):
        graphm.save({"__graphm__": 1}, tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        graphm.save({}, tmp_path / "missing" / "c")
    assert os.listdir(tmp_path) == []       # no file and no temporary left behind


# -- atomic writes ------------------------------------------------------------------------------

def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    graphm.save({"epoch": 1, "w": np.zeros(3)}, path)
    before = path.read_bytes()

    def write_half_then_interrupt(stream, entries):
        stream.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt                 # Ctrl-C in the middle of writing

    monkeypatch.setattr(checkpoint, "_write_npz", write_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        graphm.save({"epoch": 2, "w": np.ones(3)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]   # the temporary file was removed
    assert graphm.load(path)["epoch"] == 1


def test_killed_writer_never_leaves_a_broken_checkpoint(tmp_path):
    """A process killed (SIGKILL: no cleanup at all) while saving in a loop: the file at the
    path is always one complete checkpoint."""
    path = tmp_path / "c.npz"
    script = textwrap.dedent(f"""
        import numpy as np, graphm
        big = np.random.default_rng(0).standard_normal(1_000_000)
        step = 0
        while True:
            step += 1
            graphm.save({{"step": step, "w": big + step}}, {str(path)!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)
        assert child.poll() is None, "the writer died on its own"

    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    state = graphm.load(path)
    np.testing.assert_array_equal(
        state["w"], np.random.default_rng(0).standard_normal(1_000_000) + state["step"])


# -- damaged and foreign files ------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "c.npz"
    graphm.save({"w": np.arange(4096, dtype=np.float64)}, path, architecture={"layers": 2})
    return path


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        graphm.load(tmp_path / "nothing.npz")


@pytest.mark.parametrize("keep", [0, 10, 0.5, -22])
def test_truncated_file(saved, keep):
    raw = saved.read_bytes()
    keep = int(len(raw) * keep) if isinstance(keep, float) else keep % len(raw)
    saved.write_bytes(raw[:keep])
    with pytest.raises(CheckpointError, match="not a readable checkpoint.*truncated or damaged"):
        graphm.load(saved)


def test_flipped_byte_in_an_array_is_caught_by_the_crc(saved):
    raw = bytearray(saved.read_bytes())
    position = bytes(raw).find(np.arange(4096, dtype=np.float64)[2000:2001].tobytes())
    raw[position] ^= 0x40
    saved.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="entry 'w' is damaged.*CRC"):
        graphm.load(saved)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        graphm.load(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(CheckpointError, match="an .npz file but not a graphm checkpoint.*a"):
        graphm.load(plain)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(2))
    with pytest.raises(CheckpointError, match="single .npy array"):
        graphm.load(single)


def rewrite_header(path, change):
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    header = json.loads(str(entries["__graphm__"][()]))
    change(header)
    entries["__graphm__"] = np.array(json.dumps(header))
    with open(path, "wb") as stream:
        np.savez(stream, **entries)


def test_newer_format_version(saved):
    rewrite_header(saved, lambda h: h.update(version=99))
    with pytest.raises(CheckpointError, match="format version 99.*upgrade graphm"):
        graphm.load(saved)


def test_header_naming_a_missing_or_different_array(saved):
    rewrite_header(saved, lambda h: h["state"]["w"].update({"__ndarray__": "v"}))
    with pytest.raises(CheckpointError, match="refers to an array 'v' that is not in the file"):
        graphm.load(saved)


def test_array_disagreeing_with_the_header(saved):
    rewrite_header(saved, lambda h: h["state"]["w"].update(shape=[4095]))
    with pytest.raises(CheckpointError, match=r"float64\[4096\] but the header says float64\[4095\]"):
        graphm.load(saved)


def test_corrupt_header_json(saved):
    with np.load(saved, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    entries["__graphm__"] = np.array("{not json")
    with open(saved, "wb") as stream:
        np.savez(stream, **entries)
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        graphm.load(saved)


def test_architecture_mismatch_names_the_difference(saved):
    assert graphm.load(saved, architecture={"layers": 2})["w"].shape == (4096,)
    with pytest.raises(CheckpointError, match=r"another architecture.*architecture.layers is 2 in "
                                              r"the checkpoint, expected 3"):
        graphm.load(saved, architecture={"layers": 3})


class _Boom:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_loading_never_executes_code(tmp_path):
    path = tmp_path / "evil.npz"
    marker = tmp_path / "pwned"
    graphm.save({"w": np.zeros(2)}, path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    entries["w"] = np.array([_Boom(str(marker))], dtype=object)   # a pickle where an array was
    with open(path, "wb") as stream:
        np.savez(stream, **entries)
    with pytest.raises(CheckpointError, match="entry 'w' is damaged"):
        graphm.load(path)
    assert not marker.exists()


def test_entries_named_like_savez_arguments_round_trip(tmp_path):
    state = {"allow_pickle": np.arange(3.0), "file": np.ones(2, np.float32)}
    graphm.save(state, tmp_path / "ck.npz")
    loaded = graphm.load(tmp_path / "ck.npz")
    np.testing.assert_array_equal(loaded["allow_pickle"], state["allow_pickle"])
    np.testing.assert_array_equal(loaded["file"], state["file"])


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        graphm.load(tmp_path)
