"""Does a benchmark's number depend on what ran before it? The evidence for issue 22.

    python -m bench.order_effect             # this process's allocator: one line, exit 1 past --tolerance
    python -m bench.order_effect --compare   # the same in a fresh process per allocator setting

Times a short benchmark (the static PGD-10 training step of bench/test_train_step.py) alone, then runs the
heaviest benchmarks of the suite (the reference backend's per-sample weights at the 512-channel layers, every
pass), then times the short one again, in one process: the ratio after / before is what running the whole
suite does to the short benchmark's number. Each timing is the minimum over its rounds (the least noisy
statistic on a shared machine); the page faults and kernel (sys) time per round say where time went.
--compare flips the allocator: glibc with its thresholds pinned (what bench/conftest.py does), glibc as it
is (its mmap threshold moves with every large free), glibc with the threshold fixed small by the environment
(every large tensor mmap'ed and faulted in afresh), and jemalloc / tcmalloc by LD_PRELOAD where installed
(Debian: libjemalloc2, libtcmalloc-minimal4).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from bench.conftest import MALLOC
from bench.shapes import RESNET18
from bench.test_aw_conv2d import make_conv_step
from bench.test_train_step import make_step

HEAVY = [shape for shape in RESNET18 if shape.c_out == 512]
LIBRARIES = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
             "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
SETTINGS = {  # name: extra environment
    "glibc pinned": {},
    "glibc dynamic": {"AWNET_BENCH_MALLOC": "dynamic"},
    "glibc mmap 64 KiB": {"AWNET_BENCH_MALLOC": "dynamic", "MALLOC_MMAP_THRESHOLD_": "65536"},
    **{name: {"LD_PRELOAD": path} for name, path in LIBRARIES.items()},
}


def timed(step, rounds: int) -> dict:
    step()  # warm-up
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"min_ms": min(times) * 1e3, "median_ms": sorted(times)[rounds // 2] * 1e3,
            "faults": (after.ru_minflt - before.ru_minflt) / rounds,
            "sys_ms": (after.ru_stime - before.ru_stime) / rounds * 1e3}


def run_heavy(rounds: int) -> None:
    for shape in HEAVY:
        for case in ("K1-filter", "K2-layer"):
            for pass_ in ("fwd", "fwdbwd", "attack"):
                step, _ = make_conv_step(shape, "reference", case, "float32", pass_)
                for _ in range(rounds):
                    step()


def measure(rounds: int) -> dict:
    torch.manual_seed(0)
    step = make_step("static")
    alone = timed(step, rounds)
    run_heavy(rounds=3)
    after = timed(step, rounds)
    return {"malloc": MALLOC, "alone": alone, "after_heavy": after, "ratio": after["min_ms"] / alone["min_ms"]}


def line(name: str, result: dict) -> str:
    a, b = result["alone"], result["after_heavy"]
    return (f"{name:18s} alone {a['min_ms']:8.1f} ms ({a['faults']:7.0f} faults, {a['sys_ms']:6.1f} ms sys)   "
            f"after heavy {b['min_ms']:8.1f} ms ({b['faults']:7.0f} faults, {b['sys_ms']:6.1f} ms sys)   "
            f"ratio {result['ratio']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tolerance", type=float, default=0.25, help="largest |ratio - 1| accepted")
    parser.add_argument("--compare", action="store_true", help="one fresh process per allocator setting")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not args.compare:
        result = measure(args.rounds)
        print(json.dumps(result) if args.json else line(result["malloc"], result))
        return int(abs(result["ratio"] - 1) > args.tolerance)
    print(f"static PGD-10 step, minimum over {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    for name, env in SETTINGS.items():
        if "LD_PRELOAD" in env and not os.path.exists(env["LD_PRELOAD"]):
            print(f"{name:18s} not installed ({env['LD_PRELOAD']})")
            continue
        run = subprocess.run([sys.executable, "-m", "bench.order_effect", "--json", f"--rounds={args.rounds}",
                              "--tolerance=inf"], env={**os.environ, **env}, capture_output=True, text=True)
        if run.returncode:
            print(f"{name:18s} failed: {run.stderr.strip().splitlines()[-1:]}")
            continue
        print(line(name, json.loads(run.stdout.strip().splitlines()[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
