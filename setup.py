"""Builds the awkernels C++ extension (`awkernels._C`) with torch's cpp_extension.

The CPU part is always attempted; if it cannot be compiled (no compiler, say) the install still succeeds as
pure Python (reference and triton backends) with a warning. The CUDA part is built when there are CUDA
sources, a CUDA build of torch and nvcc; AWNET_BUILD_CUDA=0/1 forces it off/on. What was built, and why a
part is missing, goes to awkernels/_build_info.json beside the library (read by awkernels.build_info()).
"""
import glob
import json
import os
import shutil
import warnings

import torch
from setuptools import setup
from torch.utils import cpp_extension

EXTENSION = "awkernels._C"
ROOT = os.path.dirname(os.path.abspath(__file__))
RECORD = "_build_info.json"


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
        self.built = True
        try:
            super().build_extensions()
        except Exception as error:  # any failure must still leave a working pure-Python install
            warnings.warn(f"awkernels: the C++ extension was not built ({error}); only the reference and "
                          "triton backends will be available")
            self.built = False
            record["cpu"] = {"built": False, "reason": f"compiling the extension failed: {error}"}
            record["cuda"] = {"built": False, "archs": [], "reason": "the extension was not built"}
        self.record_file = os.path.join(os.path.dirname(self.get_ext_fullpath(EXTENSION)), RECORD)
        os.makedirs(os.path.dirname(self.record_file), exist_ok=True)
        with open(self.record_file, "w") as f:
            json.dump(record, f, indent=2)

    def copy_extensions_to_source(self):
        # Editable and --inplace builds load from the source tree: the record goes with the library.
        if self.built:
            super().copy_extensions_to_source()
        shutil.copyfile(self.record_file, os.path.join(ROOT, "awkernels", RECORD))


sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/autograd/*.cpp"))
extension = cpp_extension.CppExtension(EXTENSION, sources, extra_compile_args={"cxx": ["-O3"]})

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
