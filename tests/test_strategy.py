"""Which strategy computes aw_conv2d: each backend's own, `auto`'s measured winner, the nearest-case rule,
and `explain`."""
from __future__ import annotations

import json

import pytest
import torch

import awkernels
from awkernels import _strategy, reference

HAS_CPP = "cpp" in awkernels.available_backends()
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="the C++ extension is not built")


def conv_args(banks=2, level="layer", c_in=4, c_out=6, size=8, groups=1):
    x = torch.randn(2, c_in, size, size)
    weight = torch.randn(banks, c_out, c_in // groups, 3, 3)
    coeff = torch.rand((2, banks, c_out) if level == "filter" else (2, banks))
    return x, weight, coeff


def entry(winner_ms: dict, banks=2, level="layer", pass_="fwd", c_in=4, c_out=6, out_pixels=36, dtype="float32"):
    return dict(case=f"test {c_in}->{c_out} {out_pixels}px", dtype=dtype, banks=banks, level=level, c_in=c_in,
                c_out=c_out, kernel=3, stride=1, out_pixels=out_pixels, ms=winner_ms,
                winner=min(winner_ms, key=winner_ms.get), **{"pass": pass_})


@pytest.fixture
def table(monkeypatch):
    """Replace the committed table with the entries a test gives (for the CPU)."""
    def use(*entries):
        monkeypatch.setattr(_strategy, "_table", lambda: {"devices": {"cpu": {"entries": list(entries)}}})
        _strategy.clear()
    yield use
    _strategy.clear()


# (backend, K, input side (3x3, no padding: 6x6 or 8x8 output pixels), strategy): triton's epilogue serves
# K = 1, and K = 2 below 64 output pixels per sample; blend-in-loop the rest.
@pytest.mark.parametrize("backend,banks,size,expected", [
    ("reference", 1, 8, "grouped"), ("reference", 2, 8, "grouped"), ("cpp", 1, 8, "scaled"), ("cpp", 3, 8, "stacked"),
    ("triton", 1, 10, "epilogue"), ("triton", 2, 8, "epilogue"), ("triton", 2, 10, "blend"), ("triton", 3, 8, "blend")])
def test_a_chosen_backend_runs_its_strategy(backend, banks, size, expected):
    if backend not in awkernels.available_backends():
        pytest.skip(f"backend {backend!r} not in this install")
    with awkernels.use_backend(backend):
        choice = awkernels.explain(*conv_args(banks=banks, size=size))
    assert (choice.strategy, choice.backend) == (expected, backend)
    assert f"backend {backend!r} was selected" in str(choice)


@needs_cpp
def test_auto_runs_the_measured_winner(table, monkeypatch):
    x, weight, coeff = conv_args()
    calls = []
    monkeypatch.setattr(reference, "aw_conv2d", lambda *a: calls.append(a) or torch.zeros(2, 6, 6, 6))
    for winner, loser in (("grouped", "stacked"), ("stacked", "grouped")):
        table(entry({winner: 1.0, loser: 2.0}))
        with awkernels.use_backend("auto"), torch.no_grad():
            choice = awkernels.explain(x, weight, coeff)
            awkernels.aw_conv2d(x, weight, coeff)
        assert choice.strategy == winner
        assert choice.backend == {"grouped": "reference", "stacked": "cpp"}[winner]
        assert "fastest in the measured case" in choice.reason and f"{winner} 1 ms" in choice.reason
    assert len(calls) == 1, "the grouped strategy ran through the reference implementation exactly once"


@needs_cpp
def test_auto_takes_the_nearest_measured_case(table):
    table(entry({"grouped": 1.0, "stacked": 2.0}, out_pixels=1024, c_in=64, c_out=64),
          entry({"grouped": 9.0, "stacked": 2.0}, out_pixels=16, c_in=512, c_out=512))
    with awkernels.use_backend("auto"), torch.no_grad():
        many_pixels = awkernels.explain(*conv_args(size=30, c_in=32, c_out=32), padding=1)
        few_pixels = awkernels.explain(*conv_args(size=6, c_in=256, c_out=256), padding=1)
    assert many_pixels.strategy == "grouped" and few_pixels.strategy == "stacked"
    assert "nearest measured case (test 64->64 1024px)" in many_pixels.reason
    assert "nearest measured case (test 512->512 16px)" in few_pixels.reason


@needs_cpp
def test_without_measurements_the_rule_picks_one_vendor_convolution(table):
    table()
    with awkernels.use_backend("auto"):
        assert awkernels.explain(*conv_args(banks=1, level="filter")).strategy == "scaled"
        assert awkernels.explain(*conv_args(banks=2)).strategy == "stacked"
        assert "no measured case on cpu" in awkernels.explain(*conv_args()).reason


@needs_cpp
def test_a_winner_is_not_extrapolated_far_from_its_shape(table):
    table(entry({"grouped": 1.0, "stacked": 2.0}, out_pixels=1024, c_in=64, c_out=64))
    with awkernels.use_backend("auto"):
        near = awkernels.explain(*conv_args(size=16, c_in=64, c_out=64), padding=1)  # 256 pixels: 4x
        far = awkernels.explain(*conv_args(size=8, c_in=64, c_out=64), padding=1)  # 64 pixels: 16x
    assert near.strategy == "grouped" and far.strategy == "stacked"
    assert "no measured case on cpu within 8x" in far.reason


@needs_cpp
def test_a_win_inside_the_noise_does_not_override_the_rule(table):
    table(entry({"grouped": 0.98, "stacked": 1.0}))
    with awkernels.use_backend("auto"), torch.no_grad():
        assert awkernels.explain(*conv_args()).strategy == "stacked"
    table(entry({"grouped": 0.90, "stacked": 1.0}))
    with awkernels.use_backend("auto"), torch.no_grad():
        assert awkernels.explain(*conv_args()).strategy == "grouped"


@needs_cpp
def test_a_k1_measurement_says_nothing_about_blending(table):
    table(entry({"grouped": 1.0, "scaled": 2.0}, banks=1, level="filter"))
    with awkernels.use_backend("auto"):
        assert awkernels.explain(*conv_args(banks=1, level="filter")).strategy == "grouped"
        assert awkernels.explain(*conv_args(banks=2)).strategy == "stacked"  # by the rule


@needs_cpp
def test_the_pass_is_part_of_the_case(table):
    table(entry({"grouped": 1.0, "stacked": 2.0}, pass_="fwd"),
          entry({"grouped": 3.0, "stacked": 2.0}, pass_="fwdbwd"),
          entry({"grouped": 1.0, "stacked": 2.0}, pass_="attack"))
    x, weight, coeff = conv_args()
    with awkernels.use_backend("auto"):
        with torch.no_grad():
            assert awkernels.explain(x, weight.requires_grad_(), coeff).strategy == "grouped"  # inference
        assert awkernels.explain(x, weight, coeff).strategy == "stacked"  # training: the weights' gradient
        weight.requires_grad_(False)
        assert awkernels.explain(x.requires_grad_(), weight, coeff.requires_grad_()).strategy == "grouped"


def test_explain_refuses_what_the_op_refuses():
    x, weight, coeff = conv_args()
    with pytest.raises(ValueError, match="coeff must have shape"):
        awkernels.explain(x, weight, coeff[:1])
    with pytest.raises(ValueError, match="groups=4"):
        awkernels.aw_conv2d(x, weight, coeff, groups=4)
    with pytest.raises(ValueError, match="groups=4"):
        awkernels.explain(x, weight, coeff, groups=4)


@needs_cpp
def test_each_choice_is_logged_once(table, caplog):
    table()
    x, weight, coeff = conv_args()
    with caplog.at_level("DEBUG", logger="awkernels"), awkernels.use_backend("auto"), torch.no_grad():
        for _ in range(3):
            awkernels.aw_conv2d(x, weight, coeff)
    said = [r.getMessage() for r in caplog.records if "strategy" in r.getMessage()]
    assert len(said) == 1 and "'stacked' strategy on the 'cpp' backend" in said[0], said


@needs_cpp
def test_a_missing_table_leaves_the_rule(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(_strategy, "TABLE_PATH", str(tmp_path / "missing.json"))
    _strategy._table.cache_clear()
    _strategy.clear()
    try:
        with caplog.at_level("WARNING", logger="awkernels"), awkernels.use_backend("auto"):
            assert awkernels.explain(*conv_args()).strategy == "stacked"
        assert "no strategy table" in caplog.text
    finally:
        _strategy._table.cache_clear()
        _strategy.clear()


def test_the_committed_table_is_well_formed():
    with open(_strategy.TABLE_PATH) as f:
        table = json.load(f)
    assert set(table["devices"]) <= {"cpu", "cuda"} and table["devices"], table.keys()
    for device, part in table["devices"].items():
        assert part["measured_on"] and part["entries"], device
        for e in part["entries"]:
            assert set(e["ms"]) <= set(_strategy.BY_NAME), e
            assert e["winner"] == min(e["ms"], key=e["ms"].get), e
            assert e["pass"] in ("fwd", "fwdbwd", "attack") and e["level"] in ("layer", "filter"), e
            for name in e["ms"]:
                call = _strategy.ConvCall(device, e["dtype"], e["banks"], e["level"], e["pass"], e["c_in"],
                                          e["c_out"], (e["kernel"],) * 2, (e["stride"],) * 2, 1, e["out_pixels"])
                assert _strategy.BY_NAME[name].refuses(call) is None, f"{name} was timed on a case it refuses: {e}"
