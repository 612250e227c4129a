"""The main job, `awnet reproduce`, on tiny settings (not the defaults, which take up to 20 minutes): the
report's structure, the trade-off table, the weight-distribution plot, and that a rerun resumes."""
from __future__ import annotations

import csv
import json

import pytest

import awnet
from awnet import cli
from awnet.train.reproduce import MODELS, ReproduceConfig, format_tradeoff, target
from mnist_models import one_thread  # noqa: F401 (fixture)

TINY = ["--standard-epochs", "1", "--robust-epochs", "1", "--awnet-epochs", "1", "--n-train", "200", "--val-n", "20",
        "--n-eval", "30", "--eval-steps", "2", "--apgd-steps", "3", "--check-steps", "2", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert cli.main(["reproduce", "--out", str(out), *TINY]) == 0
    return out


def test_report_structure(run):
    report = json.loads((run / "report.json").read_text())
    assert list(report["models"]) == list(MODELS) == ["standard", "pgd-at", "awnet"]
    for name, m in report["models"].items():
        assert {"clean_acc", "robust_acc", "wra", "per_attack"} <= set(m), name
        assert m["robust_acc"] <= min(m["per_attack"].values()) <= m["clean_acc"]
        assert m["wra"] == pytest.approx((m["clean_acc"] + m["robust_acc"]) / 2)
        adaptive = {"router-evasion", "forced-clean", "forced-adv"}
        assert (adaptive <= set(m["per_attack"])) == (name == "awnet")
        assert ("router_auroc" in m) == (name == "awnet")
        assert isinstance(m["checks_passed"], bool) and len(m["evaluation"]["checks"]) == 4
        assert m["evaluation"]["attacks"]["pgd"]["steps"] == 2
    assert report["n"] == 30 and report["threat_model"] == {"norm": "linf", "eps": 0.3}
    assert set(report["target"]) == {"wra_above_both", "clean_within_1pt_of_standard", "robust_within_1pt_of_pgd_at",
                                     "masking_checks_pass", "reached"}
    configs = report["train_configs"]
    assert [configs[n]["recipe"] for n in MODELS] == ["standard", "pgd-at", "awnet"]
    assert configs["awnet"]["robust_teacher"] == configs["awnet"]["init"]  # the AW-Net starts from PGD-AT
    defaults = ReproduceConfig()
    assert (configs["awnet"]["lr"], configs["awnet"]["deployed_weight"], configs["awnet"]["eps_ramp"]) == \
        (defaults.awnet_lr, defaults.awnet_deployed_weight, 0.0), "fine-tuned from the robust start, no eps ramp"
    assert configs["standard"]["lr"] == configs["pgd-at"]["lr"] == defaults.teacher_lr
    assert {configs[n]["model"] for n in MODELS} == {"smallcnn"}, "one architecture for all three"
    assert set(report["time"]["train_seconds"]) == set(MODELS)


def test_table_and_weight_plot(run, capsys):
    report = json.loads((run / "report.json").read_text())
    table = (run / "table.md").read_text()
    assert table.strip() == report["table"] == format_tradeoff(report)
    for label in ("| clean |", "| apgd-dlr |", "| router-evasion |", "worst case", "WRA", "router AUROC"):
        assert label in table
    aw = report["models"]["awnet"]
    worst = next(line for line in table.splitlines() if "worst case" in line)
    assert worst.endswith(f"**{100 * aw['robust_acc']:.1f}** |")
    assert (run / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(run / "weights.csv")))
    layers = {m: {r["layer"] for r in rows if r["model"] == m} for m in MODELS}
    assert layers["awnet"] == layers["standard"] == layers["pgd-at"], "the AW-Net's body under the same names"
    assert isinstance(awnet.load(run / "awnet" / "model.safetensors"), awnet.nn.AWNet)


def test_rerun_resumes_the_finished_training_runs(run, capsys):
    before = {n: (run / n / "log.json").read_text() for n in MODELS}
    capsys.readouterr()
    assert cli.main(["reproduce", "--out", str(run), *TINY]) == 0
    assert {n: (run / n / "log.json").read_text() for n in MODELS} == before
    assert "epoch 1 " not in capsys.readouterr().out, "nothing was trained again"


def test_target_conditions():
    def entry(clean, robust, checks=True):
        return {"clean_acc": clean, "robust_acc": robust, "wra": (clean + robust) / 2, "checks_passed": checks}

    std, rob = entry(0.98, 0.0), entry(0.96, 0.80)
    assert target({"standard": std, "pgd-at": rob, "awnet": entry(0.975, 0.795)})["reached"]
    missed = target({"standard": std, "pgd-at": rob, "awnet": entry(0.965, 0.81)})
    assert not missed["reached"] and not missed["clean_within_1pt_of_standard"] and missed["wra_above_both"]
    assert not target({"standard": std, "pgd-at": rob, "awnet": entry(0.975, 0.795, False)})["reached"]
