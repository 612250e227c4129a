"""The C++ ops reachable as `torch.ops.awnet.*` are memory-safe whatever they are given: the bad calls run in
a child process, so a crash (the SIGSEGVs of issue 21) fails its test instead of killing the run; the calls
after a crash run in a fresh child."""
from __future__ import annotations

import subprocess
import sys

import pytest

import awkernels
from conftest import REPO_ROOT

PRELUDE = """
import torch, awkernels, awnet
x = torch.randn(2, 4, 6, 6); w = torch.randn(2, 6, 4, 3, 3); c = torch.rand(2, 2); b = torch.randn(2, 6)
y, saved = torch.ops.awnet.aw_conv2d_forward(x, w, c, b, [1, 1], [0, 0], [1, 1], 1)
g = torch.randn_like(y)
stats = (torch.zeros(2, 4), torch.ones(2, 4))
bn = torch.ops.awnet.mix_batch_norm(x, c, torch.ones(2, 4), torch.zeros(2, 4), *stats, True, 0.1, 1e-5)
"""

# (id, the bad call, the exception it must raise, a fragment of its message)
CASES = [
    ("conv-no-input-channels-op", "torch.ops.awnet.aw_conv2d(torch.randn(2, 0, 6, 6), torch.randn(2, 4, 0, 3, 3), "
     "c, None, [1, 1], [0, 0], [1, 1], 1)", "ValueError", "no input channels"),
    ("conv-no-input-channels-api", "awkernels.aw_conv2d(torch.randn(2, 0, 6, 6), torch.randn(2, 4, 0, 3, 3), c)",
     "ValueError", "must have channels and pixels"),
    ("conv-no-input-channels-module", "awnet.nn.AWConv2d(0, 4, 3)(torch.randn(2, 0, 6, 6))", "ValueError", ""),
    ("conv-coeff-batch", "torch.ops.awnet.aw_conv2d(x, w, c[:1], b, [1, 1], [0, 0], [1, 1], 1)", "ValueError",
     "coeff must be (B, K)"),
    ("conv-bias-shape", "torch.ops.awnet.aw_conv2d(x, w, c, b[:, :3], [1, 1], [0, 0], [1, 1], 1)", "ValueError",
     "bias must be (K, C_out)"),
    ("conv-stride-length", "torch.ops.awnet.aw_conv2d(x, w, c, b, [1], [0, 0], [1, 1], 1)", "ValueError",
     "must be pairs"),
    ("conv-backward-grad-shape", "torch.ops.awnet.aw_conv2d_backward(g[:, :3], saved, x, w, c, b, [1, 1], "
     "[0, 0], [1, 1], 1, [True, True, True, False])", "ValueError", "grad_y must be"),
    ("conv-backward-saved-shape", "torch.ops.awnet.aw_conv2d_backward(g, saved[:, :3], x, w, c, b, [1, 1], "
     "[0, 0], [1, 1], 1, [True, True, True, True])", "ValueError", "saved bank outputs"),
    ("conv-backward-dcoeff-without-saved", "torch.ops.awnet.aw_conv2d_backward(g, torch.empty(0), x, w, c, b, "
     "[1, 1], [0, 0], [1, 1], 1, [False, False, True, False])", "ValueError", "dcoeff needs the bank outputs"),
    ("conv-dtype", "torch.ops.awnet.aw_conv2d(x, w.double(), c, b, [1, 1], [0, 0], [1, 1], 1)", "TypeError",
     "dtype"),
    ("bn-negative-momentum", "torch.ops.awnet.mix_batch_norm(x, c, torch.ones(2, 4), torch.zeros(2, 4), *stats, "
     "True, -0.1, 1e-5)", "ValueError", "momentum"),
    ("bn-negative-eps", "torch.ops.awnet.mix_batch_norm(x, c, torch.ones(2, 4), torch.zeros(2, 4), *stats, True, "
     "0.1, -1e-5)", "ValueError", "eps"),
    ("bn-stats-shape", "torch.ops.awnet.mix_batch_norm(x, c, torch.ones(2, 4), torch.zeros(2, 4), "
     "torch.zeros(2, 3), torch.ones(2, 4), True, 0.1, 1e-5)", "ValueError", "(K, C)"),
    ("bn-backward-sample-moments", "torch.ops.awnet.mix_batch_norm_backward(torch.randn_like(x), bn[1], bn[2], "
     "bn[3][:1], bn[4], x, c, torch.ones(2, 4), torch.zeros(2, 4), True, 1e-5, [True, True, True, True])",
     "ValueError", "per-sample moments"),
    ("bn-backward-grad-shape", "torch.ops.awnet.mix_batch_norm_backward(x[:1], bn[1], bn[2], bn[3], "
     "bn[4], x, c, torch.ones(2, 4), torch.zeros(2, 4), True, 1e-5, [True, True, True, True])", "ValueError",
     "grad_y must be like x"),
]


def _run_cases() -> dict[str, tuple[str, str]]:
    """id -> (exception name or "no error" or "crashed: ...", the first line of its message)."""
    outcomes, pending = {}, [c[:2] for c in CASES]
    while pending:
        script = PRELUDE + "import sys\n" + "".join(f"""
try:
    {call}
except Exception as e:
    print({case!r}, "|", type(e).__name__, "|", str(e).splitlines()[0], flush=True)
else:
    print({case!r}, "| no error |", flush=True)
""" for case, call in pending)
        run = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=300)
        for line in run.stdout.splitlines():
            case, kind, message = (part.strip() for part in line.split("|", 2))
            outcomes[case] = (kind, message)
        pending = [(case, call) for case, call in pending if case not in outcomes]
        if pending and run.returncode == 0:
            raise AssertionError(f"the child skipped cases without dying: {run.stdout[-2000:]}")
        if pending:  # the first case without an outcome killed the child
            outcomes[pending[0][0]] = (f"crashed (rc {run.returncode})", run.stderr[-2000:])
            pending = pending[1:]
    return outcomes


@pytest.fixture(scope="module")
def outcomes():
    return _run_cases()


@pytest.mark.skipif("cpp" not in awkernels.available_backends(), reason="the C++ extension is not built")
@pytest.mark.parametrize("case,error,fragment", [pytest.param(c[0], *c[2:], id=c[0]) for c in CASES])
def test_bad_call_raises_instead_of_crashing(outcomes, case, error, fragment):
    kind, message = outcomes[case]
    assert kind == error and fragment in message, (kind, message)
