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
    from .eval.data import DATASETS

    p = subparsers.add_parser("eval", help="attack a checkpoint and write a JSON report",
                              description="Evaluate a checkpoint against Linf attacks (worst case per sample), "
                                          "router detection and gradient-masking checks.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (awnet.save)")
    p.add_argument("--dataset", default="mnist5k", choices=sorted(DATASETS))
    p.add_argument("--split", default="test", choices=("train", "test"))
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
    from .eval.data import DEFAULT_EPS, load_dataset
    from .eval.report import attack_suite, default_attack_names, environment, evaluate, format_table, write_json

    started, clock = datetime.now(timezone.utc), time.perf_counter()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = load_model(args.checkpoint).to(device)
    x, y = load_dataset(args.dataset, args.split)
    if args.n is not None:
        x, y = x[:args.n], y[:args.n]
    eps = DEFAULT_EPS[args.dataset] if args.eps is None else args.eps
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="awnet", description="AW-Net: training, attacks and evaluation")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    add_analyze_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
