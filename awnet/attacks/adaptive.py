"""Adaptive attacks on AW-Nets: they see the adversarial router and differentiate through it.

Following Tramer, Carlini, Brendel & Madry, "On Adaptive Attacks to Adversarial Example Defenses",
NeurIPS 2020, arXiv 2002.08347: a defence with a detector inside must be attacked on the detector too.

- End-to-end PGD/APGD need nothing special: `model(x)` runs the router, so `pgd`/`apgd` differentiate
  through it.
- Router evasion: maximise the task loss while pushing the router's adversarial score towards "clean",
  so the network routes the adversarial input through its clean (less robust) path.
- Forced-path transfer: craft against the network with its route forced to the clean or the adversarial
  path, then evaluate the examples on the real, self-routing network.

A routed model is any module whose `forward` takes `route` and which exposes `adversarial_score` ((B,), in
the autograd graph) after a forward, as `awnet.nn.AWNet` does.
"""
from __future__ import annotations

import inspect
from typing import Union

import torch
from torch import Tensor, nn

from .core import Objective, Radius, cross_entropy
from .pgd import pgd


def is_routed(model: nn.Module) -> bool:
    """Whether `model` routes its inputs (its forward accepts `route`), as an AW-Net does."""
    model = getattr(model, "_orig_mod", model)  # the module inside a torch.compile wrapper
    return "route" in inspect.signature(model.forward).parameters


def _require_routed(model: nn.Module) -> None:
    if not is_routed(model):
        raise TypeError(f"{type(model).__name__} is not a routed model: its forward must accept `route` and "
                        "it must expose `adversarial_score` after a forward (as awnet.nn.AWNet does)")


class ForcedRoute(nn.Module):
    """A routed model with its route forced (0 clean, 1 adversarial, or a per-sample tensor)."""

    def __init__(self, model: nn.Module, route: Union[int, Tensor]) -> None:
        super().__init__()
        _require_routed(model)
        self.model = model
        self.route = route

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, route=self.route)


def router_evasion_objective(weight: float = 1.0) -> Objective:
    """`CE(model(x), y) + weight * log(1 - adversarial_score)`: the log term goes to -inf as the router
    becomes sure the input is adversarial, so maximising it drives the score towards 0 ("clean")."""

    def objective(model: nn.Module, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x_adv)
        score = model.adversarial_score.float().clamp(max=1 - 1e-6)
        return cross_entropy(logits, y) + weight * torch.log1p(-score), logits

    return objective


def router_evasion(
    model: nn.Module, x: Tensor, y: Tensor, eps: Radius, alpha: Radius, steps: int, weight: float = 1.0,
    norm: str = "linf", random_start: bool = True, restarts: int = 1,
) -> Tensor:
    """PGD on the router-evasion objective (see `router_evasion_objective`)."""
    _require_routed(model)
    return pgd(model, x, y, eps, alpha, steps, norm, random_start, restarts, loss=router_evasion_objective(weight))


def forced_path(
    model: nn.Module, x: Tensor, y: Tensor, route: Union[int, Tensor], eps: float, alpha: float, steps: int,
    norm: str = "linf", random_start: bool = True, restarts: int = 1, loss: Union[str, Objective] = "ce",
) -> Tensor:
    """PGD crafted with the route forced to `route`; evaluate the result on the unforced `model`."""
    return pgd(ForcedRoute(model, route), x, y, eps, alpha, steps, norm, random_start, restarts, loss)
