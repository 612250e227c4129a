"""The package's main job, `awnet reproduce`: the AW-Net paper's trade-off on one dataset, end to end.

Trains a standard model and a PGD-AT model (the two teachers), optionally a TRADES model, and an AW-Net
with the `awnet` recipe (MTARD from the two teachers), all on the same architecture; attacks every model
with the adaptive suite (per-sample worst case over every attack; for the AW-Net also router evasion and
forced-path transfer; for every adversarially trained model also torchattacks' AutoAttack, whose
gradient-free Square stage checks for masked gradients; and the gradient-masking checks); writes `report.json`, `table.md` (the
trade-off table, also printed), `tradeoff.png` and the filter weight-distribution analysis (`weights.png`,
`weights.csv`). Each training run lives in its own folder and is resumed if it is there already, and each
evaluation is kept beside its model (`eval.json`, keyed by the model file's digest and the attack
settings), so a killed job, or a rerun with another AW-Net start, redoes only what is missing.

The AW-Net starts (`awnet_init`): "robust" (the default), the paper's form, one bank with omega from the
PGD-AT model; "teachers", two banks, the clean bank and BNs from the standard model and the adversarial ones
from the PGD-AT model (`awnet.from_teachers`, the "divide and rule" start: measured worse, see README);
"none", from scratch.

AW-Net: Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution
of Filters", TPAMI 2024, arXiv 2306.03430.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Optional

import torch

from .. import checkpoint as model_files
from ..data import DATA_DIR_HELP, DATASETS, load_dataset, spread
from ..eval.report import attack_suite, default_attack_names, environment, evaluate, write_json
from ..eval.tradeoff import plot_tradeoff
from ..eval.weights import analyze_weights
from ..settings import (
    NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check_settings, check_writable_dir, option, setting,
    writable_dir,
)
from .loop import TrainConfig, train
from .state import MODEL

MODELS = ("standard", "pgd-at", "trades", "awnet")
AWNET_INITS = ("teachers", "robust", "none")
# Per dataset, the settings left None: what fits the README's stated time on a 2-core CPU.
DATASET_DEFAULTS = {
    "mnist5k": {"standard_epochs": 10, "robust_epochs": 12, "trades_epochs": 0, "awnet_epochs": 3,
                "n_train": None, "n_eval": 100},
    "fashion-mnist": {"standard_epochs": 10, "robust_epochs": 8, "trades_epochs": 8, "awnet_epochs": 3,
                      "n_train": 6000, "n_eval": 200},
}


@dataclass
class ReproduceConfig:
    """The main job's settings; settings left None take the dataset's defaults (`DATASET_DEFAULTS`), which
    fit the README's stated times on a 2-core CPU. Numeric settings are checked when the config is made
    (ValueError naming the setting; see `awnet.settings`); each field is an option of `awnet reproduce`, with
    the help it declares."""
    dataset: str = option("mnist5k", "the dataset; it sets the settings whose default is the dataset's",
                          choices=sorted(DATASETS))
    out: str = option("runs/reproduce", "folder of the training runs, report.json, table.md and the plots",
                      type=writable_dir, metavar="DIR")
    data_dir: Optional[str] = option(None, DATA_DIR_HELP)
    model: Optional[str] = option(None, "architecture of every model (default: the dataset's)")
    standard_epochs: Optional[int] = setting(None, POSITIVE_INT, "epochs of the standard model (default: the "
                                                                 "dataset's)")
    robust_epochs: Optional[int] = setting(None, POSITIVE_INT, "epochs of the PGD-AT model (default: the dataset's)")
    trades_epochs: Optional[int] = setting(None, NON_NEGATIVE_INT, "epochs of the TRADES model, 0: no TRADES model "
                                                                   "(default: the dataset's)")
    teacher_lr: float = setting(0.1, POSITIVE, "peak SGD learning rate of the static models")
    awnet_epochs: Optional[int] = setting(None, POSITIVE_INT, "epochs of the AW-Net (default: the dataset's)")
    awnet_init: str = option("robust", "the AW-Net's start: teachers (two banks, the clean one from the standard "
                                         "model, the adversarial one from the PGD-AT model), robust (one bank with "
                                         "omega, from the PGD-AT model) or none (from scratch)",
                             choices=AWNET_INITS)
    # fine-tuning from the teachers: below their learning rate
    awnet_lr: float = setting(0.02, POSITIVE, "peak SGD learning rate of the AW-Net")
    awnet_deployed_weight: float = setting(1.0, NON_NEGATIVE, "weight of the AW-Net's self-routed distillation loss "
                                                              "(train --deployed-weight)")
    n_train: Optional[int] = setting(None, POSITIVE_INT, "train on N samples spread over the train split (balanced; "
                                                         "default: the dataset's)", metavar="N")
    val_n: int = setting(200, POSITIVE_INT, "held-out samples for the per-epoch log")
    n_eval: Optional[int] = setting(None, NON_NEGATIVE_INT, "evaluate on N test samples spread evenly over the "
                                                            "split, 0: the whole split (default: the dataset's)",
                                    metavar="N")
    eval_steps: int = setting(40, POSITIVE_INT, "steps of PGD, CW, router evasion and forced-path transfer (step "
                                                "size 2.5 eps / steps)")
    apgd_steps: int = setting(100, POSITIVE_INT, "APGD steps")
    restarts: int = setting(1, POSITIVE_INT, "restarts of the PGD-type and APGD attacks")
    check_steps: int = setting(20, POSITIVE_INT, "base PGD steps of the gradient-masking checks")
    autoattack: bool = option(True, "torchattacks' AutoAttack (standard version) on every adversarially trained "
                                    "model")
    eval_batch_size: int = setting(500, POSITIVE_INT, "batch size of the evaluation")
    seed: int = option(0, "random seed of every run")
    progress: bool = option(True, "progress bars")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.awnet_init not in AWNET_INITS:
            raise ValueError(f"awnet_init must be one of {AWNET_INITS}, got {self.awnet_init!r}")

    def resolved(self) -> ReproduceConfig:
        """A copy with the dataset's defaults in the settings left None."""
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; available: {sorted(DATASETS)}")
        defaults = DATASET_DEFAULTS.get(self.dataset, DATASET_DEFAULTS["mnist5k"])
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


