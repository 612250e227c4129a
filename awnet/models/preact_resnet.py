"""PreAct ResNet-18 for 32x32 images, as in the robust-overfitting baselines (Rice et al., ICML 2020).

He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016, https://arxiv.org/abs/1603.05027; one of
the static networks AW-Net (Wei, Zhao, Li, TPAMI 2024, https://arxiv.org/abs/2306.03430) converts. Each
PreActBlock is one AW-Net block after `awnet.convert`; the stem conv and the final BN are another.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import CIFAR10_MEAN, CIFAR10_STD, Normalize
from ._layers import conv1x1, conv3x3, init_weights


class PreActBlock(nn.Module):
    """BN - ReLU - conv3x3 - BN - ReLU - conv3x3; a projecting shortcut reads the first activation."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = conv1x1(in_planes, planes, stride) if stride != 1 or in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def make_stage(in_planes: int, planes: int, count: int, stride: int) -> nn.Sequential:
    """`count` PreActBlocks, the first one changing width and resolution."""
    return nn.Sequential(*(PreActBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                           for i in range(count)))


class PreActResNet(nn.Module):
    def __init__(self, blocks_per_stage: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = conv3x3(3, 64)
        widths = [64 * 2 ** i for i in range(len(blocks_per_stage))]
        self.layers = nn.Sequential(*(
            make_stage(64 if i == 0 else widths[i - 1], widths[i], count, 1 if i == 0 else 2)
            for i, count in enumerate(blocks_per_stage)))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.fc = nn.Linear(widths[-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(self.normalize(x)))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def preact_resnet18(num_classes: int = 10) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes)
