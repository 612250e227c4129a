"""The trade-off picture (issue 19): clean vs worst-case robust accuracy, one labelled point per model, a
faint column of per-attack accuracies above each; the PNG is valid and the plotted coordinates are the
percentages given."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.text import Text

from awnet.eval.tradeoff import plot_tradeoff, tradeoff_figure

MODELS = {
    "standard": {"clean_acc": 0.91, "robust_acc": 0.0, "wra": 0.455,
                 "per_attack": {"fgsm": 0.05, "pgd": 0.0, "cw": 0.0}},
    "pgd-at": {"clean_acc": 0.84, "robust_acc": 0.68, "wra": 0.76,
               "per_attack": {"fgsm": 0.74, "pgd": 0.70, "cw": 0.70, "autoattack": 0.68, "square": 0.75}},
    "awnet": {"clean_acc": 0.90, "robust_acc": 0.69, "wra": 0.795,
              "per_attack": {"pgd": 0.71, "router-evasion": 0.69, "forced-clean": 0.81, "forced-adv": 0.70}},
    "no-attacks": {"clean_acc": 0.5, "robust_acc": 0.25, "per_attack": {}},
}


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


@pytest.fixture(scope="module")
def figure():
    return tradeoff_figure(MODELS, "test")


def test_points_and_columns(figure):
    ax = figure.axes[0]
    (points,) = by_gid(ax, "models")
    expected = [[100 * m["clean_acc"], 100 * m["robust_acc"]] for m in MODELS.values()]
    np.testing.assert_allclose(points.get_offsets(), expected)

    (markers,) = by_gid(ax, "attacks")
    expected = [[100 * m["clean_acc"], 100 * v] for m in MODELS.values() for v in m["per_attack"].values()]
    np.testing.assert_allclose(sorted(map(tuple, markers.get_offsets())), sorted(map(tuple, expected)))

    for name, m in MODELS.items():
        columns = by_gid(ax, f"column:{name}")
        if not m["per_attack"]:
            assert not columns
            continue
        (line,) = columns
        np.testing.assert_allclose(line.get_xdata(), [100 * m["clean_acc"]] * 2)
        np.testing.assert_allclose(line.get_ydata(), [100 * m["robust_acc"], 100 * max(m["per_attack"].values())])

    # Every model is named; attacks at equal values share one label; the worst case's label is the stronger.
    texts = {t.get_text(): t for t in ax.texts}
    assert set(MODELS) <= set(texts)
    assert "pgd, cw  70.0" in texts and "pgd  70.0" not in texts
    assert texts["autoattack  68.0"].get_alpha() > texts["pgd, cw  70.0"].get_alpha()
    assert texts["pgd, cw  0.0"].get_alpha() > texts["fgsm  5.0"].get_alpha()

    # The limits hold every point with a margin (the standard model's 0 is not on the axis) and every label.
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < 50 and x1 > 91 and y0 < 0 and y1 > 81
    figure.draw_without_rendering()
    box = ax.get_window_extent()
    for t in ax.texts:
        if t.get_gid() is None and not t.get_text().startswith("WRA"):
            e = t.get_window_extent()
            assert box.x0 <= e.x0 and e.x1 <= box.x1 and box.y0 <= e.y0 and e.y1 <= box.y1, t.get_text()

    # Stacked labels of one column do not overprint (the text's own box, without the annotation's leader).
    awnet = sorted((Text.get_window_extent(t) for t in ax.texts if t.xy[0] == 90.0 and t.get_text() != "awnet"),
                   key=lambda e: e.y0)
    assert all(low.y1 <= high.y0 + 0.5 for low, high in zip(awnet, awnet[1:]))


def test_png(tmp_path):
    from matplotlib.image import imread

    path = str(tmp_path / "out" / "tradeoff.png")
    assert plot_tradeoff(MODELS, path) == path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] >= 400 and image.shape[1] >= 600
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10


@pytest.mark.parametrize("entry, words", [
    ({"robust_acc": 0.5}, ["broken", "clean_acc"]),
    ({"clean_acc": 0.5, "per_attack": {}}, ["broken", "robust_acc"]),
    ({"clean_acc": 84.0, "robust_acc": 0.5}, ["broken", "clean_acc", "[0, 1]"]),
    ({"clean_acc": 0.8, "robust_acc": 0.5, "per_attack": {"pgd": "x"}}, ["broken", "pgd"]),
    (None, ["broken"]),
])
def test_bad_entry(tmp_path, entry, words):
    with pytest.raises(ValueError) as info:
        plot_tradeoff({**MODELS, "broken": entry}, str(tmp_path / "t.png"))
    assert all(w in str(info.value) for w in words), str(info.value)
    assert not (tmp_path / "t.png").exists()
    with pytest.raises(ValueError, match="no models"):
        tradeoff_figure({})
