"""`Normalize`: per-channel input normalisation as a model's first layer.

Models take images in [0, 1] and normalise inside (as RobustBench expects), so attacks work in pixel space.
Part of awnet, an implementation of AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and
Robustness via Weight Distribution of Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of an NCHW batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device=None, dtype=None):
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("mean", torch.tensor(mean, **factory).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, **factory).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={[round(v, 6) for v in self.mean.flatten().tolist()]}, std={[round(v, 6) for v in self.std.flatten().tolist()]}"
