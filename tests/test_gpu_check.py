"""scripts/gpu-check, as far as a machine without a GPU can run it: the plan (the most telling steps first,
within one device command, the steps before the parity suites within the budget), the dry run, the steps it
cannot take here reported as missing, a step's failure, timeout or lack of time recorded, a step at its cap
interrupted so pytest still writes its results, the summary rewritten after every step, the prebuilt
extension's checks, the sanitizer's selection (one conv and one MixBN case per GPU backend), and pytest's
counts read from a log."""
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
PARITY = [f"parity-{backend}-{dtype}" for backend in ("triton", "cuda")
          for dtype in ("float32", "tf32", "float16", "bfloat16")]
STEPS = ["environment", "install", "bench-conv", "bench-mixbn", "bench-train-step", "bench-report", *PARITY,
         "triton-configs", "graph-step", "sanitizer", "step-memory"]


def _gpu_check() -> dict:
    return runpy.run_path(SCRIPT)


def test_dry_run_lists_every_step_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([SCRIPT, "--dry-run", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert [line.split()[1].rstrip(":") for line in run.stdout.splitlines() if line.startswith("step ")] == STEPS
    assert run.stdout.startswith("budget: 540 s; every step: PYTHONPATH=" + REPO_ROOT)
    assert "setup.py build_ext --inplace" in run.stdout and "AWNET_BUILD_CUDA=1" in run.stdout
    conv = next(line for line in run.stdout.splitlines()
                if line.startswith("  $ ") and "bench/test_aw_conv2d.py" in line)
    for part in ("AWNET_BENCH_BATCH=128", "AWNET_BENCH_MODELS=resnet18", "AWNET_BENCH_GRAPH=1",
                 f"--benchmark-json={out}/bench/results/<device>-conv.json", "-k 'bfloat16 and not reference'"):
        assert part in conv, (part, conv)
    assert "--tool memcheck" in run.stdout and "AWNET_PARITY_DTYPE=bfloat16" in run.stdout
    assert not out.exists()


def test_the_plan_fits_one_device_command_with_the_most_telling_steps_first():
    gpu_check = _gpu_check()
    assert gpu_check["DEFAULT_BUDGET_S"] <= 540  # one command runs at most 600 s
    steps = gpu_check["plan"]("/out", dry_run=True)
    names = [s.name for s in steps]
    assert names == STEPS
    first_parity = names.index(PARITY[0])
    parity = slice(first_parity, first_parity + len(PARITY))
    assert all(s.parallel for s in steps[parity]) and not any(s.parallel for s in steps[:parity.start] + steps[parity.stop:])
    # The install step in the plan is the build (the dearer case): a run that builds still reaches parity.
    assert steps[1].cap_s >= 60
    assert sum(s.cap_s for s in steps[:first_parity]) <= gpu_check["DEFAULT_BUDGET_S"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU reports")
def test_without_a_gpu_steps_are_missing_and_the_summary_is_written(tmp_path):
    run = subprocess.run([SCRIPT, str(tmp_path), "--steps", "parity-cuda-bfloat16,bench-report"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert summary["done"] and summary["pending"] == []
    assert steps["parity-cuda-bfloat16"]["status"] == "missing"
    assert any("torch sees no CUDA GPU" in note for note in steps["parity-cuda-bfloat16"]["notes"])
    assert steps["bench-report"]["status"] == "missing"
    assert any("the benchmarks wrote none of" in note for note in steps["bench-report"]["notes"])
    assert "parity-cuda-bfloat16" in (tmp_path / "summary.txt").read_text()


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


def test_a_step_at_its_cap_is_interrupted_before_it_is_killed(tmp_path):
    """pytest writes its benchmark file and its counts on SIGINT: a cut-off step keeps what it measured."""
    gpu_check = _gpu_check()
    code = ("import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            "    print('3 passed in 2.00s'); raise SystemExit(2)")
    cap = 4  # SIGINT a quarter of the cap before it, SIGKILL at it
    slow = gpu_check["Step"]("slow", "outlives its cap", cap_s=cap,
                             commands=[gpu_check["Command"]([sys.executable, "-c", code])])
    record = gpu_check["run_step"](slow, str(tmp_path), time.monotonic() + 600)
    assert record["status"] == "timed out" and record["seconds"] < cap - 0.5, record
    assert record["pytest"] == {"passed": 3}, record


def test_the_summary_is_rewritten_after_each_step_and_a_step_without_time_is_not_run(tmp_path):
    gpu_check = _gpu_check()
    step, command = gpu_check["Step"], gpu_check["Command"]
    summary = tmp_path / "summary.json"
    # The second step passes only if the summary already records the first; it leaves under 30 s.
    reads_summary = ("import json, sys, time; s = json.load(open(sys.argv[1])); "
                     "assert [r['step'] for r in s['steps']] == ['first'] and s['pending'] == ['second', 'third'], s; "
                     "time.sleep(4)")
    steps = [step("first", "passes", cap_s=60, commands=[command([sys.executable, "-c", "pass"])]),
             step("second", "reads the summary", cap_s=60,
                  commands=[command([sys.executable, "-c", reads_summary, str(summary)])]),
             step("third", "would pass", cap_s=60, commands=[command([sys.executable, "-c", "pass"])])]
    records = gpu_check["run_plan"](steps, str(tmp_path), budget=gpu_check["MIN_STEP_S"] + 3)
    assert [(r["step"], r["status"]) for r in records] == [
        ("first", "passed"), ("second", "passed"), ("third", "not run")], records
    written = json.loads(summary.read_text())
    assert written["done"] and [r["status"] for r in written["steps"]] == ["passed", "passed", "not run"]
    assert "3 of 3 steps" in (tmp_path / "summary.txt").read_text()


def test_a_prebuilt_extension_is_used_only_for_this_torch_python_and_arch(tmp_path):
    gpu_check = _gpu_check()
    judge, library = gpu_check["judge_prebuilt"], "/repo/awkernels/_C.so"
    good = {"torch": "2.11.0+cu130", "built_with_torch": "2.11.0+cu130", "library": library, "cuda": True,
            "cuda_archs": ["9.0"], "reasons": {"cpu": None, "cuda": None}}
    assert judge(good, "9.0", library) is None
    assert "torch 2.14.1" in judge({**good, "built_with_torch": "2.14.1"}, "9.0", library)
    assert "_build_info.json is missing" in judge({**good, "built_with_torch": None}, "9.0", library)
    assert "loads None" in judge({**good, "library": None, "reasons": {"cpu": "undefined symbol", "cuda": None}},
                                 "9.0", library)
    assert "no CUDA part" in judge({**good, "cuda": False, "reasons": {"cpu": None, "cuda": "disabled"}}, "9.0",
                                   library)
    assert "this GPU is 8.0" in judge(good, "8.0", library)
    assert gpu_check["prebuilt_unusable"]("9.0", str(tmp_path)).startswith("there is no awkernels/_C.cpython")


def test_sanitizer_runs_cases_that_launch_every_kernel_on_each_gpu_backend():
    gpu_check = _gpu_check()
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          *gpu_check["PARITY_FILES"], "-k", gpu_check["SANITIZER_CASES"]],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    selected = sorted(line for line in run.stdout.splitlines() if "::" in line)
    assert selected == sorted(
        f"{file}::{test}[{backend}-{case}]" for backend in ("triton", "cuda") for file, test, case in (
            ("tests/test_aw_conv2d.py", "test_parity_output_and_all_gradients", "K2-filter-bias-3x3"),
            ("tests/test_aw_conv2d.py", "test_parity_output_and_all_gradients", "K1-filter-1x1-nobias"),
            ("tests/test_aw_conv2d.py", "test_parity_output_and_all_gradients", "K2-filter-10x10-p1"),
            ("tests/test_mix_batch_norm.py", "test_parity_output_gradients_and_running_stats", "train-K2-hard"))), \
        selected


def test_pytest_counts_are_read_from_the_last_summary_line():
    log = ("tests/test_x.py ..F\n2 passed in 1.00s\n"
           "FAILED tests/test_x.py::test_c\n3 failed, 120 passed, 4 skipped, 1 error in 12.30s\n")
    assert _gpu_check()["pytest_counts"](log) == {"failed": 3, "passed": 120, "skipped": 4, "errors": 1}
    assert _gpu_check()["pytest_counts"]("no tests ran\n") == {}
