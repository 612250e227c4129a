"""MixBN (K = 2, training: statistics, running statistics and the affine map) against `F.batch_norm` on the
activation shapes of a CIFAR ResNet-18, forward+backward, in the same run: `static` is one BatchNorm2d
(what the AW-Net replaces), the others `mix_batch_norm` on every backend that runs here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import awkernels
from bench.conftest import CUDA, DEVICE, measure
from bench.test_aw_conv2d import BACKENDS, BATCH

ACTIVATIONS = [(64, 32), (128, 16), (256, 8), (512, 4)]  # (channels, height = width)
IMPLS = ["static", "reference", *BACKENDS]
DTYPE = "bfloat16" if CUDA else "float32"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("channels,size", ACTIVATIONS, ids=[f"bn{c}x{s}" for c, s in ACTIVATIONS])
def test_mix_batch_norm(benchmark, channels, size, impl):
    kind = dict(device=DEVICE, dtype=getattr(torch, DTYPE))
    x = torch.randn(BATCH, channels, size, size, **kind, requires_grad=True)
    grad_y = torch.randn_like(x)
    if impl == "static":
        weight, bias = (torch.ones(channels, **kind, requires_grad=True),
                        torch.zeros(channels, **kind, requires_grad=True))
        stats = [torch.zeros(channels, **kind), torch.ones(channels, **kind)]

        def step():
            y = F.batch_norm(x, *stats, weight, bias, True, 0.1, 1e-5)
            return torch.autograd.grad(y, (x, weight, bias), grad_y)
    else:
        types = torch.arange(BATCH, device=DEVICE) % 2  # half clean, half adversarial, as in training
        coeff = F.one_hot(types, 2).to(kind["dtype"])
        weight = torch.ones(2, channels, **kind, requires_grad=True)
        bias = torch.zeros(2, channels, **kind, requires_grad=True)
        stats = [torch.zeros(2, channels, **kind), torch.ones(2, channels, **kind)]

        def step():
            with awkernels.use_backend(impl):
                y = awkernels.mix_batch_norm(x, coeff, weight, bias, *stats, True, 0.1, 1e-5)
            return torch.autograd.grad(y, (x, weight, bias), grad_y)

    result = measure(benchmark, step, impl=impl, model="resnet18-mixbn", layer=f"bn{channels}x{size}",
                     case="-" if impl == "static" else "K2",
                     dtype=DTYPE, batch=BATCH, **{"pass": "fwdbwd"})
    assert all(torch.isfinite(r).all() for r in result)
