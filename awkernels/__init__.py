"""awkernels: the AW-Net operators (per-sample weight-varied convolution and MixBN) and their backends.

One op contract (DESIGN.md section 2), several backends: `reference` (plain PyTorch, the oracle), `cpp`
and `cuda` (the C++ extension on CPU and GPU), `triton`. A backend is a set of strategies (how the op is
computed: scaled, stacked, epilogue, blend, grouped); `auto` picks the strategy per call from measured
winners, and `explain(...)` says which and why.
"""
from ._backend import available_backends, current_backend, use_backend
from ._extension import build_info
from ._strategy import STRATEGIES, explain
from .aw_conv2d import aw_conv2d
from .mix_batch_norm import mix_batch_norm

__all__ = [
    "aw_conv2d",
    "available_backends",
    "build_info",
    "explain",
    "current_backend",
    "mix_batch_norm",
    "STRATEGIES",
    "use_backend",
]
