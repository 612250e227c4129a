"""awnet.allocator: glibc's thresholds pinned by the benchmarks and the CLI, and what a report records."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from awnet import allocator

GLIBC = platform.libc_ver()[0] == "glibc"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
    return {**env, **extra}


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's")
def test_pin_pins_glibc_and_says_so(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert allocator.pin() == allocator.PINNED_NAME
    assert allocator.describe() == allocator.PINNED_NAME


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's")
def test_dynamic_leaves_glibc_alone():
    code = "from awnet import allocator; print(allocator.pin())"
    run = subprocess.run([sys.executable, "-c", code], env=_env(AWNET_MALLOC="dynamic"),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "glibc dynamic"


@pytest.mark.parametrize("preload, name", [
    ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so.4"),
    ("/opt/lib/libfoo.so:/usr/lib/libjemalloc.so.2", "libjemalloc.so.2"),
])
def test_a_preloaded_malloc_is_named_and_left_alone(monkeypatch, preload, name):
    monkeypatch.setenv("LD_PRELOAD", preload)
    assert allocator.preloaded() == name
    assert allocator.pin() == name


def test_an_unknown_preload_is_not_a_malloc(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libfoo.so")
    assert allocator.preloaded() is None


def test_a_bad_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "fast")
    with pytest.raises(ValueError, match="AWNET_MALLOC"):
        allocator.pin()


def test_the_cli_refuses_a_bad_setting_with_a_message():
    run = subprocess.run([sys.executable, "-m", "awnet.cli", "analyze", "--help"], env=_env(AWNET_MALLOC="fast"),
                         capture_output=True, text=True)
    assert run.returncode == 0  # --help answers before anything runs
    command = [sys.executable, "-m", "awnet.cli", "analyze", "weights", "no-such-file.pt", "--out", "unused.png"]
    run = subprocess.run(command, env=_env(AWNET_MALLOC="fast"), capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "AWNET_MALLOC" in run.stderr and "Traceback" not in run.stderr, run.stderr
