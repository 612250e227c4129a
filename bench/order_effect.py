"""Does a benchmark's number depend on what ran before it? The evidence for issue 22.

    python -m bench.order_effect             # this process's allocator: one line, exit 1 past --tolerance
    python -m bench.order_effect --compare   # the same in a fresh process per allocator setting
    python -m bench.order_effect --suite [--setting NAME]   # the training steps: whole suite against alone

Times a short benchmark (the static PGD-10 training step of bench/test_train_step.py) alone, then runs the
heaviest benchmarks of the suite (the reference backend's per-sample weights at the 512-channel layers, every
pass), then times the short one again, in one process: the ratio after / before is what running the whole
suite does to the short benchmark's number. Each timing is the minimum over its rounds (the least noisy
statistic on a shared machine); the page faults and kernel (sys) time per round say where time went.
--compare flips the allocator: glibc with its thresholds pinned (what bench/conftest.py does), glibc as it
is (its mmap threshold moves with every large free), glibc with the threshold fixed small by the environment
(every large tensor mmap'ed and faulted in afresh), and jemalloc / tcmalloc by LD_PRELOAD where installed
(Debian: libjemalloc2, libtcmalloc-minimal4).
--suite is what a user sees: `pytest bench/ --benchmark-only` in one process, and each PGD-10 training-step
benchmark alone in a fresh process before and after it, under one allocator setting; a table of the times
(pytest-benchmark's minimum) and the suite's ratio to the mean of the two alone, exit 1 past --tolerance.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.conftest import MALLOC
from bench.shapes import RESNET18
from bench.test_aw_conv2d import make_conv_step
from bench.test_train_step import MODELS, VARIANTS, make_step

HEAVY = [shape for shape in RESNET18 if shape.c_out == 512]
LIBRARIES = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
             "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
SETTINGS = {  # name: extra environment
    "glibc pinned": {},
    "glibc dynamic": {"AWNET_MALLOC": "dynamic"},
    "glibc mmap 64 KiB": {"AWNET_MALLOC": "dynamic", "MALLOC_MMAP_THRESHOLD_": "65536"},
    **{name: {"LD_PRELOAD": path} for name, path in LIBRARIES.items()},
}


def timed(step, rounds: int) -> dict:
    for _ in range(2):  # warm-up: the first rounds still grow the heap
        step()
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


PYTEST = [sys.executable, "-m", "pytest", "--benchmark-only", "-q", "-p", "no:cacheprovider"]
TRAIN_STEP = "bench/test_train_step.py::test_pgd10_training_step"


def run_benchmarks(targets: list[str], env: dict, json_path: Path, rounds: int) -> dict[str, float]:
    """pytest-benchmark's minimum time (ms) of each training-step benchmark run among `targets`."""
    command = [*PYTEST, *targets, f"--benchmark-min-rounds={rounds}", "--benchmark-max-time=0.5",
               f"--benchmark-json={json_path}"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    if run.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return {b["param"]: b["stats"]["min"] * 1e3 for b in json.loads(json_path.read_text())["benchmarks"]
            if b["fullname"].startswith(TRAIN_STEP)}


def suite(setting: str, rounds: int, tolerance: float, keep: str | None) -> int:
    """The machine's own speed drifts by 20-30% over minutes on a shared VM, so each step is timed alone in a
    fresh process both before and after the whole suite, and the suite's time is compared with the mean."""
    env = {**os.environ, **SETTINGS[setting]}
    with tempfile.TemporaryDirectory() as tmp:
        def alone(params):
            return {p: run_benchmarks([f"{TRAIN_STEP}[{p}]"], env, Path(tmp, "alone.json"), rounds)[p] for p in params}

        params = [f"{model}-{variant}" for model in MODELS for variant in VARIANTS]
        before = alone(params)
        start = time.perf_counter()
        whole = run_benchmarks(["bench/"], env, Path(keep or Path(tmp, "suite.json")), rounds)
        seconds = time.perf_counter() - start
        after = alone(params)
    print(f"PGD-10 training steps, {setting}, torch threads {torch.get_num_threads()}, pytest-benchmark minimum "
          f"over >= {rounds} rounds; the whole suite took {seconds:.0f} s")
    print("| step | in the full suite (ms) | alone, fresh process (ms; two runs) | suite / alone |\n"
          "|---|---:|---:|---:|")
    worst = 0.0
    for param in params:
        ms = whole[param]
        reference = (before[param] + after[param]) / 2
        worst = max(worst, abs(ms / reference - 1))
        print(f"| {param} | {ms:,.0f} | {before[param]:,.0f} / {after[param]:,.0f} | {ms / reference:.2f} |")
    return int(worst > tolerance)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tolerance", type=float, default=0.25, help="largest |ratio - 1| accepted")
    parser.add_argument("--compare", action="store_true", help="one fresh process per allocator setting")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--suite", action="store_true", help="the training steps: the whole suite against alone")
    parser.add_argument("--setting", choices=SETTINGS, default="glibc pinned", help="the allocator of --suite")
    parser.add_argument("--suite-json", help="keep the whole suite's pytest-benchmark JSON here")
    args = parser.parse_args(argv)
    if args.suite:
        return suite(args.setting, args.rounds, args.tolerance, args.suite_json)
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
