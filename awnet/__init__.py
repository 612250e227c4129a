"""awnet: AW-Net, the Adversarial Weight-Varied Network, on the `awkernels` operators.

Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430. `awnet.nn` holds the layers and the `AWNet` wrapper,
`awnet.models.build` the networks, `awnet.convert` turns a static CNN into an AW-Net (`awnet.from_teachers`
starts a two-bank one from a standard and a robust model), and `awnet.save` / `awnet.load` write and read
checkpoints. `awnet.attacks`, `awnet.data`, `awnet.eval` and `awnet.train` are imported on first use.
"""
import importlib
from typing import Any

from . import models, nn
from .checkpoint import load, save
from .convert import convert, from_teachers

_LAZY = ("attacks", "data", "eval", "train")  # heavier to import (tqdm, matplotlib, torchattacks)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["attacks", "convert", "data", "eval", "from_teachers", "load", "models", "nn", "save", "train"]
