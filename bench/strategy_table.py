"""The table `auto` chooses aw_conv2d's strategy by: the measured winner per case, from benchmark results.

    python -m bench.strategy_table RESULTS.json [--timing graph] [--out awkernels/strategy_table.json]

Each result file (bench/results/<device>.json) replaces its device's part of the table ("cpu" or "cuda");
the other devices' parts are kept. A strategy's time in a case is its benchmark's (the `strategy` the
benchmark recorded; results from before strategies map cpp/cuda to scaled (K = 1) or stacked, triton to
blend and reference to grouped); `plain`, `static` and `auto` rows are baselines, not strategies. On a CPU
a strategy's time is its fastest round, not the median: on a shared machine the median of a few rounds
moves by tens of percent between runs, the minimum much less, and the table should not pick by noise.
"""
from __future__ import annotations

import argparse
import collections
import json
import os

from awkernels._strategy import BY_NAME, TABLE_PATH
from bench.report import seconds
from bench.shapes import RESNET18, WRN34_10

SHAPES = {(model, s.layer): s for model, shapes in (("resnet18", RESNET18), ("wrn34_10", WRN34_10)) for s in shapes}
CASES = {"K1-filter": (1, "filter"), "K2-layer": (2, "layer"), "K2-filter": (2, "filter")}
BACKEND_STRATEGY = {"triton": "blend", "reference": "grouped"}


def strategy_of(info: dict) -> str | None:
    if "strategy" in info:
        return info["strategy"]
    impl = info["impl"]
    if impl in ("cpp", "cuda"):
        return "scaled" if info["case"].startswith("K1") else "stacked"
    return BACKEND_STRATEGY.get(impl)


def device_key(device: str) -> str:
    return "cpu" if device.startswith("cpu") else "cuda"


def entries(results: dict, timing: str) -> list[dict]:
    timed = collections.defaultdict(dict)
    for bench in results["benchmarks"]:
        info = bench["extra_info"]
        strategy = strategy_of(info) if "impl" in info else None
        if strategy not in BY_NAME or info.get("case") not in CASES or (info.get("model"), info.get("layer")) not in SHAPES:
            continue
        time = seconds(bench, timing) if "time_ms" in info else bench["stats"]["min"]
        if time is not None:
            timed[(info["model"], info["layer"], info["case"], info["dtype"], info["pass"])][strategy] = time * 1e3
    rows = []
    for (model, layer, case, dtype, pass_), ms in sorted(timed.items()):
        shape = SHAPES[(model, layer)]
        banks, level = CASES[case]
        rows.append(dict(
            case=f"{model} {layer} {case} {dtype} {pass_}", dtype="float32" if dtype == "tf32" else dtype,
            tf32=dtype == "tf32", banks=banks, level=level, c_in=shape.c_in, c_out=shape.c_out,
            kernel=shape.kernel, stride=shape.stride, out_pixels=shape.out_size ** 2, **{"pass": pass_},
            ms={name: round(t, 4) for name, t in sorted(ms.items())}, winner=min(ms, key=ms.get)))
    # float32 is measured with and without TF32 on a GPU; the table keeps what torch does by default for
    # convolutions (cudnn.allow_tf32 is on), so the tf32 rows stand for float32 where both exist.
    tf32_cases = {(r["case"].replace(" tf32 ", " float32 ")) for r in rows if r["tf32"]}
    return [{k: v for k, v in r.items() if k != "tf32"} for r in rows if r["tf32"] or r["case"] not in tf32_cases]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("--timing", choices=("events", "graph"), default="events",
                        help="on a GPU: eager time (host overhead included) or device time from CUDA-graph replay")
    parser.add_argument("--out", default=TABLE_PATH)
    args = parser.parse_args(argv)
    table = {"about": __doc__.split("\n\n")[0], "devices": {}}
    if os.path.exists(args.out):
        with open(args.out) as f:
            table = json.load(f)
    for path in args.results:
        with open(path) as f:
            results = json.load(f)
        meta = results.get("awnet", {})
        rows = entries(results, args.timing)
        if not rows:
            raise SystemExit(f"{path}: no strategy benchmarks in it")
        table["devices"][device_key(meta.get("device", "cpu"))] = dict(
            measured_on=meta.get("device"), commit=meta.get("commit"), timing=args.timing,
            batch=sorted({b["extra_info"].get("batch") for b in results["benchmarks"]} - {None}), entries=rows)
        winners = collections.Counter(r["winner"] for r in rows)
        print(f"{path}: {len(rows)} cases from {meta.get('device')}; winners {dict(winners)}")
    with open(args.out, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
