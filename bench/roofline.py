"""FLOPs and bytes per launch of the Triton convolution kernels on the ResNet-18 shapes, against a static
convolution's, and what bounds each on an H100 (989 TFLOP/s dense bf16, 3.35 TB/s HBM3).

    python -m bench.roofline [--batch 128] [--banks 1 2] [--markdown]

A model of the kernels as written (awkernels/triton/aw_conv2d.py), not a measurement: each kernel's grid and
loop trip counts with its configuration's tiles give the FLOPs its dots execute (tile padding and the
stride's masked taps included) and the operand bytes its programs load (from L2, or from HBM on a miss); the
compulsory HBM bytes are every tensor read or written once. The configuration is the first candidate (what
the interpreter runs; on a GPU the autotuner may choose another). The static convolution's figures are its
FLOPs (2 B C_out P C_in kH kW per direction) and its compulsory bytes. Roofline time: the larger of FLOPs /
989 TFLOP/s and compulsory bytes / 3.35 TB/s; `bound` says which.
"""
from __future__ import annotations

import argparse
import math
from typing import NamedTuple

from awkernels.triton.config import CANDIDATES, Config
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
    """Grid (filter tiles, reduction tiles, batch splits * K): each bank's programs form G_b = dy_b im2col(x_b)^T
    over every sample of their split, so the dots run K times a static weight gradient's."""
    pixels, reduction = s.out_size ** 2, s.c_in * s.kernel ** 2
    tiles = math.ceil(s.c_out / cfg.block_m) * math.ceil(reduction / cfg.block_n)
    steps = batch * math.ceil(pixels / cfg.block_k)  # over each program's samples, summed over the splits
    flops = banks * tiles * steps * 2 * cfg.block_m * cfg.block_n * cfg.block_k
    operands = banks * tiles * steps * (cfg.block_m + cfg.block_n) * cfg.block_k * ELEMENT
    splits = cfg.batch_splits(batch)
    hbm = ((batch * s.c_out * pixels + batch * s.c_in * s.size ** 2 + banks * s.c_out * reduction) * ELEMENT
           + (splits * banks * s.c_out * reduction + math.ceil(reduction / cfg.block_n) * batch * banks * s.c_out)
           * ACC)
    return Launch(flops, operands, hbm)


def static(s: ConvShape, batch: int) -> Launch:
    """One direction of a static convolution: its FLOPs and its compulsory bytes (input, weight, output)."""
    flops = 2 * batch * s.c_out * s.out_size ** 2 * s.c_in * s.kernel ** 2
    hbm = (batch * s.c_in * s.size ** 2 + s.c_out * s.c_in * s.kernel ** 2 + batch * s.c_out * s.out_size ** 2) * ELEMENT
    return Launch(flops, 0.0, hbm)


KERNELS = {"forward": (forward, "forward"), "input_grad": (input_grad, "input_grad"),
           "weight_coeff_grad": (weight_coeff_grad, "weight_grad")}


def roofline_us(launch: Launch) -> tuple[float, str]:
    compute, memory = launch.flops / PEAK_FLOPS, launch.hbm_bytes / PEAK_BYTES
    return 1e6 * max(compute, memory), "compute" if compute >= memory else "memory"


def rows(batch: int, banks_list: list[int]) -> list[dict]:
    out = []
    for banks in banks_list:
        for s in RESNET18:
            base = static(s, batch)
            base_us, base_bound = roofline_us(base)
            for name, (model, kind) in KERNELS.items():
                launch = model(s, batch, banks, CANDIDATES[kind][0])
                us, bound = roofline_us(launch)
                out.append({"K": banks, "layer": s.layer, "kernel": name, "gflop": launch.flops / 1e9,
                            "flop_ratio": launch.flops / base.flops, "operand_mb": launch.operand_bytes / 1e6,
                            "hbm_mb": launch.hbm_bytes / 1e6, "static_hbm_mb": base.hbm_bytes / 1e6,
                            "intensity": launch.flops / launch.hbm_bytes, "roofline_us": us,
                            "static_us": base_us, "bound": bound, "static_bound": base_bound})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--banks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    header = ["K", "layer", "kernel", "GFLOP", "x static FLOPs", "operand MB (L2)", "HBM MB", "static HBM MB",
              "FLOP/byte", "roofline us", "static us", "bound (static)"]
    table = [[str(r["K"]), r["layer"], r["kernel"], f"{r['gflop']:.2f}", f"{r['flop_ratio']:.2f}",
              f"{r['operand_mb']:.0f}", f"{r['hbm_mb']:.1f}", f"{r['static_hbm_mb']:.1f}", f"{r['intensity']:.0f}",
              f"{r['roofline_us']:.1f}", f"{r['static_us']:.1f}", f"{r['bound']} ({r['static_bound']})"]
             for r in rows(args.batch, args.banks)]
    print(f"Triton conv kernels, ResNet-18 shapes, batch {args.batch}, bf16, first configuration; H100 roofline "
          f"{PEAK_FLOPS / 1e12:.0f} TFLOP/s, {PEAK_BYTES / 1e12:.2f} TB/s")
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
