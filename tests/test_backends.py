"""Backend selection, the build record, and torch.compile over the registered ops."""
import os
import subprocess
import sys

import pytest
import torch

import awkernels


def test_required_backends_are_available():
    # CI names the backends its install must have, so a failed build fails here instead of skipping.
    required = [n for n in os.environ.get("AWNET_REQUIRE_BACKENDS", "reference").split(",") if n]
    missing = [n for n in required if n not in awkernels.available_backends()]
    assert not missing, f"missing backends {missing}; build_info: {awkernels.build_info()}"


def test_build_info_explains_every_missing_part():
    info = awkernels.build_info()
    assert {"cpu", "cuda", "cuda_archs", "reasons", "torch"} <= set(info)
    for part in ("cpu", "cuda"):
        assert info[part] == (info["reasons"][part] is None), info
    assert ("cpp" in awkernels.available_backends()) == info["cpu"]


def test_use_backend_is_a_scoped_choice():
    before = awkernels.current_backend()
    with awkernels.use_backend("reference"):
        assert awkernels.current_backend() == "reference"
    assert awkernels.current_backend() == before
    with pytest.raises(ValueError, match="backend must be one of"):
        awkernels.use_backend("cudnn")
    assert awkernels.current_backend() == before


def test_unknown_backend_in_environment_is_refused():
    env = dict(os.environ, AWNET_BACKEND="fastest")
    run = subprocess.run([sys.executable, "-c", "import awkernels"], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "backend must be one of" in run.stderr


@pytest.mark.skipif("cpp" not in awkernels.available_backends(), reason="the C++ extension is not built")
def test_auto_uses_cpp_on_cpu_and_cpp_refuses_other_devices():
    from awkernels import _backend

    x = torch.empty(2, 3, 4, 4)
    with awkernels.use_backend("auto"):
        assert _backend.resolve(x) == "cpp"
    with awkernels.use_backend("cpp"), pytest.raises(ValueError, match="'cpp' runs on CPU tensors"):
        _backend.resolve(x.to("meta"))


def _conv_and_bn(x, weight, coeff, bias, gamma, beta, running_mean, running_var):
    y = awkernels.aw_conv2d(x, weight, coeff, bias, stride=1, padding=1)
    y = awkernels.mix_batch_norm(y, coeff[:, :, 0], gamma, beta, running_mean, running_var, True, 0.1, 1e-5)
    return y.square().mean()


# Inductor also checks that the fake kernels promise the layouts the real ones produce.
@pytest.mark.parametrize("backend,compiler", [(b, "aot_eager") for b in awkernels.available_backends()]
                         + [("cpp", "inductor")] * ("cpp" in awkernels.available_backends()))
def test_compile_fullgraph_matches_eager(backend, compiler):
    torch.manual_seed(0)
    inputs = [torch.randn(2, 3, 6, 6), torch.randn(2, 4, 3, 3, 3), torch.rand(2, 2, 4) + 0.5,
              torch.randn(2, 4), torch.rand(2, 4) + 0.5, torch.randn(2, 4)]
    results = []
    for fn in (_conv_and_bn, torch.compile(_conv_and_bn, fullgraph=True, backend=compiler)):
        leaves = [t.clone().requires_grad_() for t in inputs]
        stats = [torch.zeros(2, 4), torch.ones(2, 4)]
        torch._dynamo.reset()
        with awkernels.use_backend(backend):
            loss = fn(*leaves, *stats)
        loss.backward()
        results.append([loss, *(t.grad for t in leaves), *stats])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
