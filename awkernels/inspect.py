"""Compile every Triton kernel of awkernels for GPUs this machine need not have, and report what the
compiler and ptxas say of each: registers, spills, shared memory, whether its dots became wgmma, and the
occupancy these allow on an H100 (DESIGN.md section 10).

    python -m awkernels.inspect [--arch 90 80] [--all] [--processes N] [--out FILE]

Each kernel is compiled with every configuration in `CANDIDATES` (the ones its autotuner may pick) and in
every dtype it serves, with `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`: no GPU
and no driver needed. By default each kernel's default code path is compiled (BANKS = 2, every optional
input and output on); `--all` adds every variant that changes the code (BANKS 1, 2, 3 and the HAS_* and
NEED_* switches), which tests/test_triton_compile.py checks for BANKS 1 and 2. The convolution kernels are
compiled for 3x3 filters. Launches specialise pointer arguments on 16-byte alignment (which torch's allocations
have), and so does this; integer arguments are left unspecialised (the layout-generic kernel), while a real
launch also specialises integers equal to 1 (unit strides) or divisible by 16.

Registers and spills are read from the `ptxas -v` report of the compile itself (Triton runs its bundled
ptxas with its own flags, which change allocation), shared memory from the kernel's metadata, and wgmma
from the TTGIR (`warp_group_dot`). The process exits with status 1 when a kernel fails to compile, spills,
or needs more shared memory than a block may have.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib
import io
import math
import multiprocessing
import os
import re
import sys
import time
from typing import Callable

import torch
import triton
import triton.language as tl
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .triton import aw_conv2d, epilogue, mix_batch_norm
from .triton.config import CANDIDATES, candidate_list

# float32's dots run as TF32 by default (torch's cudnn.allow_tf32) and in IEEE float32 when TF32 is off
# (awkernels.triton.config.dot_precision): two compilations of every kernel with dots.
ELEMENT = {"float32": "fp32", "float32-ieee": "fp32", "float16": "fp16", "bfloat16": "bf16"}
TORCH_DTYPE = {"float32": torch.float32, "float32-ieee": torch.float32, "float16": torch.float16,
               "bfloat16": torch.bfloat16}

# The most shared memory one block may have (cudaDevAttrMaxSharedMemoryPerBlockOptin, which Triton checks at
# launch): the SM's 228 KB (sm_90) or 164 KB (sm_80) less the 1 KB the driver reserves per block.
SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}

# H100 (sm_90) per-SM limits, from the CUDA occupancy calculator's tables.
H100 = dict(registers=65536, register_unit=256, warps=64, ctas=32, shared=228 * 1024, shared_reserved=1024)


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """How to compile one kernel: its pointer types, constexprs, code-path variants and configurations."""
    fn: Callable  # the @triton.jit function
    pointers: Callable[[str, dict], dict[str, str]]  # (element type, variant) -> {argument: "*bf16", ...}
    constants: Callable[[str, dict], dict]  # (dtype, variant) -> the constexprs that are not tile sizes
    variants: tuple[dict, ...]  # code-path constexprs; the first is the default
    # (tile constexprs, num_warps, num_stages) entries; or the kernel kind in CANDIDATES whose list for each
    # dtype (config.candidate_list, as the host picks it) is compiled; or (dtype, variant) -> that list's name
    configs: tuple[tuple[dict, int, int], ...] | str | Callable[[str, dict], str]
    main_loop_dots: bool  # a tl.dot in the main loop, which should run on the tensor cores

    def candidates(self, dtype: str, variant: dict) -> str | None:
        """The CANDIDATES list the host launches this kernel's variant with in `dtype` (None: fixed tiles)."""
        if isinstance(self.configs, str):
            return candidate_list(self.configs, TORCH_DTYPE[dtype], dtype == "float32-ieee")
        return self.configs(dtype, variant) if callable(self.configs) else None

    def configs_for(self, dtype: str, variant: dict) -> tuple[tuple[dict, int, int], ...]:
        kind = self.candidates(dtype, variant)
        return self.configs if kind is None else _configs(kind)


