"""The main job, `awnet reproduce`, on tiny settings (not the defaults, which take up to 20 minutes): the
report's structure, the trade-off table and picture, the weight-distribution plot, that a rerun resumes the
training runs and keeps the evaluations, and the AW-Net starts."""
from __future__ import annotations

import csv
import json

import pytest

import awnet
from awnet import cli
from awnet.train.reproduce import MODELS, ReproduceConfig, format_tradeoff, target
from mnist_models import one_thread  # noqa: F401 (fixture)

TINY = ["--standard-epochs", "1", "--robust-epochs", "1", "--trades-epochs", "1", "--awnet-epochs", "1",
        "--n-train", "200", "--val-n", "20",
        "--n-eval", "30", "--eval-steps", "2", "--apgd-steps", "3", "--check-steps", "2", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert cli.main(["reproduce", "--out", str(out), *TINY]) == 0
    return out


def test_report_structure(run):
    report = json.loads((run / "report.json").read_text())
    assert list(report["models"]) == list(MODELS) == ["standard", "pgd-at", "trades", "awnet"]
    for name, m in report["models"].items():
        assert {"clean_acc", "robust_acc", "wra", "per_attack"} <= set(m), name
        assert m["robust_acc"] <= min(m["per_attack"].values()) <= m["clean_acc"]
        assert m["wra"] == pytest.approx((m["clean_acc"] + m["robust_acc"]) / 2)
        adaptive = {"router-evasion", "forced-clean", "forced-adv"}
        assert (adaptive <= set(m["per_attack"])) == (name == "awnet")
        assert ("router_auroc" in m) == (name == "awnet")
        # AutoAttack (torchattacks) on every adversarially trained model, its Square stage a masking check.
        assert ("autoattack" in m["per_attack"]) == (name != "standard") and "square" not in m["per_attack"]
        checks = {c["name"] for c in m["evaluation"]["checks"]}
        assert ("square finds little that autoattack's gradient attacks missed" in checks) == (name != "standard")
        assert isinstance(m["checks_passed"], bool) and len(m["evaluation"]["checks"]) >= 4
        assert m["evaluation"]["attacks"]["pgd"]["steps"] == 2
    assert report["n"] == 30 and report["threat_model"] == {"norm": "linf", "eps": 0.3}
    assert set(report["target"]) == {"wra_above_static", "clean_within_1pt_of_standard", "robust_within_1pt_of_pgd_at",
                                     "masking_checks_pass", "reached"}
    configs = report["train_configs"]
    assert [configs[n]["recipe"] for n in MODELS] == ["standard", "pgd-at", "trades", "awnet"]
    # The default start, the paper's: one bank with omega, from the PGD-AT model.
    assert report["awnet_init"] == "robust" and configs["awnet"]["banks"] == 1
    assert configs["awnet"]["init"] == configs["awnet"]["robust_teacher"] and configs["awnet"]["init_clean"] is None
    defaults = ReproduceConfig()
    assert (configs["awnet"]["lr"], configs["awnet"]["deployed_weight"], configs["awnet"]["eps_ramp"]) == \
        (defaults.awnet_lr, defaults.awnet_deployed_weight, 0.0), "fine-tuned from the robust start, no eps ramp"
    assert configs["standard"]["lr"] == configs["pgd-at"]["lr"] == configs["trades"]["lr"] == defaults.teacher_lr
    assert {configs[n]["model"] for n in MODELS} == {"smallcnn"}, "one architecture for all"
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
    assert (run / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report["tradeoff"]
    rows = list(csv.DictReader(open(run / "weights.csv")))
    layers = {m: {r["layer"] for r in rows if r["model"] == m} for m in MODELS}
    assert layers["awnet"] == layers["standard"] == layers["pgd-at"] == layers["trades"], \
        "the AW-Net's body under the same names"
    assert isinstance(awnet.load(run / "awnet-robust" / "model.safetensors"), awnet.nn.AWNet)


FOLDERS = {"standard": "standard", "pgd-at": "pgd-at", "trades": "trades", "awnet": "awnet-robust"}


def test_rerun_resumes_the_finished_training_runs_and_keeps_the_evaluations(run, capsys):
    before = {n: (run / f / "log.json").read_text() for n, f in FOLDERS.items()}
    evaluations = {n: (run / f / "eval.json").read_text() for n, f in FOLDERS.items()}
    capsys.readouterr()
    assert cli.main(["reproduce", "--out", str(run), *TINY]) == 0
    assert {n: (run / f / "log.json").read_text() for n, f in FOLDERS.items()} == before
    out = capsys.readouterr().out
    assert "epoch 1 " not in out, "nothing was trained again"
    assert "== evaluating" not in out and out.count("evaluation kept") == len(FOLDERS), out
    assert {n: (run / f / "eval.json").read_text() for n, f in FOLDERS.items()} == evaluations


def test_the_teachers_start_beside_the_paper_start(run, capsys):
    """--awnet-init teachers trains only the two-bank AW-Net started from both teachers beside the first; the
    static models and their evaluations are reused."""
    capsys.readouterr()
    assert cli.main(["reproduce", "--out", str(run), "--awnet-init", "teachers", *TINY]) == 0
    out = capsys.readouterr().out
    assert out.count("evaluation kept") == 3 and "== evaluating awnet" in out, out
    report = json.loads((run / "report.json").read_text())
    configs = report["train_configs"]
    assert report["awnet_init"] == "teachers" and configs["awnet"]["banks"] == 2
    assert (configs["awnet"]["init"], configs["awnet"]["init_clean"]) == \
        (configs["awnet"]["robust_teacher"], configs["awnet"]["clean_teacher"])
    assert (run / "awnet-teachers" / "model.safetensors").exists() and (run / "awnet-robust" / "eval.json").exists()


def test_two_teacher_start_computes_each_teacher_on_its_route():
    """awnet.from_teachers: the adversarial route is the robust model exactly; the clean route is the
    standard model's convolutions and BNs (through the shared layers, which come from the robust model)."""
    import copy

    import torch

    torch.manual_seed(0)
    clean, robust = (awnet.models.build("smallcnn", 10).eval() for _ in range(2))
    for model in (clean, robust):
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
    net = awnet.from_teachers(clean, robust).eval()
    x = torch.rand(6, 1, 28, 28)
    expected_clean = copy.deepcopy(clean)
    expected_clean.fc.load_state_dict(robust.fc.state_dict())
    with torch.no_grad():
        adv_route = net(x, route=torch.ones(6, dtype=torch.long))
        clean_route = net(x, route=torch.zeros(6, dtype=torch.long))
        torch.testing.assert_close(adv_route, robust(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(clean_route, expected_clean(x), rtol=1e-5, atol=1e-5)
        assert (clean_route - robust(x)).abs().max() > 1e-2, "the two routes differ"
    with pytest.raises(ValueError, match="same architecture"):
        awnet.from_teachers(awnet.models.build("smallcnn", 5), robust)


def test_target_conditions():
    def entry(clean, robust, checks=True):
        return {"clean_acc": clean, "robust_acc": robust, "wra": (clean + robust) / 2, "checks_passed": checks}

    std, rob = entry(0.98, 0.0), entry(0.96, 0.80)
    assert target({"standard": std, "pgd-at": rob, "awnet": entry(0.975, 0.795)})["reached"]
    missed = target({"standard": std, "pgd-at": rob, "awnet": entry(0.965, 0.81)})
    assert not missed["reached"] and not missed["clean_within_1pt_of_standard"] and missed["wra_above_static"]
    # TRADES counts among the static models whose WRA the AW-Net must beat.
    trades = entry(0.97, 0.80)
    assert not target({"standard": std, "pgd-at": rob, "trades": trades, "awnet": entry(0.975, 0.795)})["reached"]
    assert not target({"standard": std, "pgd-at": rob, "awnet": entry(0.975, 0.795, False)})["reached"]
