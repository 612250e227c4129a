"""Training recipes (DESIGN.md section 6): one function per recipe, computing the loss of one batch.

- `standard`: cross-entropy on clean inputs.
- `pgd-at`: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv 1706.06083:
  cross-entropy on PGD examples.
- `trades`: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
  arXiv 1901.08573: `CE(f(x), y) + beta * KL(f(x) || f(x_adv))`, x_adv maximising the KL term.
- `awnet`: AW-Net (Wei, Zhao, Li, TPAMI 2024, arXiv 2306.03430) trained by MTARD (Zhao et al., "Enhanced
  Accuracy and Robustness via Multi-Teacher Adversarial Distillation", ECCV 2022): a clean teacher on the
  clean inputs, a robust teacher on the adversarial ones, weighted by `MTARDWeights`, plus the router's type
  loss. `awnet-scratch`: the same without teachers (cross-entropy on both halves, plus the type loss).

Training attacks are crafted in eval mode, as the model is deployed: batch norms use their running
statistics (an attack crafted in train mode would update them at every one of its steps) and an AW-Net's
router mixes MixBN by its own p_type. An AW-Net's attacks run through the whole network, router included
(route=None), as an attacker's would: a fraction `evasion_fraction` of each batch gets router-evasion
examples (maximise the task loss while pushing the router towards "clean"), the rest end-to-end PGD. Only
the loss pass forces the route, to the true type (0 clean, 1 adversarial), on one batch that holds the clean
and the adversarial half, so MixBN sees both and the Type Heads learn to tell them apart in the same pass.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import pgd, router_evasion
from ..attacks.core import Radius, input_grad, project
from ..nn import MixBatchNorm2d
from ..nn.router import ADVERSARIAL_THRESHOLD

Stats = dict[str, Tensor]


class MTARDWeights:
    """MTARD's adaptive weights of the clean (nat) and adversarial (adv) distillation losses.

    Each step, a loss's relative value `r = L / L_first` (L_first: its value at the first step) says how
    little it has fallen; the weights move towards the normalised relative values, so the loss that falls
    slower gets more weight: `w_nat <- w_nat - lr * (w_nat - r_nat / (r_nat + r_adv))`, `w_adv = 1 - w_nat`.
    Under torchrun the losses are averaged over the processes first, so every process has the same weights.
    """

    def __init__(self, lr: float = 0.025, w_nat: float = 0.5):
        self.lr = lr
        self.w_nat = torch.tensor(w_nat, dtype=torch.float64)
        self.first: Optional[Tensor] = None  # (L_nat, L_adv) at the first step

    def update(self, loss_nat: Tensor, loss_adv: Tensor) -> tuple[Tensor, Tensor]:
        """Update the weights with this step's losses (kept on their device: no sync); return (w_nat, w_adv)."""
        losses = torch.stack([loss_nat.detach(), loss_adv.detach()]).double()
        if dist.is_initialized():
            dist.all_reduce(losses)
            losses /= dist.get_world_size()
        if self.first is None:
            self.first = losses
        # After a resume the state comes back on the CPU.
        self.first, self.w_nat = self.first.to(losses.device), self.w_nat.to(losses.device)
        # A loss that starts at ~0 (a student copied from its teacher) must not divide by 0.
        relative = losses / self.first.clamp_min(1e-6)
        # In place: a step replayed from a CUDA graph (awnet.train.graph) reads and writes the same memory.
        self.w_nat.sub_(self.lr * (self.w_nat - relative[0] / relative.sum().clamp_min(1e-12)))
        return self.w_nat.float(), 1 - self.w_nat.float()

    def state_dict(self) -> dict:
        return {"lr": self.lr, "w_nat": self.w_nat.to("cpu", copy=True),
                "first": None if self.first is None else self.first.to("cpu", copy=True)}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.w_nat, self.first = state["lr"], state["w_nat"], state["first"]


