"""`convert`: turn a static CNN into an AW-Net, the paper's "architecture-friendly" claim.

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430). Every nn.Conv2d becomes an AWConv2d whose banks
start from its weights, every nn.BatchNorm2d a MixBatchNorm2d whose two BNs start from it, and a router
with zero-initialised Signal Heads (omega = 1) is attached: the result computes the static network.

Blocks (one Type Head each): a converted layer belongs to its nearest ancestor module whose type is not
exactly nn.Sequential, nn.ModuleList or nn.ModuleDict (the model itself if there is none). So a residual
block with its shortcut Sequential is one block, the stem's conv and BN in the model's own attributes form
one, a Sequential subclass such as torchvision's Conv2dNormActivation is one, and a model that is a plain
Sequential of layers is a single block. Blocks are numbered in module order.

`from_teachers` is the two-bank start that the paper's "divide and rule" suggests: the clean bank and clean
BNs from a standard model, the adversarial ones from a robust model, so the clean route starts as the first
and the adversarial route as the second (up to the layers AW-Net shares, which come from the robust model).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .nn import AdversarialRouter, AWConv2d, AWNet, MixBatchNorm2d, Normalize

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _block_name(root: nn.Module, name: str) -> str:
    parts = name.split(".")[:-1]
    while parts and type(root.get_submodule(".".join(parts))) in _CONTAINERS:
        parts.pop()
    return ".".join(parts)


def _converted(name: str, module: nn.Module, banks: int) -> nn.Module | None:
    """The AW layer replacing `module`, or None if it stays as it is."""
    if type(module) is nn.Conv2d:
        return AWConv2d.from_conv(module, banks)
    if type(module) is nn.BatchNorm2d:
        return MixBatchNorm2d.from_bn(module)
    if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):  # a subclass: its forward may differ from the base's
        raise ValueError(f"convert() replaces nn.Conv2d and nn.BatchNorm2d; {name!r} is a "
                         f"{type(module).__name__}, a subclass whose forward it cannot reproduce")
    return None


def _values(buffer: Tensor) -> list[float]:
    # A shape-only build on the meta device (awnet.load checks a file's config that way before allocating)
    # has no values to read: placeholders of the same shape do.
    return [1.0] * buffer.numel() if buffer.is_meta else buffer.flatten().tolist()


def convert(model: nn.Module, banks: int = 1, omega: bool = True, router_width: int = 64) -> AWNet:
    """An AW-Net computing `model` (a deep copy of it; `model` is left unchanged).

    Args:
        model: a CNN taking (B, C, H, W) images; its first nn.Conv2d in module order must read the input
            (it gives the router's input channels) and its first `awnet.nn.Normalize`, if any, is the
            router's input normalisation.
        banks: 1 (the paper: weight-varied filters, one bank) or 2 (clean and adversarial banks blended by
            the type).
        omega: give every AW convolution a Signal Head (omega); only a two-bank AW-Net may go without.
        router_width: size of the router's feature vector.
    """
    if isinstance(model, AWNet):
        raise ValueError("model is already an AWNet")
    if type(banks) is not int or banks not in (1, 2):
        raise ValueError(f"banks must be 1 or 2, got {banks!r}")
    if type(omega) is not bool:
        raise ValueError(f"omega must be a bool, got {omega!r}")
    if type(router_width) is not int or router_width < 2:
        raise ValueError(f"router_width must be an int >= 2, got {router_width!r}")
    if banks == 1 and not omega:
        raise ValueError("an AW-Net with one bank and no omega is its static network: use banks=2 or omega=True")
    body = copy.deepcopy(model)
    blocks: dict[str, int] = {}
    replaced: dict[int, nn.Module] = {}  # a module registered under several names is replaced once
    for name, module in list(body.named_modules(remove_duplicate=False)):
        new = replaced.get(id(module))
        if new is None:
            new = _converted(name, module, banks)
            if new is None:
                continue
            new.block_index = blocks.setdefault(_block_name(body, name), len(blocks))
            replaced[id(module)] = new
        parent_name, _, child = name.rpartition(".")
        setattr(body.get_submodule(parent_name), child, new)
    convs = [m for m in body.modules() if isinstance(m, AWConv2d)]
    if not convs:
        raise ValueError("model has no nn.Conv2d to convert")
    normalize = next((m for m in body.modules() if isinstance(m, Normalize)), None)
    stats = {"mean": _values(normalize.mean), "std": _values(normalize.std)} if normalize else {}
    first = convs[0].weight
    router = AdversarialRouter(convs[0].in_channels, [conv.out_channels for conv in convs], len(blocks),
                               router_width, omega, **stats, device=first.device, dtype=first.dtype)
    net = AWNet(body, router).train(model.training)
    config = getattr(model, "config", None)
    if isinstance(config, dict) and not config.get("aw", True):
        net.config = {**config, "aw": True, "banks": banks, "omega": omega, "router_width": router_width}
    return net


def from_teachers(clean: nn.Module, robust: nn.Module, omega: bool = True, router_width: int = 64) -> AWNet:
    """A two-bank AW-Net whose clean bank (k = 0) and clean BNs start from `clean` (a standard model) and whose
    adversarial bank (k = 1) and adversarial BNs start from `robust` (an adversarially trained one).

    The two must be the same architecture. Everything AW-Net does not split by type (linear layers, the
    input normalisation) is shared, and comes from `robust`: the adversarial route computes the robust model
    exactly, the clean route the standard model's features through the robust model's shared layers.
    """
    for name, model in (("clean", clean), ("robust", robust)):
        if isinstance(model, AWNet):
            raise ValueError(f"{name} must be a static network, got an AWNet")
    clean_state, robust_state = clean.state_dict(), robust.state_dict()
    if {k: v.shape for k, v in clean_state.items()} != {k: v.shape for k, v in robust_state.items()}:
        raise ValueError("clean and robust must be the same architecture: their state_dicts differ in names or "
                         "shapes")
    net = convert(robust, banks=2, omega=omega, router_width=router_width)
    teacher = dict(clean.named_modules())
    with torch.no_grad():
        for name, layer in net.body.named_modules():
            source = teacher.get(name)
            if isinstance(layer, AWConv2d):
                layer.weight[0].copy_(source.weight)
                if layer.bias is not None:
                    layer.bias[0].copy_(source.bias)
            elif isinstance(layer, MixBatchNorm2d):
                for key in ("running_mean", "running_var") + (("weight", "bias") if layer.affine else ()):
                    getattr(layer, key)[0].copy_(getattr(source, key))
    return net