@dataclasses.dataclass(frozen=True)
class Job:
    registry: str  # "module:NAME" of the dict of KernelSpecs that holds the kernel, for worker processes
    kernel: str
    dtype: str
    variant: tuple[tuple[str, object], ...]
    tiles: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int
    arch: int

    def describe(self) -> str:
        variant = " ".join(f"{k}={v}" for k, v in self.variant)
        tiles = "x".join(str(v) for _, v in self.tiles)
        return (f"{self.kernel} {self.dtype} [{variant}] {tiles} warps={self.num_warps} "
                f"stages={self.num_stages} sm_{self.arch}")


@dataclasses.dataclass(frozen=True)
class Result:
    job: Job
    seconds: float
    error: str | None = None
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    shared: int = 0
    wgmma: bool = False


def _configs(kind: str) -> tuple[tuple[dict, int, int], ...]:
    # samples_per_program only splits the launch grid: configurations differing in it are one kernel.
    configs = []
    for cfg in CANDIDATES[kind]:
        entry = (cfg.tiles(), cfg.num_warps, cfg.num_stages)
        if entry not in configs:
            configs.append(entry)
    return tuple(configs)


def _conv_constants(dtype: str, variant: dict, padded_banks: bool = True) -> dict:
    # As the host code sets them on a GPU: TF32 dots for float32 (torch's default), no interpreter upcast.
    padded = dict(BANKS_P2=triton.next_power_of_2(variant["BANKS"])) if padded_banks else {}
    return dict(KH=3, KW=3, ACC=tl.float32, PRECISION="tf32" if dtype == "float32" else "ieee", UPCAST=False,
                **padded, **variant)


def _same_type(*names: str) -> Callable[[str, dict], dict[str, str]]:
    return lambda element, variant: {name: f"*{element}" for name in names}


def _weight_grad_pointers(element: str, variant: dict) -> dict[str, str]:
    # dW and da are accumulated in float32; a gradient not asked for is given the weight's pointer.
    pointers = _same_type("dy_ptr", "x_ptr", "w_ptr", "a_ptr")(element, variant)
    pointers["dw_ptr"] = "*fp32" if variant["NEED_WEIGHT"] else f"*{element}"
    pointers["da_ptr"] = "*fp32" if variant["NEED_COEFF"] else f"*{element}"
    return pointers


def _mixbn_pointers(tensors: tuple[str, ...], statistics: tuple[str, ...]) -> Callable[[str, dict], dict]:
    # The per-(sample, channel) statistics and scales are float32 whatever the tensors' dtype.
    return lambda element, variant: {**{n: f"*{element}" for n in tensors}, **{n: "*fp32" for n in statistics}}


_BANKS = (2, 1, 3)  # K = 1 skips the blend, K = 3 pads the bank axis to 4
_EPILOGUE_BANKS = (2, 1)  # one accumulator per bank: the epilogue strategy serves K <= 2


def _epilogue_constants(dtype: str, variant: dict) -> dict:
    return _conv_constants(dtype, variant, padded_banks=False)


def _partial(element: str, variant: dict) -> str:
    """The element type of an output that split-K (PARTIAL) writes as float32 partial sums."""
    return "fp32" if variant["PARTIAL"] else element


def _epilogue_forward_pointers(element: str, variant: dict) -> dict[str, str]:
    return {**_same_type("x_ptr", "w_ptr", "a_ptr", "bias_ptr")(element, variant),
            "y_ptr": f"*{_partial(element, variant)}", "saved_ptr": f"*{_partial(element, variant)}"}


def _epilogue_input_grad_pointers(element: str, variant: dict) -> dict[str, str]:
    return {**_same_type("dy_ptr", "w_ptr", "a_ptr")(element, variant), "dx_ptr": f"*{_partial(element, variant)}",
            "taps_ptr": "*i32"}


