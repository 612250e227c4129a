"""Datasets (DESIGN.md section 6): `mnist5k` (the embedded default), `fashion-mnist` (Debian's package or a
local `data_dir`), `cifar10` / `cifar100` from a local `data_dir`, and `synthetic`. Nothing is downloaded at run time.

`load_dataset(name, split, data_dir)` returns (images in [0, 1], labels) as tensors; `DATASETS` says, per
dataset, its number of classes, the model that fits its images and its usual Linf radius.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .cifar import cifar
from .fashion_mnist import fashion_mnist
from .mnist5k import mnist5k
from .synthetic import synthetic


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    model: str  # the default `awnet.models.build` name for its image size
    eps: float  # the usual Linf radius on [0, 1] images


DATASETS = {
    "mnist5k": DatasetInfo(10, "smallcnn", 0.3),
    # 0.1: where PGD-AT costs clean accuracy without collapsing (README, Fashion-MNIST)
    "fashion-mnist": DatasetInfo(10, "smallcnn", 0.1),
    "cifar10": DatasetInfo(10, "resnet18", 8 / 255),
    "cifar100": DatasetInfo(100, "resnet18", 8 / 255),
    "synthetic": DatasetInfo(10, "smallcnn", 0.3),
}


DATA_DIR_HELP = ("folder holding cifar10 / cifar100 (python-pickle layout) or Fashion-MNIST's idx files (default for "
                 "fashion-mnist: Debian's dataset-fashion-mnist folder)")


def spread(x: Tensor, y: Tensor, n: Optional[int]) -> tuple[Tensor, Tensor]:
    """`n` samples at evenly spaced indices (all when n is None): balanced, since every split here is stored
    sorted by class (mnist5k, fashion-mnist) or shuffled (cifar)."""
    if n is None or n >= len(x):
        return x, y
    index = torch.linspace(0, len(x) - 1, n).round().long()
    return x[index], y[index]


def load_dataset(name: str, split: str = "test", data_dir: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """(images (N, C, H, W) float32 in [0, 1], labels (N,) int64) of `split` ("train" or "test").

    `data_dir` is where cifar10 / cifar100 or fashion-mnist live (see `awnet.data.cifar`,
    `awnet.data.fashion_mnist`); the others ignore it.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    if name == "mnist5k":
        return mnist5k(split)
    if name == "synthetic":
        return synthetic(split)
    if name == "fashion-mnist":
        return fashion_mnist(split, data_dir)
    return cifar(name, split, data_dir)


__all__ = [
    "DATASETS", "DATA_DIR_HELP", "DatasetInfo", "cifar", "fashion_mnist", "load_dataset", "mnist5k", "spread", "synthetic",
]
