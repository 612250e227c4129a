"""Every Triton kernel, with every autotune configuration and in every dtype it serves, compiles for Hopper
(sm_90) and Ampere (sm_80) on this GPU-less machine, with no register spills, within a block's shared
memory, and with its main-loop dots on wgmma where Hopper can use it (DESIGN.md section 10). Planted
faults show that the same checks fail.

CI runs this file under the triton the tests use and again under triton 3.6, the GPU machines' version
(AWNET_EXPECT_TRITON names the version a run must be under, so a PYTHONPATH that did not take is caught).
"""
import os
import sys
import time

import pytest

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from awkernels import inspect  # noqa: E402
from awkernels.triton import aw_conv2d, epilogue, mix_batch_norm  # noqa: E402
from awkernels.triton.config import CANDIDATES  # noqa: E402

ARCHS = (90, 80)
# AW-Net's models use K = 1 (the regulation signal) and K = 2 (clean and adversarial banks). K = 3, padded to
# 4 banks, would double the time of the matrix (mostly ptxas on the weight-gradient kernel, which spills
# there), past what CI's two cores can spare; `python -m awkernels.inspect --all --arch 90 80` covers it.
BANKS = (1, 2)
PROCESSES = len(os.sched_getaffinity(0))  # two on CI's machine

# Main-loop dots that stay on mma_v2 on sm_90, and why: (kernel, BLOCK_M) -> reason. Every other
# configuration's dot must lower to warp_group_dot (wgmma).
NO_WGMMA = {
    (kernel, 32): "32-row tiles serve narrow layers; a wgmma instruction covers 64 rows (M % 64 == 0)"
    for kernel in ("conv.forward", "conv.input_grad", "conv.weight_coeff_grad")
}


@pytest.fixture(scope="module")
def compiled():
    start = time.perf_counter()
    results = inspect.compile_all(inspect.jobs(ARCHS, every_variant=True, banks=BANKS), PROCESSES)
    return results, time.perf_counter() - start


IEEE_FLOAT32 = "IEEE float32 dots (TF32 off) run on the FMA units: no tensor-core instruction takes float32 whole"


def wgmma_mismatches(results):
    """Main-loop dots on sm_90 whose lowering (wgmma or not) is not the one NO_WGMMA expects."""
    found = []
    for r in results:
        if r.error is None and r.job.arch == 90 and inspect.registry(r.job.registry)[r.job.kernel].main_loop_dots:
            reason = (IEEE_FLOAT32 if r.job.dtype == "float32-ieee"
                      else NO_WGMMA.get((r.job.kernel, dict(r.job.tiles)["BLOCK_M"])))
            if r.wgmma == (reason is not None):
                found.append(f"{r.job.describe()}: " + (f"uses wgmma, but NO_WGMMA says {reason!r}" if r.wgmma
                                                         else "does not use wgmma, and NO_WGMMA gives no reason"))
    return found


def test_runs_under_the_expected_triton():
    expected = os.environ.get("AWNET_EXPECT_TRITON", "")
    assert triton.__version__.startswith(expected), f"triton {triton.__version__} from {triton.__file__}"


def test_every_kernel_is_in_the_matrix():
    """A new @triton.jit kernel must get an entry in awkernels.inspect.KERNELS, and every configuration the host
    can launch, in every dtype and dot precision, must be compiled."""
    # Kernels, not the @triton.jit helpers they inline (`_mma`): by name.
    kernels = {getattr(module, name).fn for module in (aw_conv2d, epilogue, mix_batch_norm) for name in dir(module)
               if hasattr(getattr(module, name), "arg_names") and name.endswith("_kernel")}
    assert kernels == {spec.fn.fn for spec in inspect.KERNELS.values()}
    jobs = inspect.jobs(ARCHS, every_variant=True, banks=BANKS)
    compiled_lists = set()
    # float32-ieee: float32 with TF32 off, the dots the host launches when torch.backends.cudnn.allow_tf32 is
    # False; some kernels have their own configurations there, or for float32 in both precisions.
    # The candidate lists are the host's (awkernels.triton: candidate_list, weight_grad_candidates per K).
    for name, spec in inspect.KERNELS.items():
        for variant in spec.variants:
            if variant.get("BANKS", 1) not in BANKS:
                continue
            for dtype in ("float32", "float32-ieee", "float16", "bfloat16"):
                if dtype == "float32-ieee" and not spec.main_loop_dots:
                    continue  # no dot: one float32
                kind = spec.candidates(dtype, variant)
                if kind is None:  # fixed tiles
                    continue
                compiled_lists.add(kind)
                for cfg in CANDIDATES[kind]:
                    tiles = tuple(cfg.tiles().items())
                    for arch in ARCHS:
                        assert any(j.kernel == name and j.variant == tuple(variant.items()) and j.tiles == tiles
                                   and j.num_warps == cfg.num_warps and j.num_stages == cfg.num_stages
                                   and j.arch == arch and j.dtype == dtype for j in jobs), (name, cfg, arch, dtype)
    assert compiled_lists == set(CANDIDATES), f"lists no dtype reaches: {set(CANDIDATES) - compiled_lists}"


