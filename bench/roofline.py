"""FLOPs and bytes per launch of the Triton convolution kernels on the ResNet-18 shapes, against a static
convolution's, and what bounds each on an H100 (989 TFLOP/s dense bf16, 3.35 TB/s HBM3).

    python -m bench.roofline [--batch 128] [--banks 1 2] [--strategy blend|epilogue] [--markdown]

A model of the kernels as written (awkernels/triton/aw_conv2d.py for the blend strategy, epilogue.py for the
epilogue strategy; each layer gets the strategy the triton backend runs for it), not a measurement: each
kernel's grid and loop trip counts with its configuration's tiles give the FLOPs its dots execute (tile padding and the
stride's masked taps included) and the operand bytes its programs load (from L2, or from HBM on a miss); the
compulsory HBM bytes are every tensor read or written once. The configuration is the candidate with the least
modelled time (on a GPU the autotuner times them). The static convolution's figures are its
FLOPs (2 B C_out P C_in kH kW per direction) and its compulsory bytes. Roofline time: the larger of FLOPs /
989 TFLOP/s and compulsory bytes / 3.35 TB/s; `bound` says which.
"""
from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import torch

from awkernels._strategy import epilogue_refuses
from awkernels.triton.aw_conv2d import banks_per_program, weight_grad_candidates
from awkernels.triton.config import CANDIDATES, Config
from awkernels.triton.epilogue import phase_taps, reduction_splits, weight_splits
from bench.shapes import RESNET18, ConvShape

PEAK_FLOPS = 989e12  # H100 SXM, dense bf16 tensor cores
PEAK_BYTES = 3.35e12  # H100 SXM, HBM3
ELEMENT = 2  # bfloat16 operands and outputs
ACC = 4  # float32 accumulators written by the weight/coeff-gradient kernel


class Launch(NamedTuple):
    flops: float  # executed by the kernel's dots (and the bank blend)
    operand_bytes: float  # loaded by all its programs (L2 traffic)
    hbm_bytes: float  # compulsory: every tensor once


def _blend_in_loop(programs: int, reduction: int, banks: int, cfg: Config) -> tuple[float, float]:
    """FLOPs and operand bytes of a blend-in-loop kernel's programs: per BLOCK_K step of the reduction an
    activation tile, K bank tiles blended in registers (K >= 2), one dot."""
    steps = programs * math.ceil(reduction / cfg.block_k)
    flops = steps * 2 * cfg.block_m * cfg.block_k * (cfg.block_n + (banks if banks > 1 else 0))
    return flops, steps * (cfg.block_n + banks * cfg.block_m) * cfg.block_k * ELEMENT


def forward(s: ConvShape, batch: int, banks: int, cfg: Config) -> Launch:
    """Grid (B * output-pixel tiles, filter tiles), reduction over (C_in, kH, kW)."""
    pixels, reduction = s.out_size ** 2, s.c_in * s.kernel ** 2
    programs = batch * math.ceil(pixels / cfg.block_n) * math.ceil(s.c_out / cfg.block_m)
    hbm = (batch * s.c_in * s.size ** 2 + banks * s.c_out * reduction + batch * s.c_out * pixels) * ELEMENT
    return Launch(*_blend_in_loop(programs, reduction, banks, cfg), hbm)


def input_grad(s: ConvShape, batch: int, banks: int, cfg: Config) -> Launch:
    """Grid (B * input-pixel tiles, input-channel tiles), reduction over (C_out, kH, kW): the dy tile is
    gathered where the stride lands, and the dot still runs the masked taps."""
    pixels, reduction = s.size ** 2, s.c_out * s.kernel ** 2
    programs = batch * math.ceil(pixels / cfg.block_n) * math.ceil(s.c_in / cfg.block_m)
    hbm = (batch * s.c_out * s.out_size ** 2 + banks * s.c_out * s.c_in * s.kernel ** 2
           + batch * s.c_in * pixels) * ELEMENT
    return Launch(*_blend_in_loop(programs, reduction, banks, cfg), hbm)


def weight_coeff_grad(s: ConvShape, batch: int, banks: int, cfg: Config) -> Launch:
    """Grid (filter tiles, reduction tiles, batch splits * bank groups): each program forms G_b = dy_b im2col(x_b)^T
    over every sample of its split, once for both banks of a pair and once per bank beyond that."""
    pixels, reduction = s.out_size ** 2, s.c_in * s.kernel ** 2
    tiles = math.ceil(s.c_out / cfg.block_m) * math.ceil(reduction / cfg.block_n)
    steps = batch * math.ceil(pixels / cfg.block_k)  # over each program's samples, summed over the splits
    groups = banks // banks_per_program(banks)
    flops = groups * tiles * steps * 2 * cfg.block_m * cfg.block_n * cfg.block_k
    operands = groups * tiles * steps * (cfg.block_m + cfg.block_n) * cfg.block_k * ELEMENT
    splits = cfg.batch_splits(batch)
    hbm = ((batch * s.c_out * pixels + batch * s.c_in * s.size ** 2 + banks * s.c_out * reduction) * ELEMENT
           + (splits * banks * s.c_out * reduction + math.ceil(reduction / cfg.block_n) * batch * banks * s.c_out)
           * ACC)
    return Launch(flops, operands, hbm)


