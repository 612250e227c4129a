"""Filter weight-distribution analysis: the AW-Net paper's first finding (Wei, Zhao & Li, "Revisiting the
Trade-off between Accuracy and Robustness via Weight Distribution of Filters", arXiv 2306.03430) is that the
filters of a standard and of an adversarially trained network differ in distribution.

A filter is one output channel of a convolution (each bank of an AW convolution separately: a weight of shape
(K, C_out, ...)) or one output unit of a linear layer. Per filter: mean, std, excess kurtosis (0 for a normal
distribution), L1 and L2 norm. The CSV summarises each statistic over a layer's filters, one row per (model,
layer, statistic); the PNG has one panel per layer overlaying the models' weight histograms.
"""
from __future__ import annotations

import csv
import os
from typing import Iterator

import numpy as np
from torch import Tensor, nn

STATISTICS = ("mean", "std", "kurtosis", "l1", "l2")
CSV_FIELDS = ("model", "layer", "filters", "statistic", "mean", "std", "min", "median", "max")


def filters(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(layer name, its filters as rows (F, fan_in)) for every conv, AW-conv bank and linear layer."""
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor):
            continue
        w = weight.detach().float().cpu()
        if w.dim() == 5:  # AW convolution banks: (K, C_out, C_in // groups, kH, kW)
            for k in range(w.shape[0]):
                yield (f"{name}[bank {k}]" if w.shape[0] > 1 else name), w[k].flatten(1)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            yield name, w.flatten(1)


def filter_statistics(w: Tensor) -> dict[str, np.ndarray]:
    """Each statistic of each filter (row) of `w`."""
    mean = w.mean(1, keepdim=True)
    centred = w - mean
    var = centred.pow(2).mean(1)
    kurtosis = centred.pow(4).mean(1) / var.pow(2).clamp_min(1e-30) - 3.0
    values = {"mean": mean.squeeze(1), "std": var.sqrt(), "kurtosis": kurtosis,
              "l1": w.abs().sum(1), "l2": w.norm(dim=1)}
    return {k: v.double().numpy() for k, v in values.items()}


def statistics_rows(models: dict[str, nn.Module]) -> list[dict]:
    """One row per (model, layer, statistic): the statistic summarised over the layer's filters."""
    rows = []
    for model_name, model in models.items():
        for layer, w in filters(model):
            for stat, v in filter_statistics(w).items():
                rows.append({"model": model_name, "layer": layer, "filters": len(v), "statistic": stat,
                             "mean": v.mean(), "std": v.std(), "min": v.min(), "median": np.median(v),
                             "max": v.max()})
    return rows


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def plot_histograms(models: dict[str, nn.Module], path: str, bins: int = 80) -> None:
    """One panel per layer (the union over models, by name), each model's weight histogram overlaid."""
    # Figure + Agg canvas rather than pyplot: no global backend or figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers: dict[str, dict[str, np.ndarray]] = {}
    for model_name, model in models.items():
        for layer, w in filters(model):
            layers.setdefault(layer, {})[model_name] = w.flatten().numpy()
    if not layers:
        raise ValueError("no conv, AW-conv or linear layer in any of the models")
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    fig = Figure(figsize=(5 * cols, 3.5 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (layer, per_model) in enumerate(layers.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        edges = np.histogram_bin_edges(np.concatenate(list(per_model.values())), bins=bins)
        for model_name, values in per_model.items():
            ax.hist(values, bins=edges, density=True, histtype="step", linewidth=1.2,
                    label=f"{model_name} (std {values.std():.3g})")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("weight")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)


def analyze_weights(models: dict[str, nn.Module], out_dir: str) -> tuple[str, str]:
    """Write `weights.csv` and `weights.png` for `models` (name -> model) under `out_dir`; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    csv_path, png_path = os.path.join(out_dir, "weights.csv"), os.path.join(out_dir, "weights.png")
    write_csv(statistics_rows(models), csv_path)
    plot_histograms(models, png_path)
    return csv_path, png_path
