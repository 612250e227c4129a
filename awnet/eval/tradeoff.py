"""The accuracy-robustness trade-off picture (`tradeoff.png`): clean accuracy (x) against worst-case robust
accuracy (y), one labelled point per model, as in the AW-Net paper's trade-off figure.

Above each point a faint column shows the model's robust accuracy under each attack of its suite (the same x,
one small marker and a small label per attack, a faint line from the point up to the highest): the worst case
is per sample over the whole suite, so every attack's accuracy is at least the point's y and the lowest marker
(its label drawn a little stronger) names the attack that sets the worst case. Faint dotted lines are the
iso-lines of the weighted robust accuracy WRA = (clean + robust) / 2.

Input: `report["models"]` of `awnet reproduce` (name -> entry with "clean_acc", "robust_acc" and optionally
"per_attack", all fractions in [0, 1]). `tradeoff_figure` builds the Figure (testable: the model points are
the collection with gid "models", the attack markers the one with gid "attacks", each model's column the
line with gid "column:<name>"), `plot_tradeoff` saves it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from numbers import Real
from typing import Any, Optional

DPI = 100
LABEL_SIZE = 6.5  # points: the per-attack labels
NAME_SIZE = 9  # points: the model names
LABEL_GAP = 1.25 * LABEL_SIZE  # points between the baselines of stacked per-attack labels
NOTE = ("faint columns: robust accuracy per attack (lowest, stronger label: sets the worst case); "
        "dotted: WRA iso-lines")


def _fraction(model: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"model {model!r}: {key} must be a finite number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"model {model!r}: {key} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _validated(models: Mapping[str, Any]) -> dict[str, tuple[float, float, dict[str, float]]]:
    """name -> (clean %, robust %, {attack: robust %}), after checking every entry."""
    if not isinstance(models, Mapping) or not models:
        raise ValueError("no models to plot: expected a non-empty dict name -> entry (report['models'])")
    out = {}
    for name, entry in models.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"model {name!r}: entry must be a dict, got {type(entry).__name__}")
        for key in ("clean_acc", "robust_acc"):
            if key not in entry:
                raise ValueError(f"model {name!r}: entry lacks {key!r} (has {sorted(map(str, entry))})")
        clean = _fraction(name, "clean_acc", entry["clean_acc"])
        robust = _fraction(name, "robust_acc", entry["robust_acc"])
        per_attack = entry.get("per_attack") or {}
        if not isinstance(per_attack, Mapping):
            raise ValueError(f"model {name!r}: per_attack must be a dict attack -> accuracy, "
                             f"got {type(per_attack).__name__}")
        attacks = {str(a): 100 * _fraction(name, f"per_attack[{a!r}]", v)
                   for a, v in per_attack.items() if v is not None}
        out[str(name)] = (100 * clean, 100 * robust, attacks)
    return out


def _groups(attacks: dict[str, float]) -> list[tuple[float, str]]:
    """The attacks as (value, label), lowest first; attacks that print the same value share one label."""
    by_text: dict[str, list[tuple[float, str]]] = {}
    for attack, value in sorted(attacks.items(), key=lambda item: item[1]):
        by_text.setdefault(f"{value:.1f}", []).append((value, attack))
    return [(min(v for v, _ in members), ", ".join(a for _, a in members) + f"  {text}")
            for text, members in by_text.items()]


def _limits(lo: float, hi: float, margin: float = 0.06, min_span: float = 5.0) -> tuple[float, float]:
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    pad = max(margin * (hi - lo), 1.0)
    return lo - pad, hi + pad


def _wra_lines(ax, color: str = "0.55") -> None:
    """Faint dotted iso-lines clean + robust = 2 WRA over the current limits, each labelled at its right end."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    lo, hi = (x0 + y0) / 2, (x1 + y1) / 2  # the WRA range the axes show
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50) if (hi - lo) / s <= 8)
    for k in range(math.ceil(max(lo, 0.0) / step), math.floor(min(hi, 100.0) / step) + 1):
        wra = k * step
        c = 2 * wra
        # The segment of x + y = c inside the box.
        xa, xb = max(x0, c - y1), min(x1, c - y0)
        if math.hypot((xb - xa) / (x1 - x0), (xb - xa) / (y1 - y0)) < 0.08:  # a corner's clip: no room
            continue
        ax.plot([xa, xb], [c - xa, c - xb], linestyle=":", linewidth=0.8, color=color, alpha=0.6, zorder=0.5,
                gid="wra")
        ax.annotate(f"WRA {wra:g}", xy=(xb, c - xb), xytext=(-2, 2), textcoords="offset points", ha="right",
                    va="bottom", fontsize=6, color=color, alpha=0.8, annotation_clip=False).set_in_layout(False)


def _stack(stacks: list[list[tuple[float, Any]]], pts_per_unit: float) -> None:
    """Offset each column's labels (lowest first) upwards just enough that each sits LABEL_GAP points
    above the one below; a label with room stays at its marker's height."""
    for stack in stacks:
        base, below = stack[0][0], -math.inf  # below: the previous label's height, points above `base`
        for value, text in stack:
            natural = (value - base) * pts_per_unit
            below = max(natural, below + LABEL_GAP)
            text.xyann = (5, below - natural)


