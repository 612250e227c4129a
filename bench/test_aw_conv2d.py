"""aw_conv2d forward+backward against the static convolution of the same shape.

    pytest bench/ --benchmark-only [--benchmark-json out.json]

On CPU (no GPU here) this compares the `cpp` and `reference` backends with a static F.conv2d at batch
AWNET_BENCH_BATCH (default 32). K = 1 with a filter-level coeff is the paper's regulation signal; K = 2 with
a layer-level coeff is the clean/adversarial bank blend.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import awkernels
from bench.shapes import RESNET18

BATCH = int(os.environ.get("AWNET_BENCH_BATCH", "32"))
CASES = {"K1-filter": (1, True), "K2-layer": (2, False)}
IMPLS = ["static"] + awkernels.available_backends()


def _inputs(c_in, c_out, kernel, size, banks, filter_level):
    torch.manual_seed(0)
    x = torch.randn(BATCH, c_in, size, size, requires_grad=True)
    weight = torch.randn(banks, c_out, c_in, kernel, kernel, requires_grad=True)
    coeff_shape = (BATCH, banks, c_out) if filter_level else (BATCH, banks)
    coeff = torch.rand(coeff_shape, requires_grad=True)
    return x, weight, coeff


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layer", RESNET18, ids=[shape[0] for shape in RESNET18])
@pytest.mark.parametrize("impl", IMPLS)
def test_fwdbwd(benchmark, impl, layer, case):
    name, c_in, c_out, kernel, stride, size = layer
    x, weight, coeff = _inputs(c_in, c_out, kernel, size, *CASES[case])
    padding = kernel // 2

    def step():
        if impl == "static":
            y = F.conv2d(x, weight[0], None, stride, padding)
        else:
            with awkernels.use_backend(impl):
                y = awkernels.aw_conv2d(x, weight, coeff, None, stride, padding)
        y.sum().backward()
        return y

    benchmark.extra_info.update(impl=impl, layer=name, case=case, batch=BATCH, dtype="float32", **{"pass": "fwdbwd"})
    y = benchmark(step)
    assert y.shape == (BATCH, c_out, (size + 2 * padding - kernel) // stride + 1, (size + 2 * padding - kernel) // stride + 1)
