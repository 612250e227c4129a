"""aw_conv2d against the static convolution and what users would otherwise run, one layer shape at a time.

    pytest bench/ --benchmark-only --benchmark-json bench/results/<device>.json
    python -m bench.report bench/results/<device>.json

Implementations: `static` (one bank, the plain convolution the AW-Net replaces), `reference` (timm-style
per-sample weights and one grouped convolution), `plain` (the plain PyTorch a user would write: for K = 1
the convolution then the per-(sample, filter) scale, for K >= 2 cuDNN/oneDNN on the banks stacked along the
output channels, then the per-sample blend), every awkernels backend that runs on this device (each runs
its strategy for the case: scaled or stacked, epilogue or blend, grouped; recorded as `strategy`, which
`python -m bench.strategy_table` turns into the table `auto` chooses by) and `auto` (what that table gives).
Passes: `fwd` (inference), `fwdbwd` (every gradient), `attack` (dx and dcoeff only: an attack step).
On a GPU: batch 128 (AWNET_BENCH_BATCH), ResNet-18 and WRN-34-10 shapes (AWNET_BENCH_MODELS), bfloat16 for every pass and
float32 / tf32 for fwdbwd. On CPU: small batch, ResNet-18 shapes, float32.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import awkernels
from bench.conftest import CUDA, DEVICE, measure
from bench.shapes import RESNET18, WRN34_10

BATCH = int(os.environ.get("AWNET_BENCH_BATCH", "128" if CUDA else "4"))
MODELS = {"resnet18": RESNET18, "wrn34_10": WRN34_10} if CUDA else {"resnet18": RESNET18}
if os.environ.get("AWNET_BENCH_MODELS"):  # e.g. "resnet18": the speed targets' shapes alone
    MODELS = {name: MODELS[name] for name in os.environ["AWNET_BENCH_MODELS"].split(",")}
# (banks, filter-level coeff): the paper's regulation signal, and the clean/adversarial bank blend.
CASES = {"K1-filter": (1, True), "K2-layer": (2, False)}
SETTINGS = ([("bfloat16", p) for p in ("fwd", "fwdbwd", "attack")] + [("tf32", "fwdbwd"), ("float32", "fwdbwd")]
            if CUDA else [("float32", p) for p in ("fwd", "fwdbwd", "attack")])
BACKENDS = [b for b in awkernels.available_backends() if b != "reference" and (b != "cpp") == CUDA]
IMPLS = [("static", "-")] + [(impl, case) for impl in ["reference", "plain", *BACKENDS, "auto"] for case in CASES]
SHAPES = [(model, shape) for model, shapes in MODELS.items() for shape in shapes]
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "tf32": torch.float32}


def plain(x, weight, coeff, bias, stride, padding):
    banks, out = weight.shape[:2]
    if banks == 1:  # conv, then scale
        a = coeff[:, 0] if coeff.dim() == 3 else coeff
        return F.conv2d(x, weight[0], None, stride, padding) * a[:, :, None, None]
    y = F.conv2d(x, weight.flatten(0, 1), None, stride, padding).unflatten(1, (banks, out))
    a = coeff if coeff.dim() == 3 else coeff[:, :, None]
    return (y * a[..., None, None]).sum(1)


def _op(impl):
    if impl == "plain":
        return plain

    def run(*args):
        with awkernels.use_backend(impl):
            return awkernels.aw_conv2d(*args)
    return run


def flops_and_bytes(shape, banks, impl, pass_, element_size):
    """Useful FLOPs of the pass (the static convolution's, whatever an implementation spends) and a
    minimal-traffic estimate of its bytes, for the roofline bound."""
    pixels_out = shape.out_size ** 2
    conv = 2 * BATCH * shape.c_out * pixels_out * shape.c_in * shape.kernel ** 2
    x = BATCH * shape.c_in * shape.size ** 2
    y = BATCH * shape.c_out * pixels_out
    w = banks * shape.c_out * shape.c_in * shape.kernel ** 2
    forward = x + w + y
    if pass_ == "fwd":
        return conv, element_size * forward
    if pass_ == "fwdbwd":
        return 3 * conv, element_size * (forward + 2 * y + 2 * x + 2 * w)
    if impl == "static":  # attack: dx only
        return 2 * conv, element_size * (forward + y + x + w)
    return 3 * conv, element_size * (forward + 2 * y + 2 * x + w)  # attack: dx and dcoeff


def make_conv_step(shape, impl: str, case: str, dtype: str, pass_: str):
    """One benchmark's work as a function of no arguments, and the benchmark's extra_info."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    banks, filter_level = CASES.get(case, (1, True))
    kind = dict(device=DEVICE, dtype=DTYPES[dtype])
    x = torch.randn(BATCH, shape.c_in, shape.size, shape.size, **kind)
    weight = torch.randn(banks, shape.c_out, shape.c_in, shape.kernel, shape.kernel, **kind) * 0.05
    coeff = torch.rand((BATCH, banks, shape.c_out) if filter_level else (BATCH, banks), **kind)
    grad_y = torch.randn(BATCH, shape.c_out, shape.out_size, shape.out_size, **kind)
    args = (None, shape.stride, shape.padding)
    if impl == "static":
        weight = weight[0]
        op, inputs = F.conv2d, (x, weight)
        wrt = {"fwdbwd": (x, weight), "attack": (x,)}.get(pass_, ())
    else:
        op, inputs = _op(impl), (x, weight, coeff)
        wrt = {"fwdbwd": (x, weight, coeff), "attack": (x, coeff)}.get(pass_, ())
    for t in wrt:
        t.requires_grad_()
    strategy = {}
    if impl not in ("static", "plain"):
        with awkernels.use_backend(impl), torch.set_grad_enabled(pass_ != "fwd"):
            strategy = dict(strategy=awkernels.explain(*inputs, *args).strategy)

    def step():
        if pass_ == "fwd":
            with torch.no_grad():
                return op(*inputs, *args)
        return torch.autograd.grad(op(*inputs, *args), wrt, grad_y)

    flops, traffic = flops_and_bytes(shape, banks, impl, pass_, x.element_size())
    info = dict(impl=impl, layer=shape.layer, case=case, dtype=dtype, flops=flops, bytes=traffic, batch=BATCH,
                **strategy, **{"pass": pass_})
    return step, info


@pytest.mark.parametrize("dtype,pass_", SETTINGS, ids=[f"{d}-{p}" for d, p in SETTINGS])
@pytest.mark.parametrize("impl,case", IMPLS, ids=[f"{i}-{c}" for i, c in IMPLS])
@pytest.mark.parametrize("model,shape", SHAPES, ids=[f"{m}-{s.layer}" for m, s in SHAPES])
def test_conv(benchmark, model, shape, impl, case, dtype, pass_):
    step, info = make_conv_step(shape, impl, case, dtype, pass_)
    result = measure(benchmark, step, model=model, **info)
    assert all(torch.isfinite(r).all() for r in (result if isinstance(result, tuple) else (result,)))