KERNELS: dict[str, KernelSpec] = {
    "conv.forward": KernelSpec(
        aw_conv2d._forward_kernel, _same_type("x_ptr", "w_ptr", "a_ptr", "bias_ptr", "y_ptr"), _conv_constants,
        tuple(dict(BANKS=k, HAS_BIAS=bias) for k in _BANKS for bias in (True, False)),
        "forward", main_loop_dots=True),
    "conv.input_grad": KernelSpec(
        aw_conv2d._input_grad_kernel, _same_type("dy_ptr", "w_ptr", "a_ptr", "dx_ptr"), _conv_constants,
        tuple(dict(BANKS=k) for k in _BANKS), "input_grad", main_loop_dots=True),
    "conv.weight_coeff_grad": KernelSpec(
        aw_conv2d._weight_coeff_grad_kernel, _weight_grad_pointers,
        lambda dtype, variant: dict(_conv_constants(dtype, variant, padded_banks=False),
                                    BANKS_PER_PROGRAM=aw_conv2d.banks_per_program(variant["BANKS"])),
        tuple(dict(BANKS=k, NEED_WEIGHT=w, NEED_COEFF=c) for k in _BANKS
              for w, c in ((True, True), (True, False), (False, True))),
        lambda dtype, variant: aw_conv2d.weight_grad_candidates(variant["BANKS"], TORCH_DTYPE[dtype],
                                                                dtype == "float32-ieee"),
        main_loop_dots=True),
    "epilogue.forward": KernelSpec(
        epilogue._forward_kernel, _epilogue_forward_pointers,
        _epilogue_constants, tuple(dict(BANKS=k, HAS_BIAS=bias, KEEP=keep, PARTIAL=partial)
                                   for k in _EPILOGUE_BANKS for bias in (True, False) for keep in (True, False)
                                   for partial in (False, True)),
        "epilogue.forward", main_loop_dots=True),
    "epilogue.input_grad": KernelSpec(
        epilogue._input_grad_kernel, _epilogue_input_grad_pointers, _epilogue_constants,
        tuple(dict(BANKS=k, PARTIAL=partial) for k in _EPILOGUE_BANKS for partial in (False, True)),
        "epilogue.input_grad", main_loop_dots=True),
    "epilogue.weight_grad": KernelSpec(
        epilogue._weight_grad_kernel,
        lambda element, variant: {**_same_type("dy_ptr", "x_ptr", "a_ptr")(element, variant), "dw_ptr": "*fp32"},
        _epilogue_constants, tuple(dict(BANKS=k) for k in _EPILOGUE_BANKS), "epilogue.weight_grad",
        main_loop_dots=True),
    "epilogue.coeff_grad": KernelSpec(
        epilogue._coeff_grad_kernel, _mixbn_pointers(("dy_ptr", "saved_ptr"), ("da_ptr", "dy_sum_ptr")),
        lambda dtype, variant: dict(ACC=tl.float32, **variant),
        tuple(dict(BANKS=k, NEED_COEFF=c) for k in _EPILOGUE_BANKS for c in (True, False)),
        ((dict(BLOCK_O=epilogue._BLOCK_O, BLOCK_P=epilogue._BLOCK_P), 4, epilogue._COEFF_STAGES),),
        main_loop_dots=False),
    "mixbn.plane_sums": KernelSpec(
        mix_batch_norm._plane_sums_kernel,
        _mixbn_pointers(("x_ptr", "dy_ptr"), ("mean_ptr", "m2_ptr", "dy_sum_ptr", "dy_x_sum_ptr")),
        lambda dtype, variant: dict(ACC=tl.float32, **variant),
        tuple(dict(MOMENTS=m, GRAD_SUMS=g) for m, g in ((True, True), (True, False), (False, True))),
        "mixbn.sums", main_loop_dots=False),
    "mixbn.plane_affine": KernelSpec(
        mix_batch_norm._plane_affine_kernel,
        _mixbn_pointers(("u_ptr", "v_ptr", "out_ptr"), ("scale_u_ptr", "scale_v_ptr", "shift_ptr")),
        lambda dtype, variant: dict(ACC=tl.float32, **variant),
        tuple(dict(HAS_V=v) for v in (True, False)), "mixbn.affine", main_loop_dots=False),
}


def registry(name: str) -> dict[str, KernelSpec]:
    module, attribute = name.split(":")
    return getattr(importlib.import_module(module), attribute)


def jobs(archs=(90,), every_variant=False, banks=_BANKS, kernels="awkernels.inspect:KERNELS") -> list[Job]:
    """Every (kernel, dtype, variant, configuration) of the registry `kernels` for each arch: only default
    variants unless asked, and of the conv kernels' variants those with BANKS in `banks`."""
    return [Job(kernels, name, dtype, tuple(variant.items()), tuple(tiles.items()), warps, stages, arch)
            for arch in archs for name, spec in registry(kernels).items()
            for variant in (spec.variants if every_variant else spec.variants[:1]) if variant.get("BANKS", 1) in banks
            for dtype in ELEMENT if spec.main_loop_dots or dtype != "float32-ieee"
            for tiles, warps, stages in spec.configs_for(dtype, variant)]


