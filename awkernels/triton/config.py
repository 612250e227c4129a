"""Tile configurations, their per-shape choice, and the numerics switches shared by the Triton kernels.

On a GPU each kernel times its candidate configurations once per shape (triton.testing.do_bench) and
caches the fastest. Under the interpreter (TRITON_INTERPRET=1, CPU tensors) nothing can be timed, so the
first candidate runs, and the tests run every candidate explicitly: every configuration must be correct,
not only the fastest (DESIGN.md section 3, pytorch#173068).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclasses.dataclass(frozen=True)
class Config:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3
    samples_per_program: int = 0  # weight-gradient kernel: batch split (0: the whole batch)

    def tiles(self) -> dict:
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_K=self.block_k)

    def kwargs(self) -> dict:
        return dict(**self.tiles(), num_warps=self.num_warps, num_stages=self.num_stages)

    def batch_splits(self, batch: int) -> int:
        return triton.cdiv(batch, self.samples_per_program) if self.samples_per_program and batch else 1


@dataclasses.dataclass(frozen=True)
class PlaneConfig:
    """Tiles of the per-(sample, channel) plane kernels (MixBN's): channels x pixels per step."""
    block_c: int
    block_p: int
    num_warps: int = 4
    num_stages: int = 3

    def tiles(self) -> dict:
        return dict(BLOCK_C=self.block_c, BLOCK_P=self.block_p)

    def kwargs(self) -> dict:
        return dict(**self.tiles(), num_warps=self.num_warps, num_stages=self.num_stages)


# The epilogue's dx and dW tile C_in: 16 wide for the few input channels of a stem (3: a 64-wide tile would run
# 21 times its FLOPs).
_NARROW = Config(64, 16, 16, num_warps=4, num_stages=2)

# M % 64 == 0 and num_warps % 4 == 0 let Hopper use wgmma; the 32-row tiles serve narrow layers. Eight
# warps for the wide tiles: with four, the blended bank tile and the accumulator spill registers.
CANDIDATES: dict[str, list[Config | PlaneConfig]] = {
    "forward": [
        Config(64, 64, 32, num_warps=8), Config(128, 64, 16, num_warps=8), Config(32, 64, 16, num_stages=2),
    ],
    "input_grad": [
        Config(64, 64, 32, num_warps=8), Config(32, 64, 16, num_warps=8, num_stages=2),
    ],
    "weight_grad": [
        Config(64, 64, 16, num_warps=8, num_stages=2, samples_per_program=16),
        Config(64, 64, 16, num_warps=8, num_stages=2, samples_per_program=4),
    ],
    # K = 2: one program holds G_b and both banks' accumulators: 32-wide tiles, unpipelined (64-wide ones spill
    # under triton 3.6 or 3.8), in every dtype and precision.
    "weight_grad.pair": [
        Config(64, 32, 16, num_warps=8, num_stages=1, samples_per_program=16),
        Config(64, 32, 16, num_warps=8, num_stages=1, samples_per_program=4),
    ],
    # The epilogue strategy (epilogue.py): M = (sample, pixel) rows for the forward and dx, C_out for dW;
    # one accumulator per bank, so two with K = 2. Eight warps: with four these tiles spill. `.float32` (TF32
    # and IEEE dots): narrower tiles or no pipelining, where float32 operands spill the half-precision tiles
    # under triton 3.6 or 3.8.
    "epilogue.forward": [
        Config(64, 64, 32, num_warps=8, num_stages=2), Config(64, 64, 16, num_warps=8, num_stages=2),
    ],
    "epilogue.forward.float32": [
        Config(64, 64, 16, num_warps=8, num_stages=2), Config(64, 32, 16, num_warps=8, num_stages=2),
    ],
    # Unpipelined for IEEE dots (two stages spill K = 2 on sm_90); one stage spills the split-K TF32 kernel on
    # sm_80 under triton 3.6.
    "epilogue.forward.ieee": [
        Config(64, 64, 16, num_warps=8, num_stages=1), Config(64, 32, 16, num_warps=8, num_stages=2),
    ],
    "epilogue.input_grad": [
        Config(128, 64, 16, num_warps=8, num_stages=2), Config(64, 64, 32, num_warps=8, num_stages=2),
        _NARROW,
    ],
    "epilogue.input_grad.float32": [
        Config(64, 64, 16, num_warps=8, num_stages=2), Config(64, 32, 16, num_warps=8, num_stages=2),
        # Eight warps: with four, K = 2's split-K kernel spills on sm_80.
        dataclasses.replace(_NARROW, num_warps=8),
    ],
    "epilogue.weight_grad": [
        Config(64, 64, 32, num_warps=8, num_stages=2), Config(128, 64, 16, num_warps=8, num_stages=2),
        _NARROW,
    ],
    "epilogue.weight_grad.float32": [
        Config(64, 64, 16, num_warps=8, num_stages=1), Config(64, 32, 16, num_warps=8, num_stages=2),
        _NARROW,
    ],
    # MixBN's passes read planes along their contiguous axis: long pixel rows suit NCHW, many channels per
    # pixel channels_last.
    "mixbn.sums": [PlaneConfig(16, 64), PlaneConfig(64, 16), PlaneConfig(4, 256)],
    "mixbn.affine": [PlaneConfig(16, 64), PlaneConfig(64, 16), PlaneConfig(4, 256)],
    # float32 with TF32 off: IEEE dots run on the FMA units and hold their operands in registers, where some
    # tiles above spill (the weight gradient's on sm_90 and sm_80, the narrow input-gradient tile on sm_90 under
    # triton 3.6); no pipelining, or a narrower tile, keeps them in (BLOCK_K stays >= 16: tl.dot's minimum).
    "input_grad.ieee": [
        Config(64, 64, 32, num_warps=8), Config(32, 64, 16, num_warps=8, num_stages=1),
    ],
    "weight_grad.ieee": [
        Config(64, 64, 16, num_warps=8, num_stages=1, samples_per_program=16),
        Config(64, 32, 16, num_warps=8, num_stages=2, samples_per_program=4),
    ],
}

_chosen: dict[tuple, object] = {}


def fastest(key: tuple, options: Sequence, run: Callable[[object], object]):
    """The option `run` is fastest with, timed once per key on a GPU; the first one otherwise."""
    if INTERPRET or len(options) == 1:
        return options[0]
    if key not in _chosen:
        _chosen[key] = min(options, key=lambda option: triton.testing.do_bench(lambda: run(option)))
    return _chosen[key]


def pick(kind: str, key: tuple, run: Callable[[Config], object]) -> Config:
    """The configuration for this kernel and shape: timed once on a GPU, the first one otherwise."""
    return fastest((kind, *key), CANDIDATES[kind], run)


def acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def acc_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(x: torch.Tensor) -> str:
    """float32 dots use TF32 where torch's convolutions would (torch.backends.cudnn.allow_tf32)."""
    if x.dtype == torch.float32 and x.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def candidate_list(kind: str, dtype: torch.dtype, ieee: bool) -> str:
    """The candidate list of kernel `kind` for dots of `dtype` (`ieee`: float32 with TF32 off): the first of
    `<kind>.ieee` (IEEE float32) and `<kind>.float32` (float32) there is, else `kind`."""
    names = (([f"{kind}.ieee"] if ieee else []) + [f"{kind}.float32"]) if dtype == torch.float32 else []
    return next((name for name in names if name in CANDIDATES), kind)


def candidates_for(kind: str, x: torch.Tensor) -> str:
    """The candidate list of kernel `kind` for x (candidate_list)."""
    return candidate_list(kind, x.dtype, dot_precision(x) == "ieee")


def upcast_dots(x: torch.Tensor) -> bool:
    # The interpreter multiplies bf16 dot operands as raw bits (DESIGN.md section 10): upcast there only.
    return INTERPRET and x.dtype == torch.bfloat16
