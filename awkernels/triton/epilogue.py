"""Triton kernels for aw_conv2d's `epilogue` strategy (DESIGN.md section 3, mix-in-epilogue), groups = 1,
K = 1 or 2.

The convolution with each bank is a static implicit GEMM whose rows are (sample, output pixel) flattened, so
a tile spans samples and the 4x4 layers fill it; the columns are filters, the reduction runs over the taps
and, inside each tap, over contiguous input channels (channels_last loads). The per-sample part is only in
the epilogue: y = sum_k a[b,k,o] (conv(x, W_k) + bias_k), one accumulator per bank (K = 1: the regulation
signal scales the convolution). The bank outputs conv(x, W_k) are kept for the backward when it needs
dcoeff: da[b,k,o] = sum_p dy[b,o,p] conv(x[b], W_k)[o,p], no recompute. Where the grid of output tiles
is smaller than the machine (few samples, the 4x4 layers) the forward and dx split their reduction over more
programs (split-K: float32 partial outputs, then one sum), if that times faster on the GPU.

Backward, by linearity:
- dx: the transposed implicit GEMM over input pixels, one stride phase per grid slice (only the taps that
  reach an output pixel from it run), dy scaled by a[b,k,o] as it is loaded;
- dW_k: a weight gradient of a_k * dy, its reduction over (sample, output pixel) split across programs
  (partial sums, then one sum: deterministic) so that small weight tiles still fill the machine;
- da and the per-sample sums of dy (the bias's share) in one pass over dy and the kept bank outputs.

Offsets are 32-bit (a 64-bit offset tile doubles the registers the epilogue holds): the triton backend runs
these kernels only on tensors whose elements int32 can address (`addressable`), and blend-in-loop otherwise.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from .config import Config, acc_dtype, acc_torch_dtype, candidates_for, dot_precision, fastest, pick, upcast_dots

# The SMs of an H100 or H200, which the splits of a reduction are sized for on every machine (so that the
# interpreter runs the splits a GPU would).
SMS = 132
# Programs the weight gradient's split aims at: two per SM.
TARGET_PROGRAMS = 2 * SMS
# The fewest reduction steps a split walks (fewer, and the partial sums' traffic outweighs the parallelism).
MIN_SPLIT_STEPS = 4
# The coefficient-gradient pass: filters x pixels per step, and its pipeline depth (32 pixels spill the
# K = 2 float32 loads on sm_80).
_BLOCK_O, _BLOCK_P, _COEFF_STAGES = 64, 16, 2


@triton.jit
def _mma(acc, a, b, ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        return acc + tl.dot(a.to(ACC), b.to(ACC), input_precision=PRECISION, out_dtype=ACC)
    return acc + tl.dot(a, b, input_precision=PRECISION, out_dtype=ACC)


@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, a_ptr, bias_ptr, y_ptr, saved_ptr,
    B, C_in, H, W, C_out, H_out, W_out, steps_per_split, y_split, saved_split,
    sxb, sxc, sxh, sxw, swk, swo, swc, swh, sww, syb, syc, syh, syw, ssb, ssc, ssh, ssw, sab, sak, sao,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, BANKS: tl.constexpr, HAS_BIAS: tl.constexpr, KEEP: tl.constexpr,
    PARTIAL: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """acc_k[(b, p), o] = sum over taps and C_in of x[b, c, tap(p)] W_k[o, c, tap]; y = sum_k a[b,k,o] acc_k.
    PARTIAL (split-K): the grid's third axis splits the reduction into runs of steps_per_split steps, and each
    split stores its share of y (the bias in split 0's) and of the bank outputs, in the accumulation type, at
    y_ptr + split y_split and saved_ptr + split saved_split; the host sums the splits (all of it is linear)."""
    pixels = H_out * W_out
    split = tl.program_id(2)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_o = offs_m < B * pixels, offs_o < C_out
    b = offs_m // pixels
    p = offs_m % pixels
    oh, ow = p // W_out, p % W_out
    ih0, iw0 = oh * stride_h - pad_h, ow * stride_w - pad_w

    x_rows = x_ptr + b * sxb
    w_cols = w_ptr + offs_o[None, :] * swo
    acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    # One loop over (tap, channel block), so that the pipeline prefetches across taps.
    c_steps = tl.cdiv(C_in, BLOCK_K)
    first = split * steps_per_split
    for step in range(first, tl.minimum(first + steps_per_split, KH * KW * c_steps)):
        tap = step // c_steps
        offs_c = (step - tap * c_steps) * BLOCK_K + tl.arange(0, BLOCK_K)
        ki, kj = tap // KW, tap % KW
        ih, iw = ih0 + ki * dil_h, iw0 + kj * dil_w
        inside = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        mask_c = offs_c < C_in
        x = tl.load(x_rows[:, None] + (ih * sxh + iw * sxw)[:, None] + offs_c[None, :] * sxc,
                    mask=inside[:, None] & mask_c[None, :], other=0.0)
        w_offs = ki * swh + kj * sww + offs_c[:, None] * swc
        mask_w = mask_c[:, None] & mask_o[None, :]
        acc0 = _mma(acc0, x, tl.load(w_cols + w_offs, mask=mask_w, other=0.0), ACC, PRECISION, UPCAST)
        if BANKS == 2:
            acc1 = _mma(acc1, x, tl.load(w_cols + swk + w_offs, mask=mask_w, other=0.0), ACC, PRECISION, UPCAST)

    mask_y = mask_m[:, None] & mask_o[None, :]
    mask_bias = mask_o & (split == 0) if PARTIAL else mask_o
    a_offs = b[:, None] * sab + offs_o[None, :] * sao
    a0 = tl.load(a_ptr + a_offs, mask=mask_y, other=0.0).to(ACC)
    y = a0 * acc0
    if HAS_BIAS:
        y += a0 * tl.load(bias_ptr + offs_o, mask=mask_bias, other=0.0).to(ACC)[None, :]
    if BANKS == 2:
        a1 = tl.load(a_ptr + sak + a_offs, mask=mask_y, other=0.0).to(ACC)
        y += a1 * acc1
        if HAS_BIAS:
            y += a1 * tl.load(bias_ptr + C_out + offs_o, mask=mask_bias, other=0.0).to(ACC)[None, :]
    if PARTIAL:
        y_ptr += split * y_split
    tl.store(y_ptr + (b * syb + oh * syh + ow * syw)[:, None] + offs_o[None, :] * syc,
             y.to(y_ptr.dtype.element_ty), mask=mask_y)
    if KEEP:  # the bank outputs, bank k at channels [k C_out, (k + 1) C_out)
        s_offs = (b * ssb + oh * ssh + ow * ssw)[:, None] + offs_o[None, :] * ssc
        if PARTIAL:
            saved_ptr += split * saved_split
        tl.store(saved_ptr + s_offs, acc0.to(saved_ptr.dtype.element_ty), mask=mask_y)
        if BANKS == 2:
            tl.store(saved_ptr + C_out * ssc + s_offs, acc1.to(saved_ptr.dtype.element_ty), mask=mask_y)


@triton.jit
def _input_grad_kernel(
    dy_ptr, w_ptr, a_ptr, dx_ptr, taps_ptr,
    B, C_in, H, W, C_out, H_out, W_out, steps_per_split, dx_split,
    sgb, sgc, sgh, sgw, swk, swo, swc, swh, sww, sxb, sxc, sxh, sxw, sab, sak, sao,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, BANKS: tl.constexpr, PARTIAL: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dx[(b, q), c] = sum over taps and C_out of (sum_k a[b,k,o] dy[b, o, tap^-1(q)] W_k[o, c, tap]), for the
    input pixels q of one stride phase (q = (ph + i stride_h, pw + j stride_w), the grid's last axis): only the
    taps that land on an output pixel from that phase run (taps_ptr: per phase, their count, then the taps).
    PARTIAL (split-K): the grid's last axis is (split, phase), and each split stores its share of dx, over
    steps_per_split steps of the phase's loop, in the accumulation type at dx_ptr + split dx_split."""
    phases = stride_h * stride_w
    phase = tl.program_id(2) % phases
    split = tl.program_id(2) // phases
    ph, pw = phase // stride_w, phase % stride_w
    # At least 1: an input smaller than the stride leaves a phase no pixels (every row masked), not a zero divisor.
    rows_h, rows_w = tl.maximum(tl.cdiv(H - ph, stride_h), 1), tl.maximum(tl.cdiv(W - pw, stride_w), 1)
    pixels = rows_h * rows_w
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_c = (offs_m < B * pixels) & (ph < H) & (pw < W), offs_c < C_in
    b = offs_m // pixels
    q = offs_m % pixels
    ih, iw = (q // rows_w) * stride_h + ph, (q % rows_w) * stride_w + pw
    dy_rows = dy_ptr + b * sgb
    a_rows = a_ptr + b * sab
    w_cols = w_ptr + offs_c[None, :] * swc
    phase_taps = taps_ptr + phase * (KH * KW + 1)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    o_steps = tl.cdiv(C_out, BLOCK_K)
    first = split * steps_per_split
    for step in range(first, tl.minimum(first + steps_per_split, tl.load(phase_taps) * o_steps)):
        j = step // o_steps
        offs_o = (step - j * o_steps) * BLOCK_K + tl.arange(0, BLOCK_K)
        tap = tl.load(phase_taps + 1 + j)
        ki, kj = tap // KW, tap % KW
        # The phase's taps divide exactly: the output pixel input pixel q feeds through this tap.
        oh, ow = (ih + pad_h - ki * dil_h) // stride_h, (iw + pad_w - kj * dil_w) // stride_w
        hit = mask_m & (oh >= 0) & (oh < H_out) & (ow >= 0) & (ow < W_out)
        mask_o = offs_o < C_out
        mask_g = hit[:, None] & mask_o[None, :]
        g = tl.load(dy_rows[:, None] + (oh * sgh + ow * sgw)[:, None] + offs_o[None, :] * sgc, mask=mask_g,
                    other=0.0)
        a_offs = a_rows[:, None] + offs_o[None, :] * sao
        w_offs = ki * swh + kj * sww + offs_o[:, None] * swo
        mask_w = mask_o[:, None] & mask_c[None, :]
        a0 = tl.load(a_offs, mask=mask_g, other=0.0).to(ACC)
        w0 = tl.load(w_cols + w_offs, mask=mask_w, other=0.0)
        acc = _mma(acc, (g.to(ACC) * a0).to(w0.dtype), w0, ACC, PRECISION, UPCAST)
        if BANKS == 2:
            a1 = tl.load(a_offs + sak, mask=mask_g, other=0.0).to(ACC)
            w1 = tl.load(w_cols + swk + w_offs, mask=mask_w, other=0.0)
            acc = _mma(acc, (g.to(ACC) * a1).to(w1.dtype), w1, ACC, PRECISION, UPCAST)

    if PARTIAL:
        dx_ptr += split * dx_split
    tl.store(dx_ptr + (b * sxb + ih * sxh + iw * sxw)[:, None] + offs_c[None, :] * sxc,
             acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_c[None, :])


@triton.jit
def _weight_grad_kernel(
    dy_ptr, x_ptr, a_ptr, dw_ptr,
    B, C_in, H, W, C_out, H_out, W_out, rows_per_split,
    sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw, sab, sak, sao,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, BANKS: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dW_k[o, c, tap] over one split of the (sample, output pixel) rows: sum_rows a[b,k,o] dy[b,o,p] x[b,c,tap(p)].
    dw: (splits, K, C_out, C_in, KH, KW) partial sums in the accumulation type."""
    pixels = H_out * W_out
    rows = B * pixels
    c_tiles = tl.cdiv(C_in, BLOCK_N)
    tap = tl.program_id(1) // c_tiles
    ki, kj = tap // KW, tap % KW
    offs_o = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = (tl.program_id(1) % c_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_o, mask_c = offs_o < C_out, offs_c < C_in
    split = tl.program_id(2)
    first = split * rows_per_split
    last = tl.minimum(first + rows_per_split, rows)

    acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for m0 in range(first, last, BLOCK_K):
        offs_m = m0 + tl.arange(0, BLOCK_K)
        mask_m = offs_m < last
        b = offs_m // pixels
        p = offs_m % pixels
        oh, ow = p // W_out, p % W_out
        mask_g = mask_o[:, None] & mask_m[None, :]
        g = tl.load(dy_ptr + (b * sgb + oh * sgh + ow * sgw)[None, :] + offs_o[:, None] * sgc,
                    mask=mask_g, other=0.0).to(ACC)
        ih, iw = oh * stride_h - pad_h + ki * dil_h, ow * stride_w - pad_w + kj * dil_w
        inside = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x = tl.load(x_ptr + (b * sxb + ih * sxh + iw * sxw)[:, None] + offs_c[None, :] * sxc,
                    mask=inside[:, None] & mask_c[None, :], other=0.0)
        a_offs = a_ptr + b[None, :] * sab + offs_o[:, None] * sao
        acc0 = _mma(acc0, (g * tl.load(a_offs, mask=mask_g, other=0.0).to(ACC)).to(x.dtype), x,
                    ACC, PRECISION, UPCAST)
        if BANKS == 2:
            acc1 = _mma(acc1, (g * tl.load(a_offs + sak, mask=mask_g, other=0.0).to(ACC)).to(x.dtype), x,
                        ACC, PRECISION, UPCAST)

    reduction = C_in * KH * KW
    tile = offs_o[:, None] * reduction + offs_c[None, :] * (KH * KW) + tap
    mask_w = mask_o[:, None] & mask_c[None, :]
    dw_split = dw_ptr + split * BANKS * (C_out * reduction)
    tl.store(dw_split + tile, acc0, mask=mask_w)
    if BANKS == 2:
        tl.store(dw_split + C_out * reduction + tile, acc1, mask=mask_w)


@triton.jit
def _coeff_grad_kernel(
    dy_ptr, saved_ptr, da_ptr, dy_sum_ptr,
    C_out, H_out, W_out,
    sgb, sgc, sgh, sgw, ssb, ssc, ssh, ssw,
    BANKS: tl.constexpr, NEED_COEFF: tl.constexpr, ACC: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Per (sample, filter tile): da[b,k,o] = sum_p dy[b,o,p] y_k[b,o,p] over the kept bank outputs y_k, and
    dy_sum[b,o] = sum_p dy[b,o,p]; da (B, K, C_out) and dy_sum (B, C_out) in the accumulation type."""
    b = tl.program_id(0).to(tl.int64)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < C_out
    pixels = H_out * W_out
    dy_sum = tl.zeros((BLOCK_O,), dtype=ACC)
    da0 = tl.zeros((BLOCK_O,), dtype=ACC)
    da1 = tl.zeros((BLOCK_O,), dtype=ACC)
    for p0 in range(0, pixels, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        oh, ow = offs_p // W_out, offs_p % W_out
        mask = (offs_p < pixels)[:, None] & mask_o[None, :]
        g = tl.load(dy_ptr + b * sgb + (oh * sgh + ow * sgw)[:, None] + offs_o[None, :] * sgc,
                    mask=mask, other=0.0).to(ACC)
        dy_sum += tl.sum(g, axis=0)
        if NEED_COEFF:
            s_offs = saved_ptr + b * ssb + (oh * ssh + ow * ssw)[:, None] + offs_o[None, :] * ssc
            da0 += tl.sum(g * tl.load(s_offs, mask=mask, other=0.0).to(ACC), axis=0)
            if BANKS == 2:
                da1 += tl.sum(g * tl.load(s_offs + C_out * ssc, mask=mask, other=0.0).to(ACC), axis=0)
    tl.store(dy_sum_ptr + b * C_out + offs_o, dy_sum, mask=mask_o)
    if NEED_COEFF:
        tl.store(da_ptr + b * BANKS * C_out + offs_o, da0, mask=mask_o)
        if BANKS == 2:
            tl.store(da_ptr + (b * BANKS + 1) * C_out + offs_o, da1, mask=mask_o)


INT32_LIMIT = 2**31


def addressable(x: torch.Tensor, out_elements: int) -> bool:
    """Whether int32 offsets reach every element of x and of the (kept) outputs: the extent of x through its
    strides, and out_elements (B x K C_out x output pixels, dense)."""
    extent = 1 + sum((size - 1) * abs(stride) for size, stride in zip(x.shape, x.stride()) if size)
    return max(extent, x.numel(), out_elements) < INT32_LIMIT


def _coeff_strides(coeff: torch.Tensor) -> tuple[int, int, int]:
    """(sample, bank, filter) strides; a layer-level coeff broadcasts over filters with stride 0."""
    return (coeff.stride(0), coeff.stride(1), coeff.stride(2) if coeff.dim() == 3 else 0)


def _weight_strides(weight: torch.Tensor) -> tuple[int, ...]:
    """(bank, filter, channel, kh, kw) strides of the banks as the kernels read them: channel-fastest (the
    reduction's inner dimension), one copy of the small bank tensor per call."""
    banks, c_out, c_in, kh, kw = weight.shape
    wt = weight.permute(0, 3, 4, 1, 2).contiguous()  # (K, kh, kw, C_out, C_in)
    return wt, (wt.stride(0), wt.stride(3), wt.stride(4), wt.stride(1), wt.stride(2))


def _constants(x, banks):
    return dict(BANKS=banks, ACC=acc_dtype(x.dtype), PRECISION=dot_precision(x), UPCAST=upcast_dots(x))


def _shape_key(x, weight, coeff, geometry):
    return (x.dtype, tuple(x.shape), x.stride(), tuple(weight.shape), coeff.dim(), geometry)


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def reduction_splits(steps: int, programs: int, out_elements: int) -> int:
    """Split-K for the forward and dx: how many programs share each output tile's reduction of `steps` steps.
    None while the grid of `programs` fills the SMs; else enough to fill them, each split walking at least
    MIN_SPLIT_STEPS steps, and int32 offsets reaching every element of the partial outputs."""
    if programs >= SMS:
        return 1
    return max(1, min(SMS // programs, steps // MIN_SPLIT_STEPS, (INT32_LIMIT - 1) // max(out_elements, 1)))


def _chosen_splits(key: tuple, proposed: int, run) -> int:
    """The rule's split, kept on a GPU only if it times faster than none (its partial sums cost traffic that
    the idle SMs it fills may not repay); under the interpreter the rule's, so that the tests run it."""
    return proposed if proposed == 1 else fastest(key, (proposed, 1), run)


def _runs(steps: int, splits: int) -> tuple[int, int]:
    """(steps per split, splits): `steps` in equal runs, none left empty."""
    if steps == 0:
        return 1, 1
    per_split = triton.cdiv(steps, splits)
    return per_split, triton.cdiv(steps, per_split)


def _partials(out: torch.Tensor, splits: int) -> tuple[torch.Tensor, int]:
    """Split-K's partial outputs: `splits` tensors like `out` (its memory format) stacked along the batch, in
    the accumulation type, and the offset from one split's to the next."""
    partials = torch.empty((splits * out.shape[0], *out.shape[1:]), dtype=acc_torch_dtype(out.dtype),
                           device=out.device, memory_format=suggest_memory_format(out))
    return partials, out.shape[0] * partials.stride(0)


def _sum_partials(partials: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(partials.unflatten(0, (-1, out.shape[0])).sum(0))


def forward(x, weight, coeff, bias, stride, padding, dilation, keep: bool, config: Config | None = None,
            splits: int | None = None):
    """(y, the bank outputs (B, K C_out, H_out, W_out) in x's dtype and memory format, or an empty tensor
    when not kept). `splits`: of the reduction (split-K), by `reduction_splits` unless given."""
    batch, c_in, h, w = x.shape
    banks, c_out, _, kh, kw = weight.shape
    h_out, w_out = (_out_size(h, kh, stride[0], padding[0], dilation[0]),
                    _out_size(w, kw, stride[1], padding[1], dilation[1]))
    layout = dict(dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))
    y = torch.empty((batch, c_out, h_out, w_out), **layout)
    saved = torch.empty((batch, banks * c_out, h_out, w_out), **layout) if keep else x.new_empty(0)
    if y.numel() == 0:
        return y, saved
    key = _shape_key(x, weight, coeff, (*stride, *padding, *dilation, bias is not None, keep))
    if config is None:
        config = pick(candidates_for("epilogue.forward", x), key,
                      lambda cfg: forward(x, weight, coeff, bias, stride, padding, dilation, keep, cfg))
    wt, w_strides = _weight_strides(weight)
    grid = (triton.cdiv(batch * h_out * w_out, config.block_m), triton.cdiv(c_out, config.block_n))
    steps = kh * kw * triton.cdiv(c_in, config.block_k)
    if splits is None:
        splits = _chosen_splits(("epilogue.forward", config, *key),
                                reduction_splits(steps, grid[0] * grid[1], max(y.numel(), saved.numel())),
                                lambda n: forward(x, weight, coeff, bias, stride, padding, dilation, keep, config, n))
    steps_per_split, splits = _runs(steps, splits)
    y_out, y_split, saved_out, saved_split = y, 0, saved if keep else y, 0
    if splits > 1:
        y_out, y_split = _partials(y, splits)
        if keep:
            saved_out, saved_split = _partials(saved, splits)
        else:
            saved_out = y_out
    _forward_kernel[(*grid, splits)](
        x, wt, coeff, bias.contiguous() if bias is not None else wt, y_out, saved_out,
        batch, c_in, h, w, c_out, h_out, w_out, steps_per_split, y_split, saved_split, *x.stride(), *w_strides,
        *y_out.stride(), *saved_out.stride(), *_coeff_strides(coeff), *stride, *padding, *dilation,
        KH=kh, KW=kw, HAS_BIAS=bias is not None, KEEP=keep, PARTIAL=splits > 1, **_constants(x, banks),
        **config.kwargs())
    if splits > 1:
        _sum_partials(y_out, y)
        if keep:
            _sum_partials(saved_out, saved)
    return y, saved


@functools.lru_cache(maxsize=256)
def _phase_tap_rows(kernel: tuple[int, int], stride, padding, dilation) -> tuple[tuple[int, ...], ...]:
    kh, kw = kernel
    rows = []
    for ph in range(stride[0]):
        for pw in range(stride[1]):
            taps = [ki * kw + kj for ki in range(kh) for kj in range(kw)
                    if (ph + padding[0] - ki * dilation[0]) % stride[0] == 0
                    and (pw + padding[1] - kj * dilation[1]) % stride[1] == 0]
            rows.append((len(taps), *taps) + (0,) * (kh * kw - len(taps)))
    return tuple(rows)


@functools.lru_cache(maxsize=256)
def phase_taps(kernel: tuple[int, int], stride, padding, dilation, device: torch.device) -> torch.Tensor:
    """(stride_h stride_w, kH kW + 1) int32: for each stride phase (ph, pw) of the input pixels, the number of
    taps (ki, kj) that reach an output pixel from it ((ph + pad - ki dil) divisible by the stride, per axis),
    then those taps (ki kW + kj)."""
    return torch.tensor(_phase_tap_rows(kernel, stride, padding, dilation), dtype=torch.int32, device=device)


def input_grad(grad_y, x, weight, coeff, stride, padding, dilation, config: Config | None = None,
               splits: int | None = None):
    """dx in x's memory format. `splits`: of each phase's reduction (split-K), by `reduction_splits` unless
    given."""
    batch, c_in, h, w = x.shape
    banks, c_out, _, kh, kw = weight.shape
    h_out, w_out = grad_y.shape[2:]
    dx = torch.empty_like(x, memory_format=suggest_memory_format(x))
    if dx.numel() == 0:
        return dx
    key = _shape_key(x, weight, coeff, (*stride, *padding, *dilation))
    if config is None:
        config = pick(candidates_for("epilogue.input_grad", x), key,
                      lambda cfg: input_grad(grad_y, x, weight, coeff, stride, padding, dilation, cfg))
    wt, w_strides = _weight_strides(weight)
    geometry = ((kh, kw), tuple(stride), tuple(padding), tuple(dilation))
    taps = phase_taps(*geometry, x.device)
    # Phase (0, 0) has the most input pixels; the other phases' programs past their rows exit masked.
    rows = batch * triton.cdiv(h, stride[0]) * triton.cdiv(w, stride[1])
    grid = (triton.cdiv(rows, config.block_m), triton.cdiv(c_in, config.block_n), stride[0] * stride[1])
    steps = max(row[0] for row in _phase_tap_rows(*geometry)) * triton.cdiv(c_out, config.block_k)
    if splits is None:
        splits = _chosen_splits(("epilogue.input_grad", config, *key),
                                reduction_splits(steps, grid[0] * grid[1] * grid[2], dx.numel()),
                                lambda n: input_grad(grad_y, x, weight, coeff, stride, padding, dilation, config, n))
    steps_per_split, splits = _runs(steps, splits)
    dx_out, dx_split = _partials(dx, splits) if splits > 1 else (dx, 0)
    _input_grad_kernel[(grid[0], grid[1], grid[2] * splits)](
        grad_y, wt, coeff, dx_out, taps, batch, c_in, h, w, c_out, h_out, w_out, steps_per_split, dx_split,
        *grad_y.stride(), *w_strides, *dx_out.stride(), *_coeff_strides(coeff), *stride, *padding, *dilation,
        KH=kh, KW=kw, PARTIAL=splits > 1, **_constants(x, banks), **config.kwargs())
    if splits > 1:
        _sum_partials(dx_out, dx)
    return dx


def weight_splits(rows: int, tiles: int, block_k: int) -> int:
    """How many programs share the weight gradient's reduction over `rows`: enough for TARGET_PROGRAMS with
    `tiles` weight tiles, each still walking at least MIN_SPLIT_STEPS BLOCK_K steps."""
    return max(1, min(triton.cdiv(rows, MIN_SPLIT_STEPS * block_k), triton.cdiv(TARGET_PROGRAMS, tiles)))


def weight_grad(grad_y, x, weight, coeff, stride, padding, dilation, config: Config | None = None):
    """dW (K, C_out, C_in, kH, kW) in the accumulation type."""
    batch, c_in, h, w = x.shape
    banks, c_out, _, kh, kw = weight.shape
    h_out, w_out = grad_y.shape[2:]
    if config is None:
        key = _shape_key(x, weight, coeff, (*stride, *padding, *dilation))
        config = pick(candidates_for("epilogue.weight_grad", x), key,
                      lambda cfg: weight_grad(grad_y, x, weight, coeff, stride, padding, dilation, cfg))
    rows = batch * h_out * w_out
    tiles = triton.cdiv(c_out, config.block_m) * kh * kw * triton.cdiv(c_in, config.block_n)
    splits = weight_splits(rows, tiles, config.block_k)
    rows_per_split = config.block_k * triton.cdiv(triton.cdiv(rows, config.block_k), splits)
    splits = max(1, triton.cdiv(rows, rows_per_split))
    dw = x.new_zeros((splits, *weight.shape), dtype=acc_torch_dtype(x.dtype))
    if rows:
        _weight_grad_kernel[(triton.cdiv(c_out, config.block_m), kh * kw * triton.cdiv(c_in, config.block_n),
                             splits)](
            grad_y, x, coeff, dw, batch, c_in, h, w, c_out, h_out, w_out, rows_per_split, *grad_y.stride(),
            *x.stride(), *_coeff_strides(coeff), *stride, *padding, *dilation, KH=kh, KW=kw,
            **_constants(x, banks), **config.kwargs())
    return dw.sum(0)


def coeff_grad_sums(grad_y, saved, banks: int, need_coeff: bool):
    """(da (B, K, C_out) or None, dy_sum (B, C_out)) in the accumulation type: one pass over dy and the kept
    bank outputs."""
    batch, c_out, h_out, w_out = grad_y.shape
    acc = acc_torch_dtype(grad_y.dtype)
    if need_coeff and tuple(saved.shape) != (batch, banks * c_out, h_out, w_out):
        raise ValueError(f"saved: the epilogue strategy's dcoeff needs the {banks} bank outputs the forward kept "
                         f"(shape {(batch, banks * c_out, h_out, w_out)}), got shape {tuple(saved.shape)}")
    da = grad_y.new_zeros((batch, banks, c_out), dtype=acc) if need_coeff else None
    dy_sum = grad_y.new_zeros((batch, c_out), dtype=acc)
    if grad_y.numel():
        _coeff_grad_kernel[(batch, triton.cdiv(c_out, _BLOCK_O))](
            grad_y, saved if need_coeff else grad_y, da if need_coeff else dy_sum, dy_sum, c_out, h_out, w_out,
            *grad_y.stride(), *(saved.stride() if need_coeff else grad_y.stride()), BANKS=banks,
            NEED_COEFF=need_coeff, ACC=acc_dtype(grad_y.dtype), BLOCK_O=_BLOCK_O, BLOCK_P=_BLOCK_P,
            num_stages=_COEFF_STAGES)
    return da, dy_sum


def backward(grad_y, saved, x, weight, coeff, bias, stride, padding, dilation, output_mask):
    """(dx, dweight, dcoeff, dbias); the gradients not asked for by output_mask are None."""
    need_x, need_weight, need_coeff, need_bias = output_mask
    need_bias = need_bias and bias is not None
    if not addressable(grad_y, 0):  # a gradient of the output strided past what int32 offsets reach
        grad_y = grad_y.contiguous(memory_format=suggest_memory_format(x))
    dx = input_grad(grad_y, x, weight, coeff, stride, padding, dilation) if need_x else None
    dweight = (weight_grad(grad_y, x, weight, coeff, stride, padding, dilation).to(weight.dtype)
               if need_weight else None)
    dcoeff = dbias = None
    if need_coeff or need_bias:
        da, dy_sum = coeff_grad_sums(grad_y, saved, weight.shape[0], need_coeff)
    if need_coeff:
        if bias is not None:
            da = da + bias.to(da.dtype)[None] * dy_sum[:, None]
        dcoeff = (da if coeff.dim() == 3 else da.sum(2)).to(coeff.dtype)
    if need_bias:
        a = coeff if coeff.dim() == 3 else coeff[:, :, None].expand(*coeff.shape, weight.shape[1])
        # contiguous: einsum may hand back a transposed view, and the contract promises dense gradients.
        dbias = torch.einsum("bko,bo->ko", a.to(dy_sum.dtype), dy_sum).to(bias.dtype).contiguous()
    return dx, dweight, dcoeff, dbias
