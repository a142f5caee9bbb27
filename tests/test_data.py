"""graphm.data: the embedded digits, IDX files (written here, no network), split, normalise, batches."""
import gzip
import struct

import numpy as np
import pytest

from graphm import data


# -- the digits ---------------------------------------------------------------------------------

def test_load_digits_shapes_range_and_classes():
    images, labels = data.load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    # every image is a pixel count 0..16 divided by 16
    np.testing.assert_array_equal(images * 16, np.round(images * 16))
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == 1797 and counts.min() == 174 and counts.max() == 183


def test_load_digits_float64_and_bad_dtype():
    images, _ = data.load_digits(dtype=np.float64)
    assert images.dtype == np.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        data.load_digits(dtype=np.int32)


def test_load_digits_matches_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    images, labels = data.load_digits(dtype=np.float64)
    np.testing.assert_array_equal(images.reshape(-1, 64) * 16, reference.data)
    np.testing.assert_array_equal(labels, reference.target)


# -- IDX files ----------------------------------------------------------------------------------

def idx_bytes(array, type_code=0x08):
    """An IDX file: magic 0x0000TTDD, big-endian uint32 sizes, big-endian values."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", n)
                                                             for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(directory, n_train=5, n_test=3, compress=True, rows=4, cols=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = directory / f"{prefix}-{kind}-ubyte{'.gz' if compress else ''}"
            raw = idx_bytes(array)
            name.write_bytes(gzip.compress(raw) if compress else raw)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_reads_what_was_written(tmp_path, compress):
    written = write_mnist(tmp_path, compress=compress)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = data.load_mnist(tmp_path, split=split)
        expected_images, expected_labels = written[prefix]
        assert images.shape == (len(expected_labels), 1, 4, 3) and images.dtype == np.float32
        np.testing.assert_allclose(images[:, 0], expected_images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(labels, expected_labels)
        assert labels.dtype == np.int64


def test_read_idx_other_types_and_dot_spelling(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    (tmp_path / "f.idx").write_bytes(idx_bytes(values, 0x0D))
    read = data.read_idx(tmp_path / "f.idx")
    assert read.dtype == np.float32 and read.dtype.isnative
    np.testing.assert_array_equal(read, values)
    # some copies of MNIST spell the files train-images.idx3-ubyte
    write_mnist(tmp_path, compress=False)
    for kind in ("images", "labels"):
        old = tmp_path / f"train-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        old.rename(tmp_path / f"train-{kind}.idx{3 if kind == 'images' else 1}-ubyte")
    assert data.load_mnist(tmp_path)[0].shape == (5, 1, 4, 3)


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match="magic number 0x12340801 is not an IDX"):
        data.read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x01")  # type 07 unknown
    with pytest.raises(ValueError, match="magic number 0x00000701"):
        data.read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        data.read_idx(path)


def test_read_idx_size_checks(tmp_path):
    raw = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    path = tmp_path / "x"
    path.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=r"truncated.*shape \(3, 4, 4\)"):
        data.read_idx(path)
    path.write_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="longer than its header"):
        data.read_idx(path)
    path.write_bytes(raw[:9])  # the header promises 3 sizes, only 1 and a bit are there
    with pytest.raises(ValueError, match="header declares 3 dimensions"):
        data.read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = tmp_path / "x.gz"
    path.write_bytes(compressed[:len(compressed) // 2])
    with pytest.raises(ValueError, match="not a readable gzip file"):
        data.read_idx(path)


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        data.load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte file"):
        data.load_mnist(tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_mnist(tmp_path, split="validation")
    write_mnist(tmp_path, compress=False)
    # labels swapped for images: the magic numbers tell them apart
    images = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    labels = (tmp_path / "train-labels-idx1-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(labels)
    with pytest.raises(ValueError, match="expected uint8 images of shape"):
        data.load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="5 images .* but 4 labels"):
        data.load_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(5, 12, np.uint8)))
    with pytest.raises(ValueError, match="labels must be 0..9, found 12"):
        data.load_mnist(tmp_path)


# -- split, normalise, batches ------------------------------------------------------------------

def test_train_test_split_is_a_seeded_partition():
    x = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    x_train, x_test, y_train, y_test = data.train_test_split(x, y, test_size=0.2, seed=3)
    assert len(x_test) == 10 and len(x_train) == 40
    np.testing.assert_array_equal(x_train[:, 0] // 2, y_train)     # rows stay paired
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(50))
    again = data.train_test_split(x, y, test_size=0.2, seed=3)
    np.testing.assert_array_equal(again[3], y_test)
    other = data.train_test_split(x, y, test_size=0.2, seed=4)
    assert not np.array_equal(other[3], y_test)
    assert len(data.train_test_split(y, test_size=7)[1]) == 7


def test_train_test_split_stratified_keeps_class_shares():
    _, labels = data.load_digits()
    train, test = data.train_test_split(labels, test_size=0.2, seed=0, stratify=labels)
    share = np.bincount(test, minlength=10) / np.bincount(labels, minlength=10)
    np.testing.assert_allclose(share, 0.2, atol=0.01)
    assert len(train) + len(test) == len(labels)


def test_train_test_split_errors():
    with pytest.raises(ValueError, match="same first dimension"):
        data.train_test_split(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="test_size"):
        data.train_test_split(np.zeros(3), test_size=1.5)
    with pytest.raises(ValueError, match="test_size=3 must be between 1 and 2"):
        data.train_test_split(np.zeros(3), test_size=3)


def test_channel_stats_and_normalize():
    rng = np.random.default_rng(0)
    images = rng.normal(3.0, 2.0, size=(20, 2, 5, 5)).astype(np.float32)
    images[:, 1] = 7.0                                  # a constant channel: std 0
    mean, std = data.channel_stats(images)
    assert mean.shape == (2,) and std[1] == 0
    normal = data.normalize(images, mean, std)
    assert normal.dtype == np.float32
    np.testing.assert_allclose(normal[:, 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(normal[:, 0].std(), 1, rtol=1e-4)
    np.testing.assert_array_equal(normal[:, 1], 0)      # shifted, not divided by zero
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        data.normalize(images, mean[:1], std[:1])


def test_dataloader_batches_cover_each_epoch_once_in_a_seeded_order():
    x = np.arange(10)
    y = np.arange(10) * 10
    loader = data.DataLoader(x, y, batch_size=4, shuffle=True, seed=1)
    assert len(loader) == 3
    first = [b for b in loader]
    assert [len(b[0]) for b in first] == [4, 4, 2]
    seen = np.concatenate([b[0] for b in first])
    assert sorted(seen.tolist()) == list(range(10))
    for xb, yb in first:
        np.testing.assert_array_equal(yb, xb * 10)
    second = np.concatenate([b[0] for b in loader])
    assert not np.array_equal(seen, second)            # a new order every epoch
    assert loader.epoch == 2
    # the order of epoch e depends only on (seed, e): a resumed run sees the same batches
    resumed = data.DataLoader(x, y, batch_size=4, shuffle=True, seed=1)
    resumed.epoch = 1
    np.testing.assert_array_equal(np.concatenate([b[0] for b in resumed]), second)


def test_dataloader_no_shuffle_drop_last_and_errors():
    loader = data.DataLoader(np.arange(10), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.DataLoader(np.arange(3), batch_size=0)
    with pytest.raises(ValueError, match="same first dimension"):
        data.DataLoader(np.arange(3), np.arange(4))
