"""Where a PGD-10 training step spends its time: torch.profiler over one step of each variant of
bench/test_train_step.py (after two warm-up steps), the top operators by device and host time, and the
calls that make the host wait for the device.

    python -m bench.profile_train_step [--variants static,awnet-banks1] [--rows 15] [--trace DIR]
"""
from __future__ import annotations

import argparse
import os

import torch
from torch.profiler import ProfilerActivity, profile

from bench.conftest import CUDA
from bench.test_train_step import VARIANTS, make_step

# Host-side calls that wait for the device (a sync in the hot path shows up here).
WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::item",
         "aten::_local_scalar_dense")


def profile_step(variant: str, rows: int, trace_dir: str | None) -> None:
    step = make_step(variant)
    for _ in range(2):  # compiles, autotunes and fills the allocator's cache
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    with profile(activities=activities) as prof:
        step()
        if CUDA:
            torch.cuda.synchronize()
    events = prof.key_averages()
    device_key = "self_device_time_total" if CUDA else "self_cpu_time_total"
    print(f"=== {variant}: top {rows} by {device_key}")
    print(events.table(sort_by=device_key, row_limit=rows, max_name_column_width=60))
    print(f"=== {variant}: top {rows} by cpu_time_total")
    print(events.table(sort_by="cpu_time_total", row_limit=rows, max_name_column_width=60))
    waits = {e.key: e.count for e in events if e.key in WAITS}
    print(f"=== {variant}: host waits for the device: {waits or 'none'}")
    if trace_dir:
        os.makedirs(trace_dir, exist_ok=True)
        prof.export_chrome_trace(os.path.join(trace_dir, f"{variant}.json"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="static,awnet-banks1,awnet-banks2")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--trace", help="also write a Chrome trace per variant to this folder")
    args = parser.parse_args(argv)
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; the variants are {list(VARIANTS)}")
        profile_step(variant, args.rows, args.trace)


if __name__ == "__main__":
    main()
