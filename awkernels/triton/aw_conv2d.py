"""Triton kernels for aw_conv2d's `blend` strategy (DESIGN.md section 3), groups = 1, and the triton backend's
ops, which run the `epilogue` strategy (epilogue.py) where it serves and this one elsewhere.

Three implicit-GEMM kernels, each reading x, dy and the banks through their strides (so NCHW,
channels_last and non-contiguous inputs need no copies):

- forward, blend-in-loop: per (sample, pixel tile, filter tile), acc[o, p] += W_b[o, r] @ im2col(x_b)[r, p]
  with W_b = sum_k a[b,k,o] W_k blended in registers (M = C_out, so the blended tile is the A operand).
  For K = 1 the blend is a per-filter scale, applied to the accumulator in the epilogue instead.
- dx: the same with the transposed banks, acc[c, q] += W_b^T[c, (o,i,j)] @ dy_b gathered at input pixel q.
- dW and dcoeff in one kernel per (weight tile, bank pair or bank) that walks the batch: G_b =
  dy_b @ im2col(x_b)^T is formed in registers, accumulated into dW_k += a[b,k,o] G_b and reduced against the
  bank into da[b,k,o] = <G_b[o], W_k[o]>; G_b never reaches memory, and with K = 2 one tile serves both banks.

Coefficients are read through strides too: a layer-level coeff (B, K) is the filter-level one with a zero
filter stride.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from .. import _contract, _strategy
from . import epilogue
from .config import (Config, acc_dtype, acc_torch_dtype, candidate_list, candidates_for, dot_precision, pick,
                     upcast_dots)


@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, a_ptr, bias_ptr, y_ptr,
    C_in, H, W, C_out, H_out, W_out,
    sxb, sxc, sxh, sxw, syb, syc, syh, syw, sab, sak, sao,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, BANKS: tl.constexpr, BANKS_P2: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pixels = H_out * W_out
    reduction = C_in * KH * KW
    tiles = tl.cdiv(pixels, BLOCK_N)
    b = (tl.program_id(0) // tiles).to(tl.int64)
    offs_p = (tl.program_id(0) % tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_o = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_p, mask_o = offs_p < pixels, offs_o < C_out
    ih0 = (offs_p // W_out) * stride_h - pad_h
    iw0 = (offs_p % W_out) * stride_w - pad_w
    banks = tl.arange(0, BANKS_P2)
    mask_ko = (banks[:, None] < BANKS) & mask_o[None, :]
    a = tl.load(a_ptr + b * sab + banks[:, None] * sak + offs_o[None, :] * sao, mask=mask_ko, other=0.0).to(ACC)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for r0 in range(0, reduction, BLOCK_K):
        offs_r = r0 + tl.arange(0, BLOCK_K)
        mask_r = offs_r < reduction
        c = offs_r // (KH * KW)
        ki = (offs_r // KW) % KH
        kj = offs_r % KW
        ih = ih0[None, :] + (ki * dil_h)[:, None]
        iw = iw0[None, :] + (kj * dil_w)[:, None]
        mask_x = mask_r[:, None] & mask_p[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x = tl.load(x_ptr + b * sxb + c[:, None] * sxc + ih * sxh + iw * sxw, mask=mask_x, other=0.0)
        w_offs = offs_o[:, None] * reduction + offs_r[None, :]
        mask_w = mask_o[:, None] & mask_r[None, :]
        if BANKS == 1:
            w = tl.load(w_ptr + w_offs, mask=mask_w, other=0.0)
        else:
            w_k = tl.load(w_ptr + banks[:, None, None] * (C_out * reduction) + w_offs[None, :, :],
                          mask=(banks[:, None, None] < BANKS) & mask_w[None, :, :], other=0.0)
            w = tl.sum(a[:, :, None] * w_k.to(ACC), axis=0).to(x.dtype)
        if UPCAST:
            acc += tl.dot(w.to(ACC), x.to(ACC), input_precision=PRECISION, out_dtype=ACC)
        else:
            acc += tl.dot(w, x, input_precision=PRECISION, out_dtype=ACC)

    if BANKS == 1:
        acc *= tl.sum(a, axis=0)[:, None]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + banks[:, None] * C_out + offs_o[None, :], mask=mask_ko, other=0.0)
        acc += tl.sum(a * bias.to(ACC), axis=0)[:, None]
    oh, ow = offs_p // W_out, offs_p % W_out
    y_offs = b * syb + offs_o[:, None] * syc + oh[None, :] * syh + ow[None, :] * syw
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_p[None, :])


@triton.jit
def _input_grad_kernel(
    dy_ptr, w_ptr, a_ptr, dx_ptr,
    C_in, H, W, C_out, H_out, W_out,
    sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw, sab, sak, sao,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, BANKS: tl.constexpr, BANKS_P2: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pixels = H * W
    reduction = C_out * KH * KW
    tiles = tl.cdiv(pixels, BLOCK_N)
    b = (tl.program_id(0) // tiles).to(tl.int64)
    offs_q = (tl.program_id(0) % tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_q, mask_c = offs_q < pixels, offs_c < C_in
    ih, iw = offs_q // W, offs_q % W
    banks = tl.arange(0, BANKS_P2)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for r0 in range(0, reduction, BLOCK_K):
        offs_r = r0 + tl.arange(0, BLOCK_K)
        mask_r = offs_r < reduction
        o = offs_r // (KH * KW)
        ki = (offs_r // KW) % KH
        kj = offs_r % KW
        # Output pixel that input pixel q feeds through tap (ki, kj), if the stride lands on one.
        oh_s = ih[None, :] + pad_h - (ki * dil_h)[:, None]
        ow_s = iw[None, :] + pad_w - (kj * dil_w)[:, None]
        oh, ow = oh_s // stride_h, ow_s // stride_w
        mask_g = (mask_r[:, None] & mask_q[None, :] & (oh_s >= 0) & (ow_s >= 0)
                  & (oh_s % stride_h == 0) & (ow_s % stride_w == 0) & (oh < H_out) & (ow < W_out))
        g = tl.load(dy_ptr + b * sgb + o[:, None] * sgc + oh * sgh + ow * sgw, mask=mask_g, other=0.0)
        # W_b^T[c, (o, ki, kj)] = sum_k a[b,k,o] W_k[o, c, ki, kj]
        mask_kr = (banks[:, None] < BANKS) & mask_r[None, :]
        a = tl.load(a_ptr + b * sab + banks[:, None] * sak + o[None, :] * sao, mask=mask_kr, other=0.0).to(ACC)
        w_offs = (o * C_in * KH * KW + ki * KW + kj)[None, :] + (offs_c * KH * KW)[:, None]
        w_k = tl.load(w_ptr + banks[:, None, None] * (C_out * C_in * KH * KW) + w_offs[None, :, :],
                      mask=mask_kr[:, None, :] & mask_c[None, :, None], other=0.0)
        w = tl.sum(a[:, None, :] * w_k.to(ACC), axis=0).to(g.dtype)
        if UPCAST:
            acc += tl.dot(w.to(ACC), g.to(ACC), input_precision=PRECISION, out_dtype=ACC)
        else:
            acc += tl.dot(w, g, input_precision=PRECISION, out_dtype=ACC)

    dx_offs = b * sxb + offs_c[:, None] * sxc + ih[None, :] * sxh + iw[None, :] * sxw
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_q[None, :])


@triton.jit
def _weight_coeff_grad_kernel(
    dy_ptr, x_ptr, w_ptr, a_ptr, dw_ptr, da_ptr,
    B, C_in, H, W, C_out, H_out, W_out, samples_per_split,
    sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw, sab, sak, sao,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, BANKS: tl.constexpr, BANKS_PER_PROGRAM: tl.constexpr,
    NEED_WEIGHT: tl.constexpr, NEED_COEFF: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """BANKS_PER_PROGRAM banks per program (the last grid axis enumerates (batch split, bank group)), each with
    its own 2-D accumulator: two banks (AW-Net's clean and adversarial pair) share one G_b tile; with more, one
    bank per program, G_b formed once per bank (a (bank, filter, tap) tile in registers made the accumulators
    spill). dw: (splits, K, C_out, R) partial sums over each split of the batch; da: (R tiles, B, K, C_out)."""
    pixels = H_out * W_out
    reduction = C_in * KH * KW
    offs_o = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    groups = BANKS // BANKS_PER_PROGRAM
    split = tl.program_id(2) // groups
    bank = (tl.program_id(2) % groups) * BANKS_PER_PROGRAM
    mask_o, mask_r = offs_o < C_out, offs_r < reduction
    mask_or = mask_o[:, None] & mask_r[None, :]
    c = offs_r // (KH * KW)
    ki = (offs_r // KW) % KH
    kj = offs_r % KW
    # Scalar bases and 32-bit tile offsets: a 64-bit offset tile would live in registers across the loop.
    tile = offs_o[:, None] * reduction + offs_r[None, :]
    w_bank = w_ptr + bank.to(tl.int64) * (C_out * reduction)
    dw = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    dw1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)

    first = split * samples_per_split
    for b in range(first, tl.minimum(first + samples_per_split, B)):
        b64 = tl.cast(b, tl.int64)
        grad = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)  # G_b tile: filters x (c, ki, kj)
        for p0 in range(0, pixels, BLOCK_K):
            offs_p = p0 + tl.arange(0, BLOCK_K)
            mask_p = offs_p < pixels
            oh, ow = offs_p // W_out, offs_p % W_out
            g = tl.load(dy_ptr + b64 * sgb + offs_o[:, None] * sgc + oh[None, :] * sgh + ow[None, :] * sgw,
                        mask=mask_o[:, None] & mask_p[None, :], other=0.0)
            ih = (oh * stride_h - pad_h)[:, None] + (ki * dil_h)[None, :]
            iw = (ow * stride_w - pad_w)[:, None] + (kj * dil_w)[None, :]
            mask_x = mask_p[:, None] & mask_r[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x = tl.load(x_ptr + b64 * sxb + c[None, :] * sxc + ih * sxh + iw * sxw, mask=mask_x, other=0.0)
            if UPCAST:
                grad += tl.dot(g.to(ACC), x.to(ACC), input_precision=PRECISION, out_dtype=ACC)
            else:
                grad += tl.dot(g, x, input_precision=PRECISION, out_dtype=ACC)
        a_b = a_ptr + b64 * sab + bank * sak + offs_o * sao
        da_offs = ((tl.program_id(1) * B + b64) * BANKS + bank) * C_out + offs_o
        if NEED_WEIGHT:
            dw += tl.load(a_b, mask=mask_o, other=0.0).to(ACC)[:, None] * grad
        if NEED_COEFF:
            w_k = tl.load(w_bank + tile, mask=mask_or, other=0.0).to(ACC)
            tl.store(da_ptr + da_offs, tl.sum(w_k * grad, axis=1), mask=mask_o)
        if BANKS_PER_PROGRAM == 2:
            if NEED_WEIGHT:
                dw1 += tl.load(a_b + sak, mask=mask_o, other=0.0).to(ACC)[:, None] * grad
            if NEED_COEFF:
                w_k = tl.load(w_bank + C_out * reduction + tile, mask=mask_or, other=0.0).to(ACC)
                tl.store(da_ptr + da_offs + C_out, tl.sum(w_k * grad, axis=1), mask=mask_o)
    if NEED_WEIGHT:
        dw_bank = dw_ptr + (split * BANKS + bank).to(tl.int64) * (C_out * reduction)
        tl.store(dw_bank + tile, dw, mask=mask_or)
        if BANKS_PER_PROGRAM == 2:
            tl.store(dw_bank + C_out * reduction + tile, dw1, mask=mask_or)


def banks_per_program(banks: int) -> int:
    """Banks one weight/coeff-gradient program accumulates from each G_b tile: both of a pair, else one."""
    return 2 if banks == 2 else 1


def weight_grad_candidates(banks: int, dtype: torch.dtype, ieee: bool) -> str:
    """The weight/coeff-gradient kernel's candidate list: its own for a pair of banks (two accumulators)."""
    return "weight_grad.pair" if banks_per_program(banks) == 2 else candidate_list("weight_grad", dtype, ieee)


def _coeff_strides(coeff: torch.Tensor) -> tuple[int, int, int]:
    """(sample, bank, filter) strides; a layer-level coeff broadcasts over filters with stride 0."""
    return (coeff.stride(0), coeff.stride(1), coeff.stride(2) if coeff.dim() == 3 else 0)


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _constants(x, weight, per_bank=False):
    banks = weight.shape[0]
    padded = {} if per_bank else dict(BANKS_P2=triton.next_power_of_2(banks))
    return dict(KH=weight.shape[3], KW=weight.shape[4], BANKS=banks, ACC=acc_dtype(x.dtype),
                PRECISION=dot_precision(x), UPCAST=upcast_dots(x), **padded)


def _shape_key(x, weight, coeff, geometry):
    return (x.dtype, tuple(x.shape), x.stride(), tuple(weight.shape), coeff.dim(), geometry)


def forward(x, weight, coeff, bias, stride, padding, dilation, config: Config | None = None):
    batch, c_in, h, w = x.shape
    banks, c_out, _, kh, kw = weight.shape
    h_out, w_out = (_out_size(h, kh, stride[0], padding[0], dilation[0]),
                    _out_size(w, kw, stride[1], padding[1], dilation[1]))
    y = torch.empty((batch, c_out, h_out, w_out), dtype=x.dtype, device=x.device,
                    memory_format=suggest_memory_format(x))
    if batch == 0:
        return y
    weight = weight.contiguous()
    if config is None:
        key = _shape_key(x, weight, coeff, (*stride, *padding, *dilation, bias is not None))
        config = pick("forward", key, lambda cfg: forward(x, weight, coeff, bias, stride, padding, dilation, cfg))
    grid = (batch * triton.cdiv(h_out * w_out, config.block_n), triton.cdiv(c_out, config.block_m))
    _forward_kernel[grid](
        x, weight, coeff, bias.contiguous() if bias is not None else weight, y,
        c_in, h, w, c_out, h_out, w_out, *x.stride(), *y.stride(), *_coeff_strides(coeff),
        *stride, *padding, *dilation, HAS_BIAS=bias is not None, **_constants(x, weight), **config.kwargs())
    return y


def input_grad(grad_y, x, weight, coeff, stride, padding, dilation, config: Config | None = None):
    batch, c_in, h, w = x.shape
    c_out, h_out, w_out = grad_y.shape[1:]
    dx = torch.empty_like(x, memory_format=suggest_memory_format(x))
    if batch == 0:
        return dx
    weight = weight.contiguous()
    if config is None:
        key = _shape_key(x, weight, coeff, (*stride, *padding, *dilation))
        config = pick(candidates_for("input_grad", x), key,
                      lambda cfg: input_grad(grad_y, x, weight, coeff, stride, padding, dilation, cfg))
    grid = (batch * triton.cdiv(h * w, config.block_n), triton.cdiv(c_in, config.block_m))
    _input_grad_kernel[grid](
        grad_y, weight, coeff, dx, c_in, h, w, c_out, h_out, w_out, *grad_y.stride(), *dx.stride(),
        *_coeff_strides(coeff), *stride, *padding, *dilation, **_constants(x, weight), **config.kwargs())
    return dx


def weight_coeff_grad(grad_y, x, weight, coeff, stride, padding, dilation, need_weight, need_coeff,
                      config: Config | None = None):
    """dW (K, C_out, C_in, kH, kW) and the convolution part of da (B, K, C_out), in the accumulation type;
    None for the one not asked for."""
    batch, c_in, h, w = x.shape
    banks, c_out, _, kh, kw = weight.shape
    h_out, w_out = grad_y.shape[2:]
    reduction = c_in * kh * kw
    weight = weight.contiguous()
    if config is None:
        key = _shape_key(x, weight, coeff, (*stride, *padding, *dilation, need_weight, need_coeff))
        config = pick(weight_grad_candidates(banks, x.dtype, dot_precision(x) == "ieee"), key, lambda cfg: (
            weight_coeff_grad(grad_y, x, weight, coeff, stride, padding, dilation, need_weight, need_coeff, cfg)))
    acc = acc_torch_dtype(x.dtype)
    r_tiles, o_tiles = triton.cdiv(reduction, config.block_n), triton.cdiv(c_out, config.block_m)
    splits = config.batch_splits(batch)
    dw = x.new_zeros((splits, banks, c_out, reduction), dtype=acc) if need_weight else None
    da = x.new_zeros((r_tiles, batch, banks, c_out), dtype=acc) if need_coeff else None
    if batch:
        _weight_coeff_grad_kernel[(o_tiles, r_tiles, splits * banks // banks_per_program(banks))](
            grad_y, x, weight, coeff, dw if need_weight else weight, da if need_coeff else weight,
            batch, c_in, h, w, c_out, h_out, w_out, triton.cdiv(batch, splits), *grad_y.stride(), *x.stride(),
            *_coeff_strides(coeff), *stride, *padding, *dilation, NEED_WEIGHT=need_weight, NEED_COEFF=need_coeff,
            BANKS_PER_PROGRAM=banks_per_program(banks), **_constants(x, weight, per_bank=True), **config.kwargs())
    return (dw.sum(0).view(weight.shape) if need_weight else None, da.sum(0) if need_coeff else None)


def strided_input_grad_by_phase(x, weight, grad_y, stride) -> bool:
    """Whether the blend strategy's dx runs the epilogue's input-gradient kernel instead of its own: with a
    stride, whose masked taps run the blend kernel's dots s^2 times over, and K <= 2, whose per-bank dots cost
    the epilogue kernel K times (ResNet-18's stride-2 layers: 2x against 4x)."""
    return (tuple(stride) != (1, 1) and weight.shape[0] <= _strategy.EPILOGUE_BANKS
            and epilogue.addressable(x, grad_y.numel() * weight.shape[0]))


def backward(grad_y, x, weight, coeff, bias, stride, padding, dilation, output_mask):
    """(dx, dweight, dcoeff, dbias); the gradients not asked for by output_mask are None."""
    need_x, need_weight, need_coeff, need_bias = output_mask
    need_bias = need_bias and bias is not None
    dx = None
    if need_x:
        dx = (epilogue.input_grad(grad_y, x, weight, coeff, stride, padding, dilation)
              if strided_input_grad_by_phase(x, weight, grad_y, stride)
              else input_grad(grad_y, x, weight, coeff, stride, padding, dilation))
    dweight = dcoeff = dbias = None
    if need_weight or need_coeff:
        dweight, da = weight_coeff_grad(grad_y, x, weight, coeff, stride, padding, dilation, need_weight, need_coeff)
    if need_coeff or need_bias:
        acc = acc_torch_dtype(x.dtype)
        dy_sum = grad_y.sum((2, 3), dtype=acc)
    if need_coeff:
        if bias is not None:
            da = da + bias.to(acc)[None] * dy_sum[:, None]
        dcoeff = (da if coeff.dim() == 3 else da.sum(2)).to(coeff.dtype)
    if need_bias:
        a = coeff if coeff.dim() == 3 else coeff[:, :, None].expand(*coeff.shape, weight.shape[1])
        # contiguous: einsum may hand back a transposed view, and the contract promises dense gradients.
        dbias = torch.einsum("bko,bo->ko", a.to(dy_sum.dtype), dy_sum).to(bias.dtype).contiguous()
    return dx, (dweight.to(weight.dtype) if need_weight else None), dcoeff, dbias


# The ops: `awnet::aw_conv2d_triton` (keeps nothing for the backward), `awnet::aw_conv2d_triton_forward`
# (keeps the epilogue strategy's bank outputs for dcoeff) and their backward, the contract's schemas
# (awkernels/_contract.py, which also gives their autograd). Each call runs the strategy `_strategy.py`'s rule
# gives the triton backend: epilogue where it serves, else blend-in-loop, whose dW/dcoeff kernel forms G_b in
# registers from x and dy and keeps nothing.
def _epilogue_serves(x, weight, stride, padding, dilation) -> bool:
    """The strategy rule's answer, and int32 offsets reaching every element (past 2^31 elements, blend-in-loop,
    whose offsets are 64-bit, runs the call)."""
    pixels = 1
    for size, k, s, p, d in zip(x.shape[2:], weight.shape[3:], stride, padding, dilation):
        pixels *= _out_size(size, k, s, p, d)
    banks, c_out = weight.shape[:2]
    return (_strategy.epilogue_refuses(banks, 1, pixels) is None
            and epilogue.addressable(x, x.shape[0] * banks * c_out * pixels))


def _forward_op(x, weight, coeff, bias, stride, padding, dilation, groups):
    if _epilogue_serves(x, weight, stride, padding, dilation):
        return epilogue.forward(x, weight, coeff, bias, stride, padding, dilation, keep=False)[0]
    return forward(x, weight, coeff, bias, stride, padding, dilation)


def _forward_keeping_op(x, weight, coeff, bias, stride, padding, dilation, groups):
    if _epilogue_serves(x, weight, stride, padding, dilation):
        return epilogue.forward(x, weight, coeff, bias, stride, padding, dilation, keep=True)
    return forward(x, weight, coeff, bias, stride, padding, dilation), x.new_empty(0)


def _forward_keeping_fake(x, weight, coeff, bias, stride, padding, dilation, groups):
    y = _contract._conv_fake(x, weight, coeff, bias, stride, padding, dilation, groups)
    if _epilogue_serves(x, weight, stride, padding, dilation):
        return y, _contract._conv_output(x, weight, stride, padding, dilation, weight.shape[0] * weight.shape[1])
    return y, x.new_empty(0)


def _backward_op(grad_y, saved, x, weight, coeff, bias, stride, padding, dilation, groups, output_mask):
    if _epilogue_serves(x, weight, stride, padding, dilation):
        grads = epilogue.backward(grad_y, saved, x, weight, coeff, bias, stride, padding, dilation, output_mask)
    else:
        grads = backward(grad_y, x, weight, coeff, bias, stride, padding, dilation, output_mask)
    # Ops return tensors: an empty one stands for a gradient not asked for.
    return tuple(g if g is not None else x.new_empty(0) for g in grads)


torch.library.impl("awnet::aw_conv2d_triton", ("cpu", "cuda"), _forward_op, lib=_contract.LIBRARY)
torch.library.impl("awnet::aw_conv2d_triton_forward", ("cpu", "cuda"), _forward_keeping_op, lib=_contract.LIBRARY)
torch.library.register_fake("awnet::aw_conv2d_triton_forward", _forward_keeping_fake, lib=_contract.LIBRARY)
torch.library.impl("awnet::aw_conv2d_triton_backward", ("cpu", "cuda"), _backward_op, lib=_contract.LIBRARY)
for _name in ("aw_conv2d_triton", "aw_conv2d_triton_forward"):
    _contract.register_autograd(_name, "aw_conv2d_triton_backward")
aw_conv2d_triton = torch.ops.awnet.aw_conv2d_triton
aw_conv2d_triton_forward = torch.ops.awnet.aw_conv2d_triton_forward
