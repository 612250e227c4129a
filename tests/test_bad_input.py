"""Bad input raises ValueError/TypeError naming the argument, on every backend; the AWNET_DEBUG value check."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import awkernels
from conftest import REPO_ROOT


def conv_args(device) -> dict:
    """Valid aw_conv2d arguments: B=2, C_in=4, C_out=6, 6x6 input, K=2 banks of 3x3, layer-level coeff."""
    return dict(x=torch.randn(2, 4, 6, 6, device=device), weight=torch.randn(2, 6, 4, 3, 3, device=device),
                coeff=torch.rand(2, 2, device=device), bias=torch.randn(2, 6, device=device),
                stride=1, padding=0, dilation=1, groups=1)


def randn_like(t, *shape, dtype=None):
    return torch.randn(shape, dtype=dtype or t.dtype, device=t.device)


# (id, overrides of the valid arguments, error type, pattern the message must match)
CONV_BAD = [
    ("x-3d", lambda a: {"x": a["x"][0]}, ValueError, r"x must have shape \(B, C_in, H, W\)"),
    ("x-int", lambda a: {"x": a["x"].to(torch.int32)}, TypeError, r"x must be float"),
    ("x-not-tensor", lambda a: {"x": a["x"].tolist()}, TypeError, r"x must be a torch\.Tensor"),
    ("weight-4d", lambda a: {"weight": a["weight"][0]}, ValueError,
     r"weight must have shape \(K, C_out, C_in // groups, kH, kW\)"),
    ("weight-cin-mismatch", lambda a: {"weight": randn_like(a["x"], 2, 6, 3, 3, 3)}, ValueError,
     r"weight must have shape .*\(K, 6, 4, kH, kW\)"),
    ("weight-cin-groups-mismatch", lambda a: {"groups": 2}, ValueError,
     r"weight must have shape .*\(K, 6, 2, kH, kW\)"),
    ("coeff-1d", lambda a: {"coeff": a["coeff"][:, 0]}, ValueError,
     r"coeff must have shape \(B, K\) or \(B, K, C_out\)"),
    ("coeff-4d", lambda a: {"coeff": randn_like(a["x"], 2, 2, 6, 1)}, ValueError, r"coeff must have shape"),
    ("coeff-batch-mismatch", lambda a: {"coeff": randn_like(a["x"], 3, 2)}, ValueError,
     r"coeff must have shape \(B, K\) = \(2, 2\)"),
    ("coeff-K-mismatch", lambda a: {"coeff": randn_like(a["x"], 2, 3)}, ValueError,
     r"coeff must have shape \(B, K\) = \(2, 2\)"),
    ("filter-coeff-K-mismatch", lambda a: {"coeff": randn_like(a["x"], 2, 1, 6)}, ValueError,
     r"coeff must have shape .*\(B, K, C_out\) = \(2, 2, 6\)"),
    ("filter-coeff-Cout-mismatch", lambda a: {"coeff": randn_like(a["x"], 2, 2, 5)}, ValueError,
     r"coeff must have shape .*\(B, K, C_out\) = \(2, 2, 6\)"),
    ("bias-1d", lambda a: {"bias": randn_like(a["x"], 6)}, ValueError, r"bias must have shape \(K, C_out\)"),
    ("bias-Cout-mismatch", lambda a: {"bias": randn_like(a["x"], 2, 5)}, ValueError,
     r"bias must have shape \(K, C_out\) = \(2, 6\)"),
    ("bias-K-mismatch", lambda a: {"bias": randn_like(a["x"], 1, 6)}, ValueError,
     r"bias must have shape \(K, C_out\) = \(2, 6\)"),
    ("weight-f64", lambda a: {"weight": a["weight"].double()}, TypeError, r"weight has dtype torch\.float64"),
    ("coeff-f64", lambda a: {"coeff": a["coeff"].double()}, TypeError, r"coeff has dtype torch\.float64"),
    ("bias-f64", lambda a: {"bias": a["bias"].double()}, TypeError, r"bias has dtype torch\.float64"),
    ("groups-not-dividing-Cin", lambda a: {"groups": 3}, ValueError, r"groups=3 .*C_in=4"),
    ("groups-not-dividing-Cout", lambda a: {"groups": 4, "weight": randn_like(a["x"], 2, 6, 1, 3, 3)}, ValueError,
     r"groups=4 .*C_out=6"),
    ("groups-0", lambda a: {"groups": 0}, ValueError, r"groups=0 must be >= 1"),
    ("groups-negative", lambda a: {"groups": -1}, ValueError, r"groups=-1 must be >= 1"),
    ("groups-float", lambda a: {"groups": 1.0}, TypeError, r"groups must be an int"),
    ("padding-negative", lambda a: {"padding": -1}, ValueError, r"padding must be >= 0"),
    ("padding-pair-negative", lambda a: {"padding": (1, -1)}, ValueError, r"padding must be >= 0"),
    ("stride-0", lambda a: {"stride": 0}, ValueError, r"stride must be >= 1"),
    ("stride-pair-0", lambda a: {"stride": (2, 0)}, ValueError, r"stride must be >= 1"),
    ("dilation-0", lambda a: {"dilation": 0}, ValueError, r"dilation must be >= 1"),
    ("stride-2**63", lambda a: {"stride": 2**63}, ValueError, r"stride must be <= 2\*\*31 - 1"),
    ("padding-2**40", lambda a: {"padding": (1, 2**40)}, ValueError, r"padding must be <= 2\*\*31 - 1"),
    ("x-no-channels", lambda a: {"x": randn_like(a["x"], 2, 0, 6, 6), "weight": randn_like(a["x"], 2, 6, 0, 3, 3)},
     ValueError, r"x must have channels and pixels"),
    ("x-no-pixels-padded", lambda a: {"x": randn_like(a["x"], 2, 4, 0, 0), "weight": randn_like(a["x"], 2, 6, 4, 1, 1),
                                      "padding": 1}, ValueError, r"x must have channels and pixels"),
    ("stride-bool", lambda a: {"stride": True}, TypeError, r"stride must be an int or a pair of ints"),
    ("stride-str", lambda a: {"stride": "2"}, TypeError, r"stride must be an int or a pair of ints"),
    ("stride-triple", lambda a: {"stride": (1, 1, 1)}, TypeError, r"stride must be an int or a pair of ints"),
    ("dilation-pair-of-bools", lambda a: {"dilation": (True, True)}, TypeError, r"dilation must be an int or a pair"),
    ("x-smaller-than-kernel", lambda a: {"x": randn_like(a["x"], 2, 4, 2, 6)}, ValueError,
     r"x's spatial size \(2, 6\) .* smaller than the dilated kernel"),
    ("x-smaller-than-dilated-kernel", lambda a: {"dilation": 3}, ValueError,
     r"x's spatial size \(6, 6\) .* smaller than the dilated kernel \(7, 7\)"),
]


@pytest.mark.parametrize("overrides, error, match", [pytest.param(*c[1:], id=c[0]) for c in CONV_BAD])
def test_aw_conv2d_bad_input(backend, overrides, error, match):
    torch.manual_seed(0)
    args = conv_args(backend.device)
    args.update(overrides(args))
    with awkernels.use_backend(backend.name), pytest.raises(error, match=match):
        awkernels.aw_conv2d(**args)


def test_aw_conv2d_valid_arguments_pass(backend):
    """The base that every bad-input case above changes in one place is itself accepted."""
    torch.manual_seed(0)
    with awkernels.use_backend(backend.name):
        y = awkernels.aw_conv2d(**conv_args(backend.device))
    assert tuple(y.shape) == (2, 6, 4, 4)


@pytest.mark.parametrize("tensor", ["weight", "coeff", "bias"])
def test_aw_conv2d_mixed_devices(backend, tensor):
    if not torch.cuda.is_available():
        pytest.skip("mixed devices need a CUDA GPU besides the CPU; torch.cuda.is_available() is False")
    args = conv_args(backend.device)
    other = torch.device("cpu") if backend.device.type == "cuda" else torch.device("cuda")
    args[tensor] = args[tensor].to(other)
    with awkernels.use_backend(backend.name), pytest.raises(ValueError, match=rf"{tensor} is on {other.type}"):
        awkernels.aw_conv2d(**args)


def bn_args(device) -> dict:
    """Valid mix_batch_norm arguments: B=2, C=3, 4x4 input, K=2 banks, training."""
    return dict(x=torch.randn(2, 3, 4, 4, device=device), coeff=torch.rand(2, 2, device=device),
                weight=torch.ones(2, 3, device=device), bias=torch.zeros(2, 3, device=device),
                running_mean=torch.zeros(2, 3, device=device), running_var=torch.ones(2, 3, device=device),
                training=True, momentum=0.1, eps=1e-5)


BN_BAD = [
    ("x-3d", lambda a: {"x": a["x"][0]}, ValueError, r"x must have shape \(B, C, H, W\)"),
    ("x-int", lambda a: {"x": a["x"].to(torch.int64)}, TypeError, r"x must be float"),
    ("coeff-1d", lambda a: {"coeff": a["coeff"][:, 0]}, ValueError, r"coeff must have shape \(B, K\)"),
    ("coeff-3d", lambda a: {"coeff": a["coeff"][:, :, None]}, ValueError, r"coeff must have shape \(B, K\)"),
    ("coeff-batch-mismatch", lambda a: {"coeff": randn_like(a["x"], 3, 2)}, ValueError,
     r"coeff must have shape \(B, K\) with B = 2"),
    ("coeff-f64", lambda a: {"coeff": a["coeff"].double()}, TypeError, r"coeff has dtype torch\.float64"),
    # K is read from coeff, so a coeff with a third bank is reported against the (K, C) parameters.
    ("coeff-K-mismatch", lambda a: {"coeff": torch.rand(2, 3, device=a["x"].device)}, ValueError,
     r"weight must have shape \(K, C\) = \(3, 3\), got \(2, 3\)"),
    ("weight-C-mismatch", lambda a: {"weight": randn_like(a["x"], 2, 4)}, ValueError,
     r"weight must have shape \(K, C\) = \(2, 3\)"),
    ("weight-K-mismatch", lambda a: {"weight": randn_like(a["x"], 3, 3)}, ValueError,
     r"weight must have shape \(K, C\) = \(2, 3\)"),
    ("bias-1d", lambda a: {"bias": randn_like(a["x"], 3)}, ValueError, r"bias must have shape \(K, C\) = \(2, 3\)"),
    ("bias-C-mismatch", lambda a: {"bias": randn_like(a["x"], 2, 2)}, ValueError,
     r"bias must have shape \(K, C\) = \(2, 3\)"),
    ("running_mean-1d", lambda a: {"running_mean": randn_like(a["x"], 3)}, ValueError,
     r"running_mean must have shape \(K, C\) = \(2, 3\)"),
    ("running_mean-K-mismatch", lambda a: {"running_mean": randn_like(a["x"], 1, 3)}, ValueError,
     r"running_mean must have shape \(K, C\) = \(2, 3\)"),
    ("running_var-C-mismatch", lambda a: {"running_var": randn_like(a["x"], 2, 4)}, ValueError,
     r"running_var must have shape \(K, C\) = \(2, 3\)"),
    ("running_var-3d", lambda a: {"running_var": randn_like(a["x"], 2, 3, 1)}, ValueError,
     r"running_var must have shape \(K, C\)"),
    ("weight-int", lambda a: {"weight": a["weight"].to(torch.int32)}, TypeError, r"weight must be float32"),
    ("bias-f64-vs-weight-f32", lambda a: {"bias": a["bias"].double()}, TypeError, r"bias has dtype torch\.float64"),
    ("momentum-negative", lambda a: {"momentum": -0.1}, ValueError, r"momentum must be a float in \[0, 1\]"),
    ("momentum-above-1", lambda a: {"momentum": 1.5}, ValueError, r"momentum must be a float in \[0, 1\]"),
    ("eps-0", lambda a: {"eps": 0.0}, ValueError, r"eps must be a positive float"),
    ("eps-negative", lambda a: {"eps": -1e-5}, ValueError, r"eps must be a positive float"),
    ("training-int", lambda a: {"training": 1}, TypeError, r"training must be a bool"),
    ("training-str", lambda a: {"training": "yes"}, TypeError, r"training must be a bool"),
    ("one-value-per-channel-in-training", lambda a: {"x": randn_like(a["x"], 1, 3, 1, 1),
                                                     "coeff": randn_like(a["x"], 1, 2)}, ValueError,
     r"x has one value per channel; training needs more"),
    ("prescale-1d", lambda a: {"prescale": randn_like(a["x"], 3)}, ValueError, r"prescale must have shape \(B, C\)"),
    ("prescale-C-mismatch", lambda a: {"prescale": randn_like(a["x"], 2, 4)}, ValueError,
     r"prescale must have shape \(B, C\) = \(2, 3\), got \(2, 4\)"),
    ("prescale-f64", lambda a: {"prescale": randn_like(a["x"], 2, 3).double()}, TypeError,
     r"prescale has dtype torch\.float64"),
    ("prescale-list", lambda a: {"prescale": [[1.0] * 3] * 2}, TypeError, r"prescale must be a torch\.Tensor"),
]


@pytest.mark.parametrize("overrides, error, match", [pytest.param(*c[1:], id=c[0]) for c in BN_BAD])
def test_mix_batch_norm_bad_input(backend, overrides, error, match):
    torch.manual_seed(0)
    args = bn_args(backend.device)
    args.update(overrides(args))
    with awkernels.use_backend(backend.name), pytest.raises(error, match=match):
        awkernels.mix_batch_norm(**args)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_mix_batch_norm_valid_arguments_pass(backend, training):
    """The base of the cases above is accepted; one value per channel is fine in eval."""
    torch.manual_seed(0)
    with awkernels.use_backend(backend.name):
        y = awkernels.mix_batch_norm(**dict(bn_args(backend.device), training=training))
        single = awkernels.mix_batch_norm(**dict(bn_args(backend.device), training=False,
                                                 x=torch.randn(1, 3, 1, 1, device=backend.device),
                                                 coeff=torch.rand(1, 2, device=backend.device)))
    assert y.shape == (2, 3, 4, 4)
    assert single.shape == (1, 3, 1, 1)


# Runs in a fresh interpreter because AWNET_DEBUG is read at import. Prints one line per call:
# "ok" or the error's type and message.
DEBUG_SCRIPT = """
import json, sys, torch, awkernels
device = torch.device(sys.argv[1])
x = torch.randn(2, 3, 5, 5, device=device)
results = {}
for bad in (float("nan"), float("inf")):
    coeff = torch.rand(2, 2, device=device)
    coeff[1, 0] = bad
    calls = {
        "aw_conv2d": lambda: awkernels.aw_conv2d(x, torch.randn(2, 4, 3, 3, 3, device=device), coeff),
        "mix_batch_norm": lambda: awkernels.mix_batch_norm(
            x, coeff, torch.ones(2, 3, device=device), torch.zeros(2, 3, device=device),
            torch.zeros(2, 3, device=device), torch.ones(2, 3, device=device), True, 0.1, 1e-5),
    }
    for op, call in calls.items():
        try:
            call()
            results[f"{op}-{bad}"] = "ok"
        except Exception as error:
            results[f"{op}-{bad}"] = f"{type(error).__name__}: {error}"
