"""Fashion-MNIST: the idx parser on files the test writes, the dataset on the real files (Debian's
dataset-fashion-mnist, which CI installs), and the errors that say how to get them."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from awnet.data import load_dataset, spread
from awnet.data.fashion_mnist import DEBIAN_DIR, FILES, _split, fashion_mnist, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    return b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_split(folder, split: str, images: np.ndarray, labels: np.ndarray, compress: bool) -> None:
    for name, array in zip(FILES[split], (images, labels)):
        data = idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, shape, compress):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(idx_bytes(array)) if compress else idx_bytes(array))
    np.testing.assert_array_equal(read_idx(str(path)), array)


@pytest.mark.parametrize("content, message", [
    (b"", "not an idx file of unsigned bytes"),
    (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4, "not an idx file of unsigned bytes"),  # float
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x01\x02", "header says shape"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02\x03", "header says shape"),
])
def test_read_idx_refuses_what_is_not_one(tmp_path, content, message):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_idx(str(path))
    assert str(path) in str(error.value)


def test_read_idx_refuses_a_broken_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(9, np.uint8)))[:-6])
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(str(path))


@pytest.mark.parametrize("compress", [False, True])
def test_dataset_from_a_folder(tmp_path, compress):
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), 6))  # shuffled, as the real files are
    images = (labels[:, None, None] * 20 + rng.integers(0, 5, (60, 28, 28))).astype(np.uint8)
    write_split(tmp_path, "train", images, labels, compress)
    x, y = fashion_mnist("train", tmp_path)
    assert x.shape == (60, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(y, torch.arange(10).repeat_interleave(6)), "sorted by class"
    # Every image kept with its own label, none lost or repeated.
    assert torch.equal((x.flatten(1)[:, 0] * 255).round().div(20).floor().long(), y)
    assert sorted(map(bytes, (x * 255).round().to(torch.uint8).flatten(1).numpy())) == \
        sorted(map(bytes, images.reshape(60, -1)))
    # Evenly spaced indices give a balanced subset.
    assert torch.equal(spread(x, y, 20)[1].bincount(), torch.full((10,), 2))
    # The order within a class is a fixed permutation: the same when the files are read again.
    _split.cache_clear()
    assert torch.equal(load_dataset("fashion-mnist", "train", tmp_path)[0], x)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as error:
        fashion_mnist("test", tmp_path)
    assert "t10k-images-idx3-ubyte" in str(error.value) and "--data-dir" in str(error.value)
    with pytest.raises(FileNotFoundError, match="no folder"):
        fashion_mnist("test", tmp_path / "absent")
    with pytest.raises(ValueError, match="split must be"):
        fashion_mnist("val", tmp_path)


def test_labels_out_of_range_are_refused(tmp_path):
    write_split(tmp_path, "test", np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8), False)
    with pytest.raises(ValueError, match="label 10"):
        fashion_mnist("test", tmp_path)


def test_images_and_labels_must_match(tmp_path):
    write_split(tmp_path, "test", np.zeros((3, 28, 28), np.uint8), np.array([3, 1], np.uint8), False)
    with pytest.raises(ValueError, match="not N 28x28 images and their N labels"):
        fashion_mnist("test", tmp_path)


@pytest.mark.skipif(not os.path.isdir(DEBIAN_DIR) and not os.environ.get("AWNET_REQUIRE_FASHION_MNIST"),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_DIR}); CI installs it")
def test_the_real_files():
    x, y = load_dataset("fashion-mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and torch.equal(y.bincount(), torch.full((10,), 1000))
    assert abs(float(x.mean()) - 0.286) < 0.002 and abs(float(x.std()) - 0.353) < 0.002  # the published values
    x_train, y_train = load_dataset("fashion-mnist", "train")
    assert x_train.shape == (60000, 1, 28, 28) and torch.equal(y_train.bincount(), torch.full((10,), 6000))