def test_every_configuration_compiles_without_spills_within_shared_memory(compiled, capsys):
    results, seconds = compiled
    failures = [f"{r.job.describe()}: {p}" for r in results for p in inspect.problems(r)]
    with capsys.disabled():  # the summary goes to CI's log, failing or not
        everything = failures + wgmma_mismatches(results)
        print(f"\ncompiled {len(results) // len(ARCHS)} kernel configurations for "
              f"{' and '.join(f'sm_{a}' for a in ARCHS)} under triton {triton.__version__} "
              f"({len(results)} compiles in {seconds:.0f} s), {len(everything)} failures", file=sys.stderr)
        for failure in everything:
            print(f"  {failure}", file=sys.stderr)
    assert not failures, "\n".join(failures)


def test_main_loop_dots_use_wgmma_on_hopper(compiled):
    assert not wgmma_mismatches(compiled[0])


# Planted faults, in a small matmul kernel: a configuration that does not compile (tl.arange needs a power of
# two), one whose pipeline needs more shared memory than a block may have, one that spills registers, and one
# whose dot cannot use wgmma (2 warps) with no reason in NO_WGMMA; beside them a sound configuration.
@triton.jit
def _planted_matmul(a_ptr, b_ptr, c_ptr, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_m, offs_n, offs_k = tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(a_ptr + offs_m[:, None] * K + (k + offs_k)[None, :])
        b = tl.load(b_ptr + (k + offs_k)[:, None] * BLOCK_N + offs_n[None, :])
        acc += tl.dot(a, b)
    tl.store(c_ptr + offs_m[:, None] * BLOCK_N + offs_n[None, :], acc.to(c_ptr.dtype.element_ty))


PLANTED_CONFIGS = {  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) -> the problem it must be reported with
    (64, 64, 32, 4, 3): None,
    (64, 64, 24, 4, 3): "does not compile: ",
    (64, 256, 256, 8, 3): "bytes of shared memory, over",
    (128, 256, 128, 8, 3): "spills registers",
    (64, 64, 32, 2, 3): "does not use wgmma",
}
PLANTED = {"planted_matmul": inspect.KernelSpec(
    _planted_matmul, lambda element, variant: {name: f"*{element}" for name in ("a_ptr", "b_ptr", "c_ptr")},
    lambda dtype, variant: {}, variants=({},), main_loop_dots=True,
    configs=tuple((dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k), w, s) for m, n, k, w, s in PLANTED_CONFIGS))}


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm_{a}")
def test_planted_faults_are_caught(arch):
    planted = [job for job in inspect.jobs((arch,), kernels=f"{__name__}:PLANTED") if job.dtype == "bfloat16"]
    results = inspect.compile_all(planted, PROCESSES)
    for result in results:
        config = (*(v for _, v in result.job.tiles), result.job.num_warps, result.job.num_stages)
        found, expected = inspect.problems(result) + wgmma_mismatches([result]), PLANTED_CONFIGS[config]
        if expected is None or ("wgmma" in expected and arch != 90):  # only Hopper has wgmma
            assert found == [], (config, found)
        else:
            assert len(found) == 1 and expected in found[0], (config, found)
    assert "arange's range must be a power of 2" in next(r.error for r in results if r.error)
