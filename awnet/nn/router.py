"""`AdversarialRouter`: AW-Net's router, a feature extractor with Signal Heads and Type Heads.

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430): a shared feature extractor D reads the input; per AW
convolution a Signal Head emits the regulation signal omega (one value per filter and sample), per block a
Type Head predicts p_type = softmax([clean, adversarial]). omega = 2 * sigmoid(z) with the Signal Heads
zero-initialised, so a new router leaves its network static (omega = 1).

Every head reads the same feature vector, so all Signal Heads are one Linear into the concatenated channels
and all Type Heads one Linear into 2 x blocks (DESIGN.md section 3: a step's cost is its number of kernels):
row block i of `signal_heads` is the Signal Head of convolution i, rows 2j, 2j + 1 of `type_heads` the Type
Head of block j. A state dict with one Linear per head (`signal_heads.<i>.weight`, the layout before the
heads were fused) loads too: `fuse_per_head_layout` concatenates its heads.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .normalize import Normalize
from .signals import NUM_TYPES

OMEGA_SCALE = 2.0  # omega = OMEGA_SCALE * sigmoid(z): in (0, 2), and 1 at z = 0
# The router's decision: an input is adversarial when its adversarial_score (the mean p_type's adversarial
# column) is at least this.
ADVERSARIAL_THRESHOLD = 0.5


class RouterOutput(NamedTuple):
    signal: torch.Tensor | None  # (B, sum of C_out): every convolution's omega; None without Signal Heads
    type_logits: torch.Tensor  # (B, blocks, 2): for the type loss
    p_type: torch.Tensor  # (B, blocks, 2): softmax of type_logits over the last dimension

    @property
    def adversarial_score(self) -> torch.Tensor:
        """(B,): the mean over blocks of p_type's adversarial column (computed when asked: most forwards,
        those of a PGD attack and of the loss pass, never read it)."""
        return self.p_type[:, :, 1].mean(dim=1)


def fuse_per_head_layout(state_dict: dict, prefix: str) -> bool:
    """Concatenate, in place, a router's per-head Linears (`<prefix>signal_heads.<i>.weight`, ...) into the
    fused heads; returns whether `state_dict` held any."""
    found = False
    for heads in ("signal_heads", "type_heads"):
        for param in ("weight", "bias"):
            pattern = re.compile(re.escape(f"{prefix}{heads}.") + r"(\d+)\." + param)
            parts = sorted((int(m.group(1)), key) for key in state_dict if (m := pattern.fullmatch(key)))
            if not parts:
                continue
            held = [i for i, _ in parts]
            if held != list(range(len(parts))):
                raise ValueError(f"{prefix}{heads}: the per-head state dict misses heads (it holds {held})")
            state_dict[f"{prefix}{heads}.{param}"] = torch.cat([state_dict.pop(key) for _, key in parts])
            found = True
    return found


def _load_per_head_layout(state_dict: dict, prefix: str, *args) -> None:
    fuse_per_head_layout(state_dict, prefix)


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
        self.signal_heads = nn.Linear(width, sum(self.conv_channels), **factory) if omega else None
        self.type_heads = nn.Linear(width, NUM_TYPES * num_blocks, **factory)
        self._register_load_state_dict_pre_hook(_load_per_head_layout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.features.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        # nn.Linear's initialisation head by head, in the order of the per-head layout: a seed gives the
        # router it gave when every head was its own Linear.
        bound = 1 / math.sqrt(self.width)
        type_sizes = (NUM_TYPES,) * self.num_blocks
        with torch.no_grad():
            for heads, sizes in ((self.signal_heads, self.conv_channels), (self.type_heads, type_sizes)):
                if heads is None:
                    continue
                for weight, bias in zip(heads.weight.split(sizes), heads.bias.split(sizes)):
                    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                    nn.init.uniform_(bias, -bound, bound)
        if self.signal_heads is not None:  # z = 0, omega = 2 * sigmoid(0) = 1 exactly
            nn.init.zeros_(self.signal_heads.weight)
            nn.init.zeros_(self.signal_heads.bias)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        features = self.features(self.normalize(x))
        signal = None if self.signal_heads is None else OMEGA_SCALE * torch.sigmoid(self.signal_heads(features))
        type_logits = self.type_heads(features).view(-1, self.num_blocks, NUM_TYPES)
        return RouterOutput(signal, type_logits, type_logits.softmax(dim=2))
