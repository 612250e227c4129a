"""Kernels per training step (DESIGN.md section 3), counted with torch.profiler on the CPU: the work-doing
leaf operators of one step, after a warm-up step. At CIFAR sizes a step's GPU time is first its number of
launches, and the count carries over to the GPU (batch 2 here: the count does not depend on it).

Rows: one PGD-10 step as bench/test_train_step.py builds it, but with the attack in eval mode (as the
recipes craft it): the static network, and its AW-Net with 1 and 2 banks (attack through the router, the
update with the route forced to "adversarial"); then one step of each training recipe (awnet/train/recipes.py).

    python -m bench.kernel_counts [--models smallcnn,resnet18] [--recipes] [--top N] [--backend cpp]
"""
from __future__ import annotations

import argparse
import functools
from collections import Counter
from typing import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import awkernels
import awnet
from awnet.attacks import pgd, step_size
from awnet.train.loop import make_schedule, train_step
from awnet.train.recipes import AW_RECIPES, RECIPES, RecipeContext, eval_mode

# Leaf operators that launch no work: allocations and metadata changes, and (see `does_no_work`) views and
# no-op casts.
METADATA = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty", "aten::new_empty_strided",
            "aten::resize_", "aten::as_strided_", "aten::set_", "aten::_unsafe_view", "aten::result_type",
            "aten::requires_grad_", "aten::detach_", "aten::_has_compatible_shallow_copy_type"}
IMAGES = {"smallcnn": (1, 28, 28), "resnet18": (3, 32, 32)}
VARIANTS = {"static": (False, 1), "aw-banks1": (True, 1), "aw-banks2": (True, 2)}  # name: (aw, banks)
BATCH = 2
EPS, STEPS = 8 / 255, 10


@functools.cache
def does_no_work(name: str) -> bool:
    """Whether an operator only allocates, or returns views of its inputs: every overload's schema returns
    aliases that it does not write (`Tensor(a)`: reshape, split, to, contiguous; their copies, if any, are
    operators of their own)."""
    if name in METADATA:
        return True
    namespace, _, op = name.partition("::")
    try:
        packet = getattr(getattr(torch.ops, namespace), op)
    except (AttributeError, RuntimeError):
        return False
    returns = [r for overload in packet.overloads() for r in getattr(packet, overload)._schema.returns
               if "Tensor" in str(r.type)]  # not, say, aten::split.str's str[]
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def kernels(fn: Callable[[], object]) -> list[str]:
    """The kernels fn runs, by name: operators that do work and run no other operator that does (a C++ pass
    that allocates its output is one kernel; an op made of kernels is none)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def count(event) -> list[str]:
        inner = [name for child in event.cpu_children for name in count(child)]
        # Operators only: autograd's nodes (AddBackward0, torch::autograd::AccumulateGrad) run operators.
        operator = "::" in event.name and not event.name.startswith(("autograd::", "torch::autograd::"))
        if inner or not operator or does_no_work(event.name):
            return inner
        return [event.name]
    return [name for e in prof.events() if e.cpu_parent is None for name in count(e)]


def _model(name: str, variant: str) -> torch.nn.Module:
    aw, banks = VARIANTS[variant]
    return awnet.models.build(name, aw=aw, **({"banks": banks} if aw else {})).train()


def _batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(BATCH, *IMAGES[name]), torch.randint(0, 10, (BATCH,))


def pgd10_step(name: str, variant: str, backend: str = "auto") -> Callable[[], torch.Tensor]:
    """One PGD-10 adversarial-training step on an awkernels backend: the attack in eval mode (an AW-Net's
    through its router), then the update (an AW-Net's with the route forced to "adversarial"), SGD with
    momentum."""
    torch.manual_seed(0)
    model = _model(name, variant)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch(name)
    forward = (lambda inputs: model(inputs, route=1)) if VARIANTS[variant][0] else model

    def step() -> torch.Tensor:
        with awkernels.use_backend(backend):
            with eval_mode(model):
                x_adv = pgd(model, x, y, eps=EPS, alpha=step_size(EPS, STEPS), steps=STEPS)
            loss = F.cross_entropy(forward(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def recipe_step(recipe: str, name: str, variant: str, backend: str = "auto",
                attack_steps: int = STEPS) -> Callable[[], torch.Tensor]:
    """One step of a training recipe as the training loop takes it (`awnet.train.loop.train_step`); the
    awnet recipe distils from two static teachers of the same architecture."""
    torch.manual_seed(0)
    model = _model(name, variant)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = make_schedule(optimizer, 100, 0.05)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    teachers = [awnet.models.build(name).eval() for _ in range(2)] if recipe == "awnet" else [None, None]
    ctx = RecipeContext(model, model, EPS, step_size(EPS, attack_steps), attack_steps, clean_teacher=teachers[0],
                        robust_teacher=teachers[1])
    x, y = _batch(name)

    def step() -> torch.Tensor:
        with awkernels.use_backend(backend):
            return train_step(ctx, RECIPES[recipe], optimizer, scaler, schedule, x, y, amp=False)[0].detach()
    return step


def step_kernels(step: Callable[[], object]) -> list[str]:
    """The kernels of one step, after a warm-up step (optimizer state, cached layouts)."""
    step()
    return kernels(step)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smallcnn,resnet18")
    parser.add_argument("--recipes", action="store_true", help="also count one step of every training recipe")
    parser.add_argument("--top", type=int, default=0, help="also list the N most frequent kernels per count")
    parser.add_argument("--backend", default="auto", help="the awkernels backend (auto: per call, from the "
                        "measured strategy table; cpp: the C++ extension's strategies, as the budget test counts)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # counts do not depend on threads; keep a shared machine free
    print(f"{'kernels per step, ' + args.backend:<32}" + "".join(f"{v:>11}" for v in VARIANTS) + "  AW / static")
    for name in args.models.split(","):
        if name not in IMAGES:
            parser.error(f"unknown model {name!r}; the models are {list(IMAGES)}")
        steps = {"pgd10": functools.partial(pgd10_step, name, backend=args.backend)}
        for recipe in RECIPES if args.recipes else ():
            steps[f"recipe {recipe}"] = functools.partial(recipe_step, recipe, name, backend=args.backend)
        for label, make in steps.items():
            found = {variant: step_kernels(make(variant)) for variant, (aw, _) in VARIANTS.items()
                     if aw or label.removeprefix("recipe ") not in AW_RECIPES}  # the awnet recipes train AW-Nets
            counts = {variant: len(names) for variant, names in found.items()}
            cells = "".join(f"{counts.get(variant, '-'):>11}" for variant in VARIANTS)
            static = counts.get("static")
            ratios = " ".join(f"{counts[v] / static:.2f}x" for v in counts if static and v != "static")
            print(f"{name + ' ' + label:<32}{cells}  {ratios}", flush=True)
            for variant, names in found.items() if args.top else ():
                print(f"    {variant}: " + ", ".join(f"{k} {n}" for k, n in Counter(names).most_common(args.top)))


if __name__ == "__main__":
    main()
