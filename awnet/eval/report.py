"""Evaluate a model against a suite of Linf attacks: per-attack and per-sample worst-case robust accuracy,
weighted robust accuracy, router detection, gradient-masking checks; a JSON report and a readable table.

A sample counts as robust to an attack only if the model is right on its clean input and on the attack's
output; the worst case is robust only against every attack run (DESIGN.md section 5).

AutoAttack and Square (torchattacks' implementations) are opt-in: AutoAttack is the field's reference
evaluation, and Square, gradient-free, gets its own row and check: it beating every gradient attack means the
gradients are masked (Croce & Hein 2020, arXiv 2003.01690, section 5).
"""
from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import allocator, attacks
from ..attacks.autoattack import AUTOATTACK_COMPONENTS, SQUARE_P_INIT, SQUARE_QUERIES, TARGET_CLASSES, library_version
from .masking import ROUNDING, gradient_masking_checks
from .metrics import accuracy, detection_metrics, outcomes, weighted_robust_accuracy, worst_case

STANDARD_ATTACKS = ("fgsm", "pgd", "cw", "apgd-ce", "apgd-dlr")
ADAPTIVE_ATTACKS = ("router-evasion", "forced-clean", "forced-adv")
AUTOATTACK_ATTACKS = ("autoattack", "square")
ATTACKS = STANDARD_ATTACKS + ADAPTIVE_ATTACKS + AUTOATTACK_ATTACKS
# The attacks Square is compared with: gradient attacks only, so not FGSM (one step, weak by design) nor
# AutoAttack (Square is its last component).
GRADIENT_ATTACKS = ("pgd", "cw", "apgd-ce", "apgd-dlr", "router-evasion", "forced-clean", "forced-adv")
GRADIENT_FREE_SLACK = 0.02


@dataclass(frozen=True)
class AttackSpec:
    """A named attack `run(model, x, y) -> x_adv` and the settings it runs with (for the report); `stages`,
    for AutoAttack, the samples left after each of its components (summed over the batches `run` sees)."""
    name: str
    run: Callable[[nn.Module, Tensor, Tensor], Tensor]
    settings: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)


def default_attack_names(model: nn.Module) -> list[str]:
    """The standard suite, plus the adaptive attacks when the model has a router."""
    return list(STANDARD_ATTACKS) + (list(ADAPTIVE_ATTACKS) if attacks.is_routed(model) else [])


