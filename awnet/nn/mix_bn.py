"""`MixBatchNorm2d`: AW-Net's MixBN, a clean and an adversarial batch norm mixed per sample.

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430): in training the true type selects the BN (each
sample uses the statistics and affine of its type's BN); at test time both run and their outputs are summed,
weighted by the block's p_type. One call of `awkernels.mix_batch_norm` with K = 2 (DESIGN.md section 2).
"""
from __future__ import annotations

import torch
from torch import nn

import awkernels

from .signals import NUM_TYPES, Signals


class MixBatchNorm2d(nn.Module):
    """``y[b] = sum_k mix[b, k] * BN_k(x[b])`` with a clean (k = 0) and an adversarial (k = 1) BN.

    forward's `mix` is (B, 2): a one-hot of the true type in training, p_type (or a forced route) at test
    time. Inside an `AWNet` it comes from the router (the forced route, else the block's p_type, also in
    training when no route is given) when forward gets none. eps and momentum mean what they mean for
    nn.BatchNorm2d; a BN with no sample of its type in a training batch keeps its running statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        shape = (NUM_TYPES, num_features)
        if affine:
            self.weight = nn.Parameter(torch.empty(shape, **factory))
            self.bias = nn.Parameter(torch.empty(shape, **factory))
        else:  # the op always applies an affine map: a fixed identity one
            self.register_buffer("weight", torch.empty(shape, **factory), persistent=False)
            self.register_buffer("bias", torch.empty(shape, **factory), persistent=False)
        self.register_buffer("running_mean", torch.empty(shape, **factory))
        self.register_buffer("running_var", torch.empty(shape, **factory))
        # Set by AWNet: where this layer's mix is, the block whose Type Head gives it, and the folded
        # convolution before it, whose omega it applies (`awnet.nn.awnet.omega_folds`).
        self.signals: Signals | None = None
        self.norm_index = 0
        self.block_index = 0
        self.prescale_conv: int | None = None
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            self.weight.fill_(1)
            self.bias.zero_()

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> MixBatchNorm2d:
        """A MixBatchNorm2d whose clean and adversarial BNs both start as copies of `bn`."""
        if not bn.track_running_stats or bn.momentum is None:
            raise ValueError("MixBatchNorm2d needs a BatchNorm2d with track_running_stats=True and a float "
                             f"momentum (got track_running_stats={bn.track_running_stats}, momentum={bn.momentum})")
        layer = cls(bn.num_features, bn.eps, bn.momentum, bn.affine,
                    device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        with torch.no_grad():
            for mine, theirs in ((layer.running_mean, bn.running_mean), (layer.running_var, bn.running_var)):
                mine.copy_(theirs.expand_as(mine))
            if bn.affine:
                layer.weight.copy_(bn.weight.expand_as(layer.weight))
                layer.bias.copy_(bn.bias.expand_as(layer.bias))
        return layer

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        if mix is None:
            if self.signals is None:
                raise ValueError("MixBatchNorm2d needs mix, the (B, 2) [clean, adversarial] coefficients, "
                                 "unless it belongs to an AWNet")
            mix = self.signals.norm_mix(self.norm_index)
        prescale = None if self.signals is None else self.signals.norm_prescale(self.prescale_conv)
        # Signals made them in the dtype the AW layers compute in: no cast unless this layer's input differs.
        return awkernels.mix_batch_norm(x, mix.to(x.dtype), self.weight, self.bias, self.running_mean,
                                        self.running_var, self.training, self.momentum, self.eps,
                                        None if prescale is None else prescale.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
