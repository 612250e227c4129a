"""Attacks for adversarial training and evaluation (DESIGN.md section 5).

All attacks take images in [0, 1], keep `||x_adv - x|| <= eps` and `x_adv` in [0, 1], work on any
`nn.Module` classifier, ask autograd for the input gradient only, and leave the model's train/eval mode and
its parameters' `requires_grad` as they found them: the model runs in the mode the caller chose.
"""
from .adaptive import ForcedRoute, forced_path, is_routed, router_evasion, router_evasion_objective
from .apgd import apgd, apgd_ce, apgd_dlr, checkpoints
from .autoattack import autoattack, square
from .core import LOSSES, NORMS, Objective, cross_entropy, dlr, margin, project, step_size
from .pgd import cw_linf, fgsm, pgd

__all__ = [
    "LOSSES", "NORMS", "ForcedRoute", "Objective", "apgd", "apgd_ce", "apgd_dlr", "autoattack", "checkpoints",
    "cross_entropy", "cw_linf", "dlr", "fgsm", "forced_path", "is_routed", "margin", "pgd", "project",
    "router_evasion", "router_evasion_objective", "square", "step_size",
]
