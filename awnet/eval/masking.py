"""Sanity checks against gradient masking, after Carlini et al., "On Evaluating Adversarial Robustness",
arXiv 1902.06705, and Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security",
arXiv 1802.00420. A defence whose robustness comes from broken gradients fails at least one:

1. robust accuracy does not rise as eps grows;
2. at eps = 1 (Linf on [0, 1]: any image is allowed) robust accuracy is at most 2%;
3. more PGD steps never raise robust accuracy;
4. more random restarts never raise robust accuracy.

"Never rises" allows a statistical slack of max(1 sample, 0.5 points): a random start can flip a sample that
sits on the decision boundary. The attack is PGD-Linf with step 2.5 eps / steps (Madry et al.), run through
the whole model (a router included), with the margin loss too beyond the evaluation's eps (per-sample worst
case). Each check is a dict {"name", "passed", "detail"}.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

from torch import Tensor, nn

from ..attacks import pgd, step_size
from .metrics import accuracy, outcomes

LARGE_EPS = 1.0
LARGE_EPS_MAX_ACCURACY = 0.02
SLACK_POINTS = 0.005
EPS_FACTORS = (0.25, 0.5, 1.0, 2.0)


# Accuracies are float32 fractions of the samples: a difference of exactly the slack (2 of 100 samples
# against 0.02) can come out a few ulps above it, and must still pass.
ROUNDING = 1e-6


def slack(n: int) -> float:
    return max(1.0 / n, SLACK_POINTS)


def check_non_increasing(name: str, knob: str, values: Sequence[float], accuracies: Sequence[float],
                         tolerance: float) -> dict:
    """Passes if no accuracy exceeds the one before it by more than `tolerance`."""
    rises = [b - a for a, b in zip(accuracies, accuracies[1:])]
    return {
        "name": name,
        "passed": all(r <= tolerance + ROUNDING for r in rises),
        "detail": {knob: list(values), "robust_accuracy": list(accuracies), "slack": tolerance},
    }


def check_at_most(name: str, eps: float, acc: float, limit: float) -> dict:
    return {"name": name, "passed": acc <= limit + ROUNDING,
            "detail": {"eps": eps, "robust_accuracy": acc, "max": limit}}


def gradient_masking_checks(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 20,
                            restarts: int = 3, batch_size: int = 256, progress: bool = False) -> list[dict]:
    """Run the four checks on (x, y) at the evaluation's `eps`, with `steps` PGD steps as the base effort
    and `restarts` restarts for the restart check."""
    clean, _ = outcomes(model, x, y, batch_size=batch_size)

    def robust(eps_: float, steps_: int = steps, restarts_: int = 1) -> float:
        # Beyond the threat model the cross-entropy saturates on confident undefended models (a standard
        # MNIST CNN kept 10% at eps=1 under CE alone), so the margin loss attacks there too, per sample.
        losses = ("ce",) if eps_ <= eps else ("ce", "margin")
        correct = clean
        for loss in losses:
            attack = partial(pgd, eps=eps_, alpha=step_size(eps_, steps_), steps=steps_, restarts=restarts_, loss=loss)
            desc = f"check pgd-{loss} eps={eps_:g} steps={steps_} restarts={restarts_}"
            correct = correct & outcomes(model, x, y, attack, (eps_, "linf"), batch_size, desc, progress)[0]
        return accuracy(correct)

    tolerance = slack(len(x))
    eps_values = sorted({min(f * eps, LARGE_EPS) for f in EPS_FACTORS} | {LARGE_EPS})
    curve = [robust(e) for e in eps_values]
    at_eps = curve[eps_values.index(min(eps, LARGE_EPS))]
    return [
        check_non_increasing("robust accuracy non-increasing in eps", "eps", eps_values, curve, tolerance),
        check_at_most("robust accuracy ~0 at eps=1", LARGE_EPS, curve[-1], LARGE_EPS_MAX_ACCURACY),
        check_non_increasing("more steps never raise robust accuracy", "steps", [steps, 2 * steps],
                             [at_eps, robust(eps, 2 * steps)], tolerance),
        check_non_increasing("more restarts never raise robust accuracy", "restarts", [1, restarts],
                             [at_eps, robust(eps, restarts_=restarts)], tolerance),
    ]
