"""`mix_batch_norm`: K batch norms mixed per sample (MixBN, DESIGN.md section 2)."""
from __future__ import annotations

import torch

from . import _backend, _validate, reference

if _backend.HAS_TRITON:
    from .triton.mix_batch_norm import mix_batch_norm_triton


def mix_batch_norm(
    x: torch.Tensor,
    coeff: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    prescale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y[b] = sum_k coeff[b,k] * BN_k(x[b])`` with per-bank parameters of shape (K, C).

    In training, bank k normalises with the coeff[:, k]-weighted batch statistics over (B, H, W) and
    updates its running statistics in place; a bank with zero total weight keeps (and normalises with)
    its running statistics. In eval the running statistics are used. A one-hot coeff selects a BN per
    sample (MixBN in training, routed by the true type); a soft coeff mixes them (p_type at test time).

    prescale (B, C), if given, scales x per (sample, channel) first: ``BN_k(prescale[b, c] * x[b, c])``, the
    regulation signal omega of the AW convolution before it, folded in here. In eval it costs nothing (the
    per-(sample, channel) map absorbs it, forward and backward); in training the batch statistics are of the
    scaled x, which the C++ and Triton backends compute as a separate product.
    """
    _validate.mix_batch_norm_args(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps,
                                  prescale)
    momentum, eps = float(momentum), float(eps)
    backend = _backend.resolve(x)
    if backend == "triton":
        y, _, _, new_mean, new_var = mix_batch_norm_triton(
            x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale)
        if training:
            with torch.no_grad():
                running_mean.copy_(new_mean)
                running_var.copy_(new_var)
        return y
    if backend in ("cpp", "cuda"):  # the C++ extension, registered for both devices
        return torch.ops.awnet.mix_batch_norm(
            x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale)[0]
    return reference.mix_batch_norm(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps,
                                    prescale)
