"""The package's main job, `awnet reproduce`: the AW-Net paper's trade-off on one dataset, end to end.

Trains a standard model and a PGD-AT model (the two teachers) and an AW-Net with the `awnet` recipe (MTARD
from those teachers), all on the same architecture; attacks all three with the adaptive suite (per-sample
worst case over every attack; for the AW-Net also router evasion and forced-path transfer, and the
gradient-masking checks); writes `report.json`, `table.md` (the trade-off table, also printed) and the
filter weight-distribution analysis (`weights.png`, `weights.csv`). Each training run lives in its own
folder and is resumed if it is there already, so a killed job continues where it stopped.

AW-Net: Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution
of Filters", TPAMI 2024, arXiv 2306.03430.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Optional

import torch

from .. import checkpoint as model_files
from ..data import DATASETS, load_dataset
from ..eval.report import attack_suite, default_attack_names, environment, evaluate, write_json
from ..eval.weights import analyze_weights
from ..settings import (
    NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check_settings, check_writable_dir, setting,
)
from .loop import TrainConfig, spread, train
from .state import MODEL

MODELS = ("standard", "pgd-at", "awnet")


@dataclass
class ReproduceConfig:
    """The main job's settings; the defaults fit in 20 minutes on a 2-core CPU (see README). Numeric settings
    are checked when the config is made (ValueError naming the setting; see `awnet.settings`)."""
    dataset: str = "mnist5k"
    out: str = "runs/reproduce"
    data_dir: Optional[str] = None
    model: Optional[str] = None  # default: the dataset's
    standard_epochs: int = setting(10, POSITIVE_INT)
    robust_epochs: int = setting(18, POSITIVE_INT)
    teacher_lr: float = setting(0.1, POSITIVE)  # peak SGD learning rate of the standard and PGD-AT runs
    awnet_epochs: int = setting(4, POSITIVE_INT)
    awnet_init: str = "robust"  # "robust": the AW-Net starts from the robust teacher's weights; "none": fresh
    awnet_lr: float = setting(0.02, POSITIVE)  # fine-tuning from the robust teacher: below the teachers' 0.05
    # TrainConfig.deployed_weight: the self-routed network is trained too
    awnet_deployed_weight: float = setting(1.0, NON_NEGATIVE)
    n_train: Optional[int] = setting(None, POSITIVE_INT)  # None: the whole train split
    val_n: int = setting(200, POSITIVE_INT)  # held-out samples for the per-epoch log
    # test samples, spread evenly (40 per class on mnist5k); None or 0: the whole split
    n_eval: Optional[int] = setting(400, NON_NEGATIVE_INT)
    eval_steps: int = setting(40, POSITIVE_INT)  # PGD, CW, router-evasion and forced-path steps (2.5 eps / steps)
    apgd_steps: int = setting(100, POSITIVE_INT)
    restarts: int = setting(1, POSITIVE_INT)
    check_steps: int = setting(20, POSITIVE_INT)  # base PGD steps of the gradient-masking checks
    eval_batch_size: int = setting(500, POSITIVE_INT)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_settings(self)


def train_configs(config: ReproduceConfig) -> dict[str, TrainConfig]:
    """The three training runs: the teachers first, then the AW-Net distilled from them."""
    common = TrainConfig(dataset=config.dataset, model=config.model, data_dir=config.data_dir,
                         n_train=config.n_train, val_n=config.val_n, seed=config.seed, progress=config.progress,
                         resume=True)
    folder = {name: os.path.join(config.out, name) for name in MODELS}
    teacher = {name: os.path.join(folder[name], MODEL) for name in ("standard", "pgd-at")}
    return {
        "standard": replace(common, recipe="standard", epochs=config.standard_epochs, lr=config.teacher_lr,
                            out=folder["standard"]),
        "pgd-at": replace(common, recipe="pgd-at", epochs=config.robust_epochs, lr=config.teacher_lr,
                          out=folder["pgd-at"]),
        "awnet": replace(common, recipe="awnet", epochs=config.awnet_epochs, out=folder["awnet"],
                         clean_teacher=teacher["standard"], robust_teacher=teacher["pgd-at"],
                         lr=config.awnet_lr, deployed_weight=config.awnet_deployed_weight,
                         # A robust start needs no eps ramp; a fresh one does.
                         init=teacher["pgd-at"] if config.awnet_init == "robust" else None,
                         eps_ramp=0.0 if config.awnet_init == "robust" else common.eps_ramp),
    }


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """A model's entry of report.json: the headline metrics first, then the full evaluation."""
    m = result["metrics"]
    entry = {"clean_acc": m["clean_accuracy"], "robust_acc": m["worst_case_robust_accuracy"],
             "wra": m["weighted_robust_accuracy"], "per_attack": m["robust_accuracy"]}
    if m["detection"] is not None:
        entry["router_auroc"] = m["detection"]["auroc"]
        entry["router_detection"] = m["detection"]
    entry["checks_passed"] = result["checks_passed"]
    return {**entry, "evaluation": result}


