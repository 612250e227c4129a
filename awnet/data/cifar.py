"""CIFAR-10 and CIFAR-100 from a local folder in the standard python-pickle layout (nothing is downloaded).

`data_dir` holds the extracted archive, `cifar-10-batches-py/` (`data_batch_1` .. `data_batch_5`,
`test_batch`) or `cifar-100-python/` (`train`, `test`), or is that folder itself. The pickles are the
dataset's own format; they are read with `encoding="bytes"`, as the dataset's authors document.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch
from torch import Tensor

LAYOUT = {  # dataset -> (folder, train files, test files, label key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def _folder(name: str, data_dir: str | os.PathLike | None) -> str:
    folder, train_files, _, _ = LAYOUT[name]
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
    _, train_files, test_files, label_key = LAYOUT[name]
    images, labels = [], []
    for file in train_files if split == "train" else test_files:
        with open(os.path.join(folder, file), "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(images).astype(np.float32) / 255.0)
    return x, torch.from_numpy(np.concatenate(labels))
