"""The `awnet` command line: one function pair per subcommand (`add_<name>_parser` declares it,
`run_<name>` runs it), so that new subcommands slot in beside `eval` and `analyze weights`."""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from typing import Optional, Sequence

import torch
from torch import nn


def load_model(path: str) -> nn.Module:
    """A model from an awnet checkpoint (safetensors; loading never executes code from the file)."""
    from awnet import load

    return load(path)


def add_eval_parser(subparsers) -> None:
    from .data import DATASETS

    p = subparsers.add_parser("eval", help="attack a checkpoint and write a JSON report",
                              description="Evaluate a checkpoint against Linf attacks (worst case per sample), "
                                          "router detection and gradient-masking checks.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (awnet.save)")
    p.add_argument("--dataset", default="mnist5k", choices=sorted(DATASETS))
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--data-dir", default=None, help="folder holding cifar10 / cifar100 (python-pickle layout)")
    p.add_argument("--eps", type=float, default=None, help="Linf radius on [0, 1] images (mnist5k: 0.3)")
    p.add_argument("--attacks", default=None,
                   help="comma-separated attacks (default: fgsm,pgd,cw,apgd-ce,apgd-dlr, plus "
                        "router-evasion,forced-clean,forced-adv for an AW-Net)")
    p.add_argument("--steps", type=int, default=20, help="PGD / CW / router-evasion / forced-path steps")
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--evasion-weight", type=float, default=1.0, help="weight of the router-evasion term")
    p.add_argument("-n", "--n", type=int, default=None, help="evaluate the first N samples of the split")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="report.json", help="where to write the JSON report")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from .attacks import is_routed
    from .data import DATASETS, load_dataset
    from .eval.report import attack_suite, default_attack_names, environment, evaluate, format_table, write_json

    started, clock = datetime.now(timezone.utc), time.perf_counter()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = load_model(args.checkpoint).to(device)
    x, y = load_dataset(args.dataset, args.split, args.data_dir)
    if args.n is not None:
        x, y = x[:args.n], y[:args.n]
    eps = DATASETS[args.dataset].eps if args.eps is None else args.eps
    names = default_attack_names(model) if args.attacks is None else [a for a in args.attacks.split(",") if a]
    suite = attack_suite(names, eps, args.steps, args.restarts, args.apgd_steps, args.evasion_weight)
    result = evaluate(model, x, y, suite, eps, args.batch_size, checks=not args.no_checks,
                      check_steps=args.steps, progress=not args.no_progress)
    report = {
        "model": {"checkpoint": os.path.abspath(args.checkpoint), "class": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters()), "routed": is_routed(model)},
        "data": {"dataset": args.dataset, "split": args.split, "n": len(x), "batch_size": args.batch_size},
        **result,
        "seed": args.seed,
        **environment(device),
        "time": {"started": started.isoformat(timespec="seconds"), "seconds": time.perf_counter() - clock},
    }
    write_json(report, args.out)
    print(format_table(report))
    print(f"report written to {args.out}")
    return 0


def add_analyze_parser(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="analyses of trained models")
    what = p.add_subparsers(dest="analysis", required=True)
    w = what.add_parser("weights", help="per-layer filter weight statistics of several models, side by side",
                        description="Write weights.csv (per-layer filter statistics) and weights.png "
                                    "(per-layer weight histograms) for the given checkpoints.")
    w.add_argument("checkpoints", nargs="+", metavar="CKPT")
    w.add_argument("--out", required=True, metavar="DIR")
    w.set_defaults(handler=run_analyze_weights)


def run_analyze_weights(args: argparse.Namespace) -> int:
    from .eval.weights import analyze_weights

    models = {}
    for path in args.checkpoints:
        name = os.path.splitext(os.path.basename(path))[0]
        models[name if name not in models else path] = load_model(path)
    csv_path, png_path = analyze_weights(models, args.out)
    print(f"wrote {csv_path} and {png_path}")
    return 0