@dataclass
class RecipeContext:
    """What a recipe needs besides the batch. The loop sets `eps` and `alpha` every step (eps ramp): numbers, or
    0-dim device tensors in a step recorded as a CUDA graph (`GraphStep`). A recipe's settings (attack_steps,
    trades_beta, ...) are the TrainConfig settings of the same names (`from_config`)."""
    model: nn.Module  # what the loss pass calls: the model, or its DDP wrapper under torchrun
    net: nn.Module  # the bare model, for crafting attacks and reading the router
    eps: Radius
    alpha: Radius
    attack_steps: int
    trades_beta: float = 6.0
    clean_teacher: Optional[nn.Module] = None
    robust_teacher: Optional[nn.Module] = None
    mtard: MTARDWeights = field(default_factory=MTARDWeights)
    temperature: float = 1.0
    type_weight: float = 1.0
    evasion_fraction: float = 0.5
    evasion_weight: float = 1.0
    deployed_weight: float = 0.0

    @classmethod
    def from_config(cls, config: Any, **given: Any) -> RecipeContext:
        """A context holding `given`, and in every other field the same-named setting of `config` (a
        TrainConfig), so that a recipe setting is not restated where the context is made."""
        return cls(**given, **{f.name: getattr(config, f.name) for f in fields(cls) if f.name not in given})


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[None]:
    """`net` in eval mode (as deployed: crafting attacks), back in train mode after."""
    net.eval()
    try:
        yield
    finally:
        net.train()


@contextmanager
def frozen_statistics(net: nn.Module) -> Iterator[None]:
    """`net`'s batch norms normalise with batch statistics but leave their running statistics unchanged."""
    norms = [m for m in net.modules() if isinstance(m, (MixBatchNorm2d, nn.modules.batchnorm._BatchNorm))]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(1) == y).float().mean()


