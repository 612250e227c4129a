"""Parity of `awkernels.aw_conv2d` on every backend against the reference computed in float64."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import awkernels
from awkernels import reference
from conftest import PARITY_DTYPE, TOLERANCE, assert_close, grads, to_layout

F64 = torch.float64
ALL_INPUTS = ("x", "weight", "coeff", "bias")


def as_pair(value) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


@dataclass(frozen=True)
class ConvCase:
    id: str
    batch: int = 2
    c_in: int = 4
    c_out: int = 6
    size: tuple[int, int] = (7, 7)
    kernel: tuple[int, int] = (3, 3)
    banks: int = 2
    level: str = "filter"  # coeff (B, K, C_out); "layer": (B, K)
    bias: bool = True
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    dtype: torch.dtype = PARITY_DTYPE  # float32 unless AWNET_PARITY_DTYPE says otherwise
    layout: str = "contiguous"  # channels_last: x; noncontiguous: every input

    def output_shape(self) -> tuple[int, ...]:
        spatial = tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(self.size, self.kernel, as_pair(self.stride), as_pair(self.padding),
                                     as_pair(self.dilation)))
        return (self.batch, self.c_out) + spatial

    def inputs(self) -> dict[str, torch.Tensor]:
        """float64 inputs holding values exactly representable in `dtype`, so both sides see the same numbers."""
        shapes = {
            "x": (self.batch, self.c_in, *self.size),
            "weight": (self.banks, self.c_out, self.c_in // self.groups, *self.kernel),
            "coeff": (self.batch, self.banks) + ((self.c_out,) if self.level == "filter" else ()),
        }
        if self.bias:
            shapes["bias"] = (self.banks, self.c_out)
        return {name: torch.randn(shape, dtype=F64).to(self.dtype).to(F64) for name, shape in shapes.items()}


CASES = [
    ConvCase("K2-filter-bias-3x3"),
    ConvCase("K2-filter-bias-3x3-f64", dtype=F64),
    ConvCase("K1-filter-1x1-nobias", banks=1, kernel=(1, 1), bias=False),
    # 100 output pixels per sample: triton's K = 2 blend-in-loop kernels (below 64, its epilogue kernels)
    ConvCase("K2-filter-10x10-p1", size=(10, 10), padding=1),
    # 64 output pixels, stride 2: triton's blend strategy with the epilogue's input gradient by stride phase
    ConvCase("K2-layer-s2-p1-16x16", level="layer", size=(16, 16), stride=2, padding=1),
    ConvCase("K3-layer-s2-p1", banks=3, level="layer", stride=2, padding=1),
    ConvCase("K2-layer-3x1-s2x1-p1x2-f64", level="layer", kernel=(3, 1), stride=(2, 1), padding=(1, 2), dtype=F64),
    ConvCase("K2-filter-g2-d2-p2", groups=2, dilation=2, padding=2),
    ConvCase("K3-filter-depthwise-x2-s2-p1", c_out=8, groups=4, banks=3, stride=2, padding=1),
    ConvCase("K2-layer-depthwise-nobias-p1-f64", c_out=4, groups=4, level="layer", bias=False, padding=1, dtype=F64),
    ConvCase("K2-layer-p1-channels_last", level="layer", padding=1, layout="channels_last"),
    ConvCase("K3-filter-g2-s2-channels_last-f64", banks=3, groups=2, stride=2, layout="channels_last", dtype=F64),
    ConvCase("K2-filter-s2x1-p1-noncontiguous", stride=(2, 1), padding=1, layout="noncontiguous"),
    ConvCase("K1-layer-3x1-noncontiguous-f64", banks=1, level="layer", kernel=(3, 1), layout="noncontiguous",
             dtype=F64),
    ConvCase("batch1-K2-filter-d2-p1", batch=1, dilation=2, padding=1),
    ConvCase("batch1-K1-layer-1x1-g2-f64", batch=1, banks=1, level="layer", kernel=(1, 1), groups=2, dtype=F64),
    # Larger than the CPU kernels' share per thread (ATen's grain of 32768 elements): several tasks per pass.
    ConvCase("large-K2-filter-p1", batch=8, c_in=8, c_out=32, size=(24, 24), padding=1),
    ConvCase("large-K3-layer-g2-p1-channels_last", batch=8, c_in=8, c_out=32, size=(24, 24), banks=3,
             level="layer", groups=2, padding=1, layout="channels_last"),
    ConvCase("large-K1-filter-p1-channels_last", batch=8, c_in=8, c_out=32, size=(24, 24), banks=1, padding=1,
             layout="channels_last"),
    ConvCase("odd-B3-3to5-9x5-k2x3-s1x2-p0x1-d2x1", batch=3, c_in=3, c_out=5, size=(9, 5), kernel=(2, 3),
             banks=3, stride=(1, 2), padding=(0, 1), dilation=(2, 1)),
]


def check_parity(backend, case: ConvCase, wrt: tuple[str, ...]) -> None:
    """Output and the gradients w.r.t. `wrt` of the backend against the float64 reference."""
    torch.manual_seed(0)
    exact = case.inputs()
    wrt = tuple(name for name in wrt if name in exact)
    tested = {}
    for name, t in exact.items():
        layout = case.layout if name == "x" or case.layout == "noncontiguous" else "contiguous"
        tested[name] = to_layout(t.to(case.dtype, copy=True), layout).to(backend.device).requires_grad_(name in wrt)
    ref_inputs = {name: t.clone().requires_grad_(name in wrt) for name, t in exact.items()}

    with awkernels.use_backend(backend.name):
        y = awkernels.aw_conv2d(tested["x"], tested["weight"], tested["coeff"], tested.get("bias"),
                                stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    y_ref = reference.aw_conv2d(ref_inputs["x"], ref_inputs["weight"], ref_inputs["coeff"], ref_inputs.get("bias"),
                                case.stride, case.padding, case.dilation, case.groups)

    assert tuple(y.shape) == case.output_shape()
    assert y.dtype == case.dtype
    assert y.device.type == backend.device.type
    tol = TOLERANCE[case.dtype]
    assert_close(y, y_ref, tol, "y")

    dy = torch.randn(y_ref.shape, dtype=F64).to(case.dtype).to(F64)
    got = grads(y, {n: tested[n] for n in wrt}, dy.to(case.dtype).to(backend.device))
    want = grads(y_ref, {n: ref_inputs[n] for n in wrt}, dy)
    for name in wrt:
        assert got[name].dtype == case.dtype, f"d{name} has dtype {got[name].dtype}"
        assert_close(got[name], want[name], tol, f"d{name}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parity_output_and_all_gradients(backend, case):
    check_parity(backend, case, ALL_INPUTS)


@pytest.mark.parametrize("wrt", [("x", "coeff"), ("weight",), ("coeff", "bias")],
                         ids=["attack-step-x-coeff", "weight-only", "coeff-bias"])
@pytest.mark.parametrize("level", ["filter", "layer"])
def test_parity_when_only_some_gradients_are_requested(backend, level, wrt):
    case = ConvCase(f"partial-{level}", level=level, stride=2, padding=1)
    check_parity(backend, case, wrt)


@pytest.mark.parametrize("level", ["filter", "layer"])
def test_empty_batch(backend, level):
    torch.manual_seed(0)
    coeff_shape = (0, 2, 6) if level == "filter" else (0, 2)
    x, weight, coeff, bias = (torch.randn(shape, device=backend.device).requires_grad_()
                              for shape in ((0, 4, 6, 6), (2, 6, 2, 3, 3), coeff_shape, (2, 6)))
    with awkernels.use_backend(backend.name):
        y = awkernels.aw_conv2d(x, weight, coeff, bias, stride=2, padding=1, groups=2)
    assert tuple(y.shape) == (0, 6, 3, 3)
    assert y.dtype == x.dtype

    got = grads(y, {"x": x, "weight": weight, "coeff": coeff, "bias": bias}, torch.empty_like(y))
    assert got["x"].shape == x.shape
    assert got["coeff"].shape == coeff.shape
    for name, t in (("weight", weight), ("bias", bias)):
        assert got[name].shape == t.shape, f"d{name} has shape {tuple(got[name].shape)}"
        assert torch.equal(got[name], torch.zeros_like(t)), f"d{name} is not zero for an empty batch"
