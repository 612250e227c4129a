"""Plain-PyTorch reference backend: the oracle every other backend is tested against.

The convolution is what users run today (timm's CondConv2d): blend each sample's weights, then one grouped
convolution with groups = B * groups. Gradients come from autograd, never from hand-written formulas, so the
reference is independent of the backward passes it checks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _filter_coeff(coeff: torch.Tensor, out_channels: int) -> torch.Tensor:
    """(B, K) or (B, K, C_out) -> (B, K, C_out)."""
    if coeff.dim() == 2:
        return coeff.unsqueeze(-1).expand(*coeff.shape, out_channels)
    return coeff


def aw_conv2d(x, weight, coeff, bias, stride, padding, dilation, groups):
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[1]
    a = _filter_coeff(coeff, out_channels)
    per_sample = torch.einsum("bko,koihw->boihw", a, weight)
    if batch == 0:
        # groups = 0 is not a convolution; the empty batch still needs the output shape and a graph
        # that reaches every input.
        y = F.conv2d(x, per_sample.sum(0), None, stride, padding, dilation, groups)
    else:
        y = F.conv2d(
            x.reshape(1, batch * in_channels, height, width),
            per_sample.reshape(batch * out_channels, *weight.shape[2:]),
            None, stride, padding, dilation, groups * batch,
        )
        y = y.view(batch, out_channels, *y.shape[2:])
    if bias is not None:
        y = y + torch.einsum("bko,ko->bo", a, bias)[:, :, None, None]
    return y


def mix_batch_norm(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale=None):
    acc = torch.promote_types(x.dtype, torch.float32)
    xa, w = x.to(acc), coeff.to(acc)
    if prescale is not None:
        xa = xa * prescale.to(acc)[:, :, None, None]
    gamma, beta = weight.to(acc), bias.to(acc)
    if training:
        count = w.sum(0) * (x.shape[2] * x.shape[3])  # (K,)
        used = count != 0
        safe = torch.where(used, count, torch.ones_like(count))  # keeps 0/0 out of the graph
        batch_mean = torch.einsum("bk,bchw->kc", w, xa) / safe[:, None]
        centred = xa.unsqueeze(1) - batch_mean[None, :, :, None, None]  # (B, K, C, H, W)
        batch_var = torch.einsum("bk,bkchw->kc", w, centred * centred) / safe[:, None]
        mean = torch.where(used[:, None], batch_mean, running_mean.to(acc))
        var = torch.where(used[:, None], batch_var, running_var.to(acc))
        with torch.no_grad():
            unbias = torch.where(count > 1, count / (count - 1), torch.ones_like(count))[:, None]
            new_mean = (1 - momentum) * running_mean + momentum * batch_mean
            new_var = (1 - momentum) * running_var + momentum * batch_var * unbias
            running_mean.copy_(torch.where(used[:, None], new_mean, running_mean))
            running_var.copy_(torch.where(used[:, None], new_var, running_var))
    else:
        mean, var = running_mean.to(acc), running_var.to(acc)
    normed = (xa.unsqueeze(1) - mean[None, :, :, None, None]) * torch.rsqrt(var + eps)[None, :, :, None, None]
    per_bank = normed * gamma[None, :, :, None, None] + beta[None, :, :, None, None]
    y = torch.einsum("bk,bkchw->bchw", w, per_bank)
    return y.to(x.dtype)