def train_configs(config: ReproduceConfig) -> dict[str, TrainConfig]:
    """The training runs of a resolved config: the static models first, then the AW-Net distilled from the
    standard and the PGD-AT model."""
    common = TrainConfig(dataset=config.dataset, model=config.model, data_dir=config.data_dir,
                         n_train=config.n_train, val_n=config.val_n, seed=config.seed, progress=config.progress,
                         resume=True)
    folder = {name: os.path.join(config.out, name) for name in MODELS}
    folder["awnet"] = os.path.join(config.out, f"awnet-{config.awnet_init}")  # the starts can share `out`
    teacher = {name: os.path.join(folder[name], MODEL) for name in ("standard", "pgd-at")}
    static = dict(lr=config.teacher_lr)
    aw = dict(recipe="awnet", epochs=config.awnet_epochs, out=folder["awnet"], clean_teacher=teacher["standard"],
              robust_teacher=teacher["pgd-at"], lr=config.awnet_lr, deployed_weight=config.awnet_deployed_weight)
    start = {  # a start from the teachers needs no eps ramp; a fresh one does
        "teachers": dict(banks=2, init=teacher["pgd-at"], init_clean=teacher["standard"], eps_ramp=0.0),
        "robust": dict(banks=1, init=teacher["pgd-at"], eps_ramp=0.0),
        "none": dict(banks=1),
    }[config.awnet_init]
    runs = {
        "standard": replace(common, recipe="standard", epochs=config.standard_epochs, out=folder["standard"],
                            **static),
        "pgd-at": replace(common, recipe="pgd-at", epochs=config.robust_epochs, out=folder["pgd-at"], **static),
        "trades": replace(common, recipe="trades", epochs=config.trades_epochs or 1, out=folder["trades"],
                          **static),
        "awnet": replace(common, **aw, **start),
    }
    if not config.trades_epochs:
        del runs["trades"]
    return runs


