"""A machine without a C++ compiler still gets a working pure-Python install that says why."""
import json
import os
import shutil
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_without_compiler_leaves_a_pure_python_package(tmp_path):
    env = dict(os.environ, CC="/bin/false", CXX="/bin/false")
    env.pop("AWNET_BUILD_CUDA", None)  # =1 would make the failed CUDA part an error
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert "the C++ extension was not built" in build.stderr
    record_file = tmp_path / "lib" / "awkernels" / "_build_info.json"
    record = json.loads(record_file.read_text())
    assert record["cpu"]["built"] is False and "compiling the extension failed" in record["cpu"]["reason"]

    # The package as that build would install it: Python sources and the record, no library.
    package = tmp_path / "site" / "awkernels"
    shutil.copytree(os.path.join(ROOT, "awkernels"), package, ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    shutil.copy(record_file, package / "_build_info.json")
    probe = ("import json, torch, awkernels; "
             "y = awkernels.aw_conv2d(torch.randn(2, 3, 5, 5), torch.randn(2, 4, 3, 3, 3), torch.rand(2, 2)); "
             "print(json.dumps([awkernels.available_backends(), awkernels.build_info(), list(y.shape)]))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path / "site", capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    assert run.returncode == 0, run.stderr
    backends, info, shape = json.loads(run.stdout.strip().splitlines()[-1])
    assert "reference" in backends and "cpp" not in backends
    assert info["cpu"] is False and "compiling the extension failed" in info["reasons"]["cpu"]
    assert shape == [2, 4, 3, 3]
    assert torch.__version__ == record["torch"]
