"""Triton kernels for mix_batch_norm: one reduction pass and one affine pass, forward and backward.

Every quantity MixBN needs from the (B, C, H, W) tensors is a per-(sample, channel) reduction (the plane's
mean and centred second moment, the sums of dy and dy * x), and both the output and dx are per-(sample,
channel) affine maps: y = A x + B0 and dx = A dy + C1 x + C0. The (K, C) algebra between the passes is
small and stays in torch (the same formulas as csrc/mix_batch_norm.cpp). Programs tile (sample, channels)
x pixels and walk the pixels, so both NCHW and channels_last read along their contiguous axis.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _contract
from .config import PlaneConfig, acc_dtype, acc_torch_dtype, pick


@triton.jit
def _plane_sums_kernel(
    x_ptr, dy_ptr, mean_ptr, m2_ptr, dy_sum_ptr, dy_x_sum_ptr,
    C, W, pixels, sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw,
    MOMENTS: tl.constexpr, GRAD_SUMS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Per (b, c): the mean and centred second moment of x (merged block by block, Chan et al.), and
    sum_p dy and sum_p dy * x."""
    b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mean = tl.zeros((BLOCK_C,), dtype=ACC)
    m2 = tl.zeros((BLOCK_C,), dtype=ACC)
    dy_sum = tl.zeros((BLOCK_C,), dtype=ACC)
    dy_x_sum = tl.zeros((BLOCK_C,), dtype=ACC)
    for p0 in range(0, pixels, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask = mask_c[:, None] & (offs_p < pixels)[None, :]
        h, w = offs_p // W, offs_p % W
        x = tl.load(x_ptr + b * sxb + offs_c[:, None] * sxc + (h * sxh + w * sxw)[None, :], mask=mask,
                    other=0.0).to(ACC)
        if MOMENTS:
            n_seen = p0 * 1.0
            n_block = tl.minimum(pixels - p0, BLOCK_P).to(ACC)
            block_mean = tl.sum(x, axis=1) / n_block
            centred = tl.where(mask, x - block_mean[:, None], 0.0)
            delta = block_mean - mean
            total = n_seen + n_block
            mean += delta * (n_block / total)
            m2 += tl.sum(centred * centred, axis=1) + delta * delta * (n_seen * n_block / total)
        if GRAD_SUMS:
            g = tl.load(dy_ptr + b * sgb + offs_c[:, None] * sgc + (h * sgh + w * sgw)[None, :], mask=mask,
                        other=0.0).to(ACC)
            dy_sum += tl.sum(g, axis=1)
            dy_x_sum += tl.sum(g * x, axis=1)
    out = b * C + offs_c
    if MOMENTS:
        tl.store(mean_ptr + out, mean, mask=mask_c)
        tl.store(m2_ptr + out, m2, mask=mask_c)
    if GRAD_SUMS:
        tl.store(dy_sum_ptr + out, dy_sum, mask=mask_c)
        tl.store(dy_x_sum_ptr + out, dy_x_sum, mask=mask_c)


@triton.jit
def _plane_affine_kernel(
    u_ptr, v_ptr, out_ptr, scale_u_ptr, scale_v_ptr, shift_ptr,
    C, W, pixels, sub, suc, suh, suw, svb, svc, svh, svw, sob, soc, soh, sow,
    HAS_V: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """out[b,c,p] = scale_u[b,c] * u + scale_v[b,c] * v + shift[b,c]."""
    b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_c = offs_c < C
    mask = mask_c[:, None] & (offs_p < pixels)[None, :]
    h, w = offs_p // W, offs_p % W
    per_plane = b * C + offs_c
    out = tl.load(shift_ptr + per_plane, mask=mask_c, other=0.0)[:, None] + tl.load(
        scale_u_ptr + per_plane, mask=mask_c, other=0.0)[:, None] * tl.load(
        u_ptr + b * sub + offs_c[:, None] * suc + (h * suh + w * suw)[None, :], mask=mask, other=0.0).to(ACC)
    if HAS_V:
        out += tl.load(scale_v_ptr + per_plane, mask=mask_c, other=0.0)[:, None] * tl.load(
            v_ptr + b * svb + offs_c[:, None] * svc + (h * svh + w * svw)[None, :], mask=mask, other=0.0).to(ACC)
    tl.store(out_ptr + b * sob + offs_c[:, None] * soc + (h * soh + w * sow)[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask)


def _layout_key(*tensors) -> tuple:
    return tuple((t.dtype, tuple(t.shape), t.stride()) for t in tensors if t is not None)


def _plane_sums(x, grad_y=None, moments=True, config: PlaneConfig | None = None):
    """((mean, var) of each (sample, channel) plane or None, (sum dy, sum dy * x) or None), shapes (B, C)."""
    batch, channels, _, width = x.shape
    pixels = x.shape[2] * width
    acc = acc_torch_dtype(x.dtype)
    outs = [x.new_empty((batch, channels), dtype=acc) for _ in range(4)]
    if batch and pixels:
        if config is None:
            config = pick("mixbn.sums", (*_layout_key(x, grad_y), moments),
                          lambda cfg: _plane_sums(x, grad_y, moments, cfg))
        g = grad_y if grad_y is not None else x
        _plane_sums_kernel[(batch, triton.cdiv(channels, config.block_c))](
            x, g, *outs, channels, width, pixels, *x.stride(), *g.stride(),
            MOMENTS=moments, GRAD_SUMS=grad_y is not None, ACC=acc_dtype(x.dtype), **config.kwargs())
    mean, m2, dy_sum, dy_x_sum = outs
    return ((mean, m2 / pixels) if moments else None), ((dy_sum, dy_x_sum) if grad_y is not None else None)


def _plane_affine(u, scale_u, shift, v=None, scale_v=None, config: PlaneConfig | None = None):
    """scale_u * u + scale_v * v + shift per (sample, channel), laid out like v (x) when given."""
    batch, channels, _, width = u.shape
    pixels = u.shape[2] * width
    out = torch.empty_like(v if v is not None else u)
    if batch and pixels:
        if config is None:
            config = pick("mixbn.affine", _layout_key(u, v),
                          lambda cfg: _plane_affine(u, scale_u, shift, v, scale_v, cfg))
        v_or_u = v if v is not None else u
        grid = (batch, triton.cdiv(channels, config.block_c), triton.cdiv(pixels, config.block_p))
        _plane_affine_kernel[grid](
            u, v_or_u, out, scale_u.contiguous(), (scale_v if v is not None else scale_u).contiguous(),
            shift.contiguous(), channels, width, pixels, *u.stride(), *v_or_u.stride(), *out.stride(),
            HAS_V=v is not None, ACC=acc_dtype(u.dtype), **config.kwargs())
    return out


def _centred_second_moment(moments, mu, pixels):
    """sum_p (x[b,c,p] - mu[k,c])^2 as (B, K, C), by the parallel-axis rule."""
    mean, var = moments
    shift = mean[:, None] - mu[None]
    return (var[:, None] + shift * shift) * pixels


def _prescaled(moments, s):
    """The per-plane mean and variance of s * x from those of x."""
    return (moments[0] * s, moments[1] * s * s) if s is not None and moments is not None else moments


def forward(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale=None):
    """(y, mean, invstd, new running mean, new running var): mean and invstd are the (K, C) statistics
    each bank normalised with. A prescale s is folded into the maps: x's plane moments scale by s and s^2,
    and y = (A s) x + B0."""
    acc = acc_torch_dtype(x.dtype)
    pixels = x.shape[2] * x.shape[3]
    w = coeff.to(acc)
    s = prescale.to(acc) if prescale is not None else None
    mean, var = running_mean.to(acc, copy=True), running_var.to(acc, copy=True)
    if training:
        moments = _prescaled(_plane_sums(x)[0], s)
        count = w.sum(0) * pixels
        used = (count != 0)[:, None]
        safe = torch.where(count != 0, count, torch.ones_like(count))[:, None]
        batch_mean = w.t() @ moments[0] * pixels / safe
        batch_var = (w[:, :, None] * _centred_second_moment(moments, batch_mean, pixels)).sum(0) / safe
        unbias = torch.where(count > 1, count / (count - 1), torch.ones_like(count))[:, None]
        running_mean = torch.where(used, mean * (1 - momentum) + batch_mean * momentum, mean)
        running_var = torch.where(used, var * (1 - momentum) + batch_var * unbias * momentum, var)
        mean, var = torch.where(used, batch_mean, mean), torch.where(used, batch_var, var)
    invstd = (var + eps).rsqrt()
    scale = weight.to(acc) * invstd
    shift = bias.to(acc) - mean * scale
    stats = (running_mean.to(weight.dtype, copy=True), running_var.to(weight.dtype, copy=True))
    scale_x = w @ scale
    return _plane_affine(x, scale_x * s if s is not None else scale_x, w @ shift), mean, invstd, *stats


def backward(grad_y, x, coeff, weight, bias, mean, invstd, training, eps, output_mask, prescale=None):
    """(dx, dcoeff, dweight, dbias, dprescale); the gradients not asked for by output_mask (dprescale: without
    a prescale) are None. With a prescale s the formulas are those of z = s x, whose dz = A dy + C1 z + C0
    gives dx = s dz and dprescale = sum_p dz x = A sum(dy x) + C1 s sum(x^2) + C0 sum(x)."""
    need_x, need_coeff, need_weight, need_bias = output_mask
    acc = acc_torch_dtype(x.dtype)
    pixels = x.shape[2] * x.shape[3]
    w, gamma, beta = coeff.to(acc), weight.to(acc), bias.to(acc)
    s = prescale.to(acc) if prescale is not None else None
    moments_x, (dy_sum, dy_x_sum_x) = _plane_sums(x, grad_y, moments=training and (need_coeff or s is not None))
    moments, dy_x_sum = (_prescaled(moments_x, s), dy_x_sum_x * s) if s is not None else (moments_x, dy_x_sum_x)
    dy_xhat = invstd[None] * (dy_x_sum[:, None] - mean[None] * dy_sum[:, None])  # sum_p dy * xhat_k
    dgamma = (w[:, :, None] * dy_xhat).sum(0)
    dbeta = w.t() @ dy_sum
    dcoeff = (gamma[None] * dy_xhat + beta[None] * dy_sum[:, None]).sum(2)
    scale_x = shift = torch.zeros_like(dy_sum)
    if training:
        # Banks on batch statistics also pass gradient through their mean and variance.
        count = w.sum(0) * pixels
        per_count = torch.where(count != 0, 1 / torch.where(count != 0, count, 1), 0)[:, None]
        s1, s2 = gamma * dbeta, gamma * dgamma
        scale_x = -(w @ (per_count * invstd * invstd * s2))
        shift = -(w @ (per_count * invstd * (s1 - mean * invstd * s2)))
        if need_coeff:
            dmean, dvar = -invstd * s1, -0.5 * invstd * invstd * s2
            var = invstd.pow(-2) - eps
            dmean_dw = (moments[0][:, None] - mean[None]) * pixels
            dvar_dw = _centred_second_moment(moments, mean, pixels) - var[None] * pixels
            dcoeff = dcoeff + (per_count[None] * (dmean[None] * dmean_dw + dvar[None] * dvar_dw)).sum(2)
    scale_dy = w @ (gamma * invstd)
    dprescale = None
    if s is not None:
        dprescale = scale_dy * dy_x_sum_x
        if training:
            sum_x = moments_x[0] * pixels
            dprescale = dprescale + scale_x * s * (moments_x[1] * pixels + moments_x[0] * sum_x) + shift * sum_x
        scale_dy, scale_x, shift = scale_dy * s, scale_x * s * s, shift * s
    dx = _plane_affine(grad_y, scale_dy, shift, x, scale_x) if need_x else None
    return (dx, dcoeff.to(coeff.dtype) if need_coeff else None, dgamma.to(weight.dtype) if need_weight else None,
            dbeta.to(bias.dtype) if need_bias else None, dprescale.to(prescale.dtype) if s is not None else None)


# The op: `awnet::mix_batch_norm_triton` and its backward, the contract's schemas (awkernels/_contract.py, which
# also gives their fakes and autograd). Functional: it returns the new running statistics in place of the
# per-sample moments, and the caller writes them into the buffers.
def _backward_op(grad_y, mean, invstd, sample_mean, sample_var, x, coeff, weight, bias, training, eps, output_mask,
                 prescale=None):
    grads = backward(grad_y, x, coeff, weight, bias, mean, invstd, training, eps, output_mask, prescale)
    # Ops return tensors: an empty one stands for a gradient not asked for.
    return tuple(g if g is not None else x.new_empty(0) for g in grads)


torch.library.impl("awnet::mix_batch_norm_triton", ("cpu", "cuda"), forward, lib=_contract.LIBRARY)
torch.library.impl("awnet::mix_batch_norm_triton_backward", ("cpu", "cuda"), _backward_op, lib=_contract.LIBRARY)
_contract.register_autograd("mix_batch_norm_triton")
mix_batch_norm_triton = torch.ops.awnet.mix_batch_norm_triton