def model_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def attack_names(name: str, net: torch.nn.Module, config: ReproduceConfig) -> list[str]:
    """awnet's adaptive suite; AutoAttack too on an adversarially trained model (its Square stage, on what
    its gradient attacks left, is the masking check: Square alone again would double the slowest attack)."""
    return default_attack_names(net) + (["autoattack"] if config.autoattack and name != "standard" else [])


def evaluated(name: str, run: TrainConfig, config: ReproduceConfig, x: torch.Tensor, y: torch.Tensor,
              device: torch.device) -> tuple[dict[str, Any], float]:
    """(The evaluation of the model `run` trained, its seconds): kept in the run's folder as eval.json and
    reused while the model file and the evaluation's settings are the same."""
    path = os.path.join(run.out, MODEL)
    net = model_files.load(path, device)
    eps = DATASETS[config.dataset].eps
    names = attack_names(name, net, config)
    key = {"model_sha256": model_digest(path), "attacks": names, "eps": eps, "n": len(x),
           "samples_sha256": hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest(),
           **{k: getattr(config, k) for k in ("eval_steps", "restarts", "apgd_steps", "check_steps", "seed")}}
    cache = os.path.join(run.out, "eval.json")
    if os.path.isfile(cache):
        with open(cache) as f:
            kept = json.load(f)
        if kept.get("key") == key:
            print(f"== {name}: evaluation kept in {cache}", flush=True)
            return kept["result"], kept["seconds"]
    print(f"== evaluating {name} on {len(x)} test samples: {', '.join(names)}", flush=True)
    torch.manual_seed(config.seed)
    tick = time.perf_counter()
    suite = attack_suite(names, eps, config.eval_steps, config.restarts, config.apgd_steps)
    result = evaluate(net, x, y, suite, eps, config.eval_batch_size, checks=True, check_steps=config.check_steps,
                      progress=config.progress)
    seconds = time.perf_counter() - tick
    write_json({"key": key, "result": result, "seconds": seconds}, cache)
    return result, seconds


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
    """The paper's claim for the AW-Net: WRA above every static model's (PGD-AT, TRADES), clean accuracy
    within 1 point of the standard model's, worst-case robust accuracy at most 1 point below PGD-AT's."""
    aw, std, rob = models["awnet"], models["standard"], models["pgd-at"]
    conditions = {
        "wra_above_static": aw["wra"] > max(m["wra"] for name, m in models.items() if name != "awnet"),
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
    config = config.resolved()
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
    models, eval_seconds = {}, {}
    for name, run in runs.items():
        result, eval_seconds[name] = evaluated(name, run, config, x, y, device)
        models[name] = summarise(result)
    nets = {name: model_files.load(os.path.join(run.out, MODEL)) for name, run in runs.items()}

    # The AW-Net's body holds its convolutions under the static network's layer names: one panel per layer.
    weights_csv, weights_png = analyze_weights({**nets, "awnet": nets["awnet"].body}, config.out)
    report = {
        "models": models,
        "target": target(models),
        "dataset": config.dataset,
        "n": len(x),
        "threat_model": {"norm": "linf", "eps": eps},
        "settings": asdict(config),
        "train_configs": {name: run.resolved().identity() for name, run in runs.items()},
        "awnet_init": config.awnet_init,
        "weights": {"csv": weights_csv, "png": weights_png},
        **environment(device),
        "time": {"started": started.isoformat(timespec="seconds"), "train_seconds": train_seconds,
                 "eval_seconds": eval_seconds, "total_seconds": time.perf_counter() - clock},
    }
    table = format_tradeoff(report)
    report["table"] = table
    report["tradeoff"] = plot_tradeoff(models, os.path.join(config.out, "tradeoff.png"),
                                       f"{config.dataset}, Linf eps {eps:g}, AW-Net start: {config.awnet_init}")
    write_json(report, os.path.join(config.out, "report.json"))
    with open(os.path.join(config.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"target reached: {report['target']['reached']} ({json.dumps(report['target'])})")
    print(f"report: {os.path.join(config.out, 'report.json')}; trade-off: {report['tradeoff']}; weight "
          f"distributions: {weights_png}")
    return report
