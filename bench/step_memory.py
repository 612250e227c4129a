"""Peak memory of one PGD-10 training step (`bench.test_train_step`'s step), static against AW (banks 1, 2),
each variant in a fresh process: everything the step holds at its peak (model, optimizer state, data,
activations, workspaces) above what the process held before it built them.

On CUDA that is `torch.cuda.max_memory_allocated` (the caching allocator's count). On the CPU there is no
allocator count, so it is the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs
before the model is built) above its resident memory then, with glibc's thresholds pinned as the `awnet`
commands run (`awnet.allocator`): freed heap is kept, so the peak is the most the step had live plus what
fragmentation holds. Two steps are taken (the second with the momentum buffers the first created).

    python -m bench.step_memory [--models smallcnn,resnet18] [--json]
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys

import torch

VARIANTS = ("static", "awnet-banks1", "awnet-banks2")
MIB = 1 << 20


def _proc_status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(model: str, variant: str) -> float:
    """The step's peak memory in MiB, in this process (call it in a fresh one)."""
    from awnet.allocator import pin
    from bench.conftest import CUDA
    from bench.test_train_step import training_step

    pin()
    gc.collect()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current resident memory
        base = _proc_status("VmRSS")
    step, _, _ = training_step(variant, model)
    for _ in range(2):
        step()
    if CUDA:
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / MIB
    return (_proc_status("VmHWM") - base) / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="default: bench.test_train_step's models for the device")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    from bench.test_train_step import MODELS

    results = {}
    for model in (args.models or ",".join(MODELS)).split(","):
        if model not in MODELS:
            parser.error(f"unknown model {model!r}; the models are {list(MODELS)}")
        results[model] = {}
        for variant in VARIANTS:
            run = subprocess.run([sys.executable, "-m", "bench.step_memory", "--child", model, variant],
                                 capture_output=True, text=True, check=False)
            if run.returncode:
                sys.exit(f"{model} {variant}: the measuring process failed:\n{run.stderr[-3000:]}")
            results[model][variant] = json.loads(run.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results))
        return
    device = "cuda (max_memory_allocated)" if torch.cuda.is_available() else "cpu (peak resident memory)"
    print(f"PGD-10 step, peak memory above the process before the model, {device}: MiB (x static)")
    for model, peaks in results.items():
        print(f"{model:10s} " + "  ".join(f"{v} {mib:.0f} ({mib / peaks['static']:.2f}x)" for v, mib in peaks.items()))


if __name__ == "__main__":
    main()