def add_train_parser(subparsers) -> None:
    from .data import DATASETS
    from .train import RECIPES, TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser("train", help="train a model with a recipe",
                              description="Train with a recipe; writes model.safetensors, checkpoint.pt (for "
                                          "--resume) and log.csv / log.json to --out every epoch. Under "
                                          "torchrun (python -m torch.distributed.run) it trains with DDP.")
    p.add_argument("--recipe", required=True, choices=list(RECIPES))
    p.add_argument("--model", default=None, help="architecture (awnet.models.build name; default: the "
                                                   "dataset's, smallcnn for mnist5k)")
    p.add_argument("--dataset", default=d.dataset, choices=sorted(DATASETS))
    p.add_argument("--data-dir", default=None, help="folder holding cifar10 / cifar100 (python-pickle layout)")
    p.add_argument("--out", default=d.out, metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--lr", type=float, default=d.lr, help="peak SGD learning rate (warm-up, then cosine)")
    p.add_argument("--warmup", type=float, default=d.warmup, help="warm-up fraction of the steps")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--eps", type=float, default=None, help="Linf radius (default: the dataset's, 0.3 for mnist5k)")
    p.add_argument("--eps-ramp", type=float, default=d.eps_ramp, help="fraction of the steps over which eps grows "
                                                                       "from 0")
    p.add_argument("--attack-steps", type=int, default=d.attack_steps, help="PGD steps of the training attacks")
    p.add_argument("--trades-beta", type=float, default=d.trades_beta)
    p.add_argument("--clean-teacher", default=None, metavar="CKPT", help="awnet recipe: the clean teacher")
    p.add_argument("--robust-teacher", default=None, metavar="CKPT", help="awnet recipe: the robust teacher")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint (a static one is converted for the awnet recipes)")
    p.add_argument("--mtard-lr", type=float, default=d.mtard_lr, help="MTARD's weight learning rate")
    p.add_argument("--temperature", type=float, default=d.temperature, help="distillation temperature")
    p.add_argument("--type-weight", type=float, default=d.type_weight, help="weight of the router's type loss")
    p.add_argument("--evasion-fraction", type=float, default=d.evasion_fraction,
                   help="fraction of an AW-Net's training attacks that are router evasion")
    p.add_argument("--evasion-weight", type=float, default=d.evasion_weight)
    p.add_argument("--deployed-weight", type=float, default=d.deployed_weight,
                   help="awnet recipe: weight of the distillation of the network as deployed (routed by its "
                        "own router, not the true type)")
    p.add_argument("--banks", type=int, default=d.banks, choices=(1, 2))
    p.add_argument("--no-omega", dest="omega", action="store_false", help="two-bank AW-Net without omega")
    p.add_argument("--router-width", type=int, default=d.router_width)
    p.add_argument("--n-train", type=int, default=None, help="train on N samples spread over the train split")
    p.add_argument("--val-n", type=int, default=d.val_n, help="held-out samples for the per-epoch accuracies")
    p.add_argument("--val-steps", type=int, default=d.val_steps, help="PGD steps of the per-epoch robust accuracy")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on GPU")
    p.add_argument("--device", default=None, help="default: cuda (this process's GPU under torchrun) if any")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .train import TrainConfig, train

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    history = train(config)
    print(f"trained {config.recipe} for {len(history)} epochs; model, checkpoint and logs in {config.out}")
    return 0


def add_reproduce_parser(subparsers) -> None:
    from .data import DATASETS
    from .train.reproduce import ReproduceConfig

    d = ReproduceConfig()
    p = subparsers.add_parser("reproduce", help="the main job: train the two teachers and an AW-Net, attack all "
                                                "three, write the trade-off table",
                              description="Train a standard model, a PGD-AT model and an AW-Net (MTARD from the "
                                          "two) on one architecture, evaluate all three with the adaptive attack "
                                          "suite (per-sample worst case), write DIR/report.json, DIR/table.md and "
                                          "the weight-distribution plot. The defaults fit in 20 minutes on a "
                                          "2-core CPU; a rerun resumes the training runs already in DIR.")
    p.add_argument("--dataset", default=d.dataset, choices=sorted(DATASETS))
    p.add_argument("--out", default=d.out, metavar="DIR")
    p.add_argument("--data-dir", default=None, help="folder holding cifar10 / cifar100 (python-pickle layout)")
    p.add_argument("--model", default=None, help="architecture of all three (default: the dataset's)")
    p.add_argument("--standard-epochs", type=int, default=d.standard_epochs)
    p.add_argument("--robust-epochs", type=int, default=d.robust_epochs)
    p.add_argument("--teacher-lr", type=float, default=d.teacher_lr, help="peak learning rate of the two teachers")
    p.add_argument("--awnet-epochs", type=int, default=d.awnet_epochs)
    p.add_argument("--awnet-init", default=d.awnet_init, choices=("robust", "none"),
                   help="start the AW-Net from the robust teacher's weights (robust) or from scratch (none)")
    p.add_argument("--awnet-lr", type=float, default=d.awnet_lr)
    p.add_argument("--awnet-deployed-weight", type=float, default=d.awnet_deployed_weight,
                   help="weight of the AW-Net's self-routed distillation loss (train --deployed-weight)")
    p.add_argument("--n-train", type=int, default=None, help="train on N samples spread over the train split")
    p.add_argument("--val-n", type=int, default=d.val_n, help="held-out samples for the per-epoch log")
    p.add_argument("--n-eval", type=int, default=d.n_eval,
                   help=f"evaluate on N test samples spread over the split (default {d.n_eval}; 0: all)")
    p.add_argument("--eval-steps", type=int, default=d.eval_steps,
                   help="steps of PGD, CW, router evasion and forced-path transfer")
    p.add_argument("--apgd-steps", type=int, default=d.apgd_steps)
    p.add_argument("--restarts", type=int, default=d.restarts)
    p.add_argument("--check-steps", type=int, default=d.check_steps, help="PGD steps of the masking checks")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .train.reproduce import ReproduceConfig, reproduce

    reproduce(ReproduceConfig(**{f.name: getattr(args, f.name) for f in fields(ReproduceConfig)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="awnet", description="AW-Net: training, attacks and evaluation")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    add_analyze_parser(subparsers)
    add_train_parser(subparsers)
    add_reproduce_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