# The epilogue strategy (awkernels/triton/epilogue.py): rows are (sample, pixel) pairs, so only the last row tile
# of the whole batch is partial; each tap's reduction over channels rounds up to BLOCK_K; one dot per bank.
def _epilogue(tiles: int, steps: int, banks: int, cfg: Config, a_rows: int, b_rows: int) -> tuple[float, float]:
    flops = banks * tiles * steps * 2 * cfg.block_m * cfg.block_n * cfg.block_k
    return flops, tiles * steps * (a_rows + banks * b_rows) * cfg.block_k * ELEMENT


def _bank_copy(s: ConvShape, banks: int) -> int:
    """The banks' channel-fastest copy the epilogue forward and input gradient read (written, then read)."""
    return 2 * banks * s.c_out * s.c_in * s.kernel ** 2


def _split_partials(steps: int, programs: int, outputs: int) -> int:
    """Bytes of split-K's float32 partial outputs (written, then read by the sum), where the grid splits."""
    splits = reduction_splits(steps, programs, outputs)
    return 2 * splits * outputs * ACC if splits > 1 else 0


def epilogue_forward(s: ConvShape, batch: int, banks: int, cfg: Config) -> Launch:
    """Grid (sample-pixel row tiles, filter tiles, splits of the reduction where the grid is smaller than the
    machine), reduction over taps x C_in; keeps the K bank outputs (what a training or attack step's dcoeff
    reads)."""
    pixels = s.out_size ** 2
    tiles = math.ceil(batch * pixels / cfg.block_m) * math.ceil(s.c_out / cfg.block_n)
    steps = s.kernel ** 2 * math.ceil(s.c_in / cfg.block_k)
    outputs = (1 + banks) * batch * s.c_out * pixels
    hbm = ((batch * s.c_in * s.size ** 2 + banks * s.c_out * s.c_in * s.kernel ** 2 + _bank_copy(s, banks)
            + outputs) * ELEMENT + _split_partials(steps, tiles, outputs))
    return Launch(*_epilogue(tiles, steps, banks, cfg, cfg.block_m, cfg.block_n), hbm)


def epilogue_input_grad(s: ConvShape, batch: int, banks: int, cfg: Config) -> Launch:
    """Grid (row tiles, C_in tiles, stride phases): each phase's input pixels (sample-spanning rows) run only the
    taps that reach an output pixel from it (awkernels.triton.epilogue.phase_taps), reduction over C_out each."""
    taps = phase_taps((s.kernel, s.kernel), (s.stride, s.stride), (s.padding, s.padding), (1, 1), "cpu").tolist()
    c_tiles, o_steps = math.ceil(s.c_in / cfg.block_n), math.ceil(s.c_out / cfg.block_k)
    flops = operands = 0.0
    for phase, (count, *_) in enumerate(taps):
        ph, pw = divmod(phase, s.stride)
        rows = batch * math.ceil((s.size - ph) / s.stride) * math.ceil((s.size - pw) / s.stride)
        tiles = math.ceil(rows / cfg.block_m) * c_tiles
        phase_flops, phase_operands = _epilogue(tiles, count * o_steps, banks, cfg, cfg.block_m, cfg.block_n)
        flops, operands = flops + phase_flops, operands + phase_operands
    # The grid: phase (0, 0)'s row tiles for every phase.
    programs = math.ceil(batch * math.ceil(s.size / s.stride) ** 2 / cfg.block_m) * c_tiles * len(taps)
    outputs = batch * s.c_in * s.size ** 2
    hbm = ((batch * s.c_out * s.out_size ** 2 + banks * s.c_out * s.c_in * s.kernel ** 2 + _bank_copy(s, banks)
            + outputs) * ELEMENT + _split_partials(max(t[0] for t in taps) * o_steps, programs, outputs))
    return Launch(flops, operands, hbm)


def epilogue_weight_grad(s: ConvShape, batch: int, banks: int, cfg: Config) -> Launch:
    """Grid (filter tiles, taps x C_in tiles, splits of the rows), reduction over sample-pixel rows; the splits'
    float32 partial sums are written and summed."""
    rows, reduction = batch * s.out_size ** 2, s.c_in * s.kernel ** 2
    tiles = math.ceil(s.c_out / cfg.block_m) * s.kernel ** 2 * math.ceil(s.c_in / cfg.block_n)
    splits = weight_splits(rows, tiles, cfg.block_k)
    steps = math.ceil(rows / cfg.block_k)
    hbm = ((batch * s.c_out * s.out_size ** 2 + batch * s.c_in * s.size ** 2) * ELEMENT
           + 2 * splits * banks * s.c_out * reduction * ACC)
    return Launch(*_epilogue(tiles, steps, banks, cfg, cfg.block_m, cfg.block_n), hbm)


