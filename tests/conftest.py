"""Shared fixtures and helpers of the operator tests: the backend parameter and the parity check."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

# Without a GPU the triton backend runs its kernels under the interpreter, on CPU tensors (DESIGN.md
# section 10). Set before awkernels imports triton, which reads it when the kernels are defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import awkernels  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The dtype the parity suites' float32 cases run in: scripts/gpu-check runs them on a GPU in each of
# float32, tf32 (float32 tensors, TF32 matmuls and convolutions), float16 and bfloat16. float32 means IEEE
# float32, so TF32 (on by default for torch's convolutions and for float32 Triton dots) is off unless asked.
PARITY_MODE = os.environ.get("AWNET_PARITY_DTYPE", "float32")
PARITY_DTYPE = {"float32": torch.float32, "tf32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}[PARITY_MODE]
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = PARITY_MODE == "tf32"

# Parity tolerances against the float64 reference, relative to max |ref| (DESIGN.md section 2); TF32 and
# float16 keep 10 mantissa bits, bfloat16 7.
TOLERANCE = {torch.float32: 5e-3 if PARITY_MODE == "tf32" else 1e-4, torch.float64: 1e-9,
             torch.float16: 5e-3, torch.bfloat16: 2e-2}

# Named so that a backend missing from this install shows up as a skip with its reason; any other backend
# the install reports is tested too.
KNOWN_BACKENDS = ("reference", "cpp", "triton", "cuda")


@dataclass(frozen=True)
class Backend:
    name: str
    device: torch.device


def _backend_names() -> list[str]:
    return list(KNOWN_BACKENDS) + [n for n in awkernels.available_backends() if n not in KNOWN_BACKENDS]


@pytest.fixture(params=_backend_names())
def backend(request) -> Backend:
    """A backend this install runs and the device its tests put tensors on; skips (saying why) otherwise."""
    name = request.param
    if name not in awkernels.available_backends():
        reasons = {
            "cpp": "the C++ extension is not built or did not load: "
                   f"{awkernels.build_info()['reasons']['cpu']}",
            "triton": "needs triton, and a CUDA GPU or TRITON_INTERPRET=1",
            "cuda": f"needs the CUDA extension and a GPU: {awkernels.build_info()['reasons']['cuda_available']}",
        }
        pytest.skip(f"backend {name!r} not in this install ({awkernels.available_backends()}): {reasons[name]}")
    return Backend(name, backend_device(name))


def backend_device(name: str) -> torch.device:
    """The device a backend's tests put tensors on: triton runs on the CPU only under its interpreter."""
    if name == "cuda" or (name == "triton" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` as a permuted, strided view: same values, no contiguous layout."""
    order = list(range(t.dim()))[::-1]
    base = torch.empty([t.shape[d] for d in order] + [2], dtype=t.dtype, device=t.device)
    view = base[..., 0].permute(*order)
    return view.copy_(t)


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        return noncontiguous(t)
    raise ValueError(layout)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """`actual` within `tol` * max|expected| of `expected`; on failure says where and by how much."""
    assert tuple(actual.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if expected.numel() == 0:
        return
    got = actual.detach().to("cpu", torch.float64)
    ref = expected.detach().to("cpu", torch.float64)
    assert torch.isfinite(got).all(), f"{what}: {int((~torch.isfinite(got)).sum())} non-finite values"
    scale = max(ref.abs().max().item(), 1e-30)
    diff = (got - ref).abs()
    worst = int(diff.argmax())
    err = diff.flatten()[worst].item()
    if err > tol * scale:
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), ref.shape))
        raise AssertionError(
            f"{what}: max |diff| {err:.3e} = {err / scale:.3e} x max|ref| ({scale:.3e}) > tol {tol:g}; "
            f"worst at {index}: got {got[index].item():.10g}, expected {ref[index].item():.10g}; "
            f"{int((diff > tol * scale).sum())} of {ref.numel()} elements out of tolerance")


def grads(output: torch.Tensor, inputs: dict[str, torch.Tensor], grad_output: torch.Tensor) -> dict:
    """The gradients of `output` (with upstream `grad_output`) w.r.t. each named input."""
    names = list(inputs)
    values = torch.autograd.grad(output, [inputs[n] for n in names], grad_output)
    return dict(zip(names, values))
