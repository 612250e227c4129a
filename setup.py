"""Builds the awkernels C++ extension (`awkernels._C`) with torch's cpp_extension.

The CPU part is always attempted; if it cannot be compiled (no compiler, say) the install still succeeds as
pure Python (reference and triton backends) with a warning. The CUDA part is built when there are CUDA
sources, a CUDA build of torch and nvcc; AWNET_BUILD_CUDA=0/1 forces it off/on. What was built, and why a
part is missing, goes to awkernels/_build_info.json beside the library (read by awkernels.build_info()).
"""
import glob
import json
import os
import warnings

import torch
from setuptools import setup
from torch.utils import cpp_extension

EXTENSION = "awkernels._C"
ROOT = os.path.dirname(os.path.abspath(__file__))


def cuda_plan() -> tuple[list[str], str | None]:
    """The CUDA sources to build, or none and the reason."""
    flag = os.environ.get("AWNET_BUILD_CUDA")
    if flag == "0":
        return [], "disabled by AWNET_BUILD_CUDA=0"
    sources = sorted(glob.glob("csrc/cuda/*.cu"))
    if not sources:
        reason = "this version has no CUDA kernels (csrc/cuda/ is empty)"
    elif torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU build"
    elif cpp_extension.CUDA_HOME is None:
        reason = "nvcc not found (set CUDA_HOME)"
    else:
        return sources, None
    if flag == "1":
        raise RuntimeError(f"AWNET_BUILD_CUDA=1 but the CUDA part cannot be built: {reason}")
    return [], reason


CUDA_SOURCES, CUDA_REASON = cuda_plan()


class BuildExtension(cpp_extension.BuildExtension):
    def build_extensions(self):
        record = {
            "torch": torch.__version__,
            "cpu": {"built": True, "reason": None},
            "cuda": {"built": bool(CUDA_SOURCES), "archs": [], "reason": CUDA_REASON},
        }
        try:
            super().build_extensions()
        except Exception as error:  # any failure must still leave a working pure-Python install
            warnings.warn(f"awkernels: the C++ extension was not built ({error}); only the reference and "
                          "triton backends will be available")
            record["cpu"] = {"built": False, "reason": f"compiling the extension failed: {error}"}
            record["cuda"] = {"built": False, "archs": [], "reason": "the extension was not built"}
        # Beside the built library (wheels) and in the source tree (editable installs load from there).
        for target in {os.path.dirname(self.get_ext_fullpath(EXTENSION)), os.path.join(ROOT, "awkernels")}:
            os.makedirs(target, exist_ok=True)
            with open(os.path.join(target, "_build_info.json"), "w") as f:
                json.dump(record, f, indent=2)


sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/autograd/*.cpp"))
extension = cpp_extension.CppExtension(EXTENSION, sources, extra_compile_args={"cxx": ["-O3"]})

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
