"""Safe checkpoints: ``graphm.save`` and ``graphm.load``.

A checkpoint is one ``.npz`` file (a zip of ``.npy`` arrays, readable by plain NumPy):

* every array of the saved state is one entry, named by its path in the state
  (``model/conv1.weight``, ``optimizer/state/0/exp_avg``), so ``np.load(path).files`` reads like
  the model;
* the entry ``__graphm__`` is a JSON text: the format name and version, the graphm version that
  wrote it, the architecture description (what layers, with what arguments), and the shape of the
  state itself (dicts, lists, numbers, strings, with references to the array entries).

Three promises, each with a test:

**Loading never executes code.** The file is read with ``np.load(allow_pickle=False)``: only
numeric arrays and JSON text come out, never a pickled object, so a checkpoint from a stranger
is as safe to open as an image. (``torch.load`` unpickles unless ``weights_only=True``.)

**An interrupted save leaves the previous checkpoint intact.** The file is written under a
temporary name in the same directory, flushed to disk, then renamed over the old one with
``os.replace``, which POSIX and Windows perform atomically within one file system: at every
instant ``path`` is either the complete old checkpoint or the complete new one. A writer killed
outright leaves its temporary behind; the next save into that directory removes it (see
:func:`save`).

**A damaged file is named as such.** A truncated or corrupt file (the zip's CRC-32 of every
entry is checked), a file that is not a graphm checkpoint, one from a newer format, or one whose
architecture differs from what the caller expects raises :class:`CheckpointError` saying which.
So does a file that is not a regular file (a FIFO would block the reader), and a crafted one:
every declared size is checked against the bytes the file holds before anything is allocated,
decompression is bounded by :data:`MAX_INFLATED_BYTES`, and an entry name or header key that
appears twice is refused rather than resolved.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
import stat
import tempfile
import zipfile
import zlib

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import numpy as np

__all__ = ["save", "load", "load_header", "CheckpointError", "FORMAT_NAME", "FORMAT_VERSION",
           "MAX_INFLATED_BYTES"]

FORMAT_NAME = "graphm-checkpoint"
FORMAT_VERSION = 1
_HEADER_KEY = "__graphm__"
_ARRAY_TAG = "__ndarray__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, of another format, or of another architecture."""


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------

