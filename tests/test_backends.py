"""Backend selection, the build record, and torch.compile over the registered ops."""
import os
import subprocess
import sys

import pytest
import torch

import awkernels
from conftest import backend_device


def test_required_backends_are_available():
    # CI names the backends its install must have, so a failed build fails here instead of skipping.
    required = [n for n in os.environ.get("AWNET_REQUIRE_BACKENDS", "reference").split(",") if n]
    missing = [n for n in required if n not in awkernels.available_backends()]
    assert not missing, f"missing backends {missing}; build_info: {awkernels.build_info()}"


def test_build_info_explains_every_missing_part():
    info = awkernels.build_info()
    assert {"cpu", "cuda", "cuda_archs", "cuda_available", "reasons", "torch"} <= set(info)
    for part in ("cpu", "cuda", "cuda_available"):
        assert info[part] == (info["reasons"][part] is None), info
    # "cuda": compiled in (no GPU needed); "cuda_available": it can run here too.
    assert bool(info["cuda_archs"]) == info["cuda"] and (info["cuda"] or not info["cuda_available"]), info
    assert ("cpp" in awkernels.available_backends()) == info["cpu"]
    assert ("cuda" in awkernels.available_backends()) == info["cuda_available"]


def test_use_backend_is_a_scoped_choice():
    before = awkernels.current_backend()
    with awkernels.use_backend("reference"):
        assert awkernels.current_backend() == "reference"
    assert awkernels.current_backend() == before
    with pytest.raises(ValueError, match="backend must be one of"):
        awkernels.use_backend("cudnn")
    assert awkernels.current_backend() == before


def test_unknown_backend_in_environment_is_refused_naming_the_variable():
    env = dict(os.environ, AWNET_BACKEND="fastest")
    code = "import awkernels, torch; awkernels.aw_conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 3, 3), torch.ones(1, 1))"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "the environment variable AWNET_BACKEND must be one of" in run.stderr and "'fastest'" in run.stderr
    # Importing is not using: the package (and `awnet --help`) still loads.
    run = subprocess.run([sys.executable, "-c", "import awkernels, awnet"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif("cpp" not in awkernels.available_backends(), reason="the C++ extension is not built")
def test_auto_uses_cpp_on_cpu_and_cpp_refuses_other_devices():
    from awkernels import _backend

    x = torch.empty(2, 3, 4, 4)
    with awkernels.use_backend("auto"):
        assert _backend.resolve(x) == "cpp"
    with awkernels.use_backend("cpp"), pytest.raises(ValueError, match="'cpp' runs on CPU tensors"):
        _backend.resolve(x.to("meta"))


def test_cuda_backend_refuses_cpu_tensors(monkeypatch):
    from awkernels import _backend

    # Pretend the CUDA backend is available, so that this runs on machines without a GPU as well.
    monkeypatch.setattr(_backend, "available_backends", lambda: ["reference", "cpp", "cuda"])
    with awkernels.use_backend("cuda"), pytest.raises(ValueError, match="'cuda' runs on CUDA tensors"):
        _backend.resolve(torch.empty(2, 3, 4, 4))


@pytest.mark.skipif("cuda" not in awkernels.available_backends(), reason="needs the CUDA extension and a GPU")
def test_cuda_backend_runs_cuda_tensors():
    from awkernels import _backend

    x = torch.empty(2, 3, 4, 4, device="cuda")
    with awkernels.use_backend("cuda"):
        assert _backend.resolve(x) == "cuda"
    with awkernels.use_backend("auto"):  # the faster of the two on an H100, triton's kernels included
        assert _backend.resolve(x) == "cuda"


def _conv_and_bn(x, weight, coeff, bias, gamma, beta, running_mean, running_var):
    y = awkernels.aw_conv2d(x, weight, coeff, bias, stride=1, padding=1)
    y = awkernels.mix_batch_norm(y, coeff[:, :, 0], gamma, beta, running_mean, running_var, True, 0.1, 1e-5)
    return y.square().mean()


# Inductor also checks that the fake kernels promise the layouts the real ones produce.
@pytest.mark.parametrize("backend,compiler", [(b, "aot_eager") for b in awkernels.available_backends() + ["auto"]]
                         + [("cpp", "inductor")] * ("cpp" in awkernels.available_backends()))
def test_compile_fullgraph_matches_eager(backend, compiler):
    torch.manual_seed(0)
    device = backend_device("cuda" if backend == "auto" and torch.cuda.is_available() else backend)
    inputs = [torch.randn(2, 3, 6, 6), torch.randn(2, 4, 3, 3, 3), torch.rand(2, 2, 4) + 0.5,
              torch.randn(2, 4), torch.rand(2, 4) + 0.5, torch.randn(2, 4)]
    results = []
    for fn in (_conv_and_bn, torch.compile(_conv_and_bn, fullgraph=True, backend=compiler)):
        leaves = [t.to(device, copy=True).requires_grad_() for t in inputs]
        stats = [torch.zeros(2, 4, device=device), torch.ones(2, 4, device=device)]
        torch._dynamo.reset()
        with awkernels.use_backend(backend):
            loss = fn(*leaves, *stats)
        loss.backward()
        results.append([loss, *(t.grad for t in leaves), *stats])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif("triton" not in awkernels.available_backends(), reason="needs triton (GPU or TRITON_INTERPRET=1)")
@pytest.mark.parametrize("banks,groups,reason", [(2, 2, "groups=1, not groups=2"),
                                                 (9, 1, "K <= 8, not 9")])
def test_triton_falls_back_for_cases_it_does_not_serve_and_says_why(caplog, banks, groups, reason):
    from awkernels import _strategy

    _strategy.clear()  # a choice is made (and said) once per distinct call
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, weight, coeff = torch.randn(2, 4, 5, 5, device=device), torch.randn(banks, 6, 4 // groups, 3, 3, device=device), \
        torch.rand(2, banks, device=device)
    with caplog.at_level("WARNING", logger="awkernels"), awkernels.use_backend("triton"):
        y = awkernels.aw_conv2d(x, weight, coeff, groups=groups)
    assert reason in caplog.text
    expected = awkernels.reference.aw_conv2d(x, weight, coeff, None, (1, 1), (0, 0), (1, 1), groups)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", awkernels.available_backends())
def test_aw_conv2d_follows_autocast_like_conv2d(backend):
    device = backend_device(backend)
    x, weight, coeff = (torch.randn(2, 3, 6, 6, device=device), torch.randn(2, 4, 3, 3, 3, device=device),
                        torch.rand(2, 2, 4, device=device))
    bias = torch.randn(2, 4, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16), awkernels.use_backend(backend):
        y = awkernels.aw_conv2d(x, weight, coeff, bias, padding=1)
        static = torch.nn.functional.conv2d(x, weight[0], bias[0], padding=1)
    assert y.dtype == static.dtype == torch.bfloat16
    expected = awkernels.reference.aw_conv2d(x, weight, coeff, bias, (1, 1), (1, 1), (1, 1), 1)
    torch.testing.assert_close(y.float(), expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())
