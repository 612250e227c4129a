"""FGSM, PGD (Linf and L2, random start, restarts) and CW-Linf.

- FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", arXiv 1412.6572.
- PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv 1706.06083.
- CW-Linf: PGD on the margin loss of Carlini & Wagner, "Towards Evaluating the Robustness of Neural
  Networks", arXiv 1608.04644 (the Linf form used by TRADES and AutoAttack's evaluations).

Each returns the adversarial batch: per sample the last iterate that the model misclassified (the most
optimised one that fools it, so more steps never undo a success), otherwise the final iterate of the last
restart; always within the eps-ball and the [0, 1] box.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from .core import (Objective, Radius, ascent_step, best_of_restarts, check_args, expand, input_grad, objective_of,
                   project, track_fooling)
from .core import random_start as random_point


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Radius,
    alpha: Radius,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    loss: Union[str, Objective] = "ce",
) -> Tensor:
    """Projected gradient ascent on `loss` within the `norm` ball of radius `eps` around `x`.

    Args:
        model: any classifier taking (B, ...) images in [0, 1]; run in the mode the caller left it in.
        eps, alpha: the radius and the step size (Linf: per pixel; L2: per sample): numbers, or 0-dim tensors
            on x's device that the caller has checked (a CUDA graph's inputs; reading one would wait).
        loss: "ce", "margin" (CW) or "dlr", or an objective `(model, x_adv, y) -> (loss (B,), logits)`.
    """
    check_args(x, y, eps, norm)
    objective = objective_of(loss)
    x = x.detach()

    def run() -> tuple[Tensor, Tensor]:
        return _pgd_run(model, x, y, eps, alpha, steps, norm, random_start, objective)

    return best_of_restarts(run, x, restarts)


def _pgd_run(model, x, y, eps, alpha, steps, norm, start_random, objective) -> tuple[Tensor, Tensor]:
    x_adv = random_point(x, eps, norm) if start_random else x.clone()
    kept, found = x_adv, torch.zeros_like(y, dtype=torch.bool)
    for _ in range(steps):
        grad, _, logits = input_grad(objective, model, x_adv, y)
        # The forward that gives the gradient also says whether this iterate fools the model.
        kept, found = track_fooling(x_adv, logits, y, kept, found)
        x_adv = project(ascent_step(x_adv, grad, alpha, norm), x, eps, norm)
    with torch.no_grad():
        kept, found = track_fooling(x_adv, objective(model, x_adv, y)[1], y, kept, found)
    return torch.where(expand(found, x), kept, x_adv), found


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf",
         loss: Union[str, Objective] = "ce") -> Tensor:
    """One full-size step from the clean input (Linf: `x + eps * sign(grad)`; L2: the fast gradient method)."""
    return pgd(model, x, y, eps, alpha=eps, steps=1, norm=norm, random_start=False, loss=loss)


def cw_linf(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
    random_start: bool = True, restarts: int = 1,
) -> Tensor:
    """PGD-Linf on the CW margin `max_{j != y} z_j - z_y`."""
    return pgd(model, x, y, eps, alpha, steps, "linf", random_start, restarts, loss="margin")