def _encode(value, path, arrays):
    """The JSON form of ``value``; arrays go into ``arrays`` under their path, leaving a reference.

    ``path`` is a list of keys from the root, used for the entry name and in error messages.
    """
    where = "/".join(path) or "<root>"
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"graphm.save: dictionary keys must be str, got {key!r} at {where}")
            if key.startswith("__"):
                raise ValueError(f"graphm.save: keys starting with '__' are reserved, got {key!r} "
                                 f"at {where}")
            encoded[key] = _encode(item, path + [key], arrays)
        return encoded
    if isinstance(value, (list, tuple)):
        return [_encode(item, path + [str(i)], arrays) for i, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.kind not in "biufc":
            raise TypeError(f"graphm.save: array at {where} has dtype {value.dtype}; only "
                            "bool, integer, float and complex arrays can be saved")
        name = where
        if name in arrays:  # two paths flattening to one name ("a/b" and ["a", "b"]): disambiguate
            name = f"{where}#{len(arrays)}"
        arrays[name] = np.ascontiguousarray(value)
        return {_ARRAY_TAG: name, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        # JSON has no NaN or infinity: spell them as tagged strings
        return value if math.isfinite(value) else {"__float__": repr(value)}
    raise TypeError(f"graphm.save: cannot save a {type(value).__name__} at {where}; a checkpoint "
                    "holds dicts with str keys, lists, NumPy arrays, numbers, strings, bools and "
                    "None (call .state_dict() on a Module or an optimizer)")


def save(obj, path, *, architecture=None):
    """Write a checkpoint atomically: the previous file at ``path`` survives any interruption.

    Parameters
    ----------
    obj : graphm.nn.Module or dict
        A Module saves its ``state_dict()`` and, unless ``architecture`` is given, its
        ``architecture()``. A dict (``{"model": ..., "optimizer": ..., "epoch": 3}``) may nest
        dicts with str keys, lists, NumPy arrays, numbers, strings, bools and None.
    path : str or os.PathLike
        The file to write, used exactly as given (no suffix is added).
    architecture : JSON-like, optional
        A description of the model (``module.architecture()``), stored in the header and checked
        by ``load(path, architecture=...)``.

    Notes
    -----
    The file is written as ``.<name>.<pid>.<random>.tmp`` beside ``path`` (``<pid>`` is the
    writing process's id), flushed and fsync'ed, then renamed onto ``path`` with
    ``os.replace``. On any error (or Ctrl-C) before the rename, the temporary file is removed
    and ``path`` is untouched.

    A process killed outright (``kill -9``, a power cut) cannot remove its temporary file, so
    each save first removes the *stale* temporaries in its directory: files named in exactly
    this pattern (for any ``<name>``), owned by the current user, whose ``<pid>`` is no live
    process and which no process holds locked (the writer holds an exclusive ``flock`` on its
    temporary while writing, which also protects a writer on another machine sharing the
    directory). Any other file is never touched. On Windows the clean-up is skipped.
    """
    if hasattr(obj, "state_dict") and hasattr(obj, "architecture") and not isinstance(obj, dict):
        if architecture is None:
            architecture = obj.architecture()
        obj = obj.state_dict()
    arrays = {}
    tree = _encode(obj, [], arrays)
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
              "graphm_version": _graphm_version(), "architecture": architecture, "state": tree}
    try:
        header_text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"graphm.save: the architecture description must be JSON-like "
                        f"(dicts, lists, str, finite numbers, bools, None): {error}") from None
    entries = dict(arrays)
    entries[_HEADER_KEY] = np.array(header_text)

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"graphm.save: the directory {directory!r} does not exist")
    _remove_stale_temporaries(directory)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                                         suffix=".tmp", dir=directory)
    try:
        _lock(handle)
        with os.fdopen(handle, "wb") as stream:
            _write_npz(stream, entries)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except BaseException:  # including KeyboardInterrupt: never leave the temporary behind
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _write_npz(stream, entries):
    """Write the entries as an uncompressed ``.npz`` (weights hardly compress; speed wins).

    Written member by member rather than with ``np.savez(stream, **entries)``, whose own
    keyword arguments (``file``, ``allow_pickle``) would swallow state entries of those names.
    """
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in entries.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


# ``.<name>.<pid>.<random>.tmp``: the names save() gives its temporaries (mkstemp's random part
# is 8 characters of [a-z0-9_]). Only files named so are ever cleaned up.
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,9})\.[a-z0-9_]{8}\.tmp")


def _lock(descriptor):
    """Hold an exclusive lock on a temporary being written (released when the process dies)."""
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a file system without locks: the pid check still protects the file
            pass


