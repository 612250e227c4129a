"""awnet.models: the static networks and their AW-Nets (Wei, Zhao, Li, TPAMI 2024, arXiv 2306.03430).

`build(name, aw=True, banks=b)` is `convert(build(name), banks=b)`. Every built model carries `config`, the
arguments that rebuild it, which `awnet.save` stores beside the weights.
"""
from __future__ import annotations

from torch import nn

from ..convert import convert
from .preact_resnet import PreActResNet, preact_resnet18
from .resnet import ResNet, resnet18
from .smallcnn import SmallCNN, smallcnn
from .wideresnet import WideResNet, wrn34_10

_BUILDERS = {
    "smallcnn": smallcnn,  # 28x28 grey (MNIST)
    "resnet18": resnet18,  # 32x32 RGB (CIFAR) from here on
    "preact_resnet18": preact_resnet18,
    "wrn34_10": wrn34_10,
}


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def build(name: str, num_classes: int = 10, aw: bool = False, banks: int = 1, omega: bool = True,
          router_width: int = 64) -> nn.Module:
    """A static network, or with aw=True its AW-Net (banks, omega, router_width: see `awnet.convert`)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(aw, bool):
        raise ValueError(f"aw must be a bool, got {aw!r}")
    if not aw and (banks, omega, router_width) != (1, True, 64):
        raise ValueError("banks, omega and router_width apply to AW-Nets: pass aw=True")
    model = _BUILDERS[name](num_classes)
    model.config = {"name": name, "num_classes": num_classes, "aw": False}
    return convert(model, banks, omega, router_width) if aw else model


__all__ = ["PreActResNet", "ResNet", "SmallCNN", "WideResNet", "build", "list_models"]
