"""Evaluation (DESIGN.md section 5): metrics, the gradient-masking checks (they pass on an adversarially
trained model and fail on one that masks its gradients), the report with its per-sample worst case, and the
`awnet eval` / `awnet analyze weights` commands on real awnet checkpoints."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

import awnet
from awnet import attacks, cli
from awnet.eval import (
    AttackSpec, attack_suite, auroc, detection_metrics, evaluate, filter_statistics, gradient_masking_checks,
    weighted_robust_accuracy, worst_case,
)
from awnet.eval.masking import check_non_increasing, slack
from awnet.eval.weights import analyze_weights, filters
from mnist_models import data, one_thread, robust, standard  # noqa: F401 (fixtures)


pytestmark = pytest.mark.usefixtures("one_thread")


class Rounded(nn.Module):
    """Gradient masking by construction: the input is rounded to {0, 1}, so every input gradient is 0."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x))


def test_auroc_matches_sklearn():
    gen = torch.Generator().manual_seed(0)
    neg = torch.randint(0, 20, (300,), generator=gen).float()  # many ties
    pos = torch.randint(5, 25, (200,), generator=gen).float()
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[neg.numpy(), pos.numpy()])
    assert auroc(neg, pos) == pytest.approx(expected, abs=1e-12)
    assert auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.9])) == 1.0
    assert auroc(torch.tensor([0.3, 0.9]), torch.tensor([0.1, 0.2])) == 0.0
    assert auroc(torch.full((4,), 0.5), torch.full((3,), 0.5)) == 0.5


def test_detection_worst_case_and_weighted():
    d = detection_metrics(torch.tensor([0.1, 0.6, 0.2, 0.4]), torch.tensor([0.9, 0.5, 0.3, 0.8]))
    assert d["accuracy"] == 6 / 8  # 3 clean below 0.5, 3 adversarial at or above it
    assert d["auroc"] == pytest.approx(roc_auc_score([0] * 4 + [1] * 4, [0.1, 0.6, 0.2, 0.4, 0.9, 0.5, 0.3, 0.8]))
    clean = torch.tensor([True, True, True, False])
    per_attack = [torch.tensor([True, False, True, True]), torch.tensor([True, True, False, True])]
    assert worst_case(clean, per_attack).tolist() == [True, False, False, False]
    assert weighted_robust_accuracy(0.9, 0.4) == pytest.approx(0.65)


def test_non_increasing_check_can_fail():
    assert check_non_increasing("c", "eps", [1, 2, 3], [0.8, 0.5, 0.503], 0.005)["passed"]
    failed = check_non_increasing("c", "eps", [1, 2, 3], [0.8, 0.5, 0.51], 0.005)
    assert not failed["passed"] and failed["detail"]["robust_accuracy"] == [0.8, 0.5, 0.51]
    assert slack(100) == 0.01 and slack(1000) == 0.005
    # A rise of exactly one sample in 100 is within slack(100), also as float32 means (0.59 -> 0.60 is
    # 0.0100000501 after the round trip through float32).
    rise = [float(torch.tensor(0.59)), float(torch.tensor(0.60))]
    assert check_non_increasing("c", "steps", [20, 40], rise, slack(100))["passed"]
    assert not check_non_increasing("c", "steps", [20, 40], [rise[0], float(torch.tensor(0.61))], slack(100))["passed"]


def test_masking_checks_pass_on_robust_and_fail_on_masked_model(robust, standard, data):
    _, (x, y) = data
    x, y = x[::2], y[::2]  # 500 digits, 50 per class
    torch.manual_seed(0)
    robust_checks = gradient_masking_checks(robust, x, y, eps=0.1, steps=10)
    standard_checks = gradient_masking_checks(standard, x, y, eps=0.1, steps=10)
    masked_checks = gradient_masking_checks(Rounded(standard), x, y, eps=0.1, steps=10)
    for label, checks in (("robust", robust_checks), ("standard", standard_checks), ("masked", masked_checks)):
        for c in checks:
            print(f"{label}: {c['name']}: {'pass' if c['passed'] else 'FAIL'} {c['detail']}")
    assert len(robust_checks) == 4 and all(c["passed"] for c in robust_checks)
    assert all(c["passed"] for c in standard_checks), "an undefended model has nothing to mask"
    by_name = {c["name"]: c for c in masked_checks}
    large = by_name["robust accuracy ~0 at eps=1"]
    assert not large["passed"] and large["detail"]["robust_accuracy"] > 0.1
    # The masked model looks robust at eps = 0.1: the checks, not the headline number, expose it.
    curve = by_name["robust accuracy non-increasing in eps"]["detail"]
    assert curve["robust_accuracy"][curve["eps"].index(0.1)] > 0.8


class RoutedDouble(nn.Module):
    """The AW-Net interface in miniature: a linear router blends two experts; `route` forces the blend."""

    def __init__(self, clean: nn.Module, robust: nn.Module):
        super().__init__()
        self.clean, self.robust = clean, robust
        self.router = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))

    def forward(self, x: torch.Tensor, route=None) -> torch.Tensor:
        p_type = self.router(x).softmax(1)
        self.adversarial_score = p_type[:, 1]
        mix = p_type if route is None else F.one_hot(torch.as_tensor(route).expand(len(x)).long(), 2).float()
        return torch.log(mix[:, :1] * self.clean(x).softmax(1) + mix[:, 1:] * self.robust(x).softmax(1))


