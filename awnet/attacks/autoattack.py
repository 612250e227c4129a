"""AutoAttack and the Square attack, as torchattacks implements them: written elsewhere, so a bug of this
package's own attacks that overstates robustness is not repeated in them.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020, arXiv 2003.01690 (AutoAttack, standard version: APGD-CE, APGD-T, FAB-T and Square, each
on the samples the ones before left robust); Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020, arXiv 1912.00049.

Both call `model(x)` end to end (an AW-Net routes by its own router). torchattacks 3.5.1 would, around that:
switch the model to eval mode and back with `model.train()` (which also flips submodules the caller left in
eval mode), fill the parameters' `.grad` (FAB calls `backward`), reseed the global RNG with `seed`, return
`x_adv` on the model's device and accept inputs outside [0, 1] unchecked. Here, as for every attack of this
package, the model runs in the mode the caller left it in, keeps its modes, `requires_grad` flags and
gradients, the caller's RNG state is restored, `x_adv` comes back on `x`'s device, and bad input raises.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from .core import check_args

AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")
TARGET_CLASSES = 9  # AutoAttack's standard version: APGD-T and FAB-T target the 9 most likely other classes
SQUARE_QUERIES = 5000
SQUARE_P_INIT = 0.8


def _torchattacks():
    """torchattacks, imported on first use: it imports scipy, seconds that `import awnet` need not pay."""
    import torchattacks

    return torchattacks


def library_version() -> str:
    """The implementation these attacks run, for the report."""
    return f"torchattacks {_torchattacks().__version__}"


class _KeepMode(nn.Module):
    """`model` with torchattacks' `.eval()` / `.train()` made no-ops, so that it runs in the caller's mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> "_KeepMode":
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _check(x: Tensor, y: Tensor, eps: float) -> None:
    check_args(x, y, eps, "linf")
    if x.dim() != 4:
        raise ValueError(f"x must be images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must be images in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]")


@contextlib.contextmanager
def _as_found(model: nn.Module) -> Iterator[None]:
    """Freeze the parameters (no parameter gradient is computed or kept) and fork the RNG for the attack."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    # torchattacks seeds the CPU generator and the current CUDA device's.
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        for p in trainable:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in trainable:
                p.requires_grad_(True)


def _run(make_attack, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """`make_attack(wrapped_model, x_on_its_device)`'s attack on (x, y), with the model as found."""
    param = next(model.parameters(), None)
    device = x.device if param is None else param.device
    x_dev = x.detach().to(device)
    with _as_found(model):
        attack = make_attack(_KeepMode(model), x_dev)
        attack.set_device(device)
        x_adv = attack(x_dev, y.to(device))
    return x_adv.detach().to(device=x.device, dtype=x.dtype)


def autoattack(model: nn.Module, x: Tensor, y: Tensor, eps: float, n_classes: Optional[int] = None,
               seed: int = 0, stages: Optional[dict[str, int]] = None) -> Tensor:
    """AutoAttack, standard version, Linf radius `eps` (torchattacks.AutoAttack).

    `n_classes` is the model's number of classes (None: read from one forward on `x`); as in the standard
    version the targeted attacks aim at the `min(n_classes - 1, 9)` most likely other classes. `stages`, if
    given, gets per component the number of samples the model still classifies right after it and the
    components before it (and "samples": len(x)), added to what it holds, so one dict can sum the batches.
    What Square takes from what APGD-CE, APGD-T and FAB-T left is AutoAttack's own sign of masked gradients.
    """
    _check(x, y, eps)
    ta = _torchattacks()

    def make(wrapped: nn.Module, x_dev: Tensor):
        classes = n_classes
        if classes is None:
            with torch.no_grad():
                classes = wrapped(x_dev).shape[1]
        if type(classes) is not int or classes < 4:  # the targeted DLR loss reads the 4th largest logit
            raise ValueError(f"n_classes must be an int >= 4 for AutoAttack's targeted DLR loss, got {classes!r}")
        # torchattacks' n_classes sets n_target_classes = n_classes - 1.
        attack = ta.AutoAttack(wrapped, norm="Linf", eps=eps, version="standard",
                               n_classes=min(classes, TARGET_CLASSES + 1), seed=seed)
        made.append(attack)
        if stages is not None:  # MultiAttack counts the samples left after each component
            attack._autoattack._accumulate_multi_atk_records = True
            attack._autoattack._multi_atk_records = [0] * (1 + len(AUTOATTACK_COMPONENTS))
        return attack

    made: list = []
    x_adv = _run(make, model, x, y)
    if stages is not None:
        # [samples, left after each component]; components after the one that left none were not run (0).
        records = made[0]._autoattack._multi_atk_records
        for name, count in zip(("samples", *AUTOATTACK_COMPONENTS), records):
            stages[name] = stages.get(name, 0) + int(count)
    return x_adv


def square(model: nn.Module, x: Tensor, y: Tensor, eps: float, n_queries: int = SQUARE_QUERIES,
           seed: int = 0) -> Tensor:
    """The Square attack alone, at AutoAttack's settings (Linf, p_init 0.8, 1 restart, margin loss), on every
    sample: gradient-free, so it finds what masked gradients hide from the gradient attacks."""
    _check(x, y, eps)
    if type(n_queries) is not int or n_queries < 1:
        raise ValueError(f"n_queries must be an int >= 1, got {n_queries!r}")
    ta = _torchattacks()

    def make(wrapped: nn.Module, x_dev: Tensor):
        return ta.Square(wrapped, norm="Linf", eps=eps, n_queries=n_queries, n_restarts=1, p_init=SQUARE_P_INIT,
                         loss="margin", resc_schedule=True, seed=seed)

    return _run(make, model, x, y)
