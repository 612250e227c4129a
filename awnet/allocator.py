"""Which malloc serves a CPU process's tensors, and glibc's thresholds pinned so that it stays put.

glibc serves a block above its mmap threshold with a fresh mmap (page-faulted in on first touch, unmapped on
free) and raises that threshold, and its trim threshold, to the size of each mmap'ed block it frees, up to
32 MiB. So on the CPU where a training step's tensors come from, and how many page faults it takes, depends
on what the process allocated and freed before: a benchmark's number on the suite's order (issue 22), a
training run's speed on what ran before it. `pin()` sets both thresholds at the values a long run reaches
anyway; the benchmarks and the `awnet` commands call it first. `python -m bench.order_effect --compare`
measures every setting, jemalloc and tcmalloc included.
"""
from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (malloc.h): the mmap threshold at glibc's dynamic ceiling (DEFAULT_MMAP_THRESHOLD_MAX on
# 64-bit), freed heap memory kept up to 1 GiB before it is returned to the system.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
PINNED = {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
PINNED_NAME = "glibc pinned (mmap threshold 32 MiB, trim threshold 1 GiB)"
# AWNET_MALLOC=dynamic leaves glibc's thresholds free to move (to show the effect).
ENV = "AWNET_MALLOC"


def preloaded() -> str | None:
    """The malloc replacing glibc's by LD_PRELOAD (jemalloc or tcmalloc), if any."""
    for library in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
        if "jemalloc" in library or "tcmalloc" in library:
            return os.path.basename(library)
    return None


_pinned = False


def describe() -> str:
    """What malloc this process runs with, for a report."""
    library = preloaded()
    if library is not None:
        return library
    if platform.libc_ver()[0] != "glibc":
        return "system"
    return PINNED_NAME if _pinned else "glibc dynamic"


def pin() -> str:
    """Pins glibc's thresholds unless another malloc is preloaded or AWNET_MALLOC=dynamic; returns
    `describe()`. Safe to call more than once."""
    global _pinned
    mode = os.environ.get(ENV, "pinned")
    if mode not in ("pinned", "dynamic"):
        raise ValueError(f"{ENV} must be 'pinned' or 'dynamic', got {mode!r}")
    if mode == "pinned" and not _pinned and preloaded() is None and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL("libc.so.6")
        if not (libc.mallopt(_M_MMAP_THRESHOLD, PINNED["mmap_threshold"])
                and libc.mallopt(_M_TRIM_THRESHOLD, PINNED["trim_threshold"])):
            raise RuntimeError("mallopt refused glibc's pinned thresholds")
        _pinned = True
    return describe()
