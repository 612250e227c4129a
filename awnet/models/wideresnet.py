"""WideResNet-34-10 for 32x32 images, as in the TRADES and AWP robustness baselines.

Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016, https://arxiv.org/abs/1605.07146; one of the
static networks AW-Net (Wei, Zhao, Li, TPAMI 2024, https://arxiv.org/abs/2306.03430) converts. Its block is
the pre-activation block (the WRN block without dropout is exactly PreActBlock); each is one AW-Net block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import CIFAR10_MEAN, CIFAR10_STD, Normalize
from ._layers import conv3x3, init_weights
from .preact_resnet import make_stage


class WideResNet(nn.Module):
    """depth = 6n + 4: a 16-channel stem, then three stages of n blocks of 16k, 32k and 64k channels."""

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        count = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = conv3x3(3, 16)
        self.block1 = make_stage(16, widths[0], count, 1)
        self.block2 = make_stage(widths[0], widths[1], count, 2)
        self.block3 = make_stage(widths[1], widths[2], count, 2)
        self.bn = nn.BatchNorm2d(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def wrn34_10(num_classes: int = 10) -> WideResNet:
    return WideResNet(34, 10, num_classes)
