"""Ratios from one benchmark run: `python -m bench.report RESULTS.json [--markdown]`.

Per layer shape, pass and dtype: each implementation's time (on a GPU eager or, with --timing graph,
replayed from a CUDA graph), its ratio to the static convolution and to the
reference backend, and the fraction of the shape's roofline bound it reaches (max(FLOPs / peak,
bytes / bandwidth) on the device, from the peaks below); then the geometric means, and the end-to-end
training step (images per second, peak memory, ratios to the static model).
"""
from __future__ import annotations

import argparse
import collections
import json
import math

# Dense peaks (FLOP/s) and HBM bandwidth (B/s) from the vendor data sheets (SXM parts).
PEAKS = {
    "H200": {"bfloat16": 989e12, "tf32": 494e12, "float32": 67e12, "bandwidth": 4.8e12},
    "H100": {"bfloat16": 989e12, "tf32": 494e12, "float32": 67e12, "bandwidth": 3.35e12},
}


def peaks_for(device: str) -> dict | None:
    return next((p for name, p in PEAKS.items() if name in device), None)


TIMINGS = {"events": "time_ms", "graph": "graph_ms"}


def seconds(bench: dict | None, timing: str = "events") -> float | None:
    """On a GPU the CUDA-event median (eager: host overhead included) or the CUDA-graph replay median
    (device time), by --timing; pytest-benchmark's median on CPU. None where this timing is missing."""
    if bench is None:
        return None
    info = bench["extra_info"]
    if "time_ms" not in info:
        return bench["stats"]["median"]
    value = info.get(TIMINGS[timing])
    return value / 1e3 if value is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def roofline_fraction(info: dict, time: float, peaks: dict | None) -> float | None:
    if peaks is None or "flops" not in info or info["dtype"] not in peaks:
        return None
    bound = max(info["flops"] / peaks[info["dtype"]], info["bytes"] / peaks["bandwidth"])
    return bound / time


def conv_rows(benchmarks: list[dict], peaks: dict | None, timing: str = "events") -> list[dict]:
    shapes = collections.defaultdict(dict)
    for bench in benchmarks:
        info = bench["extra_info"]
        if info.get("pass") in ("fwd", "fwdbwd", "attack"):
            shapes[(info["model"], info["layer"], info["pass"], info["dtype"])][(info["impl"], info["case"])] = bench
    rows = []
    for (model, layer, pass_, dtype), impls in shapes.items():
        static = impls.get(("static", "-"))
        for (impl, case), bench in impls.items():
            if impl == "static":
                continue
            time, static_time = seconds(bench, timing), seconds(static, timing)
            if time is None:
                continue
            rows.append(dict(
                model=model, layer=layer, pass_=pass_, dtype=dtype, impl=impl, case=case, ms=time * 1e3,
                static_ms=static_time * 1e3 if static_time else None,
                vs_static=_ratio(time, static_time),
                vs_reference=_ratio(time, seconds(impls.get(("reference", case)), timing)),
                vs_plain=_ratio(time, seconds(impls.get(("plain", case)), timing)),
                roofline=roofline_fraction(bench["extra_info"], time, peaks)))
    return rows


def train_rows(benchmarks: list[dict], timing: str = "events") -> list[dict]:
    models = collections.defaultdict(dict)
    for b in benchmarks:
        if b["extra_info"].get("pass") == "train-step":
            models[b["extra_info"].get("model", "-")][b["extra_info"]["impl"]] = b
    rows = []
    for model, steps in models.items():
        static = steps.get("static")
        for impl, bench in steps.items():
            info, time = bench["extra_info"], seconds(bench, timing)
            if time is None:
                continue
            reference = steps.get(f"{impl}-reference") if not impl.endswith("reference") else None
            rows.append(dict(model=model, impl=impl, batch=info["batch"], ms=time * 1e3,
                             images_per_s=info["batch"] / time, peak_mb=info.get("peak_mb"),
                             vs_static=_ratio(time, seconds(static, timing)),
                             reference_vs_this=_ratio(seconds(reference, timing), time),
                             memory_vs_static=(info["peak_mb"] / static["extra_info"]["peak_mb"]
                                               if static and info.get("peak_mb") else None)))
    return rows


def _fmt(value, spec=".2f"):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in [header, *rows])


def report(results: dict, markdown: bool = False, timing: str = "events") -> str:
    device = results.get("awnet", {}).get("device", "unknown device")
    peaks = peaks_for(device)
    conv = conv_rows(results["benchmarks"], peaks, timing)
    meta = results.get("awnet", {})
    out = [f"device: {device}; commit {meta.get('commit')}; versions {meta.get('versions')}; GPU timing: {timing}; "
           f"malloc: {meta.get('malloc')}; threads: {meta.get('threads')}; command: {meta.get('command')}"
           + ("" if peaks else "; no roofline peaks known for this device")]
    if conv:
        out.append("\nPer shape (time in ms; ratios < 1 are faster than the static conv / the reference):")
        out.append(_table(
            ["model", "layer", "pass", "dtype", "impl", "case", "ms", "static ms", "x static", "x plain",
             "x reference", "roofline"],
            [[r["model"], r["layer"], r["pass_"], r["dtype"], r["impl"], r["case"], _fmt(r["ms"], ".3f"),
              _fmt(r["static_ms"], ".3f"), _fmt(r["vs_static"]), _fmt(r["vs_plain"]), _fmt(r["vs_reference"]),
              _fmt(r["roofline"])]
             for r in sorted(conv, key=lambda r: (r["model"], r["pass_"], r["dtype"], r["case"], r["impl"]))],
            markdown))
        groups = collections.defaultdict(list)
        for r in conv:
            groups[(r["model"], r["pass_"], r["dtype"], r["case"], r["impl"])].append(r)
        out.append("\nGeometric means over the shapes of each model:")
        out.append(_table(
            ["model", "pass", "dtype", "case", "impl", "x static", "x plain", "x reference", "roofline"],
            [[*key, _fmt(geomean(r["vs_static"] for r in rows)), _fmt(geomean(r["vs_plain"] for r in rows)),
              _fmt(geomean(r["vs_reference"] for r in rows)), _fmt(geomean(r["roofline"] for r in rows))]
             for key, rows in sorted(groups.items())],
            markdown))
    train = train_rows(results["benchmarks"], timing)
    if train:
        out.append("\nPGD-10 adversarial-training step:")
        out.append(_table(
            ["model", "batch", "impl", "ms", "images/s", "peak MB", "x static time", "reference / this",
             "x static memory"],
            [[r["model"], str(r["batch"]), r["impl"], _fmt(r["ms"], ".1f"), _fmt(r["images_per_s"], ".1f"), _fmt(r["peak_mb"], ".0f"),
              _fmt(r["vs_static"]), _fmt(r["reference_vs_this"]), _fmt(r["memory_vs_static"])] for r in train],
            markdown))
    if not conv and not train:
        out.append(f"no results timed with {timing!r} in this file")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a pytest-benchmark JSON file written by pytest bench/")
    parser.add_argument("--markdown", action="store_true", help="markdown tables (for the README)")
    parser.add_argument("--timing", choices=TIMINGS, default="events",
                        help="GPU times: eager CUDA-event medians (default) or CUDA-graph replays (device time)")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        print(report(json.load(f), markdown=args.markdown, timing=args.timing))


if __name__ == "__main__":
    main()
