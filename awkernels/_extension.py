"""Loading the compiled extension (`awkernels/_C*.so`) and saying what it holds.

setup.py writes `_build_info.json` beside the library: which parts it compiled and why a part is missing.
The library registers the `awnet::` ops from C++ (TORCH_LIBRARY); their fake (shape-only) implementations
are registered here so torch.compile can trace them.
"""
from __future__ import annotations

import glob
import json
import os

import torch
from torch._prims_common import suggest_memory_format

_HERE = os.path.dirname(os.path.abspath(__file__))


def _read_build_record() -> dict:
    path = os.path.join(_HERE, "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"cpu": {"built": False, "reason": "no build record: the package was not installed with setup.py"},
                "cuda": {"built": False, "archs": [], "reason": "no build record"}}


def _load() -> tuple[str | None, str | None]:
    libraries = sorted(glob.glob(os.path.join(_HERE, "_C*.so")) + glob.glob(os.path.join(_HERE, "_C*.pyd")))
    if not libraries:
        return None, "the compiled extension awkernels/_C is missing"
    try:
        torch.ops.load_library(libraries[0])
    except OSError as error:  # built against another torch, or a missing CUDA runtime
        return None, f"loading {libraries[0]} failed: {error}"
    return libraries[0], None


_record = _read_build_record()
_library, _load_error = _load()


def has_cpu() -> bool:
    return _library is not None


def has_cuda() -> bool:
    """The CUDA part is compiled in and loaded (which needs no GPU)."""
    return _library is not None and bool(_record["cuda"]["built"])


def cuda_available() -> bool:
    """The CUDA part can run: it is built and torch sees a GPU."""
    return has_cuda() and torch.cuda.is_available()


def build_info() -> dict:
    """What this install compiled, what loaded, and why a part is missing. "cuda" says the CUDA part is
    compiled in (archs "cuda_archs"), "cuda_available" that it can also run here (a GPU is visible)."""
    cpu_reason = _record["cpu"]["reason"] if not _record["cpu"]["built"] else _load_error
    cuda = _record["cuda"]
    return {
        "cpu": has_cpu(),
        "cuda": has_cuda(),
        "cuda_archs": list(cuda.get("archs", [])) if has_cuda() else [],
        "cuda_available": cuda_available(),
        "reasons": {
            "cpu": None if has_cpu() else cpu_reason,
            "cuda": None if has_cuda() else (cuda.get("reason") or cpu_reason),
            "cuda_available": None if cuda_available() else (
                "the CUDA part is not built" if not has_cuda() else "torch.cuda.is_available() is False"),
        },
        "library": _library,
        "torch": torch.__version__,
        "built_with_torch": _record.get("torch"),
    }


def _grads(x: torch.Tensor, others, output_mask) -> tuple:
    """Fake gradients as the C++ backwards lay them out: dx like x's memory format, the rest contiguous,
    and an empty tensor for each gradient not asked for."""
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))
    grads = [dx] + [t.new_empty(t.shape) if t is not None else None for t in others]
    return tuple(g if needed and g is not None else x.new_empty((0,)) for g, needed in zip(grads, output_mask))


if _library is not None:

    def _conv_output(x, weight, stride, padding, dilation, channels):
        sizes = [x.shape[0], channels]
        for i in range(2):
            k = weight.shape[3 + i]
            sizes.append((x.shape[2 + i] + 2 * padding[i] - dilation[i] * (k - 1) - 1) // stride[i] + 1)
        # The C++ op writes its outputs in x's suggested memory format.
        return torch.empty(sizes, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))

    @torch.library.register_fake("awnet::aw_conv2d")
    def _aw_conv2d_fake(x, weight, coeff, bias, stride, padding, dilation, groups):
        return _conv_output(x, weight, stride, padding, dilation, weight.shape[1])

    @torch.library.register_fake("awnet::aw_conv2d_forward")
    def _aw_conv2d_forward_fake(x, weight, coeff, bias, stride, padding, dilation, groups):
        return (_conv_output(x, weight, stride, padding, dilation, weight.shape[1]),
                _conv_output(x, weight, stride, padding, dilation, weight.shape[0] * weight.shape[1]))

    @torch.library.register_fake("awnet::aw_conv2d_backward")
    def _aw_conv2d_backward_fake(grad_y, x, weight, coeff, bias, saved, stride, padding, dilation, groups,
                                 output_mask):
        return _grads(x, (weight, coeff, bias), output_mask)

    @torch.library.register_fake("awnet::mix_batch_norm")
    def _mix_batch_norm_fake(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps):
        acc = torch.promote_types(x.dtype, torch.float32)
        stats = x.new_empty(weight.shape, dtype=acc)
        moments = x.new_empty(x.shape[:2] if training else (0,), dtype=acc)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))
        return y, stats, torch.empty_like(stats), moments, torch.empty_like(moments)

    @torch.library.register_fake("awnet::mix_batch_norm_backward")
    def _mix_batch_norm_backward_fake(grad_y, x, coeff, weight, bias, mean, invstd, sample_mean, sample_var,
                                      training, eps, output_mask):
        return _grads(x, (coeff, weight, bias), output_mask)