def _is_locked(descriptor):
    """True if another open file holds a lock on this file (a live writer)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _process_exists(pid):
    """True unless ``pid`` is surely no live process (any doubt counts as alive)."""
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the existence check
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: another user's live process
        return True
    return True


def _remove_stale_temporaries(directory):
    """Remove the temporaries of save() calls whose process died before finishing.

    A file is removed only if it is named like save()'s temporaries, is a regular file (not a
    symbolic link) owned by this user, its pid is neither this process (another thread may be
    saving) nor any live process, and no process holds a lock on it. Failures are ignored:
    clean-up must never make a save fail.
    """
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _TEMPORARY_NAME.fullmatch(name)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _process_exists(pid):
            continue
        candidate = os.path.join(directory, name)
        try:
            status = os.lstat(candidate)
            if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid():
                continue
            descriptor = os.open(candidate, os.O_RDONLY | os.O_NONBLOCK
                                 | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            if not _is_locked(descriptor):
                os.unlink(candidate)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); harmless to skip where directories can't be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

#: The most bytes that decompressing a checkpoint's compressed entries may produce, in total.
#: graphm writes its entries uncompressed (they inflate to nothing, and each is bounded by the
#: file's own size); this bound is for ``.npz`` files written with ``np.savez_compressed``, and
#: it is what refuses a "zip bomb" (a small file that inflates to gigabytes) before one byte is
#: decompressed. Raise it here, or for one call with ``load(..., max_inflated_bytes=...)``.
MAX_INFLATED_BYTES = 256 * 2**20

# DEFLATE expands data by at most about 1032 : 1 (a 258-byte match costs at least 2 bits):
# an entry declaring more than that is lying about its size.
_DEFLATE_MAX_RATIO = 1032
_READ_CHUNK_BYTES = 2**24


def _file_kind(mode):
    """What a non-regular file is, for the error message."""
    for is_kind, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                          (stat.S_ISSOCK, "a socket")):
        if is_kind(mode):
            return name
    return "not a regular file"


def _open_regular_file(path):
    """Open ``path`` for reading if it is a regular file; return ``(stream, size)``.

    The type is checked before opening (opening a FIFO for reading waits for a writer, reading
    a device may never end) and again on the opened descriptor, which is opened with
    ``O_NONBLOCK`` so that a FIFO swapped in between the two checks cannot block either.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"graphm.load: no checkpoint at {path!r}") from None
    except OSError as error:
        raise CheckpointError(f"graphm.load: cannot read {path!r}: "
                              f"{error.strerror or error}") from None
    if not stat.S_ISREG(status.st_mode):
        raise CheckpointError(f"graphm.load: {path!r} is {_file_kind(status.st_mode)}, not a "
                              "checkpoint file (a checkpoint is a regular file)")
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"graphm.load: no checkpoint at {path!r}") from None
    except OSError as error:
        raise CheckpointError(f"graphm.load: cannot read {path!r}: "
                              f"{error.strerror or error}") from None
    try:
        status = os.fstat(descriptor)  # the file actually opened, if it changed since os.stat
        if not stat.S_ISREG(status.st_mode):
            raise CheckpointError(f"graphm.load: {path!r} is {_file_kind(status.st_mode)}, not "
                                  "a checkpoint file (a checkpoint is a regular file)")
        stream = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    return stream, status.st_size