def _ptxas_number(pattern: str, log: str) -> int:
    match = re.search(pattern, log)
    if match is None:
        raise RuntimeError(f"no {pattern!r} in the ptxas report:\n{log}")
    return int(match.group(1))


def compile_job(job: Job) -> Result:
    """Compiles one job (a compile error becomes the result's `error`) and reads its resources. Needs a
    process whose triton was imported with the interpreter off (see compile_all)."""
    spec = registry(job.registry)[job.kernel]
    variant = dict(job.variant)
    constexprs = {**spec.constants(job.dtype, variant), **dict(job.tiles)}
    pointers = spec.pointers(ELEMENT[job.dtype], variant)
    names = spec.fn.arg_names
    signature = {name: "constexpr" if name in constexprs else pointers.get(name, "i32") for name in names}
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in pointers}
    log = io.StringIO()
    start = time.perf_counter()
    try:
        # Triton prints ptxas's -v report when asked; always_compile makes it run ptxas (no cache hit).
        with knobs.nvidia.scope(), knobs.compilation.scope(), contextlib.redirect_stdout(log):
            knobs.nvidia.dump_ptxas_log = True
            knobs.compilation.always_compile = True
            compiled = triton.compile(ASTSource(spec.fn, signature, constexprs, attrs),
                                      target=GPUTarget("cuda", job.arch, 32),
                                      options=dict(num_warps=job.num_warps, num_stages=job.num_stages))
        report = log.getvalue()
        return Result(
            job, time.perf_counter() - start,
            registers=_ptxas_number(r"Used (\d+) registers", report),
            spill_stores=_ptxas_number(r"(\d+) bytes spill stores", report),
            spill_loads=_ptxas_number(r"(\d+) bytes spill loads", report),
            stack=_ptxas_number(r"(\d+) bytes stack frame", report),
            shared=compiled.metadata.shared, wgmma="warp_group_dot" in compiled.asm["ttgir"])
    except Exception as error:  # noqa: BLE001 - any failure to compile is a finding, reported per job
        message = f"{type(error).__name__}: {error}".strip()
        return Result(job, time.perf_counter() - start, error=message)


def compile_all(todo: list[Job], processes: int) -> list[Result]:
    """compile_job over `todo` in `processes` fresh worker processes. Under TRITON_INTERPRET=1 (the tests on a
    machine without a GPU) triton's own library functions are interpreter wrappers, which cannot compile:
    the workers start without it."""
    interpret = os.environ.pop("TRITON_INTERPRET", None)
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max(processes, 1), mp_context=context) as pool:
            return list(pool.map(compile_job, todo))
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret


def problems(result: Result) -> list[str]:
    """What keeps this kernel from running as compiled: no compile, spills, too much shared memory."""
    if result.error is not None:
        lines = result.error.strip().splitlines()  # a CompilationError: where, the source, then what
        return [f"does not compile: {lines[0]}" + (f" ... {lines[-1]}" if len(lines) > 1 else "")]
    found = []
    if result.spill_stores or result.spill_loads:
        found.append(f"spills registers ({result.spill_stores} bytes stored, {result.spill_loads} loaded)")
    limit = SHARED_LIMIT[result.job.arch]
    if result.shared > limit:
        found.append(f"needs {result.shared} bytes of shared memory, over sm_{result.job.arch}'s {limit} per block")
    return found


def h100_occupancy(result: Result) -> tuple[int, str]:
    """(CTAs per SM, what limits them) on an H100 for this kernel's registers, shared memory and warps."""
    warps = result.job.num_warps
    unit = H100["register_unit"]
    registers_per_warp = math.ceil(max(result.registers, 1) * 32 / unit) * unit
    limits = {
        "registers": H100["registers"] // registers_per_warp // warps,
        "shared memory": H100["shared"] // (result.shared + H100["shared_reserved"]),
        "warps": H100["warps"] // warps,
        "CTA slots": H100["ctas"],
    }
    limiter = min(limits, key=limits.get)
    return limits[limiter], limiter


