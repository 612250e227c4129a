"""ResNet-18 for 32x32 images, the CIFAR version (3x3 stem, no max-pool).

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, https://arxiv.org/abs/1512.03385;
one of the static networks AW-Net (Wei, Zhao, Li, TPAMI 2024, https://arxiv.org/abs/2306.03430) converts.
Each BasicBlock (with its shortcut) is one AW-Net block after `awnet.convert`; the stem is another.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import CIFAR10_MEAN, CIFAR10_STD, Normalize
from ._layers import conv1x1, conv3x3, init_weights


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = (nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))
                         if needs_projection else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks_per_stage: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for i, count in enumerate(blocks_per_stage):
            planes = 64 * 2 ** i
            strides = [1 if i == 0 else 2] + [1] * (count - 1)
            stages.append(nn.Sequential(*(BasicBlock(p, planes, s) for p, s in
                                          zip([in_planes] + [planes] * (count - 1), strides))))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet18(num_classes: int = 10) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes)
