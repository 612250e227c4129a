"""The CUDA part of the extension: when the build record says it was built, the library loaded and every op
has a CUDA kernel. It compiles without a GPU (DESIGN.md section 9), so CI checks this on every run, with
AWNET_REQUIRE_CUDA_BUILD=1 so that a missing CUDA part fails here instead of skipping. Running the kernels
needs a GPU: the parity suites cover backend 'cuda' where one is available."""
import importlib.util
import os
import shutil
import subprocess

import pytest
import torch

import awkernels
from awkernels import _extension

OPS = ("aw_conv2d", "aw_conv2d_backward", "mix_batch_norm", "mix_batch_norm_backward")


@pytest.fixture
def cuda_record() -> dict:
    record = _extension._record["cuda"]
    if not record["built"]:
        reason = f"the CUDA part of the extension was not built: {record['reason']}"
        if os.environ.get("AWNET_REQUIRE_CUDA_BUILD") == "1":
            pytest.fail(f"AWNET_REQUIRE_CUDA_BUILD=1 but {reason}")
        pytest.skip(reason)
    return record


def test_cuda_library_loaded(cuda_record):
    info = awkernels.build_info()
    assert info["library"] is not None and info["cuda"], info
    assert info["cuda_archs"] == cuda_record["archs"] != [], info


@pytest.mark.parametrize("op", OPS)
def test_op_has_a_cuda_kernel(cuda_record, op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"awnet::{op}", "CUDA")


def _cuobjdump() -> str | None:
    """cuobjdump from a CUDA toolkit, or the copy in the triton wheel (which torch's CUDA build installs)."""
    spec = importlib.util.find_spec("triton")
    bundled = spec and os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin", "cuobjdump")
    return shutil.which("cuobjdump") or (bundled if bundled and os.path.exists(bundled) else None)


def test_kernels_compiled_for_every_recorded_arch(cuda_record):
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or triton wheel) to list the library's cubins")
    listing = subprocess.run([tool, "--list-elf", awkernels.build_info()["library"]], capture_output=True,
                             text=True, check=True).stdout
    for arch in cuda_record["archs"]:  # "9.0", "9.0a", "8.6+PTX"
        assert f".sm_{arch.split('+')[0].replace('.', '')}.cubin" in listing, listing
