"""Parity of `awkernels.mix_batch_norm` on every backend against the reference computed in float64."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import awkernels
from awkernels import reference
from conftest import PARITY_DTYPE, TOLERANCE, assert_close, grads, to_layout

F64 = torch.float64
EPS = 1e-5
PARAMS = ("weight", "bias")
STATS = ("running_mean", "running_var")


@dataclass(frozen=True)
class BNCase:
    id: str
    training: bool
    banks: int = 2
    # hard: one-hot rows over every bank; soft: values in [0.2, 1); zero-bank: the last bank gets no weight
    coeff: str = "soft"
    batch: int = 3
    channels: int = 4
    size: tuple[int, int] = (3, 3)
    dtype: torch.dtype = PARITY_DTYPE  # float32 unless AWNET_PARITY_DTYPE says otherwise
    layout: str = "contiguous"  # of x (and of coeff when noncontiguous)
    momentum: float = 0.1
    params: torch.dtype | None = None  # of weight, bias and running stats; None: float64 for float64 x, else float32
    wrt: tuple[str, ...] = ("x", "coeff") + PARAMS  # the inputs that require grad (an attack's: x and coeff)
    prescale: bool = False  # a (B, C) prescale (a folded omega) in [0.3, 2)

    @property
    def param_dtype(self) -> torch.dtype:
        return self.params or (F64 if self.dtype == F64 else torch.float32)

    def make_coeff(self) -> torch.Tensor:
        if self.coeff.startswith("hard"):
            used = self.banks - 1 if self.coeff == "hard-zero-bank" else self.banks
            return F.one_hot(torch.arange(self.batch) % used, self.banks).to(F64)
        coeff = 0.2 + 0.8 * torch.rand(self.batch, self.banks, dtype=F64)
        if self.coeff == "soft-zero-bank":
            coeff[:, -1] = 0
        return coeff

    def inputs(self) -> dict[str, torch.Tensor]:
        """float64 inputs holding values exactly representable in the tested dtypes."""
        shape = (self.banks, self.channels)
        values = {
            "x": (0.5 + 2 * torch.randn(self.batch, self.channels, *self.size, dtype=F64), self.dtype),
            "coeff": (self.make_coeff(), self.dtype),
            "weight": (1 + 0.3 * torch.randn(shape, dtype=F64), self.param_dtype),
            "bias": (0.2 * torch.randn(shape, dtype=F64), self.param_dtype),
            "running_mean": (0.5 * torch.randn(shape, dtype=F64), self.param_dtype),
            "running_var": (0.5 + torch.rand(shape, dtype=F64), self.param_dtype),
        }
        if self.prescale:
            values["prescale"] = (0.3 + 1.7 * torch.rand(self.batch, self.channels, dtype=F64), self.dtype)
        return {name: t.to(dtype).to(F64) for name, (t, dtype) in values.items()}


CASES = [
    BNCase("train-K1-soft", True, banks=1),
    BNCase("train-K2-hard", True, coeff="hard"),
    BNCase("train-K2-soft-f64", True, dtype=F64),
    BNCase("train-K2-soft-f64-float32-params", True, dtype=F64, params=torch.float32),
    BNCase("train-K3-hard-channels_last", True, banks=3, coeff="hard", layout="channels_last"),
    BNCase("train-K3-soft-noncontiguous-f64", True, banks=3, layout="noncontiguous", dtype=F64, momentum=0.3),
    BNCase("train-K3-soft-zero-bank", True, banks=3, coeff="soft-zero-bank"),
    BNCase("train-K2-hard-zero-bank-f64", True, coeff="hard-zero-bank", dtype=F64),
    BNCase("train-batch1-K2-soft", True, batch=1),
    BNCase("train-batch1-K2-hard", True, batch=1, coeff="hard"),
    BNCase("train-odd-B2-C5-5x2-K2-soft-channels_last", True, batch=2, channels=5, size=(5, 2),
           layout="channels_last"),
    BNCase("eval-K1-hard", False, banks=1, coeff="hard"),
    BNCase("eval-K2-soft", False),
    BNCase("eval-K3-hard-noncontiguous-f64", False, banks=3, coeff="hard", layout="noncontiguous", dtype=F64),
    BNCase("eval-K2-soft-channels_last-f64", False, layout="channels_last", dtype=F64),
    BNCase("eval-batch1-K2-soft", False, batch=1),
    # Larger than the CPU kernels' share per thread (ATen's grain of 32768 elements): several tasks per pass.
    BNCase("train-K2-soft-large", True, batch=8, channels=32, size=(24, 24)),
    BNCase("train-K2-hard-large-channels_last", True, coeff="hard", batch=8, channels=32, size=(24, 24),
           layout="channels_last"),
    BNCase("train-K2-soft-5000-channels", True, batch=4, channels=5000, size=(2, 2)),
    BNCase("eval-K2-soft-large", False, batch=8, channels=32, size=(24, 24)),
    # The eval passes (one each way) in both layouts, with more (sample, channel) maps than one task takes.
    BNCase("eval-K3-hard-large-channels_last", False, coeff="hard", banks=3, batch=8, channels=40, size=(24, 24),
           layout="channels_last"),
    BNCase("eval-K2-soft-5000-channels", False, batch=4, channels=5000, size=(2, 2)),
    # An attack's backward (no parameter gradient): dx and dcoeff from the eval pass alone, no finalize.
    BNCase("attack-K2-soft", False, wrt=("x", "coeff")),
    BNCase("attack-K1-hard-batch1", False, banks=1, coeff="hard", batch=1, wrt=("x", "coeff")),
    BNCase("attack-K3-soft-noncontiguous-f64", False, banks=3, layout="noncontiguous", dtype=F64, wrt=("x", "coeff")),
    BNCase("attack-K3-hard-large-channels_last", False, coeff="hard", banks=3, batch=8, channels=40, size=(24, 24),
           layout="channels_last", wrt=("x", "coeff")),
    BNCase("attack-K2-soft-5000-channels", False, batch=4, channels=5000, size=(2, 2), wrt=("x", "coeff")),
    BNCase("attack-K2-soft-coeff-only", False, wrt=("coeff",)),
    # The update step (a forced route, no coefficient gradient): the dx pass makes its finalize itself.
    BNCase("update-K2-hard", True, coeff="hard", wrt=("x",) + PARAMS),
    BNCase("update-K3-soft-zero-bank-f64", True, banks=3, coeff="soft-zero-bank", dtype=F64, wrt=("x",) + PARAMS),
    BNCase("update-batch1-K2-soft", True, batch=1, wrt=("x",) + PARAMS),
    BNCase("update-K2-hard-large-channels_last", True, coeff="hard", batch=8, channels=40, size=(24, 24),
           layout="channels_last", wrt=("x",) + PARAMS),
    BNCase("update-K2-soft-5000-channels", True, batch=4, channels=5000, size=(2, 2), wrt=("x",) + PARAMS),
    BNCase("update-K2-soft-x-only-noncontiguous", True, layout="noncontiguous", wrt=("x",)),
    # With a prescale (an AW convolution's omega, folded in): eval (the map absorbs it) and training.
    BNCase("prescale-eval-K2-soft", False, prescale=True, wrt=("x", "coeff", "prescale") + PARAMS),
    BNCase("prescale-attack-K2-soft-noncontiguous-f64", False, layout="noncontiguous", dtype=F64, prescale=True,
           wrt=("x", "coeff", "prescale")),
    BNCase("prescale-attack-K2-hard-large-channels_last", False, coeff="hard", batch=8, channels=40, size=(24, 24),
           layout="channels_last", prescale=True, wrt=("x", "coeff", "prescale")),
    BNCase("prescale-attack-K2-soft-prescale-only", False, prescale=True, wrt=("prescale",)),
    BNCase("prescale-train-K2-soft", True, prescale=True, wrt=("x", "coeff", "prescale") + PARAMS),
    BNCase("prescale-train-K3-hard-channels_last-f64", True, banks=3, coeff="hard", layout="channels_last", dtype=F64,
           prescale=True, wrt=("x", "coeff", "prescale") + PARAMS),
    BNCase("prescale-update-K2-hard-large", True, coeff="hard", batch=8, channels=32, size=(24, 24), prescale=True,
           wrt=("x", "prescale") + PARAMS),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parity_output_gradients_and_running_stats(backend, case):
    if case.channels > 1000 and backend.name == "triton" and backend.device.type == "cpu":
        pytest.skip("sized for the C++ CPU finalize's tasks; under the Triton interpreter it takes a minute, and "
                    "the triton kernels' tiles are exceeded by the other large cases")
    torch.manual_seed(0)
    exact = case.inputs()
    wrt = case.wrt
    tested = {}
    for name, t in exact.items():
        dtype = case.dtype if name in ("x", "coeff", "prescale") else case.param_dtype
        layout = case.layout if name == "x" or (name == "coeff" and case.layout == "noncontiguous") else "contiguous"
        tested[name] = to_layout(t.to(dtype, copy=True), layout).to(backend.device).requires_grad_(name in wrt)
    ref_inputs = {name: t.clone().requires_grad_(name in wrt) for name, t in exact.items()}

    with awkernels.use_backend(backend.name):
        y = awkernels.mix_batch_norm(*(tested[n] for n in ("x", "coeff") + PARAMS + STATS),
                                     training=case.training, momentum=case.momentum, eps=EPS,
                                     prescale=tested.get("prescale"))
    y_ref = reference.mix_batch_norm(*(ref_inputs[n] for n in ("x", "coeff") + PARAMS + STATS),
                                     case.training, case.momentum, EPS, ref_inputs.get("prescale"))

    assert y.shape == tested["x"].shape
    assert y.dtype == case.dtype
    assert_close(y, y_ref, TOLERANCE[case.dtype], "y")

    dy = torch.randn(y_ref.shape, dtype=F64).to(case.dtype).to(F64)
    got = grads(y, {n: tested[n] for n in wrt}, dy.to(case.dtype).to(backend.device))
    want = grads(y_ref, {n: ref_inputs[n] for n in wrt}, dy)
    for name in wrt:
        assert got[name].dtype == tested[name].dtype, f"d{name} has dtype {got[name].dtype}"
        assert_close(got[name], want[name], TOLERANCE[got[name].dtype], f"d{name}")

    # Eval keeps every bank's statistics, training those of the banks with zero total weight, bit for bit.
    kept = exact["coeff"].sum(0) == 0 if case.training else torch.ones(case.banks, dtype=torch.bool)
    for name in STATS:
        assert tested[name].dtype == case.param_dtype
        assert_close(tested[name], ref_inputs[name], TOLERANCE[case.param_dtype], f"updated {name}")
        before = exact[name].to(case.param_dtype)
        assert torch.equal(tested[name].cpu()[kept], before[kept]), f"{name} changed in banks {kept.tolist()}"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_one_bank_of_ones_is_torch_batch_norm(backend, training):
    """K = 1, coeff = 1 is BatchNorm2d: same output, gradients and (unbiased-variance) running statistics."""
    torch.manual_seed(0)
    momentum = 0.3
    x = 0.5 + 2 * torch.randn(3, 4, 3, 3, dtype=F64)
    weight, bias = 1 + 0.3 * torch.randn(1, 4, dtype=F64), 0.2 * torch.randn(1, 4, dtype=F64)
    stats = (0.5 * torch.randn(1, 4, dtype=F64), 0.5 + torch.rand(1, 4, dtype=F64))

    tested = [t.clone().to(backend.device).requires_grad_() for t in (x, weight, bias)]
    tested_stats = [s.clone().to(backend.device) for s in stats]
    coeff = torch.ones(3, 1, dtype=F64, device=backend.device)
    with awkernels.use_backend(backend.name):
        y = awkernels.mix_batch_norm(tested[0], coeff, tested[1], tested[2], *tested_stats,
                                     training=training, momentum=momentum, eps=EPS)

    torch_inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    torch_stats = [s.clone() for s in stats]
    y_torch = F.batch_norm(torch_inputs[0], torch_stats[0][0], torch_stats[1][0], torch_inputs[1][0],
                           torch_inputs[2][0], training=training, momentum=momentum, eps=EPS)

    tol = TOLERANCE[F64]
    assert_close(y, y_torch, tol, "y")
    dy = torch.randn_like(y_torch)
    got = torch.autograd.grad(y, tested, dy.to(backend.device))
    want = torch.autograd.grad(y_torch, torch_inputs, dy)
    for name, g, w in zip(("x", "weight", "bias"), got, want):
        assert_close(g, w, tol, f"d{name}")
    for name, s, w in zip(("running_mean", "running_var"), tested_stats, torch_stats):
        assert_close(s, w, tol, name)


def test_empty_batch_in_eval(backend):
    torch.manual_seed(0)
    x = torch.randn(0, 4, 3, 3, device=backend.device).requires_grad_()
    coeff = torch.rand(0, 2, device=backend.device).requires_grad_()
    weight, bias = (torch.randn(2, 4, device=backend.device).requires_grad_() for _ in range(2))
    stats = (torch.randn(2, 4, device=backend.device), torch.rand(2, 4, device=backend.device) + 0.5)
    before = [s.clone() for s in stats]
    with awkernels.use_backend(backend.name):
        y = awkernels.mix_batch_norm(x, coeff, weight, bias, *stats, training=False, momentum=0.1, eps=EPS)
    assert y.shape == x.shape
    assert y.dtype == x.dtype

    got = grads(y, {"x": x, "coeff": coeff, "weight": weight, "bias": bias}, torch.empty_like(y))
    assert got["x"].shape == x.shape
    assert got["coeff"].shape == coeff.shape
    for name, t in (("weight", weight), ("bias", bias)):
        assert got[name].shape == t.shape, f"d{name} has shape {tuple(got[name].shape)}"
        assert torch.equal(got[name], torch.zeros_like(t)), f"d{name} is not zero for an empty batch"
    for s, b in zip(stats, before):
        assert torch.equal(s, b), "eval mode changed the running statistics"