def epilogue_coeff_grad(s: ConvShape, batch: int, banks: int, cfg: Config | None = None) -> Launch:
    """One pass over dy and the K kept bank outputs: da = sum_p dy y_k and the sums of dy."""
    outputs = batch * s.c_out * s.out_size ** 2
    return Launch(2.0 * (1 + banks) * outputs, (1 + banks) * outputs * ELEMENT, (1 + banks) * outputs * ELEMENT)


def static(s: ConvShape, batch: int) -> Launch:
    """One direction of a static convolution: its FLOPs and its compulsory bytes (input, weight, output)."""
    flops = 2 * batch * s.c_out * s.out_size ** 2 * s.c_in * s.kernel ** 2
    hbm = (batch * s.c_in * s.size ** 2 + s.c_out * s.c_in * s.kernel ** 2 + batch * s.c_out * s.out_size ** 2) * ELEMENT
    return Launch(flops, 0.0, hbm)


# Each strategy's kernels: name -> (model, CANDIDATES kind, or a function of K giving it; None: a fixed-size
# pass with no tiles to choose).
def blend_input_grad(s: ConvShape, batch: int, banks: int, cfg: Config) -> Launch:
    """The blend strategy's dx: the epilogue's kernel with a stride and K <= 2
    (awkernels.triton.aw_conv2d.strided_input_grad_by_phase), its own otherwise."""
    if s.stride > 1 and banks <= 2:
        return min((epilogue_input_grad(s, batch, banks, c) for c in CANDIDATES["epilogue.input_grad"]),
                   key=lambda launch: roofline_us(launch)[0])
    return input_grad(s, batch, banks, cfg)


KERNELS = {
    "blend": {"forward": (forward, "forward"), "input_grad": (blend_input_grad, "input_grad"),
              "weight_coeff_grad": (weight_coeff_grad,
                                    lambda banks: weight_grad_candidates(banks, torch.bfloat16, False))},
    "epilogue": {"forward": (epilogue_forward, "epilogue.forward"),
                 "input_grad": (epilogue_input_grad, "epilogue.input_grad"),
                 "weight_grad": (epilogue_weight_grad, "epilogue.weight_grad"),
                 "coeff_grad": (epilogue_coeff_grad, None)},
}


def strategy(s: ConvShape, banks: int) -> str:
    """What the triton backend runs for this layer (awkernels._strategy.epilogue_refuses)."""
    return "epilogue" if epilogue_refuses(banks, 1, s.out_size ** 2) is None else "blend"


def roofline_us(launch: Launch) -> tuple[float, str]:
    compute, memory = launch.flops / PEAK_FLOPS, launch.hbm_bytes / PEAK_BYTES
    return 1e6 * max(compute, memory), "compute" if compute >= memory else "memory"


def rows(batch: int, banks_list: list[int], only: str | None = None) -> list[dict]:
    """One row per (K, layer, kernel) of the strategy the triton backend runs there, or of `only` (K <= 2 for the
    epilogue)."""
    out = []
    for banks in banks_list:
        for s in RESNET18:
            base = static(s, batch)
            base_us, base_bound = roofline_us(base)
            chosen = only or strategy(s, banks)
            for name, (model, kind) in KERNELS[chosen].items():
                # The candidate the autotuner would pick if the roofline were the machine.
                kind = kind(banks) if callable(kind) else kind
                launch = min((model(s, batch, banks, cfg) for cfg in (CANDIDATES[kind] if kind else [None])),
                             key=lambda launch: roofline_us(launch)[0])
                us, bound = roofline_us(launch)
                out.append({"K": banks, "layer": s.layer, "strategy": chosen, "kernel": name,
                            "gflop": launch.flops / 1e9,
                            "flop_ratio": launch.flops / base.flops, "operand_mb": launch.operand_bytes / 1e6,
                            "hbm_mb": launch.hbm_bytes / 1e6, "static_hbm_mb": base.hbm_bytes / 1e6,
                            "intensity": launch.flops / launch.hbm_bytes, "roofline_us": us,
                            "static_us": base_us, "bound": bound, "static_bound": base_bound})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--banks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--strategy", choices=sorted(KERNELS), help="model this strategy on every layer instead of "
                        "the one the triton backend runs")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    header = ["K", "layer", "strategy", "kernel", "GFLOP", "x static FLOPs", "operand MB (L2)", "HBM MB",
              "static HBM MB", "FLOP/byte", "roofline us", "static us", "bound (static)"]
    table = [[str(r["K"]), r["layer"], r["strategy"], r["kernel"], f"{r['gflop']:.2f}", f"{r['flop_ratio']:.2f}",
              f"{r['operand_mb']:.0f}", f"{r['hbm_mb']:.1f}", f"{r['static_hbm_mb']:.1f}", f"{r['intensity']:.0f}",
              f"{r['roofline_us']:.1f}", f"{r['static_us']:.1f}", f"{r['bound']} ({r['static_bound']})"]
             for r in rows(args.batch, args.banks, args.strategy)]
    print(f"Triton conv kernels, ResNet-18 shapes, batch {args.batch}, bf16, fastest modelled configuration; "
          f"H100 roofline {PEAK_FLOPS / 1e12:.0f} TFLOP/s, {PEAK_BYTES / 1e12:.2f} TB/s")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
