"""`AdversarialRouter`: AW-Net's router, a feature extractor with Signal Heads and Type Heads.

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430): a shared feature extractor D reads the input; per AW
convolution a Signal Head emits the regulation signal omega (one value per filter and sample), per block a
Type Head predicts p_type = softmax([clean, adversarial]). omega = 2 * sigmoid(z) with the Signal Heads
zero-initialised, so a new router leaves its network static (omega = 1).

Every head reads the same feature vector, so all Signal Heads and Type Heads are one Linear, `heads`
(DESIGN.md section 3: a step's cost is its number of kernels): its first sum(C_out) rows are the Signal
Heads (row block i the Signal Head of convolution i), the 2 x blocks rows after them the Type Heads (rows
2j, 2j + 1 of those the Type Head of block j); `signal_heads` and `type_heads` are views of those rows. State
dicts of the older layouts load too (`fuse_head_layouts`): one Linear per head, and one Linear for the Signal
Heads and one for the Type Heads.
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


class HeadRows(NamedTuple):
    """Rows of the fused `heads` Linear: views of its weight and bias (writing them writes the heads)."""
    weight: torch.Tensor
    bias: torch.Tensor


def fuse_head_layouts(state_dict: dict, prefix: str) -> str | None:
    """Rewrite, in place, a router state dict of an older layout into the fused `<prefix>heads`: one Linear per
    head (`<prefix>signal_heads.<i>.weight`, ...: "per head"), or one Linear for the Signal Heads and one for
    the Type Heads (`<prefix>signal_heads.weight`, `<prefix>type_heads.weight`: "per kind"). Returns the older
    layout it held, if any."""
    found = None
    for heads in ("signal_heads", "type_heads"):  # one Linear per head -> one per kind
        for param in ("weight", "bias"):
            pattern = re.compile(re.escape(f"{prefix}{heads}.") + r"(\d+)\." + param)
            parts = sorted((int(m.group(1)), key) for key in state_dict if (m := pattern.fullmatch(key)))
            if not parts:
                continue
            held = [i for i, _ in parts]
            if held != list(range(len(parts))):
                raise ValueError(f"{prefix}{heads}: the per-head state dict misses heads (it holds {held})")
            state_dict[f"{prefix}{heads}.{param}"] = torch.cat([state_dict.pop(key) for _, key in parts])
            found = "per head"
    for param in ("weight", "bias"):  # one Linear per kind -> one for both, the Signal Heads first
        kinds = [f"{prefix}{heads}.{param}" for heads in ("signal_heads", "type_heads")]
        if kinds[1] in state_dict:
            state_dict[f"{prefix}heads.{param}"] = torch.cat([state_dict.pop(k) for k in kinds if k in state_dict])
            found = found or "per kind"
    return found


def _load_older_layouts(state_dict: dict, prefix: str, *args) -> None:
    fuse_head_layouts(state_dict, prefix)


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
        self.signal_size = sum(self.conv_channels) if omega else 0  # rows of `heads` that are Signal Heads
        self.heads = nn.Linear(width, self.signal_size + NUM_TYPES * num_blocks, **factory)
        self._register_load_state_dict_pre_hook(_load_older_layouts)
        self.reset_parameters()

    @property
    def signal_heads(self) -> HeadRows | None:
        """The Signal Heads' rows of `heads`; None without them."""
        rows = slice(0, self.signal_size)
        return HeadRows(self.heads.weight[rows], self.heads.bias[rows]) if self.omega else None

    @property
    def type_heads(self) -> HeadRows:
        """The Type Heads' rows of `heads`."""
        rows = slice(self.signal_size, None)
        return HeadRows(self.heads.weight[rows], self.heads.bias[rows])

    def reset_parameters(self) -> None:
        for module in self.features.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        # nn.Linear's initialisation head by head, Signal Heads first: a seed gives the router it gave when
        # every head was its own Linear.
        bound = 1 / math.sqrt(self.width)
        sizes = (self.conv_channels if self.omega else ()) + (NUM_TYPES,) * self.num_blocks
        with torch.no_grad():
            for weight, bias in zip(self.heads.weight.split(sizes), self.heads.bias.split(sizes)):
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                nn.init.uniform_(bias, -bound, bound)
            if self.omega:  # z = 0, omega = 2 * sigmoid(0) = 1 exactly
                self.heads.weight[:self.signal_size].zero_()
                self.heads.bias[:self.signal_size].zero_()

    def forward(self, x: torch.Tensor) -> RouterOutput:
        heads = self.heads(self.features(self.normalize(x)))
        signal = None
        if self.omega:  # one split: its backward is one concatenation
            z, heads = heads.split([self.signal_size, heads.shape[1] - self.signal_size], dim=1)
            signal = OMEGA_SCALE * torch.sigmoid(z)
        type_logits = heads.view(heads.shape[0], self.num_blocks, NUM_TYPES)
        return RouterOutput(signal, type_logits, type_logits.softmax(dim=2))