def target(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's target for the AW-Net: WRA above both static models', clean accuracy within 1 point of
    the standard model's, worst-case robust accuracy at most 1 point below the PGD-AT model's."""
    aw, std, rob = models["awnet"], models["standard"], models["pgd-at"]
    conditions = {
        "wra_above_both": aw["wra"] > max(std["wra"], rob["wra"]),
        "clean_within_1pt_of_standard": aw["clean_acc"] >= std["clean_acc"] - 0.01,
        "robust_within_1pt_of_pgd_at": aw["robust_acc"] >= rob["robust_acc"] - 0.01,
        "masking_checks_pass": bool(aw["checks_passed"]),
    }
    return {**conditions, "reached": all(conditions.values())}


def format_tradeoff(report: dict[str, Any]) -> str:
    """The trade-off table (Markdown): per-attack rows, the worst case, WRA, router AUROC, times."""
    models = report["models"]
    names = list(models)
    attacks = list(dict.fromkeys(a for m in models.values() for a in m["per_attack"]))

    def pct(value: Optional[float]) -> str:
        return "—" if value is None else f"{100 * value:.1f}"

    rows = [("clean", [pct(models[n]["clean_acc"]) for n in names])]
    rows += [(f"{a}", [pct(models[n]["per_attack"].get(a)) for n in names]) for a in attacks]
    rows += [("**worst case (robust acc)**", [f"**{pct(models[n]['robust_acc'])}**" for n in names]),
             ("**WRA** (mean of clean and worst case)", [f"**{pct(models[n]['wra'])}**" for n in names]),
             ("router AUROC", [f"{models[n]['router_auroc']:.3f}" if "router_auroc" in models[n] else "—"
                               for n in names]),
             ("gradient-masking checks", ["pass" if models[n]["checks_passed"] else
                                          "—" if models[n]["checks_passed"] is None else "FAIL" for n in names]),
             ("train / eval time (s)", [f"{report['time']['train_seconds'][n]:.0f} / "
                                        f"{report['time']['eval_seconds'][n]:.0f}" for n in names])]
    threat = report["threat_model"]
    lines = [f"{report['dataset']} test split (n={report['n']}), Linf eps={threat['eps']:g}; accuracies in %",
             "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def reproduce(config: ReproduceConfig) -> dict[str, Any]:
    """Run the main job; return the report (also written to `config.out`/report.json)."""
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; available: {sorted(DATASETS)}")
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    runs = train_configs(config)  # checks their settings too
    check_writable_dir(config.out)
    os.makedirs(config.out, exist_ok=True)
    train_seconds = {}
    for name, run in runs.items():
        print(f"== training {name} ({run.recipe}, {run.epochs} epochs) -> {run.out}", flush=True)
        history = train(run)
        train_seconds[name] = sum(row["seconds"] for row in history)

    eps = DATASETS[config.dataset].eps
    x, y = spread(*load_dataset(config.dataset, "test", config.data_dir), config.n_eval or None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    nets = {name: model_files.load(os.path.join(run.out, MODEL), device) for name, run in runs.items()}
    models, eval_seconds = {}, {}
    for name, net in nets.items():
        print(f"== evaluating {name} on {len(x)} test samples", flush=True)
        torch.manual_seed(config.seed)
        tick = time.perf_counter()
        suite = attack_suite(default_attack_names(net), eps, config.eval_steps, config.restarts, config.apgd_steps)
        result = evaluate(net, x, y, suite, eps, config.eval_batch_size, checks=True,
                          check_steps=config.check_steps, progress=config.progress)
        eval_seconds[name] = time.perf_counter() - tick
        models[name] = summarise(result)

    # The AW-Net's body holds its convolutions under the static network's layer names: one panel per layer.
    weights_csv, weights_png = analyze_weights(
        {"standard": nets["standard"], "pgd-at": nets["pgd-at"], "awnet": nets["awnet"].body}, config.out)
    report = {
        "models": models,
        "target": target(models),
        "dataset": config.dataset,
        "n": len(x),
        "threat_model": {"norm": "linf", "eps": eps},
        "settings": asdict(config),
        "train_configs": {name: run.resolved().identity() for name, run in runs.items()},
        "weights": {"csv": weights_csv, "png": weights_png},
        **environment(device),
        "time": {"started": started.isoformat(timespec="seconds"), "train_seconds": train_seconds,
                 "eval_seconds": eval_seconds, "total_seconds": time.perf_counter() - clock},
    }
    table = format_tradeoff(report)
    report["table"] = table
    write_json(report, os.path.join(config.out, "report.json"))
    with open(os.path.join(config.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"target reached: {report['target']['reached']} ({json.dumps(report['target'])})")
    print(f"report: {os.path.join(config.out, 'report.json')}; weight distributions: {weights_png}")
    return report
