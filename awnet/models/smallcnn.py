"""A small CNN for 28x28 grey images (MNIST): three conv-BN-ReLU stages of 32/64/128 channels.

The MNIST-size network used for AW-Net experiments in awnet (Wei, Zhao, Li, TPAMI 2024,
https://arxiv.org/abs/2306.03430); each stage is one AW-Net block after `awnet.convert`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MNIST_MEAN, MNIST_STD, Normalize
from ._layers import conv3x3, init_weights


class ConvStage(nn.Module):
    """conv3x3 - BN - ReLU - pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: nn.Module):
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


class SmallCNN(nn.Module):
    """28x28x1 -> 14x14x32 -> 7x7x64 -> 128 (global average) -> num_classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.stages = nn.Sequential(
            ConvStage(1, 32, nn.MaxPool2d(2)),
            ConvStage(32, 64, nn.MaxPool2d(2)),
            ConvStage(64, 128, nn.AdaptiveAvgPool2d(1)),
        )
        self.fc = nn.Linear(128, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.normalize(x)).flatten(1))


def smallcnn(num_classes: int = 10) -> SmallCNN:
    return SmallCNN(num_classes)