class _Archive:
    """A checkpoint's zip, every member checked against the file before anything is read.

    ``files`` lists the entry names (member names without ``.npy``), as ``np.load`` does, and
    ``archive[name]`` reads one array. The checks bound what reading can cost:

    * a stored (uncompressed) member declares as many bytes as it occupies, and all members
      together occupy no more than the file, so stored arrays never exceed the file's size;
    * a deflated member declares no more than DEFLATE can produce from its compressed size,
      and all of them together no more than ``max_inflated_bytes``;
    * each array's ``.npy`` header must describe no more bytes than its member declares, so
      nothing is allocated from a header's word alone (an 8 TiB shape in a 400-byte file).
    """

    def __init__(self, stream, path, size, max_inflated_bytes):
        self.path = path
        self._stream = stream  # owned: closed with the archive
        self._zip = zipfile.ZipFile(stream)
        self._members = {}
        stored_bytes = compressed_bytes = inflated_bytes = 0
        for info in self._zip.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key in self._members:
                raise CheckpointError(f"graphm.load: {path}: the entry '{key}' appears twice in "
                                      "the zip (which one is meant is ambiguous); the file is "
                                      "damaged or crafted")
            self._members[key] = info
            if info.compress_type == zipfile.ZIP_STORED:
                if info.file_size != info.compress_size:
                    raise CheckpointError(
                        f"graphm.load: {path}: the stored entry '{key}' declares "
                        f"{info.file_size} bytes but occupies {info.compress_size}; the file "
                        "is damaged or crafted")
                stored_bytes += info.compress_size
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size:
                    raise CheckpointError(
                        f"graphm.load: {path}: the compressed entry '{key}' declares "
                        f"{info.file_size} bytes from {info.compress_size} compressed bytes, "
                        f"more than DEFLATE can produce ({_DEFLATE_MAX_RATIO}:1); the file is "
                        "damaged or crafted")
                compressed_bytes += info.compress_size
                inflated_bytes += info.file_size
            else:
                raise CheckpointError(
                    f"graphm.load: {path}: the entry '{key}' uses zip compression method "
                    f"{info.compress_type}; a checkpoint's entries are stored or deflated")
        if stored_bytes + compressed_bytes > size:
            raise CheckpointError(
                f"graphm.load: {path} ({size} bytes): its entries claim to occupy "
                f"{stored_bytes + compressed_bytes} bytes, more than the file holds (entries "
                "overlap, or the file was truncated); the file is damaged or crafted")
        if inflated_bytes > max_inflated_bytes:
            raise CheckpointError(
                f"graphm.load: {path} ({size} bytes): its compressed entries would inflate to "
                f"{inflated_bytes} bytes, more than max_inflated_bytes={max_inflated_bytes} "
                "(graphm.checkpoint.MAX_INFLATED_BYTES); if you trust the file, pass a larger "
                "max_inflated_bytes= to graphm.load")
        self.files = list(self._members)

    def __getitem__(self, key):
        info = self._members[key]
        with self._zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not read "
                                 "by graphm (1.0 and 2.0 are)")
            if dtype.hasobject:
                raise ValueError("it holds Python objects (a pickle), which graphm never loads")
            if any(extent < 0 for extent in shape):
                raise ValueError(f"its .npy header declares the shape {shape}")
            declared_bytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            held_bytes = info.file_size - member.tell()
            if declared_bytes > held_bytes:
                raise ValueError(f"its .npy header declares {dtype}{list(shape)}, "
                                 f"{declared_bytes} bytes, but the entry holds {held_bytes}")
            array = np.empty(shape[::-1] if fortran_order else shape, dtype)
            if declared_bytes:
                flat = array.reshape(-1).view(np.uint8)
                filled = 0
                while filled < declared_bytes:
                    count = member.readinto(flat[filled:filled + _READ_CHUNK_BYTES])
                    if not count:
                        raise EOFError(f"the entry ends after {filled} of {declared_bytes} "
                                       "bytes of array data")
                    filled += count
            if member.read(1):  # also makes zipfile check the member's CRC-32
                raise ValueError(f"the entry holds more than its {dtype}{list(shape)} array")
        return array.transpose() if fortran_order else array

    def close(self):
        self._zip.close()
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _refuse_duplicate_keys(pairs):
    """``object_pairs_hook`` for the header: JSON lets a key repeat, a checkpoint may not."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise _DuplicateKeyError(repeated)
    return dict(pairs)


class _DuplicateKeyError(ValueError):
    pass


def _open(path, max_inflated_bytes=None):
    """Open the checkpoint and return ``(archive, header)``, turning every low-level failure
    into a CheckpointError that says what is wrong with the file."""
    path = os.fspath(path)
    if max_inflated_bytes is None:
        max_inflated_bytes = MAX_INFLATED_BYTES
    if (not isinstance(max_inflated_bytes, numbers.Integral) or isinstance(max_inflated_bytes, bool)
            or max_inflated_bytes < 0):
        raise ValueError(f"graphm.load: max_inflated_bytes must be an int >= 0, got "
                         f"{max_inflated_bytes!r}")
    stream, size = _open_regular_file(path)
    try:
        try:
            start = stream.read(6)
        except OSError as error:  # /proc/self/mem, a file on a failing disk, ...
            raise CheckpointError(f"graphm.load: cannot read {path!r}: "
                                  f"{error.strerror or error}") from None
        if size == 0 or not start:
            raise CheckpointError(f"graphm.load: {path} is not a readable checkpoint: the file "
                                  "is empty (0 bytes; a truncated or damaged file)")
        if start.startswith(b"\x93NUMPY"):
            raise CheckpointError(f"graphm.load: {path} is a single .npy array, not a graphm "
                                  "checkpoint (.npz)")
        if not start.startswith(b"PK"):  # every zip file, hence every .npz, starts with "PK"
            raise CheckpointError(f"graphm.load: {path} ({size} bytes) is not a readable "
                                  f"checkpoint: it starts with {start!r}, not with a zip file's "
                                  "b'PK' (a damaged file, or not a checkpoint at all)")
        try:
            archive = _Archive(stream, path, size, max_inflated_bytes)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"graphm.load: {path} ({size} bytes) is not a readable "
                                  f"checkpoint: {error} (a truncated or damaged file, or not a "
                                  "checkpoint at all)") from None
    except BaseException:
        stream.close()
        raise
    try:
        if _HEADER_KEY not in archive.files:
            raise CheckpointError(f"graphm.load: {path} is an .npz file but not a graphm "
                                  f"checkpoint (it has no '{_HEADER_KEY}' entry; entries: "
                                  f"{', '.join(archive.files[:8])}"
                                  f"{' ...' if len(archive.files) > 8 else ''})")
        header_array = _read_entry(archive, _HEADER_KEY, path)
        try:
            header = json.loads(str(header_array[()]), object_pairs_hook=_refuse_duplicate_keys)
        except _DuplicateKeyError as error:
            raise CheckpointError(f"graphm.load: {path}: the header has the key "
                                  f"{error.args[0]!r} twice in one object (which one is meant "
                                  "is ambiguous); the file is damaged or crafted") from None
        except (ValueError, TypeError, IndexError, RecursionError) as error:
            raise CheckpointError(f"graphm.load: {path}: the header is not valid JSON "
                                  f"({error}); the file is damaged") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise CheckpointError(f"graphm.load: {path}: the header does not name the format "
                                  f"'{FORMAT_NAME}'; not a graphm checkpoint")
        version = header.get("version")
        if (not isinstance(version, int) or isinstance(version, bool)
                or version > FORMAT_VERSION or version < 1):
            raise CheckpointError(f"graphm.load: {path} has checkpoint format version "
                                  f"{version!r}; this graphm ({_graphm_version()}) reads "
                                  f"versions 1..{FORMAT_VERSION}: upgrade graphm")
    except BaseException:
        archive.close()
        raise
    return archive, header


def _read_entry(archive, key, path):
    """Read one entry; the zip's CRC-32 check turns a flipped bit into an error here."""
    try:
        return archive[key]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error,
            NotImplementedError) as error:
        raise CheckpointError(f"graphm.load: {path}: entry '{key}' is damaged ({error}); the "
                              "file is corrupt or was truncated") from None


