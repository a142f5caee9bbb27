"""Datasets and batches: the 8x8 digits shipped with graphm, MNIST from IDX files, a seeded loader.

Everything here is NumPy: images come out as ``float32`` arrays of shape ``(N, 1, H, W)`` with
values in ``[0, 1]`` (channels first, as graphm's convolutions expect) and labels as ``int64``
arrays of shape ``(N,)``. Nothing is downloaded: :func:`load_digits` reads a small file inside
the package, :func:`load_mnist` reads files the user already has.

A typical training script::

    images, labels = graphm.data.load_digits()
    x_train, x_test, y_train, y_test = graphm.data.train_test_split(
        images, labels, test_size=0.2, seed=0, stratify=labels)
    mean, std = graphm.data.channel_stats(x_train)   # from the training part only
    loader = graphm.data.DataLoader(graphm.data.normalize(x_train, mean, std), y_train,
                                    batch_size=32, shuffle=True, seed=0)
    for epoch in range(10):
        for xb, yb in loader:        # a new, reproducible order every epoch
            ...
"""
from __future__ import annotations

import gzip
import hashlib
import math
import numbers
import os
import zlib
from importlib import resources

import numpy as np

__all__ = ["load_digits", "load_mnist", "read_idx", "train_test_split", "channel_stats",
           "normalize", "DataLoader"]


# --------------------------------------------------------------------------------------------
# The 8x8 digits
# --------------------------------------------------------------------------------------------

def load_digits(dtype=np.float32):
    """The 1797 handwritten 8x8 digits that scikit-learn ships, scaled to ``[0, 1]``.

    Real data, no network needed: the file lives in ``graphm/datasets/`` (its provenance and
    licence, CC BY 4.0, are in ``graphm/datasets/__init__.py``) and its SHA-256 is checked on
    every read, so a damaged installation says so instead of training on garbage.

    Parameters
    ----------
    dtype : float32 or float64
        The dtype of the images.

    Returns
    -------
    images : ndarray, shape (1797, 1, 8, 8)
        Pixel counts 0..16 divided by 16.
    labels : ndarray of int64, shape (1797,)
        The digit, 0..9 (each class has 174 to 183 images).
    """
    dtype = _float_dtype("load_digits", dtype)
    from graphm import datasets  # the data package; imported here so graphm starts fast
    raw = resources.files(datasets).joinpath(datasets.DIGITS_FILE).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != datasets.DIGITS_SHA256:
        raise OSError(f"load_digits: the data file graphm/datasets/{datasets.DIGITS_FILE} is "
                      f"damaged (SHA-256 {digest}, expected {datasets.DIGITS_SHA256}); "
                      "reinstall graphm")
    text = gzip.decompress(raw).decode("ascii")
    table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64)
    images = (table[:, :64].reshape(-1, 1, 8, 8) / 16.0).astype(dtype)
    labels = np.ascontiguousarray(table[:, 64])
    return images, labels


# --------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------

# The IDX format (LeCun's MNIST page): a 4-byte magic number 0x00 0x00 <type> <ndim>, then ndim
# big-endian uint32 sizes, then the values, big-endian, C order.
_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path):
    """The bytes of ``path``, gunzipped if it is gzip (by its first two bytes, not its name)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: not a readable gzip file ({error}); the download may be "
                             "truncated or damaged") from None
    return raw


def read_idx(path):
    """Read one IDX file (raw or gzip-compressed) into a NumPy array, checking its header.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ndarray
        Of the file's own element type (uint8 for MNIST) in native byte order, with the shape
        the header declares.

    Raises
    ------
    ValueError
        If the magic number is not an IDX one, or the file holds fewer or more bytes than the
        header's sizes say.
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX file "
                         "(the 4-byte magic number alone needs 4)")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    magic = int.from_bytes(raw[:4], "big")
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path}: magic number 0x{magic:08X} is not an IDX one: expected "
                         "0x0000TTDD with type TT in {08, 09, 0B, 0C, 0D, 0E} and DD >= 1 "
                         "dimensions (MNIST images: 0x00000803, labels: 0x00000801)")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: header declares {ndim} dimensions ({header_size} bytes of "
                         f"header) but the file has only {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        which = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"{path}: file is {which}: the header declares shape {shape} of "
                         f"{dtype.str[1:]} ({expected} bytes with the header), the file has "
                         f"{len(raw)} bytes")
    array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


