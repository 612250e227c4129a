"""Loading the compiled extension (`awkernels/_C*.so`) and saying what it holds.

setup.py writes `_build_info.json` beside the library: which parts it compiled and why a part is missing.
The library registers CPU, CUDA and Autograd kernels for the `awnet::` ops that `_contract` declares.
"""
from __future__ import annotations

import glob
import json
import os

import torch

from . import _contract  # noqa: F401  (the schemas the library's kernels implement)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _read_build_record() -> dict:
    path = os.path.join(_HERE, "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"cpu": {"built": False, "reason": "no build record: the package was not installed with setup.py"},
                "cuda": {"built": False, "archs": [], "reason": "no build record"}}


def _load() -> tuple[str | None, str | None]:
    libraries = sorted(glob.glob(os.path.join(_HERE, "_C*.so")) + glob.glob(os.path.join(_HERE, "_C*.pyd")))
    if not libraries:
        return None, "the compiled extension awkernels/_C is missing"
    try:
        torch.ops.load_library(libraries[0])
    except OSError as error:  # built against another torch, or a missing CUDA runtime
        return None, f"loading {libraries[0]} failed: {error}"
    return libraries[0], None


_record = _read_build_record()
_library, _load_error = _load()


def has_cpu() -> bool:
    return _library is not None


def has_cuda() -> bool:
    """The CUDA part is compiled in and loaded (which needs no GPU)."""
    return _library is not None and bool(_record["cuda"]["built"])


def cuda_available() -> bool:
    """The CUDA part can run: it is built and torch sees a GPU."""
    return has_cuda() and torch.cuda.is_available()


def build_info() -> dict:
    """What this install compiled, what loaded, and why a part is missing. "cuda" says the CUDA part is
    compiled in (archs "cuda_archs"), "cuda_available" that it can also run here (a GPU is visible)."""
    cpu_reason = _record["cpu"]["reason"] if not _record["cpu"]["built"] else _load_error
    cuda = _record["cuda"]
    return {
        "cpu": has_cpu(),
        "cuda": has_cuda(),
        "cuda_archs": list(cuda.get("archs", [])) if has_cuda() else [],
        "cuda_available": cuda_available(),
        "reasons": {
            "cpu": None if has_cpu() else cpu_reason,
            "cuda": None if has_cuda() else (cuda.get("reason") or cpu_reason),
            "cuda_available": None if cuda_available() else (
                "the CUDA part is not built" if not has_cuda() else "torch.cuda.is_available() is False"),
        },
        "library": _library,
        "torch": torch.__version__,
        "built_with_torch": _record.get("torch"),
    }
