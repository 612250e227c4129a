"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT licence) from its four idx files (nothing is downloaded).

The files are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte`, each possibly gzipped (`.gz`), in `data_dir` or, without one, where Debian's
package `dataset-fashion-mnist` puts them. 60,000 training and 10,000 test images of 28x28 grey clothes in
10 classes; the file holds them shuffled. Each split is returned sorted by class, the order within a class
a fixed seeded permutation, so that `n` samples at evenly spaced indices (`awnet.data.spread`, what
`--n-train` and `--n-eval` take) are a balanced random subset, the same on every machine.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
HOW_TO_GET = (f"install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist, into "
              f"{DEBIAN_DIR}) or put the four idx files (.gz or not) of "
              f"https://github.com/zalandoresearch/fashion-mnist into a folder and pass it as --data-dir")
NUM_CLASSES = 10
ORDER_SEED = 0  # the permutation within each class


def read_idx(path: str) -> np.ndarray:
    """The array in an idx file (unsigned bytes only, as the MNIST family stores), gzipped or not;
    ValueError naming the file if it is not one."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError) as error:
        raise ValueError(f"{path} is not an idx file: {error}") from error
    # Magic: two zero bytes, the element type (0x08: unsigned byte), the number of dimensions.
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 4:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {data[:4].hex() or 'missing'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: its header needs {header} bytes, the file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(f"{path} holds {len(data) - header} bytes of data, its header says shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Fashion-MNIST: {name}(.gz) is not in {folder}; {HOW_TO_GET}")


@lru_cache(maxsize=4)
def _split(split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = (_find(folder, name) for name in FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"Fashion-MNIST: {images_path} {images.shape} and {labels_path} {labels.shape} are not "
                         f"N 28x28 images and their N labels")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise ValueError(f"Fashion-MNIST: {labels_path} holds label {labels.max()}, not one of 0..9")
    labels = labels.astype(np.int64)
    shuffled = np.random.default_rng(ORDER_SEED).permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    return images[order], labels[order]


def fashion_mnist(split: str = "test", data_dir: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of `split` ("train" or "test"), sorted
    by class (see the module's docstring)."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = os.fspath(data_dir) if data_dir is not None else DEBIAN_DIR
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Fashion-MNIST: no folder {folder}; {HOW_TO_GET}")
    images, labels = _split(split, os.path.realpath(folder))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return x, torch.from_numpy(labels)
