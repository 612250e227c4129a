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

from . import allocator
from .settings import NON_NEGATIVE, POSITIVE_INT, add_arguments, writable_dir, writable_file

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
    from .data import DATA_DIR_HELP, DATASETS

    p = subparsers.add_parser("eval", parents=[DEBUG_OPTION], help="attack a checkpoint and write a JSON report",
                              description="Evaluate a checkpoint against Linf attacks (worst case per sample), "
                                          "router detection and gradient-masking checks.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (awnet.save)")
    p.add_argument("--dataset", default="mnist5k", choices=sorted(DATASETS))
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--eps", type=NON_NEGATIVE, default=None, help="Linf radius on [0, 1] images (mnist5k: 0.3)")
    p.add_argument("--attacks", type=attack_names, default=None,
                   help="comma-separated attacks (default: fgsm,pgd,cw,apgd-ce,apgd-dlr, plus "
                        "router-evasion,forced-clean,forced-adv for an AW-Net)")
    p.add_argument("--autoattack", action="store_true",
                   help="add autoattack (AutoAttack's standard version) and square (gradient-free, with a check "
                        "that it does not beat the gradient attacks), both from torchattacks, to the attacks")
    p.add_argument("--steps", type=POSITIVE_INT, default=20, help="PGD / CW / router-evasion / forced-path steps")
    p.add_argument("--apgd-steps", type=POSITIVE_INT, default=100)
    p.add_argument("--restarts", type=POSITIVE_INT, default=1)
    p.add_argument("--evasion-weight", type=NON_NEGATIVE, default=1.0, help="weight of the router-evasion term")
    p.add_argument("-n", "--n", type=POSITIVE_INT, default=None, help="evaluate N samples spread evenly over the split (balanced: the splits are stored sorted by class)")
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
    from .data import DATASETS, load_dataset, spread
    from .eval.report import (
        AUTOATTACK_ATTACKS, attack_suite, default_attack_names, environment, evaluate, format_table, write_json,
    )

    started, clock = datetime.now(timezone.utc), time.perf_counter()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = load_model(args.checkpoint).to(device)
    x, y = load_dataset(args.dataset, args.split, args.data_dir)
    x, y = spread(x, y, args.n)
    eps = DATASETS[args.dataset].eps if args.eps is None else args.eps
    names = default_attack_names(model) if args.attacks is None else args.attacks
    if args.autoattack:
        names = names + [name for name in AUTOATTACK_ATTACKS if name not in names]
    suite = attack_suite(names, eps, args.steps, args.restarts, args.apgd_steps, args.evasion_weight)
    result = evaluate(model, x, y, suite, eps, args.batch_size, checks=not args.no_checks,
                      check_steps=args.steps, progress=not args.no_progress)
    report = {
        "model": {"checkpoint": os.path.abspath(args.checkpoint), "class": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters()), "routed": is_routed(model)},
        "data": {"dataset": args.dataset, "split": args.split, "n": len(x), "batch_size": args.batch_size,
                 "per_class": torch.bincount(y).tolist()},
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
    from .train import TrainConfig

    p = subparsers.add_parser("train", parents=[DEBUG_OPTION], help="train a model with a recipe",
                              description="Train with a recipe; writes model.safetensors, checkpoint.pt (for "
                                          "--resume) and log.csv / log.json to --out every epoch. Under "
                                          "torchrun (python -m torch.distributed.run) it trains with DDP.")
    add_arguments(p, TrainConfig)
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .train import TrainConfig, train

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    history = train(config)
    print(f"trained {config.recipe} for {len(history)} epochs; model, checkpoint and logs in {config.out}")
    return 0


def add_reproduce_parser(subparsers) -> None:
    from .train.reproduce import ReproduceConfig

    p = subparsers.add_parser("reproduce", parents=[DEBUG_OPTION],
                              help="the main job: train the teachers, optionally a TRADES model, and an AW-Net, "
                                   "attack every model, write the trade-off table",
                              description="Train a standard model, a PGD-AT model, optionally a TRADES model, and an "
                                          "AW-Net (MTARD from the first two) on one architecture, evaluate every "
                                          "model with the adaptive attack suite (per-sample worst case), write "
                                          "DIR/report.json, DIR/table.md, the trade-off plot and the "
                                          "weight-distribution plot. The dataset's defaults fit the README's "
                                          "stated times on a 2-core CPU; a rerun resumes the training runs and "
                                          "reuses the evaluations already in DIR.")
    add_arguments(p, ReproduceConfig)
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
        allocator.pin()  # before the first tensor: see awnet/allocator.py
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
