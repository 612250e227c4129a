"""Shared pieces of the attacks: the threat model's geometry (an Linf or L2 ball around the clean input,
intersected with the [0, 1] image box) and the per-sample objectives the attacks maximise.

Every attack here asks autograd for the input gradient alone (`torch.autograd.grad(loss, x_adv)`), so no
parameter gradient is computed or stored, and it never changes the model's train/eval mode or its
parameters' `requires_grad`: the model runs in the mode the caller left it in.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("linf", "l2")

Objective = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]
"""`(model, x_adv, y) -> (loss, logits)`: the (B,) loss an attack maximises and the logits that decide
whether a sample is already misclassified."""

Radius = Union[float, Tensor]
"""An eps or a step size: a number, or a 0-dim tensor on the attack's device (what a CUDA graph replays with
a new value each step, `awnet.train.graph`)."""


def step_size(eps: Radius, steps: int) -> Radius:
    """PGD's step for `steps` steps in an eps-ball: 2.5 eps / steps (Madry et al., arXiv 1706.06083), so that
    the steps can cross the ball and come back after the projection clips them."""
    return 2.5 * eps / steps


def check_args(x: Tensor, y: Tensor, eps: Radius, norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not torch.is_tensor(eps) and eps < 0:  # a tensor's value is the caller's to check: reading it waits
        raise ValueError(f"eps must be >= 0, got {eps}")
    if x.dim() < 2 or y.shape != x.shape[:1]:
        raise ValueError(f"x must be (B, ...) and y (B,), got x {tuple(x.shape)} and y {tuple(y.shape)}")


def expand(mask: Tensor, like: Tensor) -> Tensor:
    """A (B,) tensor viewed as (B, 1, ..., 1) so that it broadcasts against a batch shaped like `like`."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _l2(t: Tensor) -> Tensor:
    return expand(t.flatten(1).norm(dim=1), t)


def project(x_adv: Tensor, x: Tensor, eps: Radius, norm: str) -> Tensor:
    """Pull `x_adv` into the eps-ball around `x`, then into [0, 1].

    For Linf this is the exact projection onto the intersection (both sets are boxes). For L2 the box clamp
    after the ball projection only moves coordinates towards `x`, so the result stays inside the ball.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def ascent_step(x_adv: Tensor, grad: Tensor, size: Radius, norm: str) -> Tensor:
    """One steepest-ascent step of the norm's unit ball: the gradient's sign (Linf) or direction (L2)."""
    if norm == "linf":
        return x_adv + size * grad.sign()
    return x_adv + size * grad / _l2(grad).clamp_min(1e-12)


def random_start(x: Tensor, eps: Radius, norm: str) -> Tensor:
    """A random point of the eps-ball around `x` (uniform for Linf; uniform direction and radius for L2)."""
    if norm == "linf" and torch.is_tensor(eps):
        delta = torch.empty_like(x).uniform_(-1, 1) * eps
    elif norm == "linf":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:
        delta = torch.randn_like(x)
        delta = delta / _l2(delta).clamp_min(1e-12) * eps * expand(torch.rand(x.shape[0], device=x.device), x)
    return (x + delta).clamp(0.0, 1.0)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """CW's margin `max_{j != y} z_j - z_y` (Carlini & Wagner 2017, arXiv 1608.04644): > 0 iff misclassified."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - true


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, arXiv 2003.01690): the margin divided by
    `z_pi1 - z_pi3` (largest minus third largest logit), which makes it invariant to shifting and scaling
    the logits, so it cannot be defeated by inflating them."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got logits of shape {tuple(logits.shape)}")
    top = logits.float().topk(3, dim=1).values
    return margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES = {"ce": cross_entropy, "margin": margin, "dlr": dlr}


def objective_of(loss: Union[str, Objective]) -> Objective:
    """The objective for a loss name ("ce", "margin", "dlr") on the model's logits, or `loss` itself."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)} or an objective callable, got {loss!r}")
    fn = LOSSES[loss]

    def objective(model: nn.Module, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x_adv)
        return fn(logits, y), logits

    return objective


def input_grad(objective: Objective, model: nn.Module, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(gradient of the summed loss w.r.t. the input only, per-sample loss, logits), all detached."""
    x_adv = x_adv.detach().requires_grad_(True)
    loss, logits = objective(model, x_adv, y)
    (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return grad, loss.detach(), logits.detach()


def track_fooling(x_adv: Tensor, logits: Tensor, y: Tensor, kept: Tensor, found: Tensor) -> tuple[Tensor, Tensor]:
    """Update (per sample, the latest iterate that fooled the model; whether any did) with `x_adv`."""
    wrong = logits.argmax(1) != y
    return torch.where(expand(wrong, x_adv), x_adv, kept), found | wrong


def best_of_restarts(run: Callable[[], tuple[Tensor, Tensor]], x: Tensor, restarts: int) -> Tensor:
    """Run `run() -> (x_adv, fooled)` up to `restarts` times; per sample, keep the first restart that fooled
    the model, else the last restart's output."""
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    result, fooled = x, torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for restart in range(restarts):
        x_adv, hit = run()
        result = torch.where(expand(~fooled, x), x_adv, result)
        fooled = fooled | hit
        # At most one sync per further restart (never per step, none with one restart, as in training):
        # further restarts cannot change a batch that is all fooled.
        if restart + 1 < restarts and bool(fooled.all()):
            break
    return result
