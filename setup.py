"""Builds the awkernels C++ extension (`awkernels._C`) with torch's cpp_extension.

The CPU part is always attempted; if it cannot be compiled (no compiler, say) the install still succeeds as
pure Python (reference and triton backends) with a warning. The CUDA part is built when there are CUDA
sources, a CUDA build of torch and nvcc; AWNET_BUILD_CUDA=0/1 forces it off/on. It needs no GPU: it is
compiled for TORCH_CUDA_ARCH_LIST, by default sm_80 and sm_90. If it fails to compile, the CPU part is
built alone (unless AWNET_BUILD_CUDA=1 asked for it). What was built, and why a part is missing, goes to
awkernels/_build_info.json beside the library (read by awkernels.build_info()).
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


def cuda_archs() -> list[str]:
    """TORCH_CUDA_ARCH_LIST (torch's cpp_extension reads it from the environment), Ampere and Hopper by
    default: with no GPU to ask, torch would otherwise build for every arch it knows."""
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    return [arch for arch in os.environ["TORCH_CUDA_ARCH_LIST"].replace(" ", ";").split(";") if arch]


CUDA_ARCHS = cuda_archs() if CUDA_SOURCES else []


def nvidia_wheel_dir(kind: str) -> str | None:
    """site-packages/nvidia/cu<major>/<kind> of the nvidia-* wheels that the CUDA build of torch depends on:
    the CUDA runtime torch loads, and headers that ATen's CUDA headers include (cusparse.h, cublas_v2.h, ...)
    and a bare toolkit (nvcc and the runtime) may lack."""
    try:
        import nvidia
    except ImportError:
        return None
    folder = f"cu{torch.version.cuda.split('.')[0]}"
    return next((path for root in nvidia.__path__ if os.path.isdir(path := os.path.join(root, folder, kind))), None)


def make_extension(with_cuda: bool) -> cpp_extension.CppExtension:
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/autograd/*.cpp"))
    # -fopenmp: at::parallel_for is a header template over `#pragma omp parallel`; without the flag every
    # CPU kernel of the extension runs on one thread.
    cxx = ["-O3", "-fopenmp"]
    if not with_cuda:
        return cpp_extension.CppExtension(EXTENSION, sources, extra_compile_args={"cxx": cxx},
                                          extra_link_args=["-fopenmp"])
    include = nvidia_wheel_dir("include")
    extension = cpp_extension.CUDAExtension(
        EXTENSION, sources + CUDA_SOURCES, define_macros=[("AWNET_WITH_CUDA", None)],
        include_dirs=[include] if include else [], extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
        extra_link_args=["-fopenmp"])
    # Link the CUDA runtime that torch loads: CUDA_HOME's lib (derived from where nvcc is) may have none.
    runtime = f"libcudart.so.{torch.version.cuda.split('.')[0]}"
    lib = nvidia_wheel_dir("lib")
    if lib and os.path.exists(os.path.join(lib, runtime)) and "cudart" in extension.libraries:
        extension.libraries[extension.libraries.index("cudart")] = f":{runtime}"
        extension.library_dirs.append(lib)
    return extension


class BuildExtension(cpp_extension.BuildExtension):
    def build_extensions(self):
        record = {
            "torch": torch.__version__,
            "cpu": {"built": True, "reason": None},
            "cuda": {"built": bool(CUDA_SOURCES), "archs": CUDA_ARCHS, "reason": CUDA_REASON},
        }
        self.built = self.build_or_fall_back(record)
        self.record_file = os.path.join(os.path.dirname(self.get_ext_fullpath(EXTENSION)), RECORD)
        os.makedirs(os.path.dirname(self.record_file), exist_ok=True)
        with open(self.record_file, "w") as f:
            json.dump(record, f, indent=2)

    def build_or_fall_back(self, record: dict) -> bool:
        """Builds what the record plans; on failure the CPU part alone, then nothing: any failure must still
        leave a working install, unless AWNET_BUILD_CUDA=1 asked for the CUDA part."""
        try:
            super().build_extensions()
            return True
        except Exception as error:
            if os.environ.get("AWNET_BUILD_CUDA") == "1":
                raise
            if record["cuda"]["built"]:
                warnings.warn(f"awkernels: the CUDA part was not built ({error}); building the CPU part alone")
                record["cuda"] = {"built": False, "archs": [], "reason": f"compiling the CUDA part failed: {error}"}
                # The planned extension less its CUDA part, keeping what setuptools attached to it.
                vars(self.extensions[0]).update(vars(make_extension(with_cuda=False)))
                return self.build_or_fall_back(record)
            warnings.warn(f"awkernels: the C++ extension was not built ({error}); only the reference and "
                          "triton backends will be available")
            record["cpu"] = {"built": False, "reason": f"compiling the extension failed: {error}"}
            record["cuda"]["reason"] = record["cuda"]["reason"] or "the extension was not built"
            return False

    def copy_extensions_to_source(self):
        # Editable and --inplace builds load from the source tree: the record goes with the library.
        if self.built:
            super().copy_extensions_to_source()
        shutil.copyfile(self.record_file, os.path.join(ROOT, "awkernels", RECORD))


setup(ext_modules=[make_extension(with_cuda=bool(CUDA_SOURCES))],
      cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
