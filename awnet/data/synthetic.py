"""`synthetic`: random images with learnable labels, for benchmarks and smoke tests (no files needed).

Each class has a fixed random template; an image is its class's template plus noise, clipped to [0, 1].
The same seed always gives the same data; the train and test splits are drawn from different streams.
"""
from __future__ import annotations

import torch
from torch import Tensor

SIZES = {"train": 2000, "test": 500}


def synthetic(split: str = "test", shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
              seed: int = 0) -> tuple[Tensor, Tensor]:
    """Images (N, *shape) float32 in [0, 1] and balanced labels (N,) int64; N is 2000 (train) or 500 (test)."""
    if split not in SIZES:
        raise ValueError(f"split must be one of {sorted(SIZES)}, got {split!r}")
    templates = torch.rand((num_classes, *shape), generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + (1 if split == "train" else 2))
    n = SIZES[split]
    y = torch.arange(n) % num_classes
    x = (templates[y] + 0.3 * torch.randn((n, *shape), generator=gen)).clamp(0, 1)
    return x, y
