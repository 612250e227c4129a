"""`AdversarialRouter`: AW-Net's router, a feature extractor with Signal Heads and Type Heads.

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430): a shared feature extractor D reads the input; per AW
convolution a Signal Head emits the regulation signal omega (one value per filter and sample), per block a
Type Head predicts p_type = softmax([clean, adversarial]). omega = 2 * sigmoid(z) with the Signal Heads
zero-initialised, so a new router leaves its network static (omega = 1).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .normalize import Normalize
from .signals import NUM_TYPES


class RouterOutput(NamedTuple):
    omegas: list[torch.Tensor]  # per AW convolution, (B, C_out); empty when the router has no Signal Heads
    type_logits: list[torch.Tensor]  # per block, (B, 2): for the type loss
    p_types: list[torch.Tensor]  # per block, (B, 2): softmax of type_logits
    adversarial_score: torch.Tensor  # (B,): the mean over blocks of p_type's adversarial column


class AdversarialRouter(nn.Module):
    """D = two stride-2 conv3x3-BN-ReLU, then global average pool: a `width`-vector per sample.

    Args:
        in_channels: channels of the input images.
        conv_channels: C_out of each AW convolution, in the order of their Signal Heads.
        num_blocks: number of blocks, one Type Head each.
        width: size of D's feature vector.
        omega: build the Signal Heads; without them the router only types the input (two-bank AW-Nets).
        mean, std: the network's input normalisation, applied before D (None: D reads the raw input).
    """

    def __init__(
        self,
        in_channels: int,
        conv_channels: Sequence[int],
        num_blocks: int,
        width: int = 64,
        omega: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        factory = {"device": device, "dtype": dtype}
        self.conv_channels, self.num_blocks, self.width, self.omega = tuple(conv_channels), num_blocks, width, omega
        self.normalize = Normalize(mean, std, **factory) if mean is not None else nn.Identity()
        hidden = width // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1, bias=False, **factory),
            nn.BatchNorm2d(hidden, **factory),
            nn.ReLU(),
            nn.Conv2d(hidden, width, 3, stride=2, padding=1, bias=False, **factory),
            nn.BatchNorm2d(width, **factory),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.signal_heads = nn.ModuleList(
            nn.Linear(width, channels, **factory) for channels in (self.conv_channels if omega else ()))
        self.type_heads = nn.ModuleList(nn.Linear(width, NUM_TYPES, **factory) for _ in range(num_blocks))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for head in self.signal_heads:  # z = 0, omega = 2 * sigmoid(0) = 1 exactly
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        features = self.features(self.normalize(x))
        omegas = [2 * torch.sigmoid(head(features)) for head in self.signal_heads]
        type_logits = [head(features) for head in self.type_heads]
        p_types = [logits.softmax(dim=1) for logits in type_logits]
        adversarial_score = torch.stack([p[:, 1] for p in p_types]).mean(dim=0)
        return RouterOutput(omegas, type_logits, p_types, adversarial_score)
