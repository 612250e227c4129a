"""Backend selection: `use_backend`, `AWNET_BACKEND` and the `auto` policy."""
from __future__ import annotations

import os

import torch

from . import _extension

BACKENDS = ("reference", "cpp", "triton", "cuda")
_CHOICES = BACKENDS + ("auto",)


def _checked(name) -> str:
    if name not in _CHOICES:
        raise ValueError(f"backend must be one of {_CHOICES}, got {name!r}")
    return name


_selected = _checked(os.environ.get("AWNET_BACKEND", "auto"))


def available_backends() -> list[str]:
    """The backends this install can run, in order of preference."""
    names = ["reference"]
    if _extension.has_cpu():
        names.append("cpp")
    return names


def current_backend() -> str:
    return _selected


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


def resolve(x: torch.Tensor) -> str:
    """The backend that will run an op on `x`'s device."""
    name = _selected
    if name == "auto":
        if x.device.type == "cpu" and _extension.has_cpu():
            return "cpp"
        return "reference"
    if name not in available_backends():
        raise RuntimeError(
            f"backend {name!r} is not available in this install (available: {available_backends()}); "
            f"see awkernels.build_info()")
    if name == "cpp" and x.device.type != "cpu":
        raise ValueError(f"backend 'cpp' runs on CPU tensors, but x is on {x.device}")
    return name