_MNIST_PREFIX = {"train": "train", "test": "t10k"}


def _find_idx(directory, stem):
    """The first of ``stem``'s usual spellings present in ``directory`` (raw or .gz)."""
    # train-images-idx3-ubyte is the official name; some copies use a dot: train-images.idx3-ubyte
    names = [stem, stem.replace("-idx", ".idx")]
    candidates = [name + suffix for name in names for suffix in (".gz", "")]
    for name in candidates:
        full = os.path.join(directory, name)
        if os.path.isfile(full):
            return full
    raise FileNotFoundError(f"load_mnist: no {stem} file in {directory!r}; looked for "
                            f"{', '.join(candidates)}")


def load_mnist(path, split="train", dtype=np.float32):
    """MNIST or Fashion-MNIST from the IDX files you already have, scaled to ``[0, 1]``.

    Parameters
    ----------
    path : str or os.PathLike
        A directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or with ``.gz``.
    split : {'train', 'test'}
        Which pair to read.
    dtype : float32 or float64

    Returns
    -------
    images : ndarray, shape (N, 1, H, W)
        The uint8 pixels divided by 255.
    labels : ndarray of int64, shape (N,)

    Raises
    ------
    FileNotFoundError
        If the directory or one of the two files is missing.
    ValueError
        If a file is not an IDX file of the expected kind (magic 0x00000803 for the images,
        0x00000801 for the labels), is truncated, or the two files disagree on the count.
    """
    if split not in _MNIST_PREFIX:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    dtype = _float_dtype("load_mnist", dtype)
    directory = os.fspath(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"load_mnist: {directory!r} is not a directory; pass the folder "
                                "that holds the four IDX files")
    prefix = _MNIST_PREFIX[split]
    image_file = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    label_file = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{image_file}: expected uint8 images of shape (N, rows, cols), magic "
                         f"0x00000803; got {images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{label_file}: expected uint8 labels of shape (N,), magic 0x00000801; "
                         f"got {labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"load_mnist: {len(images)} images in {image_file} but {len(labels)} "
                         f"labels in {label_file}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_file}: labels must be 0..9, found {int(labels.max())}")
    images = (images[:, None, :, :] / 255.0).astype(dtype)
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Splitting and normalising
# --------------------------------------------------------------------------------------------

def train_test_split(*arrays, test_size=0.25, seed=0, stratify=None):
    """Split arrays along their first axis into a training and a test part, reproducibly.

    Parameters
    ----------
    *arrays : ndarrays with the same first dimension
    test_size : float in (0, 1) or int
        The fraction (or the number) of samples that go to the test part.
    seed : int
        Seeds the shuffle: the same seed gives the same split on every machine.
    stratify : ndarray of labels, optional
        Keep each label's share the same in both parts (each class is split on its own).

    Returns
    -------
    list
        ``[a_train, a_test, b_train, b_test, ...]``, as scikit-learn's function of this name.
    """
    if not arrays:
        raise ValueError("train_test_split: give at least one array")
    n = len(arrays[0])
    for index, array in enumerate(arrays):
        if len(array) != n:
            raise ValueError(f"train_test_split: all arrays need the same first dimension; "
                             f"array 0 has {n}, array {index} has {len(array)}")
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        if not 0 < test_size < n:
            raise ValueError(f"train_test_split: test_size={test_size} must be between 1 and "
                             f"{n - 1} for {n} samples")
        fraction = test_size / n
    elif isinstance(test_size, numbers.Real) and 0.0 < test_size < 1.0:
        fraction = float(test_size)
    else:
        raise ValueError(f"train_test_split: test_size must be a fraction in (0, 1) or a "
                         f"count, got {test_size!r}")
    rng = np.random.default_rng(seed)
    if stratify is None:
        order = rng.permutation(n)
        n_test = max(1, min(n - 1, round(fraction * n)))
        test, train = order[:n_test], order[n_test:]
    else:
        stratify = np.asarray(stratify)
        if len(stratify) != n:
            raise ValueError(f"train_test_split: stratify has {len(stratify)} labels for {n} "
                             "samples")
        test_parts, train_parts = [], []
        for label in np.unique(stratify):
            members = rng.permutation(np.flatnonzero(stratify == label))
            n_test = round(fraction * len(members))
            test_parts.append(members[:n_test])
            train_parts.append(members[n_test:])
        # shuffle again so the classes are interleaved, not in blocks
        test = rng.permutation(np.concatenate(test_parts))
        train = rng.permutation(np.concatenate(train_parts))
    result = []
    for array in arrays:
        array = np.asarray(array)
        result += [array[train], array[test]]
    return result


