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
instant ``path`` is either the complete old checkpoint or the complete new one.

**A damaged file is named as such.** A truncated or corrupt file (the zip's CRC-32 of every
entry is checked), a file that is not a graphm checkpoint, one from a newer format, or one whose
architecture differs from what the caller expects raises :class:`CheckpointError` saying which.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save", "load", "load_header", "CheckpointError", "FORMAT_NAME", "FORMAT_VERSION"]

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
    The file is written as ``.<name>.<random>.tmp`` beside ``path``, flushed and fsync'ed, then
    renamed onto ``path`` with ``os.replace``. On any error (or Ctrl-C) before the rename, the
    temporary file is removed and ``path`` is untouched.
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
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         dir=directory)
    try:
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

def _open(path):
    """Open the npz and return ``(npz, header)``, turning every low-level failure into a
    CheckpointError that says what is wrong with the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"graphm.load: no checkpoint at {path!r}")
    if os.path.isdir(path):
        raise CheckpointError(f"graphm.load: {path!r} is a directory, not a checkpoint file")
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        start = stream.read(6)
    if size == 0:
        raise CheckpointError(f"graphm.load: {path} is not a readable checkpoint: the file is "
                              "empty (0 bytes; a truncated or damaged file)")
    if start.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"graphm.load: {path} is a single .npy array, not a graphm "
                              "checkpoint (.npz)")
    if not start.startswith(b"PK"):  # every zip file, hence every .npz, starts with "PK"
        raise CheckpointError(f"graphm.load: {path} ({size} bytes) is not a readable checkpoint: "
                              f"it starts with {start!r}, not with a zip file's b'PK' (a damaged "
                              "file, or not a checkpoint at all)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"graphm.load: {path} ({size} bytes) is not a readable checkpoint: "
                              f"{error} (a truncated or damaged file, or not a checkpoint at all)"
                              ) from None
    try:
        if _HEADER_KEY not in npz.files:
            raise CheckpointError(f"graphm.load: {path} is an .npz file but not a graphm "
                                  f"checkpoint (it has no '{_HEADER_KEY}' entry; entries: "
                                  f"{', '.join(npz.files[:8])}{' ...' if len(npz.files) > 8 else ''})")
        header_array = _read_entry(npz, _HEADER_KEY, path)
        try:
            header = json.loads(str(header_array[()]))
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
        npz.close()
        raise
    return npz, header


def _read_entry(npz, key, path):
    """Read one entry; the zip's CRC-32 check turns a flipped bit into an error here."""
    try:
        return npz[key]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            NotImplementedError) as error:  # NotImplementedError: an unknown compression method
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


def load_header(path):
    """The checkpoint's header: ``format``, ``version``, ``graphm_version``, ``architecture``.

    Reads no array, so it is quick even for a large file (``graphm info`` uses it).
    """
    npz, header = _open(path)
    npz.close()
    header = dict(header)
    header.pop("state", None)
    return header


def load(path, *, architecture=None):
    """Read a checkpoint written by :func:`save`; no code is ever executed.

    Parameters
    ----------
    path : str or os.PathLike
    architecture : graphm.nn.Module or JSON-like, optional
        When given, the stored architecture must equal it (a Module is compared through its
        ``architecture()``); otherwise :class:`CheckpointError` names the first difference.

    Returns
    -------
    The saved state: for a saved Module its ``state_dict`` (pass it to ``load_state_dict``),
    for a saved dict the same dict, with arrays as NumPy arrays and tuples as lists.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        Truncated, corrupt, not a graphm checkpoint, a newer format version, or another
        architecture than the one expected.
    """
    npz, header = _open(path)
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
