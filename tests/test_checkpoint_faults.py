"""graphm.load on hostile input, and graphm.save under kill -9 (issue 12, section 2).

Each crafted file is small and is refused with a CheckpointError that names the file and the
problem, before anything large is allocated or decompressed and without ever blocking.
"""
import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest

import graphm
from graphm import checkpoint
from graphm.checkpoint import CheckpointError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file types and signals")


def header_text(state=None, **extra):
    header = {"format": "graphm-checkpoint", "version": 1, "architecture": None,
              "state": {} if state is None else state}
    header.update(extra)
    return json.dumps(header)


def npy_bytes(array):
    stream = io.BytesIO()
    np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)
    return stream.getvalue()


def npy_header_bytes(shape, descr="<f8"):
    """A .npy header alone: it describes an array whose bytes need not follow."""
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        stream, {"shape": shape, "fortran_order": False, "descr": descr})
    return stream.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    """``members``: (name, bytes) pairs, written in order (a name may repeat)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members:
            with pytest.warns(UserWarning, match="Duplicate name") if any(
                    n == name for n in archive.namelist()) else _no_warning():
                archive.writestr(name, data)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def patch_central_sizes(path, member, compressed=None, uncompressed=None):
    """Overwrite a member's sizes in the zip's central directory (what readers trust)."""
    raw = bytearray(path.read_bytes())
    name = member.encode()
    position = raw.find(b"PK\x01\x02")
    while position >= 0:
        name_length = struct.unpack_from("<H", raw, position + 28)[0]
        if raw[position + 46:position + 46 + name_length] == name:
            if compressed is not None:
                struct.pack_into("<I", raw, position + 20, compressed)
            if uncompressed is not None:
                struct.pack_into("<I", raw, position + 24, uncompressed)
            path.write_bytes(bytes(raw))
            return
        position = raw.find(b"PK\x01\x02", position + 4)
    raise AssertionError(f"no member {member} in {path}")


def load_within(seconds, path, **kwargs):
    """graphm.load in a thread: fail the test (instead of hanging it) if it blocks."""
    outcome = {}

    def run():
        try:
            outcome["value"] = graphm.load(path, **kwargs)
        except BaseException as error:  # handed to the test below
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"graphm.load({path!r}) was still blocked after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- files that are not regular files -----------------------------------------------------------

@posix_only
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"pipe.npz' is a FIFO \(named pipe\), not a "
                                              r"checkpoint file"):
        load_within(10, fifo)
    with pytest.raises(CheckpointError, match="is a FIFO"):
        checkpoint.load_header(fifo)


@posix_only
def test_a_fifo_swapped_in_after_the_type_check_does_not_block(tmp_path, monkeypatch):
    """The type is checked again on the opened descriptor, opened without blocking."""
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_bytes(b"PK")
    real_stat = os.stat
    monkeypatch.setattr(checkpoint.os, "stat",
                        lambda path, *a, **k: real_stat(regular if os.fspath(path) == str(fifo)
                                                        else path, *a, **k))
    with pytest.raises(CheckpointError, match="is a FIFO"):
        load_within(10, fifo)


@posix_only
@pytest.mark.parametrize("device, kind", [("/dev/null", "a character device"),
                                          ("/dev/zero", "a character device")])
def test_a_device_is_refused(device, kind):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(CheckpointError, match=f"{device}' is {kind}"):
        load_within(10, device)


@posix_only
def test_a_socket_is_refused(tmp_path):
    import socket
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        with pytest.raises(CheckpointError, match="is a socket"):
            load_within(10, path)


def test_an_unreadable_file_is_a_checkpoint_error():
    if not os.path.exists("/proc/self/mem"):
        pytest.skip("no /proc/self/mem")
    with pytest.raises(CheckpointError, match="cannot read '/proc/self/mem'"):
        load_within(10, "/proc/self/mem")


@posix_only
def test_a_file_without_read_permission(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "secret.npz"
    graphm.save({"w": np.zeros(2)}, path)
    path.chmod(0)
    try:
        with pytest.raises(CheckpointError, match="cannot read .*secret.npz.*ermission"):
            graphm.load(path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


# -- declared sizes against the bytes the file holds ---------------------------------------------

def test_an_array_header_claiming_8_tib_in_a_tiny_file(tmp_path):
    path = tmp_path / "huge.npz"
    state = {"w": {"__ndarray__": "w", "dtype": "<f8", "shape": [2**40]}}
    write_zip(path, [("__graphm__.npy", npy_bytes(np.array(header_text(state)))),
                     ("w.npy", npy_header_bytes((2**40,)) + bytes(16))])
    assert path.stat().st_size < 2048               # the JSON header is most of it
    assert checkpoint.load_header(path)["format"] == "graphm-checkpoint"  # reads no array
    with pytest.raises(CheckpointError, match=r"entry 'w' is damaged \(its .npy header declares "
                                              r"float64\[1099511627776\], 8796093022208 bytes, "
                                              r"but the entry holds 16\)"):
        graphm.load(path)


@pytest.mark.parametrize("shape, held, match", [
    ((5,), 4 * 8, r"declares float64\[5\], 40 bytes, but the entry holds 32"),  # one short
    ((3,), 4 * 8, r"holds more than its float64\[3\] array"),                    # one too many
    ((2**62, 2**62), 0, r"declares float64\[4611686018427387904, 4611686018427387904\]"),
])
def test_array_sizes_must_match_their_entry(tmp_path, shape, held, match):
    path = tmp_path / "c.npz"
    state = {"w": {"__ndarray__": "w", "dtype": "<f8", "shape": list(shape)}}
    write_zip(path, [("__graphm__.npy", npy_bytes(np.array(header_text(state)))),
                     ("w.npy", npy_header_bytes(shape) + bytes(held))])
    with pytest.raises(CheckpointError, match=match):
        graphm.load(path)


def test_a_stored_entry_must_occupy_what_it_declares(tmp_path):
    path = tmp_path / "c.npz"
    write_zip(path, [("__graphm__.npy", npy_bytes(np.array(header_text()))),
                     ("w.npy", npy_bytes(np.zeros(4)))])
    patch_central_sizes(path, "w.npy", uncompressed=2**31)
    with pytest.raises(CheckpointError, match="stored entry 'w' declares 2147483648 bytes but "
                                              "occupies"):
        graphm.load(path)


def test_entries_cannot_claim_more_than_the_file(tmp_path):
    path = tmp_path / "c.npz"
    write_zip(path, [("__graphm__.npy", npy_bytes(np.array(header_text()))),
                     ("w.npy", npy_bytes(np.zeros(4)))])
    size = path.stat().st_size
    patch_central_sizes(path, "w.npy", compressed=size, uncompressed=size)
    with pytest.raises(CheckpointError, match=f"entries claim to occupy .* more than the file "
                                              f"holds"):
        graphm.load(path)


# -- compressed entries: bounded inflation ------------------------------------------------------

def write_bomb(path, inflated_bytes):
    """A valid, highly compressible checkpoint: one array of zeros, deflated (about 1000:1).

    Deflating a gigabyte takes seconds, so the member is assembled from one deflated 16 MiB
    block of zeros repeated: after a full flush, DEFLATE blocks are independent and their
    concatenation is one valid stream. The zip around it is written by hand.
    """
    shape = (inflated_bytes // 8,)
    state = {"w": {"__ndarray__": "w", "dtype": "<f8", "shape": list(shape)}}
    zeros = bytes(2**24)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    prefix = npy_header_bytes(shape)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush()
    repeats = inflated_bytes // len(zeros)
    crc = zlib.crc32(prefix)
    for _ in range(repeats):
        crc = zlib.crc32(zeros, crc)
    members = [("__graphm__.npy", npy_bytes(np.array(header_text(state)))),
               ("w.npy", (head, block, repeats, tail), len(prefix) + repeats * len(zeros), crc)]
    with open(path, "wb") as stream:
        central = b""
        for name, *content in members:
            if len(content) == 1:                      # small: deflate it here
                data = content[0]
                pieces = (zlib.compress(data, 9, -15),)
                size, crc_value = len(data), zlib.crc32(data)
                compressed = len(pieces[0])
            else:
                (head, block, repeats, tail), size, crc_value = content
                pieces = (head,) + (block,) * repeats + (tail,)
                compressed = sum(map(len, pieces))
            fields = struct.pack("<HHHHHIIIH", 20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc_value,
                                 compressed, size, len(name))
            central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                        + struct.pack("<HHHHII", 0, 0, 0, 0, 0, stream.tell()) + name.encode())
            stream.write(b"PK\x03\x04" + fields + struct.pack("<H", 0) + name.encode())
            for piece in pieces:
                stream.write(piece)
        start = stream.tell()
        stream.write(central)
        stream.write(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members),
                                                   len(central), start, 0))


def test_a_zip_bomb_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.npz"
    write_bomb(path, 2**30)                           # 1 GiB of zeros in about 1 MB
    assert path.stat().st_size < 1.1 * 2**20
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"compressed entries would inflate to 107374\d+ "
                                              r"bytes, more than max_inflated_bytes=268435456 "
                                              r"\(graphm.checkpoint.MAX_INFLATED_BYTES\)"):
        graphm.load(path)
    with pytest.raises(CheckpointError, match="max_inflated_bytes"):
        checkpoint.load_header(path)
    assert time.perf_counter() - started < 2          # nothing was decompressed


def test_the_inflation_cap_can_be_raised_or_lowered(tmp_path, monkeypatch):
    path = tmp_path / "small.npz"
    write_bomb(path, 2**24)                           # 16 MiB: within the default cap
    assert graphm.load(path)["w"].shape == (2**21,)
    with pytest.raises(CheckpointError, match="more than max_inflated_bytes=1000000"):
        graphm.load(path, max_inflated_bytes=10**6)
    monkeypatch.setattr(checkpoint, "MAX_INFLATED_BYTES", 10**6)
    with pytest.raises(CheckpointError, match="more than max_inflated_bytes=1000000"):
        graphm.load(path)
    assert graphm.load(path, max_inflated_bytes=2**25)["w"].shape == (2**21,)
    for bad in (-1, 1.5, "big", True):
        with pytest.raises(ValueError, match="max_inflated_bytes must be an int >= 0"):
            graphm.load(path, max_inflated_bytes=bad)


def test_a_compressed_entry_cannot_declare_more_than_deflate_produces(tmp_path):
    path = tmp_path / "c.npz"
    write_zip(path, [("__graphm__.npy", npy_bytes(np.array(header_text()))),
                     ("w.npy", npy_bytes(np.zeros(4)))], compression=zipfile.ZIP_DEFLATED)
    patch_central_sizes(path, "w.npy", uncompressed=2**32 - 1)
    with pytest.raises(CheckpointError, match="compressed entry 'w' declares 4294967295 bytes "
                                              "from .* more than DEFLATE can produce"):
        graphm.load(path)


def test_a_compressed_entry_inflating_past_its_declared_size(tmp_path):
    """A member that declares 100 bytes but inflates to 8 MB is cut off, not believed."""
    path = tmp_path / "c.npz"
    state = {"w": {"__ndarray__": "w", "dtype": "<f8", "shape": [4]}}
    write_zip(path, [("__graphm__.npy", npy_bytes(np.array(header_text(state)))),
                     ("w.npy", npy_header_bytes((4,)) + bytes(2**23))],
              compression=zipfile.ZIP_DEFLATED)
    patch_central_sizes(path, "w.npy", uncompressed=len(npy_header_bytes((4,))) + 32)
    with pytest.raises(CheckpointError, match="entry 'w' is damaged"):
        graphm.load(path)


def test_np_savez_compressed_checkpoints_still_load(tmp_path):
    path = tmp_path / "c.npz"
    state = {"w": {"__ndarray__": "w", "dtype": "<f4", "shape": [2, 3]}}
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez_compressed(path, __graphm__=np.array(header_text(state)), w=weights)
    np.testing.assert_array_equal(graphm.load(path)["w"], weights)


def test_fortran_ordered_and_big_endian_arrays_load(tmp_path):
    path = tmp_path / "c.npz"
    values = np.arange(6.0).reshape(2, 3)
    state = {"f": {"__ndarray__": "f", "dtype": "<f8", "shape": [2, 3]},
             "b": {"__ndarray__": "b", "dtype": ">i4", "shape": [3]}}
    np.savez(path, __graphm__=np.array(header_text(state)), f=np.asfortranarray(values),
             b=np.arange(3, dtype=">i4"))
    loaded = graphm.load(path)
    np.testing.assert_array_equal(loaded["f"], values)
    np.testing.assert_array_equal(loaded["b"], np.arange(3))
    assert loaded["b"].dtype == np.dtype(">i4")


# -- names that appear twice --------------------------------------------------------------------

def test_a_member_name_appearing_twice_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    first = npy_bytes(np.array(header_text({"epoch": 1})))
    second = npy_bytes(np.array(header_text({"epoch": 2})))
    write_zip(path, [("__graphm__.npy", first), ("__graphm__.npy", second)])
    with pytest.raises(CheckpointError, match="entry '__graphm__' appears twice in the zip"):
        graphm.load(path)


def test_names_colliding_once_the_npy_suffix_is_dropped_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    write_zip(path, [("__graphm__.npy", npy_bytes(np.array(header_text()))),
                     ("w.npy", npy_bytes(np.zeros(2))), ("w", npy_bytes(np.ones(2)))])
    with pytest.raises(CheckpointError, match="entry 'w' appears twice"):
        graphm.load(path)


@pytest.mark.parametrize("text, key", [
    ('{"format": "graphm-checkpoint", "version": 1, "state": {}, "state": {"a": 1}}', "state"),
    ('{"format": "graphm-checkpoint", "version": 1, "state": {"lr": 1, "lr": 2}}', "lr"),
    ('{"format": "graphm-checkpoint", "version": 1, "version": 1, "state": {}}', "version"),
])
def test_a_header_key_appearing_twice_is_refused(tmp_path, text, key):
    path = tmp_path / "c.npz"
    np.savez(path, __graphm__=np.array(text))
    with pytest.raises(CheckpointError, match=f"the header has the key '{key}' twice"):
        checkpoint.load_header(path)


# -- kill -9 while saving: stale temporaries ------------------------------------------------------

def dead_pid():
    """The id of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@posix_only
