"""Evaluation metrics: accuracies under attack, the per-sample worst case, weighted robust accuracy and the
router's detection accuracy and AUROC (DESIGN.md section 5)."""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..attacks import is_routed
from ..nn.router import ADVERSARIAL_THRESHOLD

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    param = next(model.parameters(), None)
    return fallback if param is None else param.device


def outcomes(
    model: nn.Module, x: Tensor, y: Tensor, attack: Optional[Attack] = None,
    threat: Optional[tuple[float, str]] = None, batch_size: int = 256, desc: Optional[str] = None,
    progress: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:
    """Run `attack` (or none) batch by batch; return per sample whether the model is right on the result
    and the router's adversarial score on it (None for a model without a router).

    With `threat = (eps, norm)` an attack output outside the eps-ball or the [0, 1] box raises
    `RuntimeError`: a robust accuracy measured outside the threat model means nothing.
    """
    device = model_device(model, x.device)
    routed = is_routed(model)
    correct, scores = [], []
    for start in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        xa = xb if attack is None else attack(model, xb, yb).detach()
        if threat is not None:
            check_threat_model(xa, xb, *threat, what=desc or "attack")
        with torch.no_grad():
            correct.append((model(xa).argmax(1) == yb).cpu())
            if routed:
                scores.append(model.adversarial_score.float().cpu())
    return torch.cat(correct), (torch.cat(scores) if routed else None)


def check_threat_model(x_adv: Tensor, x: Tensor, eps: float, norm: str, what: str, tol: float = 1e-5) -> None:
    """Raise if `x_adv` leaves the `norm` eps-ball around `x` or the [0, 1] box (beyond float rounding)."""
    delta = (x_adv - x).flatten(1).float()
    size = (delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)).max().item()
    low, high = x_adv.min().item(), x_adv.max().item()
    if size > eps + tol or low < -tol or high > 1 + tol:
        raise RuntimeError(f"{what} left the threat model: max {norm} distance {size:.6g} (eps {eps}), "
                           f"values in [{low:.6g}, {high:.6g}] (box [0, 1])")


def accuracy(correct: Tensor) -> float:
    return correct.float().mean().item() if correct.numel() else float("nan")


def worst_case(clean_correct: Tensor, attack_correct: Iterable[Tensor]) -> Tensor:
    """Per sample: robust only if right on the clean input and on every attack's output."""
    robust = clean_correct.clone()
    for correct in attack_correct:
        robust &= correct
    return robust


def weighted_robust_accuracy(clean: float, robust: float, clean_weight: float = 0.5) -> float:
    """`clean_weight * clean + (1 - clean_weight) * robust`; the default is the plain mean."""
    return clean_weight * clean + (1.0 - clean_weight) * robust


def auroc(negative: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of scores separating `positive` (high) from `negative`: the Mann-Whitney
    U statistic, P(positive > negative) + P(tie) / 2, from average ranks."""
    neg, pos = negative.double().numpy().ravel(), positive.double().numpy().ravel()
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    values, inverse, counts = np.unique(np.concatenate([neg, pos]), return_inverse=True, return_counts=True)
    # Tied values share the mean of the ranks they span (ranks start at 1).
    rank_of_value = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = rank_of_value[inverse[len(neg):]].sum()
    return float((rank_sum - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def detection_metrics(clean_scores: Tensor, adversarial_scores: Tensor,
                      threshold: float = ADVERSARIAL_THRESHOLD) -> dict:
    """The router as a detector: clean inputs are negatives, adversarial ones positives; a score >=
    `threshold` says "adversarial"."""
    hits = (clean_scores < threshold).sum() + (adversarial_scores >= threshold).sum()
    return {
        "accuracy": hits.item() / (len(clean_scores) + len(adversarial_scores)),
        "auroc": auroc(clean_scores, adversarial_scores),
        "threshold": threshold,
        "mean_score_clean": clean_scores.float().mean().item(),
        "mean_score_adversarial": adversarial_scores.float().mean().item(),
    }