def _decode(node, npz, path, where):
    if isinstance(node, dict):
        if _ARRAY_TAG in node:
            name = node[_ARRAY_TAG]
            if name not in npz.files:
                raise CheckpointError(f"graphm.load: {path}: the header refers to an array "
                                      f"'{name}' that is not in the file; the file is damaged")
            array = _read_entry(npz, name, path)
            expected_shape = tuple(node.get("shape", ()))
            expected_dtype = np.dtype(node.get("dtype", array.dtype.str))
            if array.shape != expected_shape or array.dtype != expected_dtype:
                raise CheckpointError(f"graphm.load: {path}: array '{name}' is "
                                      f"{array.dtype}{list(array.shape)} but the header says "
                                      f"{expected_dtype}{list(expected_shape)}; the file is damaged")
            return array
        if set(node) == {"__float__"}:
            return float(node["__float__"])
        return {key: _decode(item, npz, path, f"{where}/{key}") for key, item in node.items()}
    if isinstance(node, list):
        return [_decode(item, npz, path, f"{where}/{i}") for i, item in enumerate(node)]
    return node


def load_header(path, *, max_inflated_bytes=None):
    """The checkpoint's header: ``format``, ``version``, ``graphm_version``, ``architecture``.

    Reads no array, so it is quick even for a large file (``graphm info`` uses it). The file
    is checked as by :func:`load` (``max_inflated_bytes`` has the same meaning).
    """
    npz, header = _open(path, max_inflated_bytes)
    npz.close()
    header = dict(header)
    header.pop("state", None)
    return header


