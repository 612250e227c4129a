"""scripts/gpu-check, as far as a machine without a GPU can run it: the dry run lists every step and runs
nothing, a real run reports the steps it cannot take here as missing and writes its summary, a step's
failure, timeout or lack of time is recorded, the sanitizer's selection is one conv and one MixBN case per
GPU backend, and pytest's counts are read from a log."""
import json
import os
import runpy
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "scripts", "gpu-check")
STEPS = ["environment", "install", "tests",
         *(f"parity-{backend}-{dtype}" for backend in ("triton", "cuda")
           for dtype in ("float32", "tf32", "float16", "bfloat16")),
         "sanitizer", "bench", "profile", "bench-report"]


def _gpu_check() -> dict:
    return runpy.run_path(SCRIPT)


def test_dry_run_lists_every_step_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([SCRIPT, "--dry-run", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert [line.split()[1].rstrip(":") for line in run.stdout.splitlines() if line.startswith("step ")] == STEPS
    assert "pip install --no-build-isolation --no-deps --no-index -e ." in run.stdout
    assert "--tool memcheck" in run.stdout and "--benchmark-json=" in run.stdout
    assert "AWNET_PARITY_DTYPE=bfloat16" in run.stdout
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU reports")
def test_without_a_gpu_steps_are_missing_and_the_summary_is_written(tmp_path):
    run = subprocess.run([SCRIPT, str(tmp_path), "--steps", "tests,bench-report"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    steps = {s["step"]: s for s in json.loads((tmp_path / "summary.json").read_text())["steps"]}
    assert steps["tests"]["status"] == "missing"
    assert any("torch sees no CUDA GPU" in note for note in steps["tests"]["notes"])
    assert steps["bench-report"]["status"] == "missing"
    assert any("the benchmarks wrote no" in note for note in steps["bench-report"]["notes"])
    assert "tests" in (tmp_path / "summary.txt").read_text()


def test_a_step_that_fails_times_out_or_has_no_time_left_is_recorded(tmp_path):
    gpu_check = _gpu_check()
    step, command, run_step = gpu_check["Step"], gpu_check["Command"], gpu_check["run_step"]
    failing = step("failing", "fails after a pytest summary", cap_s=60, commands=[command(
        [sys.executable, "-c", "print('1 failed, 2 passed in 0.10s'); raise SystemExit(1)"])])
    slow = step("slow", "outlives its cap", cap_s=1,
                commands=[command([sys.executable, "-c", "import time; time.sleep(60)"])])
    record = run_step(failing, str(tmp_path), time.monotonic() + 600)
    assert record["status"] == "failed" and record["pytest"] == {"failed": 1, "passed": 2}, record
    assert "exit status 1" in (tmp_path / "failing.log").read_text()
    record = run_step(slow, str(tmp_path), time.monotonic() + 600)
    assert record["status"] == "timed out" and record["seconds"] < 30, record
    assert run_step(failing, str(tmp_path), time.monotonic() + 5)["status"] == "not run"


def test_sanitizer_runs_one_conv_and_one_mixbn_case_per_gpu_backend():
    gpu_check = _gpu_check()
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          *gpu_check["PARITY_FILES"], "-k", gpu_check["SANITIZER_CASES"]],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    selected = sorted(line for line in run.stdout.splitlines() if "::" in line)
    assert selected == sorted(
        f"{file}::{test}[{backend}-{case}]" for backend in ("triton", "cuda") for file, test, case in (
            ("tests/test_aw_conv2d.py", "test_parity_output_and_all_gradients", "K2-filter-bias-3x3"),
            ("tests/test_mix_batch_norm.py", "test_parity_output_gradients_and_running_stats", "train-K2-hard"))), \
        selected


def test_pytest_counts_are_read_from_the_last_summary_line():
    log = ("tests/test_x.py ..F\n2 passed in 1.00s\n"
           "FAILED tests/test_x.py::test_c\n3 failed, 120 passed, 4 skipped, 1 error in 12.30s\n")
    assert _gpu_check()["pytest_counts"](log) == {"failed": 3, "passed": 120, "skipped": 4, "errors": 1}
    assert _gpu_check()["pytest_counts"]("no tests ran\n") == {}
