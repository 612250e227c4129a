"""Strategies: how `aw_conv2d` is computed (DESIGN.md section 3), and which one runs a call.

A strategy serves some cases and runs through one backend's implementation on each device; a backend is
the set of strategies its device offers (`cpp`/`cuda`: scaled and stacked; `triton`: epilogue and blend;
`reference`: grouped). A chosen backend runs its strategy for the case. `auto` picks among the strategies available on
the input's device by the table of measured winners, `strategy_table.json` (written by
`python -m bench.strategy_table` from the benchmark results), and for a call it has no measurement of, by
the nearest measured one: same device; then, in order, the same dtype, the same pass (inference,
training, attack), the nearest K, the same coefficient level, and the nearest output pixels per sample and
weight size (log scale), if those are within 8x of the call's (a winner is not extrapolated further: tiny
layers, where host time decides, are not like any measured one). A winner other than the rule's pick must be
at least 5% faster than it there (a smaller win is run-to-run noise). Otherwise the rule: the first of scaled,
stacked, epilogue, blend, grouped that serves the case (one vendor convolution first). `explain(...)` says
which strategy a call gets and why; the `awkernels` logger says it at DEBUG level once per distinct call.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from typing import Callable, NamedTuple

import torch

from . import _backend, _extension, _validate

log = logging.getLogger("awkernels")

MAX_BLEND_BANKS = 8
TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "strategy_table.json")


class ConvCall(NamedTuple):
    """What the choice of a strategy depends on: metadata of the call, never values."""
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32", "bfloat16", ...
    banks: int
    level: str  # "layer": coeff (B, K); "filter": (B, K, C_out)
    pass_: str  # "fwd" (no gradient), "fwdbwd" (the weights' gradient too: training), "attack" (no dW)
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    out_pixels: int  # per sample

    def describe(self) -> str:
        return (f"{self.device}, {self.dtype}, K={self.banks} {self.level}-level, {self.pass_}, "
                f"{self.c_in}->{self.c_out} {self.kernel[0]}x{self.kernel[1]} stride {self.stride[0]}, "
                f"{self.out_pixels} output pixels per sample")


EPILOGUE_BANKS = 2
# With K = 2 the epilogue strategy does two convolutions' FLOPs; blend-in-loop does one, in tiles of one
# sample's output pixels (64 wide): below a full tile per sample the epilogue's sample-spanning tiles win.
EPILOGUE_MAX_PIXELS_K2 = 63


def epilogue_refuses(banks: int, groups: int, out_pixels: int) -> str | None:
    """Why the Triton epilogue kernels do not serve a call (None: they do); the triton backend follows it."""
    if groups != 1:
        return f"it serves groups=1, not groups={groups}"
    if banks > EPILOGUE_BANKS:
        return f"it keeps one accumulator per bank: K <= {EPILOGUE_BANKS}, not {banks}"
    if banks == 2 and out_pixels > EPILOGUE_MAX_PIXELS_K2:
        return (f"with K = 2 it does two convolutions' FLOPs, which pays below a full 64-pixel tile per sample; "
                f"this call has {out_pixels} output pixels per sample (blend-in-loop does one convolution's)")
    return None


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    what: str
    backends: tuple[str, ...]  # its implementations, one per device
    refuses: Callable[[ConvCall], str | None]  # why it does not serve a call (None: it does)


STRATEGIES = (
    Strategy("scaled", "K = 1: one vendor convolution (oneDNN, cuDNN), the per-(sample, filter) scale and bias "
             "in one fused pass", ("cpp", "cuda"),
             lambda c: None if c.banks == 1 else "it serves K = 1"),
    Strategy("stacked", "the K banks stacked along C_out through one vendor convolution, the per-sample blend "
             "in one fused pass (K times the FLOPs)", ("cpp", "cuda"),
             lambda c: None if c.banks >= 2 else "K = 1 is the scaled strategy"),
    Strategy("epilogue", "Triton implicit-GEMM kernels whose tiles span samples (rows: sample x output pixel), "
             "one accumulator per bank and the per-sample scale (K = 1) or blend (K = 2) in the epilogue",
             ("triton",), lambda c: epilogue_refuses(c.banks, c.groups, c.out_pixels)),
    Strategy("blend", "Triton implicit-GEMM kernels blending the K bank tiles per sample in the reduction loop",
             ("triton",), lambda c: (f"it serves groups=1, not groups={c.groups}" if c.groups != 1 else
                                     f"it holds the K bank tiles in registers: K <= {MAX_BLEND_BANKS}, not {c.banks}"
                                     if c.banks > MAX_BLEND_BANKS else None)),
    Strategy("grouped", "each sample's weights blended, then one grouped convolution with groups = B (one "
             "convolution's FLOPs, B copies of the weights; the reference)", ("reference",),
             lambda c: None),
)
BY_NAME = {s.name: s for s in STRATEGIES}


@dataclasses.dataclass(frozen=True)
class Choice:
    strategy: str
    backend: str
    reason: str

    def __str__(self) -> str:
        return f"aw_conv2d runs the {self.strategy!r} strategy on the {self.backend!r} backend: {self.reason}"


def conv_call(x, weight, coeff, bias, stride, padding, dilation, groups) -> ConvCall:
    banks, c_out, _, kh, kw = weight.shape
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or coeff.requires_grad
                                        or (bias is not None and bias.requires_grad))
    pass_ = "fwdbwd" if grad and (weight.requires_grad or (bias is not None and bias.requires_grad)) else (
        "attack" if grad else "fwd")
    out_pixels = 1
    for size, k, s, p, d in zip(x.shape[2:], (kh, kw), stride, padding, dilation):
        out_pixels *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    return ConvCall(x.device.type, str(x.dtype).removeprefix("torch."), banks,
                    "filter" if coeff.dim() == 3 else "layer", pass_, x.shape[1], c_out, (kh, kw), stride,
                    groups, out_pixels)


def _backend_on(strategy: Strategy, device: str) -> str | None:
    """The backend that runs `strategy` on `device` in this install, if any (what `auto` may use)."""
    for name in strategy.backends:
        if name == "reference":
            return name
        if name == "cpp" and device == "cpu" and _extension.has_cpu():
            return name
        if name == "cuda" and device == "cuda" and _extension.cuda_available():
            return name
        if name == "triton" and device == "cuda" and "triton" in _backend.available_backends():
            return name
    return None


# What a call's checks and strategy choice concluded, by the call's metadata (aw_conv2d._plan): they read
# nothing else, so a layer called again with the same shapes skips them (most of the Python time per call).
PLANS: dict[tuple, tuple] = {}


def clear() -> None:
    """Forget every choice made (after the table changed)."""
    choose.cache_clear()
    PLANS.clear()


@functools.cache
def _table() -> dict:
    try:
        with open(TABLE_PATH) as f:
            return json.load(f)
    except (OSError, ValueError) as error:  # an install without it (or a damaged one) still runs, by the rule
        log.warning("awkernels: no strategy table (%s); auto uses the rule", error)
        return {"devices": {}}


MAX_SHAPE_RATIO = 8.0
MIN_GAIN = 0.05  # a measured winner other than the rule's pick must be this much faster


def _log_ratio(a, b) -> float:
    return abs(math.log(max(a, 1) / max(b, 1)))


def _shape_distances(entry: dict, call: ConvCall) -> tuple[float, float]:
    """log ratios of the output pixels per sample and of the weight size."""
    weight_size = call.c_in * call.c_out * call.kernel[0] * call.kernel[1] // call.groups
    return (_log_ratio(entry["out_pixels"], call.out_pixels),
            _log_ratio(entry["c_in"] * entry["c_out"] * entry["kernel"] ** 2, weight_size))


def _distance(entry: dict, call: ConvCall) -> tuple:
    return (entry["dtype"] != call.dtype, entry["pass"] != call.pass_, abs(entry["banks"] - call.banks),
            entry["level"] != call.level, sum(_shape_distances(entry, call)))


def _measured(call: ConvCall, candidates: dict[str, str]) -> Choice | None:
    """The measured winner among `candidates` (strategy -> backend) of the table entry nearest to `call`."""
    entries = [e for e in _table()["devices"].get(call.device, {}).get("entries", [])
               if e["banks"] >= 2 or call.banks == 1]  # a K = 1 measurement says nothing about blending
    if not entries:
        return None
    nearest = min(entries, key=lambda e: _distance(e, call))
    if max(_shape_distances(nearest, call)) > math.log(MAX_SHAPE_RATIO):
        return None
    timed = {name: ms for name, ms in nearest["ms"].items() if name in candidates}
    if not timed:
        return None
    best = min(timed, key=timed.get)
    default = next(name for name in candidates if name in timed)  # the rule's pick among the timed
    exact = not any(_distance(nearest, call))
    where = "measured case" if exact else f"nearest measured case ({nearest['case']})"
    times = ", ".join(f"{name} {ms:.3g} ms" for name, ms in sorted(timed.items(), key=lambda kv: kv[1]))
    if best != default and timed[best] > (1 - MIN_GAIN) * timed[default]:  # a win inside the noise
        return Choice(default, candidates[default], f"the rule's pick: no strategy is {MIN_GAIN:.0%} faster in "
                      f"the {where} in strategy_table.json: {times}")
    return Choice(best, candidates[best], f"fastest in the {where} in strategy_table.json: {times}")


@functools.lru_cache(maxsize=4096)
def choose(call: ConvCall, selected: str) -> Choice:
    """The strategy and backend that run `call` with backend `selected` (a backend name or 'auto')."""
    if selected != "auto":
        for strategy in STRATEGIES:
            if selected in strategy.backends and strategy.refuses(call) is None:
                return _logged(call, Choice(strategy.name, selected, f"backend {selected!r} was selected"))
        # None of its strategies serves the call (triton: groups != 1 or K > 8): auto picks one that does.
        refusals = "; ".join(f"{s.name}: {s.refuses(call)}" for s in STRATEGIES if selected in s.backends)
        fallback = auto_choice(call)
        log.warning("awkernels: backend %r does not serve this call (%s); using %r", selected, refusals,
                    fallback.backend)
        return _logged(call, dataclasses.replace(
            fallback, reason=f"backend {selected!r} does not serve it ({refusals}); {fallback.reason}"))
    return _logged(call, auto_choice(call))


def auto_choice(call: ConvCall) -> Choice:
    candidates = {}
    for strategy in STRATEGIES:
        backend = _backend_on(strategy, call.device)
        if backend is not None and strategy.refuses(call) is None:
            candidates[strategy.name] = backend
    measured = _measured(call, candidates)
    if measured is not None:
        return measured
    first = next(iter(candidates))  # STRATEGIES is in the rule's order; grouped serves every call
    return Choice(first, candidates[first], f"no measured case on {call.device} within {MAX_SHAPE_RATIO:g}x of "
                  "this shape: the rule (scaled, stacked, epilogue, blend, grouped: the first that serves the call and "
                  "runs "
                  "here)")


def backend_for(selected: str, *call) -> str:
    """The backend that runs the call (ConvCall's fields, flat: Dynamo passes constants of plain types to a
    constant function): under torch.compile a constant of the graph, chosen while tracing."""
    return choose(ConvCall(*call), selected).backend


# What torch.compiler.assume_constant_result sets, without its import of Dynamo: that import is 2 of the 5
# seconds `import awnet` takes, and only a compilation needs it (which imports Dynamo itself).
backend_for._dynamo_marked_constant = True


def _logged(call: ConvCall, choice: Choice) -> Choice:
    log.debug("awkernels: %s -> %s", call.describe(), choice)
    return choice


def explain(x, weight, coeff, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Choice:
    """Which strategy and backend `aw_conv2d` runs for these arguments (and the current backend and grad
    mode), and why. `str()` of the result is a sentence."""
    stride, padding, dilation = _validate.aw_conv2d_args(x, weight, coeff, bias, stride, padding, dilation, groups)
    call = conv_call(x, weight, coeff, bias, stride, padding, dilation, groups)
    return choose(call, _backend.selected(x))