def test_save_removes_only_stale_temporaries_of_graphm(tmp_path):
    dead = dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [f".c.npz.{dead}.abcd_123.tmp", f".other.ckpt.{dead}.zzzzzzzz.tmp",
                 f".a.b.c.{dead}.0a1b2c3d.tmp"]
        kept = [f".c.npz.{sleeper.pid}.abcdefgh.tmp",      # a live writer
                f".c.npz.{os.getpid()}.abcdefgh.tmp",      # this process (another thread)
                f".c.npz.{dead}.ABCDEFGH.tmp",             # not mkstemp's alphabet
                f".c.npz.{dead}.abcdefg.tmp",              # 7 random characters, not 8
                f"c.npz.{dead}.abcdefgh.tmp",              # no leading dot
                f".c.npz.{dead}.abcdefgh.tmp.bak", ".c.npz.abcdefgh.tmp", "notes.tmp",
                f".c.npz.0.abcdefgh.tmp"]                  # pid 0 is no writer
        for name in stale + kept:
            (tmp_path / name).write_bytes(b"partial")
        locked = tmp_path / f".c.npz.{dead}.locked00.tmp"  # a writer on another machine
        locked.write_bytes(b"partial")
        outside = tmp_path.parent / f"{tmp_path.name}-target"
        outside.write_bytes(b"keep me")
        link = tmp_path / f".c.npz.{dead}.symlink0.tmp"
        link.symlink_to(outside)
        folder = tmp_path / f".c.npz.{dead}.folder00.tmp"
        folder.mkdir()
        import fcntl
        with open(locked, "rb") as holder:
            fcntl.flock(holder, fcntl.LOCK_EX)
            graphm.save({"w": np.zeros(2)}, tmp_path / "c.npz")
        left = set(os.listdir(tmp_path))
        assert left.isdisjoint(stale)
        assert left == set(kept) | {"c.npz", locked.name, link.name, folder.name}
        assert outside.read_bytes() == b"keep me"
    finally:
        sleeper.kill()
        sleeper.wait()


