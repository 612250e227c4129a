"""`aw_conv2d`: the per-sample weight-varied convolution (DESIGN.md section 2)."""
from __future__ import annotations

import torch

from . import _backend, _strategy, _validate, reference

if _backend.HAS_TRITON:
    from .triton.aw_conv2d import aw_conv2d_triton, aw_conv2d_triton_forward


def aw_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    coeff: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Convolve each sample with its own blend of K weight banks.

    With ``a[b, k, o]`` the coefficient broadcast to (B, K, C_out):
    ``W_b[o] = sum_k a[b,k,o] W_k[o]``, ``bias_b[o] = sum_k a[b,k,o] bias_k[o]`` and
    ``y[b] = conv2d(x[b], W_b) + bias_b``.

    Args:
        x: (B, C_in, H, W), NCHW or channels_last.
        weight: (K, C_out, C_in // groups, kH, kW), the K banks.
        coeff: (B, K) layer-level or (B, K, C_out) filter-level coefficients. K = 1 with a filter-level
            coeff is AW-Net's regulation signal omega; K = 2 is the clean/adversarial bank blend.
        bias: None or (K, C_out).

    The strategy that computes it is chosen per call (`awkernels.explain` says which and why).
    """
    if isinstance(x, torch.Tensor) and torch.is_autocast_enabled(x.device.type):
        # Autocast's policy for convolutions: run in its lower-precision dtype.
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight, coeff = x.to(dtype), weight.to(dtype), coeff.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    backend, stride, padding, dilation = _plan(x, weight, coeff, bias, stride, padding, dilation, groups)
    if backend == "triton":
        if coeff.requires_grad and torch.is_grad_enabled():  # the form that keeps what dcoeff reads
            return aw_conv2d_triton_forward(x, weight, coeff, bias, stride, padding, dilation, groups)[0]
        return aw_conv2d_triton(x, weight, coeff, bias, stride, padding, dilation, groups)
    if backend in ("cpp", "cuda"):  # the C++ extension, registered for both devices
        return torch.ops.awnet.aw_conv2d(x, weight, coeff, bias, stride, padding, dilation, groups)
    return reference.aw_conv2d(x, weight, coeff, bias, stride, padding, dilation, groups)


def _plan(x, weight, coeff, bias, stride, padding, dilation, groups) -> tuple:
    """(backend, stride, padding, dilation) for the call, after its checks."""
    key = None
    if not torch.compiler.is_compiling():
        try:
            key = (x.shape, weight.shape, coeff.shape, x.dtype, weight.dtype, coeff.dtype, x.device, weight.device,
                   coeff.device, x.requires_grad, weight.requires_grad, coeff.requires_grad,
                   None if bias is None else (bias.shape, bias.dtype, bias.device, bias.requires_grad),
                   torch.is_grad_enabled(), stride, padding, dilation, groups, _backend._selected)
            plan = _strategy.PLANS.get(key)
        except (AttributeError, TypeError):  # not tensors, or unhashable arguments: the checks will say
            key = plan = None
        if plan is not None:
            _validate.finite_coeff(coeff)  # the value check of debug mode runs on every call
            return plan
    stride, padding, dilation = _validate.aw_conv2d_args(x, weight, coeff, bias, stride, padding, dilation, groups)
    call = _strategy.conv_call(x, weight, coeff, bias, stride, padding, dilation, groups)
    plan = (_strategy.backend_for(_backend.selected(x), *call), stride, padding, dilation)
    if key is not None and len(_strategy.PLANS) < 4096:
        _strategy.PLANS[key] = plan
    return plan