def attack_suite(names: Sequence[str], eps: float, steps: int = 20, restarts: int = 1, apgd_steps: int = 100,
                 evasion_weight: float = 1.0, square_queries: int = SQUARE_QUERIES) -> list[AttackSpec]:
    """The named Linf attacks at radius `eps`; PGD-type attacks take `attacks.step_size`.
    AutoAttack runs at its standard settings; `square_queries` sets the query budget of Square alone."""
    if not names:
        raise ValueError(f"the attack suite is empty: name at least one of {list(ATTACKS)}")
    alpha = attacks.step_size(eps, steps)
    pgd_settings = {"eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts, "random_start": True}
    pgd_args = {"eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts}
    apgd_settings = {"eps": eps, "steps": apgd_steps, "restarts": restarts}
    # torchattacks is imported only when its attacks run (it takes seconds to import).
    library = library_version() if set(names) & set(AUTOATTACK_ATTACKS) else None
    stages: dict[str, int] = {}
    table = {
        "fgsm": (partial(attacks.fgsm, eps=eps), {"eps": eps}),
        "pgd": (partial(attacks.pgd, **pgd_args), {**pgd_settings, "loss": "ce"}),
        "cw": (partial(attacks.cw_linf, **pgd_args), {**pgd_settings, "loss": "margin"}),
        "apgd-ce": (partial(attacks.apgd_ce, eps=eps, steps=apgd_steps, restarts=restarts),
                    {**apgd_settings, "loss": "ce"}),
        "apgd-dlr": (partial(attacks.apgd_dlr, eps=eps, steps=apgd_steps, restarts=restarts),
                     {**apgd_settings, "loss": "dlr"}),
        "router-evasion": (partial(attacks.router_evasion, weight=evasion_weight, **pgd_args),
                           {**pgd_settings, "loss": "ce + weight * log(1 - adversarial_score)",
                            "weight": evasion_weight}),
        "forced-clean": (partial(attacks.forced_path, route=0, **pgd_args), {**pgd_settings, "route": 0}),
        "forced-adv": (partial(attacks.forced_path, route=1, **pgd_args), {**pgd_settings, "route": 1}),
        "autoattack": (partial(attacks.autoattack, eps=eps, seed=0, stages=stages),
                       {"eps": eps, "version": "standard", "components": list(AUTOATTACK_COMPONENTS),
                        "target_classes": f"min(classes - 1, {TARGET_CLASSES})", "square_queries": SQUARE_QUERIES,
                        "seed": 0, "library": library}),
        "square": (partial(attacks.square, eps=eps, n_queries=square_queries, seed=0),
                   {"eps": eps, "n_queries": square_queries, "p_init": SQUARE_P_INIT, "restarts": 1,
                    "loss": "margin", "seed": 0, "library": library}),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; available: {list(table)}")
    return [AttackSpec(n, table[n][0], {"norm": "linf", **table[n][1]}, stages if n == "autoattack" else {})
            for n in names]


def check_gradient_free(robust: dict[str, float], slack: float = GRADIENT_FREE_SLACK) -> Optional[dict]:
    """Fails if Square's robust accuracy is more than `slack` below every gradient attack's: a gradient-free
    attack beating them all means their gradients are masked. None unless Square and a gradient attack ran."""
    gradient = {name: acc for name, acc in robust.items() if name in GRADIENT_ATTACKS}
    if "square" not in robust or not gradient:
        return None
    lowest = min(gradient, key=gradient.get)
    return {
        "name": "square not stronger than gradient attacks",
        "passed": robust["square"] >= gradient[lowest] - slack - ROUNDING,
        "detail": {"square": robust["square"], "strongest_gradient_attack": lowest,
                   "gradient_attacks": gradient, "slack": slack},
    }


def check_square_after_gradients(stages: dict[str, int], slack: float = GRADIENT_FREE_SLACK) -> Optional[dict]:
    """Fails if AutoAttack's Square, run on what its gradient components (APGD-CE, APGD-T, FAB-T) left
    robust, takes more than `slack` of the samples: the gradient attacks miss what a gradient-free search
    finds, so their gradients are masked (Croce & Hein 2020's diagnostic). None without AutoAttack's stages."""
    if not stages.get("samples"):
        return None
    left = {name: stages[name] / stages["samples"] for name in AUTOATTACK_COMPONENTS}
    return {
        "name": "square finds little that autoattack's gradient attacks missed",
        "passed": left["fab-t"] - left["square"] <= slack + ROUNDING,
        "detail": {"robust_after": left, "square_took": left["fab-t"] - left["square"], "slack": slack},
    }


def evaluate(model: nn.Module, x: Tensor, y: Tensor, suite: Sequence[AttackSpec], eps: float,
             batch_size: int = 256, checks: bool = True, check_steps: int = 20, progress: bool = True) -> dict:
    """Attack `model` on (x, y) with every attack of `suite` (all at Linf radius `eps`) in eval mode, and
    return the attack settings, the metrics and the gradient-masking checks: the PGD ones with `checks`,
    Square against the gradient attacks whenever the suite has both (Square alone, or AutoAttack's)."""
    if not suite:  # the worst case over no attack would report the clean accuracy as robust
        raise ValueError("the attack suite is empty: a robust accuracy needs at least one attack")
    was_training = model.training
    model.eval()
    try:
        clean, clean_scores = outcomes(model, x, y, batch_size=batch_size)
        correct, scores = {}, {}
        for spec in suite:
            spec.stages.clear()  # a suite evaluated before keeps the counts of its last run
            correct[spec.name], scores[spec.name] = outcomes(
                model, x, y, spec.run, (eps, "linf"), batch_size, spec.name, progress)
        robust = {name: accuracy(clean & c) for name, c in correct.items()}
        worst = accuracy(worst_case(clean, correct.values()))
        metrics = {
            "clean_accuracy": accuracy(clean),
            "robust_accuracy": robust,
            "worst_case_robust_accuracy": worst,
            "weighted_robust_accuracy": weighted_robust_accuracy(accuracy(clean), worst),
            "detection": None,
        }
        if clean_scores is not None:
            strongest = min(robust, key=robust.get)
            metrics["detection"] = {"attack": strongest, **detection_metrics(clean_scores, scores[strongest])}
        masking = gradient_masking_checks(model, x, y, eps, check_steps, batch_size=batch_size,
                                          progress=progress) if checks else []
        stages = next((dict(spec.stages) for spec in suite if spec.stages), {})
        if stages:
            metrics["autoattack_stages"] = {name: stages[name] / stages["samples"] for name in AUTOATTACK_COMPONENTS}
        for check in (check_gradient_free(robust), check_square_after_gradients(stages)):
            if check is not None:
                masking.append(check)
    finally:
        model.train(was_training)
    return {
        "threat_model": {"norm": "linf", "eps": eps},
        "attacks": {spec.name: spec.settings for spec in suite},
        "metrics": metrics,
        "checks": masking,
        "checks_passed": all(c["passed"] for c in masking) if masking else None,
    }


def environment(device: torch.device) -> dict:
    """Versions and the device, for the report."""
    from importlib import metadata

    try:
        awnet_version = metadata.version("awnet")
    except metadata.PackageNotFoundError:
        awnet_version = "unknown (not installed)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "versions": {"awnet": awnet_version, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "device": {"type": device.type, "name": name, "torch_threads": torch.get_num_threads()},
        "malloc": allocator.describe(),
    }


def format_table(report: dict) -> str:
    """The report's metrics and checks as aligned text."""
    m = report["metrics"]
    rows = [("clean accuracy", _pct(m["clean_accuracy"]))]
    rows += [(f"robust accuracy: {name}", _pct(acc)) for name, acc in m["robust_accuracy"].items()]
    rows += [("robust accuracy: worst case", _pct(m["worst_case_robust_accuracy"])),
             ("weighted robust accuracy", _pct(m["weighted_robust_accuracy"]))]
    if m["detection"] is not None:
        d = m["detection"]
        rows += [(f"router detection accuracy ({d['attack']})", _pct(d["accuracy"])),
                 (f"router AUROC ({d['attack']})", f"{d['auroc']:.4f}")]
    rows += [(f"check: {c['name']}", "pass" if c["passed"] else "FAIL") for c in report["checks"]]
    width = max(len(r[0]) for r in rows)
    threat = report["threat_model"]
    title = f"{threat['norm']} eps={threat['eps']:g}"
    if "data" in report:
        title = f"{report['data']['dataset']} ({report['data']['split']}, n={report['data']['n']}), " + title
    return "\n".join([title] + [f"{name:<{width}}  {value:>9}" for name, value in rows])


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def write_json(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
