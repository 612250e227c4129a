"""CIFAR-10 and CIFAR-100 from a local folder in the standard python-pickle layout (nothing is downloaded).

`data_dir` holds the extracted archive, `cifar-10-batches-py/` (`data_batch_1` .. `data_batch_5`,
`test_batch`) or `cifar-100-python/` (`train`, `test`), or is that folder itself. The pickles are the
dataset's own format; they are read with `encoding="bytes"`, as the dataset's authors document, by an
unpickler that admits only what the official batches hold (dicts, lists, bytes, str, ints and numpy arrays):
a planted batch file cannot run code, and a malformed one is refused with a ValueError naming it.
"""
from __future__ import annotations

import codecs
import os
import pickle
from typing import Any

import numpy as np
import torch
from torch import Tensor

try:
    from numpy._core import multiarray, numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray, numeric

LAYOUT = {  # dataset -> (folder, train files, test files, label key, number of classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}
IMAGE_BYTES = 3 * 32 * 32

# The only globals a batch may name: what numpy needs to rebuild an array (under the module names of numpy 1
# and 2, pickle protocols 2 to 5), and what Python 3 writes for bytes at protocol 2.
_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): multiarray._reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): numeric._frombuffer for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR batch holds")
        return _GLOBALS[module, name]


def _read_batch(path: str, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch file; ValueError naming the file
    if it is not a CIFAR batch."""
    with open(path, "rb") as f:
        try:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        except Exception as error:  # a malformed pickle raises almost anything
            raise ValueError(f"{path} is not a CIFAR batch file: {type(error).__name__}: {error}") from error
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise ValueError(f"{path} is not a CIFAR batch file: expected a dict with {b'data'!r} and {label_key!r}")
    data, labels = batch[b"data"], batch[label_key]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == IMAGE_BYTES):
        raise ValueError(f"{path}: {b'data'!r} must be a uint8 array of shape (N, {IMAGE_BYTES}), got "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        labels = labels.tolist()
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(type(label) is int and 0 <= label < num_classes for label in labels)):
        raise ValueError(f"{path}: {label_key!r} must hold {len(data)} int labels in [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), np.array(labels, dtype=np.int64)


def _folder(name: str, data_dir: str | os.PathLike | None) -> str:
    folder, train_files, _, _, _ = LAYOUT[name]
    if data_dir is None:
        raise FileNotFoundError(f"{name} is read from a local copy and never downloaded: pass --data-dir DIR "
                                f"(data_dir=) with DIR/{folder}/ in the python-pickle layout")
    for candidate in (os.path.join(data_dir, folder), os.fspath(data_dir)):
        if os.path.isfile(os.path.join(candidate, train_files[0])):
            return candidate
    raise FileNotFoundError(f"no {name} under {data_dir!r}: expected {os.path.join(data_dir, folder)}/ holding "
                            f"{', '.join(LAYOUT[name][1] + LAYOUT[name][2])} (the python-pickle layout)")


def cifar(name: str, split: str = "test", data_dir: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) float32 in [0, 1] and labels (N,) int64 of CIFAR-10 or CIFAR-100."""
    if name not in LAYOUT:
        raise ValueError(f"name must be one of {sorted(LAYOUT)}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = _folder(name, data_dir)
    _, train_files, test_files, label_key, num_classes = LAYOUT[name]
    images, labels = [], []
    for file in train_files if split == "train" else test_files:
        batch_images, batch_labels = _read_batch(os.path.join(folder, file), label_key, num_classes)
        images.append(batch_images)
        labels.append(batch_labels)
    x = torch.from_numpy(np.concatenate(images).astype(np.float32) / 255.0)
    return x, torch.from_numpy(np.concatenate(labels))