def test_evaluate_reports_per_sample_worst_case(standard, robust, data):
    _, (x, y) = data
    x, y = x[::4], y[::4]  # 250 digits
    torch.manual_seed(0)
    model = RoutedDouble(standard, robust)
    suite = attack_suite(["fgsm", "pgd", "router-evasion", "forced-clean", "forced-adv"], eps=0.1, steps=5)
    result = evaluate(model.train(), x, y, suite, eps=0.1, batch_size=100, checks=False, progress=False)
    assert model.training, "evaluate restores the mode it found"
    m = result["metrics"]
    robust_acc = m["robust_accuracy"]
    assert set(robust_acc) == {"fgsm", "pgd", "router-evasion", "forced-clean", "forced-adv"}
    assert m["worst_case_robust_accuracy"] <= min(robust_acc.values()) <= m["clean_accuracy"]
    assert m["worst_case_robust_accuracy"] < m["clean_accuracy"] - 0.3
    assert m["weighted_robust_accuracy"] == pytest.approx((m["clean_accuracy"] + m["worst_case_robust_accuracy"]) / 2)
    assert m["detection"]["attack"] == min(robust_acc, key=robust_acc.get)
    assert 0.0 <= m["detection"]["auroc"] <= 1.0
    assert result["attacks"]["pgd"] == {"norm": "linf", "eps": 0.1, "alpha": 0.05, "steps": 5, "restarts": 1,
                                        "random_start": True, "loss": "ce"}
    json.dumps(result)  # plain JSON types throughout


def test_evaluate_rejects_an_attack_outside_the_threat_model(standard, data):
    _, (x, y) = data
    cheat = AttackSpec("cheat", lambda model, xb, yb: (xb + 0.2).clamp(0, 1))
    with pytest.raises(RuntimeError, match="cheat left the threat model"):
        evaluate(standard, x[:10], y[:10], [cheat], eps=0.1, checks=False, progress=False)


def test_robust_filters_are_more_concentrated(standard, robust, tmp_path):
    """The paper's first finding, on the first layer: adversarial training concentrates the filters."""
    (_, w_std), (_, w_rob) = next(filters(standard)), next(filters(robust))
    std, rob = filter_statistics(w_std), filter_statistics(w_rob)
    print({k: (std[k].mean().round(4), rob[k].mean().round(4)) for k in ("std", "kurtosis", "l1", "l2")})
    assert rob["std"].mean() < std["std"].mean() and rob["kurtosis"].mean() > std["kurtosis"].mean()
    x = torch.randn(3, 5)
    stats = filter_statistics(x)
    assert np.allclose(stats["l1"], x.abs().sum(1)) and np.allclose(stats["std"], x.std(1, unbiased=False))
    csv_path, png_path = analyze_weights({"standard": standard, "robust": robust}, str(tmp_path))
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 2 * 2 * 5  # models x layers x statistics
    assert open(png_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_eval_writes_report_and_table(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "awnet-smallcnn.safetensors"
    awnet.save(awnet.models.build("smallcnn", aw=True), path)  # the real checkpoint format
    out = tmp_path / "report.json"
    assert cli.main(["eval", "--checkpoint", str(path), "--dataset", "mnist5k", "--eps", "0.3", "-n", "20",
                     "--steps", "2", "--apgd-steps", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    sections = {"model", "data", "threat_model", "attacks", "metrics", "checks", "versions", "device", "time"}
    assert sections <= set(report)
    assert report["model"]["routed"] and report["model"]["class"] == "AWNet"
    # -n takes samples spread over the split, which is stored sorted by class: 2 of each digit, not 20 zeros.
    assert report["data"] == {"dataset": "mnist5k", "split": "test", "n": 20, "batch_size": 256, "per_class": [2] * 10}
    assert list(report["attacks"]) == ["fgsm", "pgd", "cw", "apgd-ce", "apgd-dlr", "router-evasion",
                                       "forced-clean", "forced-adv"]
    m = report["metrics"]
    assert set(m["robust_accuracy"]) == set(report["attacks"]) and m["detection"] is not None
    assert m["worst_case_robust_accuracy"] <= min(m["robust_accuracy"].values())
    assert len(report["checks"]) == 4 and all(isinstance(c["passed"], bool) for c in report["checks"])
    assert report["versions"]["torch"] == torch.__version__ and report["time"]["seconds"] > 0
    table = capsys.readouterr().out
    assert "robust accuracy: worst case" in table and "router AUROC" in table and "check: " in table
    assert f"{100 * m['clean_accuracy']:.2f}%" in table


def test_cli_analyze_weights(tmp_path, capsys):
    paths = []
    for name, aw in (("static", False), ("aw2", True)):
        paths.append(str(tmp_path / f"{name}.safetensors"))
        model = awnet.models.build("smallcnn", aw=aw, **({"banks": 2} if aw else {}))
        awnet.save(model, paths[-1])
    assert cli.main(["analyze", "weights", *paths, "--out", str(tmp_path / "analysis")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "analysis" / "weights.csv")))
    assert {r["model"] for r in rows} == {"static", "aw2"}
    layers = {r["layer"] for r in rows if r["model"] == "aw2"}
    assert any("[bank 1]" in layer for layer in layers), layers  # each bank of a two-bank AW conv
    assert (tmp_path / "analysis" / "weights.png").stat().st_size > 0
    assert "weights.csv" in capsys.readouterr().out
