"""Evaluation (DESIGN.md section 5): robust accuracy against a suite of attacks with the per-sample worst
case, router detection, gradient-masking checks, JSON reports, and the filter weight analysis."""
from .masking import gradient_masking_checks
from .metrics import auroc, detection_metrics, outcomes, weighted_robust_accuracy, worst_case
from .report import ADAPTIVE_ATTACKS, STANDARD_ATTACKS, AttackSpec, attack_suite, default_attack_names, evaluate
from .weights import analyze_weights, filter_statistics, statistics_rows

__all__ = [
    "ADAPTIVE_ATTACKS", "STANDARD_ATTACKS", "AttackSpec", "analyze_weights", "attack_suite", "auroc",
    "default_attack_names", "detection_metrics", "evaluate", "filter_statistics", "gradient_masking_checks",
    "outcomes", "statistics_rows", "weighted_robust_accuracy", "worst_case",
]