def distill(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Knowledge distillation (Hinton et al. 2015): `T^2 KL(softmax(t / T) || softmax(s / T))`, batch mean."""
    return F.kl_div(F.log_softmax(student_logits.float() / temperature, dim=1),
                    F.log_softmax(teacher_logits.float() / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def standard(ctx: RecipeContext, x: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
    logits = ctx.model(x)
    loss = F.cross_entropy(logits.float(), y)
    return loss, {"loss": loss, "train_acc": _accuracy(logits, y)}


def pgd_at(ctx: RecipeContext, x: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
    with eval_mode(ctx.net):
        x_adv = pgd(ctx.net, x, y, ctx.eps, ctx.alpha, ctx.attack_steps)
    logits = ctx.model(x_adv)
    loss = F.cross_entropy(logits.float(), y)
    return loss, {"loss": loss, "train_adv_acc": _accuracy(logits, y)}


def _trades_kl(model: nn.Module, x_adv: Tensor, p_clean: Tensor) -> tuple[Tensor, Tensor]:
    logits = model(x_adv)
    kl = F.kl_div(F.log_softmax(logits.float(), 1), p_clean, reduction="none").sum(1)
    return kl, logits


def trades(ctx: RecipeContext, x: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
    with eval_mode(ctx.net):
        with torch.no_grad():
            p_clean = F.softmax(ctx.net(x).float(), 1)
        # TRADES starts next to x (not uniformly in the ball) and ascends the KL term, not the CE.
        x_adv = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
        for _ in range(ctx.attack_steps):
            grad, _, _ = input_grad(lambda m, xa, _y: _trades_kl(m, xa, p_clean), ctx.net, x_adv, y)
            x_adv = project(x_adv + ctx.alpha * grad.sign(), x, ctx.eps, "linf")
    logits = ctx.model(torch.cat([x, x_adv]))
    clean, adv = logits[:len(x)].float(), logits[len(x):].float()
    natural = F.cross_entropy(clean, y)
    robust = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    loss = natural + ctx.trades_beta * robust
    return loss, {"loss": loss, "loss_nat": natural, "loss_robust": robust, "train_acc": _accuracy(clean, y),
                  "train_adv_acc": _accuracy(adv, y)}


def adversarial_half(ctx: RecipeContext, x: Tensor, y: Tensor) -> Tensor:
    """An AW-Net's training examples, crafted through its router: router evasion for the first
    `evasion_fraction` of the batch, end-to-end PGD (cross-entropy) for the rest."""
    split = round(ctx.evasion_fraction * len(x))
    with eval_mode(ctx.net):
        evasion = router_evasion(ctx.net, x[:split], y[:split], ctx.eps, ctx.alpha, ctx.attack_steps,
                                 weight=ctx.evasion_weight)
        end_to_end = pgd(ctx.net, x[split:], y[split:], ctx.eps, ctx.alpha, ctx.attack_steps)
    return torch.cat([evasion, end_to_end])


def _routed_pass(ctx: RecipeContext, x: Tensor, x_adv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One loss pass over [clean; adversarial] with the route forced to the true type; returns the clean
    logits, the adversarial logits and the type loss of the router on both halves."""
    types = torch.cat([torch.zeros(len(x), dtype=torch.long, device=x.device),
                       torch.ones(len(x_adv), dtype=torch.long, device=x.device)])
    logits = ctx.model(torch.cat([x, x_adv]), route=types)
    return logits[:len(x)], logits[len(x):], ctx.net.type_loss(types)


def _router_stats(ctx: RecipeContext, n_clean: int) -> Stats:
    score = ctx.net.adversarial_score.detach()
    hits = torch.cat([score[:n_clean] < ADVERSARIAL_THRESHOLD, score[n_clean:] >= ADVERSARIAL_THRESHOLD])
    return {"train_router_acc": hits.float().mean()}


def awnet_mtard(ctx: RecipeContext, x: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
    if ctx.clean_teacher is None or ctx.robust_teacher is None:
        raise ValueError("the awnet recipe distils from a clean and a robust teacher: give both checkpoints")
    x_adv = adversarial_half(ctx, x, y)
    clean, adv, type_loss = _routed_pass(ctx, x, x_adv)
    stats = {"train_acc": _accuracy(clean, y), "train_adv_acc": _accuracy(adv, y), **_router_stats(ctx, len(x))}
    with torch.no_grad():
        teacher_clean, teacher_adv = ctx.clean_teacher(x), ctx.robust_teacher(x_adv)
    loss_nat = distill(clean, teacher_clean, ctx.temperature)
    loss_adv = distill(adv, teacher_adv, ctx.temperature)
    w_nat, w_adv = ctx.mtard.update(loss_nat, loss_adv)
    loss = w_nat * loss_nat + w_adv * loss_adv + ctx.type_weight * type_loss
    if ctx.deployed_weight:
        # The network as deployed, routed by its own router (MixBN mixed by p_type), distils from the same
        # teachers: a misrouted or ambiguous input must still come out right, which is what adaptive
        # attacks test. Batch statistics as in any training pass; the running ones stay the forced pass's.
        with frozen_statistics(ctx.net):
            deployed = ctx.model(torch.cat([x, x_adv]))
        loss_deployed = (w_nat * distill(deployed[:len(x)], teacher_clean, ctx.temperature)
                         + w_adv * distill(deployed[len(x):], teacher_adv, ctx.temperature))
        loss = loss + ctx.deployed_weight * loss_deployed
        stats["loss_deployed"] = loss_deployed
    return loss, {"loss": loss, "loss_nat": loss_nat, "loss_adv": loss_adv, "loss_type": type_loss,
                  "w_nat": w_nat, "w_adv": w_adv, **stats}


def awnet_scratch(ctx: RecipeContext, x: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
    x_adv = adversarial_half(ctx, x, y)
    clean, adv, type_loss = _routed_pass(ctx, x, x_adv)
    loss_nat, loss_adv = F.cross_entropy(clean.float(), y), F.cross_entropy(adv.float(), y)
    loss = loss_nat + loss_adv + ctx.type_weight * type_loss
    return loss, {"loss": loss, "loss_nat": loss_nat, "loss_adv": loss_adv, "loss_type": type_loss,
                  "train_acc": _accuracy(clean, y), "train_adv_acc": _accuracy(adv, y), **_router_stats(ctx, len(x))}


Recipe = Callable[[RecipeContext, Tensor, Tensor], tuple[Tensor, Stats]]

RECIPES: dict[str, Recipe] = {
    "standard": standard,
    "pgd-at": pgd_at,
    "trades": trades,
    "awnet": awnet_mtard,
    "awnet-scratch": awnet_scratch,
}
AW_RECIPES = ("awnet", "awnet-scratch")  # recipes that train an AW-Net (the others a static network)
ADVERSARIAL_RECIPES = ("pgd-at", "trades", "awnet", "awnet-scratch")  # recipes that craft attacks
