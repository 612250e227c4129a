"""Argument checks shared by every backend.

They read shapes, dtypes and devices only, so they never sync the device. The one check that must read
values (a non-finite coeff) runs only in debug mode (AWNET_DEBUG=1, read at import). Under torch.compile it
runs as an asynchronous assert (`torch._assert_async`, an op in the graph): a Python branch on a value would
break the graph.
"""
from __future__ import annotations

import os

import torch

_DEBUG_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                 "off": False, "": False}


def _debug_setting() -> bool:
    value = os.environ.get("AWNET_DEBUG", "0")
    if value.strip().lower() not in _DEBUG_VALUES:
        raise ValueError(f"AWNET_DEBUG must be 1/0 (or true/false, yes/no, on/off), got {value!r}")
    return _DEBUG_VALUES[value.strip().lower()]


DEBUG = _debug_setting()
_NON_FINITE = "coeff contains NaN or Inf (AWNET_DEBUG=1 check)"

MAX_INT32 = 2**31 - 1
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list, torch.Size)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(value).__name__}")
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if max(values) > MAX_INT32:
        raise ValueError(f"{name} must be <= 2**31 - 1, got {value!r}")
    return values


def _tensor(t, name: str, ndim: int | tuple[int, ...], shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(t).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if t.dim() not in dims:
        raise ValueError(f"{name} must have shape {shape_doc}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")


def _same_device(t: torch.Tensor, name: str, x: torch.Tensor) -> None:
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}; all tensors must be on one device")


def _same_dtype(t: torch.Tensor, name: str, x: torch.Tensor) -> None:
    if t.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but x has dtype {x.dtype}; they must match")


def _float_input(x, ndim: int, shape_doc: str) -> None:
    _tensor(x, "x", ndim, shape_doc)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64, got {x.dtype}")


def finite_coeff(coeff: torch.Tensor) -> None:
    if not DEBUG:
        return
    if torch.compiler.is_compiling():
        torch._assert_async(torch.isfinite(coeff).all(), _NON_FINITE)
    elif not bool(torch.isfinite(coeff).all()):
        raise ValueError(_NON_FINITE)


def aw_conv2d_args(x, weight, coeff, bias, stride, padding, dilation, groups):
    """Check the arguments of aw_conv2d; returns (stride, padding, dilation) as pairs."""
    _float_input(x, 4, "(B, C_in, H, W)")
    _tensor(weight, "weight", 5, "(K, C_out, C_in // groups, kH, kW)")
    _tensor(coeff, "coeff", (2, 3), "(B, K) or (B, K, C_out)")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    stride = pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    for t, name in ((weight, "weight"), (coeff, "coeff")):
        _same_device(t, name, x)
        _same_dtype(t, name, x)

    batch, in_channels, height, width = x.shape
    if in_channels == 0 or height == 0 or width == 0:
        raise ValueError(f"x must have channels and pixels: (B, C_in, H, W) with C_in, H, W >= 1, got "
                         f"{tuple(x.shape)}")
    banks, out_channels, group_in, kh, kw = weight.shape
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must be >= 1 and divide both C_in={in_channels} and C_out={out_channels}")
    if group_in != in_channels // groups:
        raise ValueError(
            f"weight must have shape (K, C_out, C_in // groups, kH, kW) = (K, {out_channels}, "
            f"{in_channels // groups}, kH, kW), got {tuple(weight.shape)}")
    if banks < 1 or out_channels < 1 or kh < 1 or kw < 1:
        raise ValueError(f"weight has an empty dimension: {tuple(weight.shape)}")
    expected = (batch, banks) if coeff.dim() == 2 else (batch, banks, out_channels)
    if tuple(coeff.shape) != expected:
        raise ValueError(
            f"coeff must have shape (B, K) = {(batch, banks)} or (B, K, C_out) = "
            f"{(batch, banks, out_channels)}, got {tuple(coeff.shape)}")
    if bias is not None:
        _tensor(bias, "bias", 2, "(K, C_out)")
        _same_device(bias, "bias", x)
        _same_dtype(bias, "bias", x)
        if tuple(bias.shape) != (banks, out_channels):
            raise ValueError(f"bias must have shape (K, C_out) = {(banks, out_channels)}, got {tuple(bias.shape)}")
    for i, (size, k) in enumerate(((height, kh), (width, kw))):
        if size + 2 * padding[i] - dilation[i] * (k - 1) - 1 < 0:
            raise ValueError(
                f"x's spatial size {(height, width)} with padding {padding} is smaller than the dilated "
                f"kernel {(dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)}")
    finite_coeff(coeff)
    return stride, padding, dilation


def mix_batch_norm_args(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale=None):
    _float_input(x, 4, "(B, C, H, W)")
    _tensor(coeff, "coeff", 2, "(B, K)")
    _same_device(coeff, "coeff", x)
    _same_dtype(coeff, "coeff", x)
    batch, channels = x.shape[:2]
    banks = coeff.shape[1]
    if coeff.shape[0] != batch or banks < 1:
        raise ValueError(f"coeff must have shape (B, K) with B = {batch} and K >= 1, got {tuple(coeff.shape)}")
    params = (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var))
    for name, t in params:
        _tensor(t, name, 2, f"(K, C) = {(banks, channels)}")
        _same_device(t, name, x)
        if tuple(t.shape) != (banks, channels):
            raise ValueError(f"{name} must have shape (K, C) = {(banks, channels)}, got {tuple(t.shape)}")
        if t.dtype not in (x.dtype, torch.float32, torch.float64):
            raise TypeError(f"{name} must be float32 or x's dtype {x.dtype}, got {t.dtype}")
        if t.dtype != weight.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but weight has {weight.dtype}; parameters must match")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    if training and batch * x.shape[2] * x.shape[3] == 1:
        raise ValueError("x has one value per channel; training needs more to compute batch statistics")
    finite_coeff(coeff)
    if prescale is not None:
        _tensor(prescale, "prescale", 2, f"(B, C) = {(batch, channels)}")
        _same_device(prescale, "prescale", x)
        _same_dtype(prescale, "prescale", x)
        if tuple(prescale.shape) != (batch, channels):
            raise ValueError(f"prescale must have shape (B, C) = {(batch, channels)}, got {tuple(prescale.shape)}")