def channel_stats(images):
    """Per-channel mean and standard deviation of ``(N, C, *spatial)`` images.

    Returns
    -------
    mean, std : ndarrays of shape (C,), the dtype of ``images``
        Compute them on the training part only, then :func:`normalize` every part with them.
    """
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"channel_stats: images must be (N, C, ...), got shape {images.shape}")
    axes = (0,) + tuple(range(2, images.ndim))
    return images.mean(axis=axes), images.std(axis=axes)


def normalize(images, mean, std):
    """``(images - mean) / std`` channel by channel: ``mean`` and ``std`` have shape ``(C,)``.

    A channel whose ``std`` is 0 (constant) is only shifted, never divided by zero.
    """
    images = np.asarray(images)
    mean = np.asarray(mean, dtype=images.dtype)
    std = np.asarray(std, dtype=images.dtype)
    channels = images.shape[1] if images.ndim >= 2 else None
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(f"normalize: mean and std must have shape ({channels},) for images of "
                         f"shape {images.shape}; got {mean.shape} and {std.shape}")
    view = (1, channels) + (1,) * (images.ndim - 2)
    safe_std = np.where(std > 0, std, 1).astype(images.dtype)
    return (images - mean.reshape(view)) / safe_std.reshape(view)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------

class DataLoader:
    """Iterate over arrays in mini-batches, in a reproducible shuffled order.

    Parameters
    ----------
    *arrays : ndarrays with the same first dimension
        Typically ``images, labels``. Each batch is a tuple of slices of them.
    batch_size : int
    shuffle : bool
        Draw a new order for every pass.
    seed : int
        The order of pass ``e`` depends only on ``(seed, e)``: resuming training at epoch ``e``
        (set :attr:`epoch`) replays exactly the batches an uninterrupted run would have seen.
    drop_last : bool
        Skip the last batch when it is smaller than ``batch_size``.

    Attributes
    ----------
    epoch : int
        The number of the next pass; each ``iter(loader)`` uses it, then adds one.
    """

    def __init__(self, *arrays, batch_size=32, shuffle=False, seed=0, drop_last=False):
        if not arrays:
            raise ValueError("DataLoader: give at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        n = len(self.arrays[0])
        for index, array in enumerate(self.arrays):
            if len(array) != n:
                raise ValueError(f"DataLoader: all arrays need the same first dimension; array 0 "
                                 f"has {n}, array {index} has {len(array)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def __len__(self):
        """The number of batches in one pass."""
        n = len(self.arrays[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch):
        """The sample indices of pass ``epoch``, in the order they are served."""
        n = len(self.arrays[0])
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self):
        order = self.order(self.epoch)
        self.epoch += 1
        for batch in range(len(self)):
            indices = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            yield tuple(array[indices] for array in self.arrays)


def _float_dtype(fname, dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{fname}: dtype must be float32 or float64, got {dtype}")
    return dtype
