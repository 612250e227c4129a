"""The `awnet` command line: one function pair per subcommand (`add_<name>_parser` declares it,
`run_<name>` runs it), so that new subcommands slot in beside `eval` and `analyze weights`.

Every setting is checked before anything runs: numbers by the argparse type their settings dataclass
declares (`awnet.settings`), output paths by `writable_dir` / `writable_file`. A user error (a bad setting or
file) prints one line naming the problem and exits 2; `--debug` or AWNET_DEBUG=1 shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from typing import NoReturn, Optional, Sequence

import torch
from torch import nn

from .settings import NON_NEGATIVE, POSITIVE_INT, checks, writable_dir, writable_file

# Errors that a bad setting or file raises (OSError: a file that is missing, unreadable or unwritable).
USER_ERRORS = (ValueError, TypeError, OSError)

# Every parser's --debug; SUPPRESS, so that a subcommand's default does not undo `awnet --debug train ...`.
DEBUG_OPTION = argparse.ArgumentParser(add_help=False)
DEBUG_OPTION.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of an error (also AWNET_DEBUG=1)")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad command line in one line (usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_model(path: str) -> nn.Module:
    """A model from an awnet checkpoint (safetensors; loading never executes code from the file)."""
    from awnet import load

    return load(path)


def add_eval_parser(subparsers) -> None:
    from .data import DATASETS

    p = subparsers.add_parser("eval", parents=[DEBUG_OPTION], help="attack a checkpoint and write a JSON report",
                              description="Evaluate a checkpoint against Linf attacks (worst case per sample), "
                                          "router detection and gradient-masking checks.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (awnet.save)")
    p.add_argument("--dataset", default="mnist5k", choices=sorted(DATASETS))
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--data-dir", default=None, help="folder holding cifar10 / cifar100 (python-pickle layout)")
    p.add_argument("--eps", type=NON_NEGATIVE, default=None, help="Linf radius on [0, 1] images (mnist5k: 0.3)")
    p.add_argument("--attacks", type=attack_names, default=None,
                   help="comma-separated attacks (default: fgsm,pgd,cw,apgd-ce,apgd-dlr, plus "
                        "router-evasion,forced-clean,forced-adv for an AW-Net)")
    p.add_argument("--steps", type=POSITIVE_INT, default=20, help="PGD / CW / router-evasion / forced-path steps")
    p.add_argument("--apgd-steps", type=POSITIVE_INT, default=100)
    p.add_argument("--restarts", type=POSITIVE_INT, default=1)
    p.add_argument("--evasion-weight", type=NON_NEGATIVE, default=1.0, help="weight of the router-evasion term")
    p.add_argument("-n", "--n", type=POSITIVE_INT, default=None, help="evaluate the first N samples of the split")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=256)
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=writable_file, default="report.json", help="where to write the JSON report")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_eval)


def attack_names(text: str) -> list[str]:
    """The argparse type of --attacks: a non-empty comma-separated list of known attacks."""
    from .eval.report import ATTACKS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ATTACKS]
    if not names or unknown:
        problem = f"unknown attacks {unknown}" if unknown else f"{text!r} names no attack"
        raise argparse.ArgumentTypeError(f"{problem}; choose from {','.join(ATTACKS)}")
    return names


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
    names = default_attack_names(model) if args.attacks is None else args.attacks
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
    p = subparsers.add_parser("analyze", parents=[DEBUG_OPTION], help="analyses of trained models")
    what = p.add_subparsers(dest="analysis", required=True)
    w = what.add_parser("weights", parents=[DEBUG_OPTION],
                        help="per-layer filter weight statistics of several models, side by side",
                        description="Write weights.csv (per-layer filter statistics) and weights.png "
                                    "(per-layer weight histograms) for the given checkpoints.")
    w.add_argument("checkpoints", nargs="+", metavar="CKPT")
    w.add_argument("--out", type=writable_dir, required=True, metavar="DIR")
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

    d, check = TrainConfig(), checks(TrainConfig)
    p = subparsers.add_parser("train", parents=[DEBUG_OPTION], help="train a model with a recipe",
                              description="Train with a recipe; writes model.safetensors, checkpoint.pt (for "
                                          "--resume) and log.csv / log.json to --out every epoch. Under "
                                          "torchrun (python -m torch.distributed.run) it trains with DDP.")
    p.add_argument("--recipe", required=True, choices=list(RECIPES))
    p.add_argument("--model", default=None, help="architecture (awnet.models.build name; default: the "
                                                   "dataset's, smallcnn for mnist5k)")
    p.add_argument("--dataset", default=d.dataset, choices=sorted(DATASETS))
    p.add_argument("--data-dir", default=None, help="folder holding cifar10 / cifar100 (python-pickle layout)")
    p.add_argument("--out", type=writable_dir, default=d.out, metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    p.add_argument("--epochs", type=check["epochs"], default=d.epochs)
    p.add_argument("--batch-size", type=check["batch_size"], default=d.batch_size, help="per process")
    p.add_argument("--lr", type=check["lr"], default=d.lr, help="peak SGD learning rate (warm-up, then cosine)")
    p.add_argument("--warmup", type=check["warmup"], default=d.warmup, help="warm-up fraction of the steps")
    p.add_argument("--weight-decay", type=check["weight_decay"], default=d.weight_decay)
    p.add_argument("--eps", type=check["eps"], default=None,
                   help="Linf radius (default: the dataset's, 0.3 for mnist5k)")
    p.add_argument("--eps-ramp", type=check["eps_ramp"], default=d.eps_ramp,
                   help="fraction of the steps over which eps grows from 0")
    p.add_argument("--attack-steps", type=check["attack_steps"], default=d.attack_steps,
                   help="PGD steps of the training attacks")
    p.add_argument("--trades-beta", type=check["trades_beta"], default=d.trades_beta)
    p.add_argument("--clean-teacher", default=None, metavar="CKPT", help="awnet recipe: the clean teacher")
    p.add_argument("--robust-teacher", default=None, metavar="CKPT", help="awnet recipe: the robust teacher")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint (a static one is converted for the awnet recipes)")
    p.add_argument("--mtard-lr", type=check["mtard_lr"], default=d.mtard_lr, help="MTARD's weight learning rate")
    p.add_argument("--temperature", type=check["temperature"], default=d.temperature, help="distillation temperature")
    p.add_argument("--type-weight", type=check["type_weight"], default=d.type_weight,
                   help="weight of the router's type loss")
    p.add_argument("--evasion-fraction", type=check["evasion_fraction"], default=d.evasion_fraction,
                   help="fraction of an AW-Net's training attacks that are router evasion")
    p.add_argument("--evasion-weight", type=check["evasion_weight"], default=d.evasion_weight)
    p.add_argument("--deployed-weight", type=check["deployed_weight"], default=d.deployed_weight,
                   help="awnet recipe: weight of the distillation of the network as deployed (routed by its "
                        "own router, not the true type)")
    p.add_argument("--banks", type=int, default=d.banks, choices=(1, 2))
    p.add_argument("--no-omega", dest="omega", action="store_false", help="two-bank AW-Net without omega")
    p.add_argument("--router-width", type=check["router_width"], default=d.router_width)
    p.add_argument("--n-train", type=check["n_train"], default=None,
                   help="train on N samples spread over the train split")
    p.add_argument("--val-n", type=check["val_n"], default=d.val_n,
                   help="held-out samples for the per-epoch accuracies")
    p.add_argument("--val-steps", type=check["val_steps"], default=d.val_steps,
                   help="PGD steps of the per-epoch robust accuracy")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on GPU")
    p.add_argument("--device", default=None, help="default: cuda (this process's GPU under torchrun) if any")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="run the model under torch.compile(fullgraph=True) (backend: inductor; aot_eager compiles "
                        "faster on CPU)")
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

    d, check = ReproduceConfig(), checks(ReproduceConfig)
    p = subparsers.add_parser("reproduce", parents=[DEBUG_OPTION],
                              help="the main job: train the two teachers and an AW-Net, attack all three, write the "
                                   "trade-off table",
                              description="Train a standard model, a PGD-AT model and an AW-Net (MTARD from the "
                                          "two) on one architecture, evaluate all three with the adaptive attack "
                                          "suite (per-sample worst case), write DIR/report.json, DIR/table.md and "
                                          "the weight-distribution plot. The defaults fit in 20 minutes on a "
                                          "2-core CPU; a rerun resumes the training runs already in DIR.")
    p.add_argument("--dataset", default=d.dataset, choices=sorted(DATASETS))
    p.add_argument("--out", type=writable_dir, default=d.out, metavar="DIR")
    p.add_argument("--data-dir", default=None, help="folder holding cifar10 / cifar100 (python-pickle layout)")
    p.add_argument("--model", default=None, help="architecture of all three (default: the dataset's)")
    p.add_argument("--standard-epochs", type=check["standard_epochs"], default=d.standard_epochs)
    p.add_argument("--robust-epochs", type=check["robust_epochs"], default=d.robust_epochs)
    p.add_argument("--teacher-lr", type=check["teacher_lr"], default=d.teacher_lr,
                   help="peak learning rate of the two teachers")
    p.add_argument("--awnet-epochs", type=check["awnet_epochs"], default=d.awnet_epochs)
    p.add_argument("--awnet-init", default=d.awnet_init, choices=("robust", "none"),
                   help="start the AW-Net from the robust teacher's weights (robust) or from scratch (none)")
    p.add_argument("--awnet-lr", type=check["awnet_lr"], default=d.awnet_lr)
    p.add_argument("--awnet-deployed-weight", type=check["awnet_deployed_weight"], default=d.awnet_deployed_weight,
                   help="weight of the AW-Net's self-routed distillation loss (train --deployed-weight)")
    p.add_argument("--n-train", type=check["n_train"], default=None,
                   help="train on N samples spread over the train split")
    p.add_argument("--val-n", type=check["val_n"], default=d.val_n, help="held-out samples for the per-epoch log")
    p.add_argument("--n-eval", type=check["n_eval"], default=d.n_eval,
                   help=f"evaluate on N test samples spread over the split (default {d.n_eval}; 0: all)")
    p.add_argument("--eval-steps", type=check["eval_steps"], default=d.eval_steps,
                   help="steps of PGD, CW, router evasion and forced-path transfer")
    p.add_argument("--apgd-steps", type=check["apgd_steps"], default=d.apgd_steps)
    p.add_argument("--restarts", type=check["restarts"], default=d.restarts)
    p.add_argument("--check-steps", type=check["check_steps"], default=d.check_steps,
                   help="PGD steps of the masking checks")
    p.add_argument("--eval-batch-size", type=check["eval_batch_size"], default=d.eval_batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .train.reproduce import ReproduceConfig, reproduce

    reproduce(ReproduceConfig(**{f.name: getattr(args, f.name) for f in fields(ReproduceConfig)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="awnet", description="AW-Net: training, attacks and evaluation", parents=[DEBUG_OPTION])
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    add_analyze_parser(subparsers)
    add_train_parser(subparsers)
    add_reproduce_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (*USER_ERRORS, FloatingPointError) as error:
        from awkernels._validate import DEBUG  # AWNET_DEBUG, parsed where the kernels read it

        if getattr(args, "debug", False) or DEBUG:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"awnet {args.command}: error: {message}", file=sys.stderr)
        return 1 if isinstance(error, FloatingPointError) else 2  # 1: the run failed; 2: a bad setting or file


if __name__ == "__main__":
    sys.exit(main())