def load(path, *, architecture=None, max_inflated_bytes=None):
    """Read a checkpoint written by :func:`save`; no code is ever executed.

    Parameters
    ----------
    path : str or os.PathLike
        A regular file (a FIFO, a device or a directory is refused without reading it).
    architecture : graphm.nn.Module or JSON-like, optional
        When given, the stored architecture must equal it (a Module is compared through its
        ``architecture()``); otherwise :class:`CheckpointError` names the first difference.
    max_inflated_bytes : int, optional
        The most bytes the file's *compressed* entries may inflate to, in total (default
        :data:`graphm.checkpoint.MAX_INFLATED_BYTES`, 256 MiB). graphm writes uncompressed
        entries, which this does not limit; it matters for ``np.savez_compressed`` files, and
        stops a small crafted file from inflating to gigabytes.

    Returns
    -------
    The saved state: for a saved Module its ``state_dict`` (pass it to ``load_state_dict``),
    for a saved dict the same dict, with arrays as NumPy arrays and tuples as lists.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        Truncated, corrupt, not a regular file, unreadable, not a graphm checkpoint, a newer
        format version, or another architecture than the one expected; also a file whose
        sizes do not add up (an array header declaring more bytes than its entry holds,
        entries overlapping or inflating past ``max_inflated_bytes``) or that names an entry
        or a header key twice.

    Notes
    -----
    Nothing is allocated on a header's word alone: every size the file declares is checked
    against the bytes the file holds before an array is created.
    """
    npz, header = _open(path, max_inflated_bytes)
    with npz:
        if architecture is not None:
            if hasattr(architecture, "architecture") and callable(architecture.architecture):
                architecture = architecture.architecture()
            expected = json.loads(json.dumps(architecture))  # tuples -> lists, as stored
            difference = _first_difference(header.get("architecture"), expected, "architecture")
            if difference is not None:
                raise CheckpointError(f"graphm.load: {os.fspath(path)} holds another architecture "
                                      f"than expected: {difference}")
        try:
            return _decode(header.get("state"), npz, os.fspath(path), "")
        except (TypeError, ValueError, RecursionError) as error:
            # a header that parses as JSON but does not describe arrays (a crafted or damaged
            # file): say so instead of failing somewhere inside NumPy
            raise CheckpointError(f"graphm.load: {os.fspath(path)}: the header's description "
                                  f"of the state is malformed ({type(error).__name__}: {error}); "
                                  "the file is damaged or not written by graphm") from None


def _first_difference(stored, expected, where):
    """A sentence naming the first place where two JSON-like values differ, or None."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        for key in list(expected) + [k for k in stored if k not in expected]:
            if key not in stored:
                return f"{where}.{key} is missing from the checkpoint (expected {expected[key]!r})"
            if key not in expected:
                return f"the checkpoint has {where}.{key} = {stored[key]!r}, not expected"
            found = _first_difference(stored[key], expected[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(stored, list) and isinstance(expected, list):
        if len(stored) != len(expected):
            return f"{where} has {len(stored)} entries in the checkpoint, expected {len(expected)}"
        for index, (a, b) in enumerate(zip(stored, expected)):
            found = _first_difference(a, b, f"{where}[{index}]")
            if found:
                return found
        return None
    if stored != expected or type(stored) is not type(expected):
        return f"{where} is {stored!r} in the checkpoint, expected {expected!r}"
    return None


def _graphm_version():
    from graphm import __version__
    return __version__