@posix_only
def test_temporaries_carry_the_writers_pid(tmp_path, monkeypatch):
    seen = []

    def record_then_fail(stream, entries):
        seen.extend(os.listdir(tmp_path))
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_npz", record_then_fail)
    with pytest.raises(OSError, match="disk full"):
        graphm.save({}, tmp_path / "c.npz")
    assert len(seen) == 1 and checkpoint._TEMPORARY_NAME.fullmatch(seen[0])
    assert seen[0].startswith(f".c.npz.{os.getpid()}.")
    assert os.listdir(tmp_path) == []


@posix_only
def test_kill_9_during_saves_never_breaks_the_checkpoint(tmp_path):
    """Kill a saving process (SIGKILL: no clean-up) a few times at varied moments: the file
    is always one complete checkpoint, old or new, and the next save clears the leftovers."""
    path = tmp_path / "c.npz"
    script = textwrap.dedent(f"""
        import sys, numpy as np, graphm
        big = np.random.default_rng(0).standard_normal(2_000_000)
        step = int(sys.argv[1])
        print("ready", flush=True)
        while True:
            step += 1
            graphm.save({{"step": step, "w": big + step}}, {str(path)!r})
    """)
    expected_base = np.random.default_rng(0).standard_normal(2_000_000)
    graphm.save({"step": 0, "w": expected_base}, path)
    last_step, deadline = 0, time.monotonic() + 60
    for delay in (0.05, 0.13, 0.21, 0.34, 0.55):
        child = subprocess.Popen([sys.executable, "-c", script, str(last_step)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(delay)
            assert child.poll() is None, "the writer died on its own"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        state = graphm.load(path)
        assert state["step"] >= last_step
        np.testing.assert_array_equal(state["w"], expected_base + state["step"])
        last_step = state["step"]
        assert time.monotonic() < deadline, "the kill test is taking too long"
    graphm.save({"step": -1}, path)
    assert os.listdir(tmp_path) == ["c.npz"]      # every killed writer's temporary is gone
    assert graphm.load(path) == {"step": -1}