print(json.dumps(results))
"""


@pytest.mark.parametrize("debug", [True, False], ids=["AWNET_DEBUG=1", "AWNET_DEBUG-unset"])
def test_debug_mode_rejects_non_finite_coeff(backend, debug):
    env = {k: v for k, v in os.environ.items() if k not in ("AWNET_DEBUG", "AWNET_BACKEND")}
    env["AWNET_BACKEND"] = backend.name
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    if debug:
        env["AWNET_DEBUG"] = "1"
    run = subprocess.run([sys.executable, "-c", DEBUG_SCRIPT, str(backend.device)], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(results) == 4
    for call, outcome in results.items():
        if debug:
            assert outcome.startswith("ValueError: coeff contains NaN or Inf"), f"{call}: {outcome}"
        else:
            assert outcome == "ok", f"{call}: {outcome}"


DEBUG_COMPILE_SCRIPT = """
import torch, awkernels
x, weight, coeff = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 3, 3, 3), torch.rand(2, 2)
compiled = torch.compile(lambda x, w, c: awkernels.aw_conv2d(x, w, c, padding=1), fullgraph=True, backend="aot_eager")
assert torch.allclose(compiled(x, weight, coeff), awkernels.aw_conv2d(x, weight, coeff, padding=1), atol=1e-5)
coeff[1, 0] = float("nan")
try:
    compiled(x, weight, coeff)
except RuntimeError as error:
    assert "coeff contains NaN or Inf" in str(error), error
    print("compiled")
"""


def test_debug_mode_compiles_fullgraph():
    """AWNET_DEBUG=1 keeps torch.compile(fullgraph=True) working: the value check becomes an asynchronous
    assert in the graph, which still catches a NaN coeff."""
    env = {**{k: v for k, v in os.environ.items() if k != "AWNET_BACKEND"}, "AWNET_DEBUG": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", DEBUG_COMPILE_SCRIPT], env=env, cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-3000:]


@pytest.mark.parametrize("value,expected", [("false", False), ("0", False), (" On", True), ("maybe", ValueError)])
def test_debug_setting_is_parsed(monkeypatch, value, expected):
    """What the import reads (the value is read once, at import: the subprocess tests above see it there)."""
    from awkernels._validate import _debug_setting

    monkeypatch.setenv("AWNET_DEBUG", value)
    if expected is ValueError:
        with pytest.raises(ValueError, match="AWNET_DEBUG"):
            _debug_setting()
    else:
        assert _debug_setting() is expected
