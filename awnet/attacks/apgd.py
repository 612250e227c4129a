"""APGD-CE and APGD-DLR: the step-size-free PGD of AutoAttack.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020, arXiv 2003.01690, Algorithm 1, written here from the paper's description:

- step size eta starts at 2 eps; each step is a PGD step followed by momentum 0.75:
  `z = P(x_k + eta * dir(grad))`, `x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))`;
- at the checkpoints `w_j = ceil(p_j N)` with `p_0 = 0`, `p_1 = 0.22`,
  `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`, a sample's eta is halved and it restarts from its best
  point so far if (1) fewer than `rho = 0.75` of the steps since the last checkpoint raised its loss, or
  (2) neither its eta nor its best loss changed since the last checkpoint.

Everything is per sample and vectorised: the schedule is data-independent, so the loop needs no sync.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .core import ascent_step, best_of_restarts, check_args, expand, input_grad, objective_of, project, track_fooling
from .core import random_start as random_point

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    """The iterations `w_j = ceil(p_j * steps)` at which APGD may halve its step size (w_0 = 0 included)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # round() first: the p_j accumulate float error (0.22 + 0.19 = 0.41000000000000003) that ceil would see.
    return sorted({math.ceil(round(q * steps, 6)) for q in p})


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 100,
    norm: str = "linf",
    loss: str = "ce",
    random_start: bool = True,
    restarts: int = 1,
) -> Tensor:
    """APGD on `loss` ("ce", "dlr", "margin" or an objective); returns, per sample, the last iterate that
    fooled the model, else the highest-loss point found."""
    check_args(x, y, eps, norm)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    objective = objective_of(loss)
    x = x.detach()
    marks = checkpoints(steps)

    def run() -> tuple[Tensor, Tensor]:
        return _apgd_run(model, x, y, eps, steps, norm, random_start, objective, marks)

    return best_of_restarts(run, x, restarts)


def _apgd_run(model, x, y, eps, steps, norm, start_random, objective, marks) -> tuple[Tensor, Tensor]:
    cur = random_point(x, eps, norm) if start_random else x.clone()
    grad, f_cur, logits = input_grad(objective, model, cur, y)
    kept, found = track_fooling(cur, logits, y, cur, torch.zeros_like(y, dtype=torch.bool))
    x_max, f_max, grad_max = cur, f_cur, grad
    eta = torch.full_like(f_cur, 2.0 * eps)
    # State of the last checkpoint: best loss then, whether eta was halved then, raised-loss steps since.
    f_max_last, halved_last = f_max, torch.zeros_like(found)
    raised = torch.zeros_like(f_cur)
    prev = cur
    step_size = expand(eta, x)
    cur = project(ascent_step(cur, grad, step_size, norm), x, eps, norm)
    for k in range(1, steps + 1):
        if k < steps:
            grad, f_new, logits = input_grad(objective, model, cur, y)
        else:  # the last iterate needs only its loss and prediction
            with torch.no_grad():
                f_new, logits = objective(model, cur, y)
        kept, found = track_fooling(cur, logits, y, kept, found)
        raised = raised + (f_new > f_cur).to(raised.dtype)
        better = f_new > f_max
        x_max = torch.where(expand(better, x), cur, x_max)
        grad_max = torch.where(expand(better, x), grad, grad_max)
        f_max = torch.where(better, f_new, f_max)
        f_cur = f_new
        if k == steps:
            break
        if k in marks:
            since = k - marks[marks.index(k) - 1]
            halve = (raised < RHO * since) | (~halved_last & (f_max <= f_max_last))
            eta = torch.where(halve, eta / 2, eta)
            # A halving sample restarts from its best point, with that point's gradient and loss.
            cur = torch.where(expand(halve, x), x_max, cur)
            grad = torch.where(expand(halve, x), grad_max, grad)
            f_cur = torch.where(halve, f_max, f_cur)
            f_max_last, halved_last, raised = f_max, halve, torch.zeros_like(raised)
            step_size = expand(eta, x)
        z = project(ascent_step(cur, grad, step_size, norm), x, eps, norm)
        prev, cur = cur, project(cur + MOMENTUM * (z - cur) + (1 - MOMENTUM) * (cur - prev), x, eps, norm)
    return torch.where(expand(found, x), kept, x_max), found


def apgd_ce(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 100, norm: str = "linf",
            restarts: int = 1) -> Tensor:
    """APGD on the cross-entropy loss."""
    return apgd(model, x, y, eps, steps, norm, loss="ce", restarts=restarts)


def apgd_dlr(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 100, norm: str = "linf",
             restarts: int = 1) -> Tensor:
    """APGD on the DLR loss (needs >= 3 classes)."""
    return apgd(model, x, y, eps, steps, norm, loss="dlr", restarts=restarts)
