"""Backend selection: `use_backend`, `AWNET_BACKEND` and the `auto` policy."""
from __future__ import annotations

import importlib.util
import os

import torch

from . import _extension

# Triton runs on CUDA tensors, or on CPU tensors under its interpreter (how CI tests the kernels).
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None

BACKENDS = ("reference", "cpp", "triton", "cuda")
_CHOICES = BACKENDS + ("auto",)


def _checked(name, source: str = "backend") -> str:
    if name not in _CHOICES:
        raise ValueError(f"{source} must be one of {_CHOICES}, got {name!r}")
    return name


# A bad AWNET_BACKEND is reported when an op or current_backend() reads it, not at import: importing the
# package (and `awnet --help`) still works.
_selected = os.environ.get("AWNET_BACKEND", "auto")


def available_backends() -> list[str]:
    """The backends this install can run, in order of preference."""
    names = ["reference"]
    if _extension.has_cpu():
        names.append("cpp")
    if HAS_TRITON and (TRITON_INTERPRET or torch.cuda.is_available()):
        names.append("triton")
    if _extension.cuda_available():
        names.append("cuda")
    return names


def current_backend() -> str:
    return _checked(_selected, "the environment variable AWNET_BACKEND")


class use_backend:
    """Select the backend: at once as a call, or for a block as a context manager.

    >>> with awkernels.use_backend("reference"):
    ...     y = awkernels.aw_conv2d(x, weight, coeff)
    """

    def __init__(self, name: str):
        global _selected
        self._previous = _selected
        _selected = _checked(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _selected
        _selected = self._previous
        return False


def selected(x: torch.Tensor) -> str:
    """The selected backend ('auto' or a name), checked against this install and `x`'s device."""
    name = current_backend()
    if name == "auto":
        return name
    if name not in available_backends():
        raise RuntimeError(
            f"backend {name!r} is not available in this install (available: {available_backends()}); "
            f"see awkernels.build_info()")
    if name == "cpp" and x.device.type != "cpu":
        raise ValueError(f"backend 'cpp' runs on CPU tensors, but x is on {x.device}")
    if name == "cuda" and not x.is_cuda:
        raise ValueError(f"backend 'cuda' runs on CUDA tensors, but x is on {x.device}")
    if name == "triton" and not (x.is_cuda or (TRITON_INTERPRET and x.device.type == "cpu")):
        raise ValueError(f"backend 'triton' runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), "
                         f"but x is on {x.device}")
    return name


def resolve(x: torch.Tensor) -> str:
    """The backend that runs MixBN on `x` (it has one strategy per backend; aw_conv2d chooses per call in
    _strategy)."""
    name = selected(x)
    if name != "auto":
        return name
    if x.device.type == "cpu" and _extension.has_cpu():
        return "cpp"
    if x.is_cuda and _extension.cuda_available():
        return "cuda"
    if x.is_cuda and "triton" in available_backends():
        return "triton"
    return "reference"