def tradeoff_figure(models: dict[str, dict], title: Optional[str] = None):
    """The trade-off Figure (with an Agg canvas) for `models` (name -> entry, see the module docstring)."""
    # Figure + Agg canvas rather than pyplot: no global backend or figure state is touched.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = _validated(models)
    fig = Figure(figsize=(8, 6.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.suptitle(title if title is not None else "Clean vs worst-case robust accuracy")
    ax.set_title(NOTE, fontsize=7, color="0.4")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("worst-case robust accuracy (%)")
    ax.grid(True, linewidth=0.4, alpha=0.3)
    ax.set_axisbelow(True)

    palette = colormaps["tab10"].colors
    colors = {name: palette[i % len(palette)] for i, name in enumerate(points)}
    xs = [c for c, _, _ in points.values()]
    ys = [r for _, r, _ in points.values()] + [v for _, _, a in points.values() for v in a.values()]
    ax.set_xlim(*_limits(min(xs), max(xs)))
    ax.set_ylim(*_limits(min(ys), max(ys)))
    ax.set_autoscale_on(False)

    ax.scatter(xs, [r for _, r, _ in points.values()], s=60, c=[colors[n] for n in points], edgecolors="black",
               linewidths=0.6, zorder=3, gid="models")
    texts, stacks = [], []  # stacks: (value of each label, its annotation) per model, lowest first
    attack_xy, attack_colors, attack_alpha = [], [], []
    for name, (clean, robust, attacks) in points.items():
        color = colors[name]
        name_text = ax.annotate(name, xy=(clean, robust), xytext=(0, -7), textcoords="offset points", ha="center",
                                va="top", fontsize=NAME_SIZE, fontweight="bold", color=color, zorder=4)
        texts.append(name_text)
        if not attacks:
            continue
        ax.plot([clean, clean], [robust, max(attacks.values())], color=color, alpha=0.25, linewidth=1.0,
                zorder=1, gid=f"column:{name}")
        lowest = min(attacks.values())
        for value in attacks.values():
            attack_xy.append((clean, value))
            attack_colors.append(color)
            attack_alpha.append(0.75 if value == lowest else 0.35)
        stack = []
        for i, (value, label) in enumerate(_groups(attacks)):
            worst = i == 0
            text = ax.annotate(label, xy=(clean, value), xytext=(5, 0), textcoords="offset points", ha="left",
                               va="center", fontsize=LABEL_SIZE, color=color, alpha=0.95 if worst else 0.55,
                               fontweight="bold" if worst else "normal", zorder=2,
                               arrowprops={"arrowstyle": "-", "color": color, "alpha": 0.45, "linewidth": 0.5,
                                           "shrinkA": 0, "shrinkB": 1})
            stack.append((value, text))
            texts.append(text)
        stacks.append(stack)
    if attack_xy:
        ax.scatter(*zip(*attack_xy), s=14, marker="_", c=attack_colors, alpha=attack_alpha, linewidths=1.5,
                   zorder=2, gid="attacks")
    for text in texts:
        text.set_in_layout(False)

    # Stack each column's labels (equal printed values already share one) so that none overprints the one
    # below, then widen the limits until every label lies inside the axes; the y scale changes with the
    # limits, so repeat until nothing moves.
    pad = 3.0 * DPI / 72  # pixels
    for _ in range(6):
        fig.draw_without_rendering()
        box = ax.get_window_extent()
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        sx, sy = box.width / (x1 - x0), box.height / (y1 - y0)  # pixels per data unit
        _stack(stacks, sy * 72 / DPI)
        fig.draw_without_rendering()
        extents = [t.get_window_extent() for t in texts]
        grow = [max([box.x0 + pad - e.x0 for e in extents] + [0.0]),  # pixels: left, right, bottom, top
                max([e.x1 - (box.x1 - pad) for e in extents] + [0.0]),
                max([box.y0 + pad - e.y0 for e in extents] + [0.0]),
                max([e.y1 - (box.y1 - pad) for e in extents] + [0.0])]
        if max(grow) <= 0.5:
            break
        # A little more than measured: the scale shrinks as the limits widen.
        grow = [(1.15 * g + 2.0 if g > 0 else 0.0) / s for g, s in zip(grow, (sx, sx, sy, sy))]
        ax.set_xlim(x0 - grow[0], x1 + grow[1])
        ax.set_ylim(y0 - grow[2], y1 + grow[3])
    else:  # not settled: at least stack for the final scale
        fig.draw_without_rendering()
        (y0, y1), box = ax.get_ylim(), ax.get_window_extent()
        _stack(stacks, box.height / (y1 - y0) * 72 / DPI)
    _wra_lines(ax)
    return fig


def plot_tradeoff(models: dict[str, dict], path: str, title: Optional[str] = None) -> str:
    """Write the trade-off picture of `models` (`report["models"]` of `awnet reproduce`) to `path`, a PNG;
    return `path`."""
    fig = tradeoff_figure(models, title)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
