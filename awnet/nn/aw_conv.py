"""`AWConv2d`: a convolution whose filters vary per sample (AW-Net's weight-varied filters).

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430) scales every filter of a convolution per sample by
the regulation signal omega of its Signal Head: ``W_b[o] = omega[b, o] * W[o]``. With two banks (clean and
adversarial) the filters are also blended per sample by the type: ``W_b[o] = sum_k mix[b, k] omega[b, o] W_k[o]``.
Both are one call of `awkernels.aw_conv2d` (DESIGN.md section 2).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import awkernels

from .signals import Signals


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class AWConv2d(nn.Module):
    """Conv2d with K weight banks, blended per sample by ``a[b, k, o] = mix[b, k] * omega[b, o]``.

    Args of forward:
        omega: (B, C_out) regulation signal, or None for 1 (layer-level coefficient).
        mix: (B, K) bank coefficients; required when K > 1, ignored when K = 1.
    Inside an `AWNet` the coefficient comes from the router through the shared `Signals` (omega from this
    layer's Signal Head, mix from its block's p_type or the forced route) when forward gets neither.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        banks: int = 1,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if banks < 1:
            raise ValueError(f"banks must be >= 1, got {banks}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.banks, self.groups = in_channels, out_channels, banks, groups
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(torch.empty(banks, out_channels, in_channels // groups, *self.kernel_size,
                                               **factory))
        self.bias = nn.Parameter(torch.empty(banks, out_channels, **factory)) if bias else None
        # Set by AWNet: where this layer's signals are, which Signal Head / Type Head feed it, and whether the
        # MixBN after it applies its omega (`awnet.nn.awnet.omega_folds`).
        self.signals: Signals | None = None
        self.conv_index = 0
        self.block_index = 0
        self.folded = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialisation, bank by bank."""
        fan_in = self.weight[0].numel() // self.out_channels
        for bank in self.weight:
            nn.init.kaiming_uniform_(bank, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, banks: int = 1) -> AWConv2d:
        """An AWConv2d whose every bank starts as a copy of `conv`'s weights."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"AWConv2d pads with zeros; this Conv2d has padding_mode={conv.padding_mode!r}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, _int_padding(conv),
                    conv.dilation, conv.groups, conv.bias is not None, banks,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight.unsqueeze(0).expand_as(layer.weight))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.unsqueeze(0).expand_as(layer.bias))
        return layer

    def coeff(self, x: torch.Tensor, omega: torch.Tensor | None, mix: torch.Tensor | None) -> torch.Tensor:
        """The aw_conv2d coefficient: (B, K, C_out) with omega, (B, K) without; in x's dtype."""
        if self.banks == 1:  # one bank: the type has nothing to blend
            coeff = x.new_ones(x.shape[0], 1) if omega is None else omega.unsqueeze(1)
        elif mix is None:
            raise ValueError(f"a {self.banks}-bank AWConv2d needs mix, the (B, {self.banks}) bank coefficients")
        else:
            coeff = mix if omega is None else mix.unsqueeze(2) * omega.unsqueeze(1)
        return coeff.to(x.dtype)

    def forward(self, x: torch.Tensor, omega: torch.Tensor | None = None,
                mix: torch.Tensor | None = None) -> torch.Tensor:
        if omega is None and mix is None and self.signals is not None:
            if self.folded and self.signals.folding:  # the MixBN after it scales by omega: the static convolution
                return F.conv2d(x, self.weight[0], None, self.stride, self.padding, self.dilation, self.groups)
            coeff = self.signals.conv_coeff(self.conv_index)  # made for every layer at once, in its dtype
        else:
            coeff = self.coeff(x, omega, mix)
        return awkernels.aw_conv2d(x, self.weight, coeff, self.bias, self.stride, self.padding, self.dilation,
                                   self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, banks={self.banks}")


def _int_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Conv2d's padding as ints ('valid' is 0; 'same' when it is symmetric)."""
    if not isinstance(conv.padding, str):
        return conv.padding
    if conv.padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if any(t % 2 for t in total):
        raise ValueError(f"padding='same' with kernel {conv.kernel_size} and dilation {conv.dilation} pads "
                         "asymmetrically, which AWConv2d does not support")
    return (total[0] // 2, total[1] // 2)