def _versions() -> str:
    ptxas = knobs.nvidia.ptxas.version
    return f"triton {triton.__version__}, ptxas {ptxas}"


def table(results: list[Result]) -> str:
    """A markdown table of the results, then the kernels closest to each limit and every problem."""
    lines = [
        "| kernel | arch | dtype | variant | tile | warps | stages | registers | spill bytes st/ld | stack bytes "
        "| shared KB | wgmma | H100 CTAs/SM (warps) | limited by | problems |",
        "|" + " --- |" * 15,
    ]
    for r in results:
        job = r.job
        variant = " ".join(f"{k}={v}" for k, v in job.variant)
        tiles = "x".join(str(v) for _, v in job.tiles)
        head = (f"| {job.kernel} | sm_{job.arch} | {job.dtype} | {variant} | {tiles} | {job.num_warps} "
                f"| {job.num_stages} |")
        if r.error is not None:
            lines.append(f"{head}{' |' * 7} {'; '.join(problems(r))} |")
            continue
        ctas, limiter = h100_occupancy(r) if job.arch == 90 else (None, "")
        occupancy = f"{ctas} ({ctas * job.num_warps})" if ctas is not None else "n/a"
        wgmma = ("yes" if r.wgmma else "no") if registry(job.registry)[job.kernel].main_loop_dots else "no dot"
        lines.append(f"{head} {r.registers} | {r.spill_stores}/{r.spill_loads} | {r.stack} | {r.shared / 1024:.1f} "
                     f"| {wgmma} | {occupancy} | {limiter} | {'; '.join(problems(r))} |")
    return "\n".join(lines) + "\n\n" + closest_to_limits(results)


def closest_to_limits(results: list[Result], count: int = 3) -> str:
    """The `count` results nearest each limit (registers, shared memory, H100 occupancy), then every problem."""
    compiled = [r for r in results if r.error is None]
    lines = ["Closest to a limit:"]
    if compiled:
        by_registers = sorted(compiled, key=lambda r: (-r.registers, -r.spill_stores))[:count]
        lines.append("- registers (255 per thread at most): " + "; ".join(
            f"{r.job.describe()}: {r.registers}" for r in by_registers))
        by_shared = sorted(compiled, key=lambda r: -r.shared / SHARED_LIMIT[r.job.arch])[:count]
        lines.append("- shared memory: " + "; ".join(
            f"{r.job.describe()}: {r.shared / 1024:.1f} of {SHARED_LIMIT[r.job.arch] // 1024} KB" for r in by_shared))
        on_h100 = [r for r in compiled if r.job.arch == 90]
        if on_h100:
            by_occupancy = sorted(on_h100, key=lambda r: h100_occupancy(r)[0] * r.job.num_warps)[:count]
            lines.append("- H100 occupancy: " + "; ".join(
                f"{r.job.describe()}: {h100_occupancy(r)[0] * r.job.num_warps} of 64 warps "
                f"({h100_occupancy(r)[1]})" for r in by_occupancy))
    found = [(r, p) for r in results for p in problems(r)]
    lines.append(f"\nProblems: {len(found)}")
    lines += [f"- {r.job.describe()}: {p}" for r, p in found]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m awkernels.inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90], choices=sorted(SHARED_LIMIT),
                        help="compute capabilities to compile for (default: 90)")
    parser.add_argument("--all", action="store_true", help="every code-path variant, not only the defaults")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="compile in parallel")
    parser.add_argument("--out", help="write the markdown report here instead of printing it")
    args = parser.parse_args(argv)

    results = compile_all(jobs(args.arch, args.all), args.processes)
    archs = ", ".join(f"sm_{a}" for a in args.arch)
    report = (f"# Triton kernel resources: {archs}, {_versions()}\n\n"
              f"`python -m awkernels.inspect --arch {' '.join(map(str, args.arch))}{' --all' if args.all else ''}`"
              f": {len(results)} compiles. Occupancy is for an H100 (sm_90 rows).\n\n{table(results)}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)
    else:
        sys.stdout.write(report)
    failed = sum(bool(problems(r)) for r in results)
    print(f"{len(results)} compiles, {failed} with problems", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
