"""Shared set-up of the benchmarks: the device, the timer, and what every result file records.

GPU work is timed with triton.testing.do_bench (CUDA events, median), stored in extra_info["time_ms"], and
replayed from a CUDA graph (do_bench_cudagraph, median) in extra_info["graph_ms"]; pytest-benchmark's own
wall-clock statistics are the timing only on CPU.

On CPU, glibc's malloc thresholds are pinned before anything is measured (awnet.allocator), so where a
tensor's memory comes from cannot depend on which benchmarks ran before: unpinned, the end-to-end steps swung
up to 14x with the suite's order on one machine here (issue 22). `python -m bench.order_effect --compare`
shows each allocator setting.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

import pytest
import torch

from awnet import allocator

CUDA = torch.cuda.is_available()

MALLOC = allocator.pin()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def device_name() -> str:
    if CUDA:
        return torch.cuda.get_device_name()
    return f"cpu-{platform.processor() or platform.machine()}-{os.cpu_count()}cores"


def measure(benchmark, fn, **info):
    """Times fn on the device, records its peak memory, and returns its last result."""
    benchmark.extra_info.update(info, device=device_name())
    if CUDA:
        import triton.testing

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        benchmark.extra_info["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        benchmark.extra_info["time_ms"] = triton.testing.do_bench(fn, return_mode="median")
        # The same work replayed from a CUDA graph: device time without the host's launch and autograd
        # overhead, which dominated the eager times of these small convolutions on an H100.
        # AWNET_BENCH_GRAPH=0 skips it (should a failed capture ever upset the CUDA context).
        if os.environ.get("AWNET_BENCH_GRAPH", "1") == "0":
            return benchmark.pedantic(fn, rounds=1, iterations=1)
        try:
            benchmark.extra_info["graph_ms"] = triton.testing.do_bench_cudagraph(fn, return_mode="median")
        except Exception as error:  # not capturable: recorded, and the report leaves the graph column empty
            torch.cuda.synchronize()
            benchmark.extra_info["graph_error"] = f"{type(error).__name__}: {error}"[:300]
        return benchmark.pedantic(fn, rounds=1, iterations=1)
    return benchmark(fn)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = None
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        pass
    output_json["awnet"] = {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                            "device": device_name(), "versions": versions, "malloc": MALLOC,
                            "threads": torch.get_num_threads(), "command": " ".join(sys.argv)}


@pytest.fixture(autouse=True)
def _deterministic_inputs():
    torch.manual_seed(0)
