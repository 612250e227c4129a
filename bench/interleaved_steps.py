"""PGD-10 training-step times of the variants taken in turn, round after round, in one process: each variant's
minimum over the rounds, and its ratio to the static step's. On a machine whose speed drifts (the CPU VMs here
move by 10-30% over minutes) this ratio holds where one benchmark after another does not: every round sees
every variant under the same conditions.

    python -m bench.interleaved_steps [--models smallcnn,resnet18] [--rounds 8] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from awnet.allocator import pin
from bench.conftest import CUDA
from bench.test_train_step import MODELS, make_step

VARIANTS = ("static", "awnet-banks1", "awnet-banks2")


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def interleaved(model: str, rounds: int) -> dict[str, float]:
    """The minimum time in ms of each variant's step over `rounds` rounds of one step each."""
    steps = {variant: make_step(variant, model) for variant in VARIANTS}
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(rounds):
        for variant, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            best[variant] = min(best[variant], (time.perf_counter() - start) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = parser.parse_args()
    pin()
    results = {model: interleaved(model, args.rounds) for model in args.models.split(",")}
    if args.json:
        print(json.dumps(results))
        return
    device = "cuda (eager)" if CUDA else "cpu"
    print(f"PGD-10 step, min of {args.rounds} interleaved rounds, {device}: ms (x static)")
    for model, times in results.items():
        print(f"{model:10s} " + "  ".join(f"{v} {ms:.0f} ({ms / times['static']:.2f}x)" for v, ms in times.items()))


if __name__ == "__main__":
    main()
