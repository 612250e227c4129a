"""Evaluation (DESIGN.md section 5): robust accuracy against a suite of attacks with the per-sample worst
case (awnet's adaptive suite, and torchattacks' AutoAttack and Square), router detection, gradient-masking
checks, JSON reports, the trade-off picture and the filter weight analysis."""
from .masking import gradient_masking_checks
from .metrics import auroc, detection_metrics, outcomes, weighted_robust_accuracy, worst_case
from .report import (
    ADAPTIVE_ATTACKS, AUTOATTACK_ATTACKS, STANDARD_ATTACKS, AttackSpec, attack_suite, default_attack_names, evaluate,
)
from .tradeoff import plot_tradeoff, tradeoff_figure
from .weights import analyze_weights, filter_statistics, statistics_rows

__all__ = [
    "ADAPTIVE_ATTACKS", "AUTOATTACK_ATTACKS", "STANDARD_ATTACKS", "AttackSpec", "analyze_weights", "attack_suite", "auroc",
    "default_attack_names", "detection_metrics", "evaluate", "filter_statistics", "gradient_masking_checks",
    "outcomes", "plot_tradeoff", "statistics_rows", "tradeoff_figure", "weighted_robust_accuracy", "worst_case",
]
