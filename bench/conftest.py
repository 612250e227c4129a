"""Shared set-up of the benchmarks: the device, the timer, and what every result file records.

GPU work is timed with triton.testing.do_bench (CUDA events, median), stored in extra_info["time_ms"], and
replayed from a CUDA graph (do_bench_cudagraph, median) in extra_info["graph_ms"]; pytest-benchmark's own
wall-clock statistics are the timing only on CPU.

On CPU, glibc's malloc moves its mmap threshold up each time a large block is freed (and its trim threshold
with it), so where a tensor's memory comes from (mmap'ed and page-faulted in afresh, or reused from the
heap) would depend on which benchmarks ran before: on one machine here the end-to-end steps swung up to 14x
with the suite's order and followed glibc's thresholds (issue 22); `python -m bench.order_effect --compare`
shows the cost of each regime (page faults and kernel time per step). Loading this file pins both thresholds
at the values a long training run reaches anyway, so no benchmark can move them for the next ones.
"""
from __future__ import annotations

import ctypes
import datetime
import os
import platform
import subprocess
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()

# mallopt parameters (malloc.h) and the pinned values: the mmap threshold at glibc's dynamic ceiling
# (DEFAULT_MMAP_THRESHOLD_MAX, 32 MiB on 64-bit), freed heap memory kept up to 1 GiB.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
PINNED_MALLOC = {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}


def pin_malloc() -> str:
    """Pins glibc malloc's thresholds (see the module's docstring); says what allocator the process runs.
    AWNET_BENCH_MALLOC=dynamic leaves glibc as it is (to show the effect); another malloc (jemalloc or
    tcmalloc by LD_PRELOAD) is left alone."""
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload:
        return os.path.basename(preload)
    if os.environ.get("AWNET_BENCH_MALLOC") == "dynamic" or platform.libc_ver()[0] != "glibc":
        return "glibc dynamic" if platform.libc_ver()[0] == "glibc" else "system"
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(_M_MMAP_THRESHOLD, PINNED_MALLOC["mmap_threshold"])
            and libc.mallopt(_M_TRIM_THRESHOLD, PINNED_MALLOC["trim_threshold"])):
        raise RuntimeError("mallopt refused the pinned thresholds")
    return "glibc pinned (mmap threshold 32 MiB, trim threshold 1 GiB)"


MALLOC = pin_malloc()
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
