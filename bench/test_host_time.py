"""Host time per call: the ops on tiny tensors (where the arithmetic is negligible and what is timed is the
Python wrapper, the checks, the strategy lookup and the dispatch), forward+backward, against `F.conv2d` and
`F.batch_norm` on the same tensors. Rows of model `host-tiny` in bench.report: `x static` is the ratio."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import awkernels
from bench.conftest import DEVICE, measure

CONV_CASES = {"K1-filter": (1, True), "K2-layer": (2, False)}


def _conv_step(impl: str, case: str):
    banks, filter_level = CONV_CASES.get(case, (1, True))
    x = torch.randn(2, 4, 6, 6, device=DEVICE, requires_grad=True)
    weight = torch.randn(banks, 4, 4, 3, 3, device=DEVICE, requires_grad=True)
    coeff = torch.rand((2, banks, 4) if filter_level else (2, banks), device=DEVICE, requires_grad=True)
    grad_y = torch.randn(2, 4, 6, 6, device=DEVICE)
    if impl == "static":
        w = weight[0].detach().requires_grad_()
        return lambda: torch.autograd.grad(F.conv2d(x, w, None, 1, 1), (x, w), grad_y)
    return lambda: torch.autograd.grad(awkernels.aw_conv2d(x, weight, coeff, None, 1, 1), (x, weight, coeff), grad_y)


def _bn_step(impl: str):
    x = torch.randn(2, 4, 6, 6, device=DEVICE, requires_grad=True)
    grad_y = torch.randn_like(x)
    banks = 1 if impl == "static" else 2
    weight = torch.ones(banks, 4, device=DEVICE, requires_grad=True)
    bias = torch.zeros(banks, 4, device=DEVICE, requires_grad=True)
    stats = [torch.zeros(banks, 4, device=DEVICE), torch.ones(banks, 4, device=DEVICE)]
    if impl == "static":
        return lambda: torch.autograd.grad(
            F.batch_norm(x, stats[0][0], stats[1][0], weight[0], bias[0], True, 0.1, 1e-5), (x, weight, bias), grad_y)
    coeff = F.one_hot(torch.arange(2, device=DEVICE) % 2, 2).float()
    return lambda: torch.autograd.grad(
        awkernels.mix_batch_norm(x, coeff, weight, bias, *stats, True, 0.1, 1e-5), (x, weight, bias), grad_y)


IMPLS = [("conv", "static", "-")] + [("conv", "auto", c) for c in CONV_CASES] + [("bn", "static", "-"),
                                                                                   ("bn", "auto", "K2")]


@pytest.mark.parametrize("op,impl,case", IMPLS, ids=[f"{o}-{i}-{c}" for o, i, c in IMPLS])
def test_host_time(benchmark, op, impl, case):
    step = _conv_step(impl, case) if op == "conv" else _bn_step(impl)
    result = measure(benchmark, step, impl=impl, model="host-tiny", layer=op, case=case, dtype="float32",
                     batch=2, **{"pass": "fwdbwd"})
    assert all(torch.isfinite(r).all() for r in result)
