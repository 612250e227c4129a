"""The op contract is declared once (awkernels/_contract.py): the public functions, the C++ and the Triton
implementations take its schemas' arguments, and every op's fake (what torch.compile traces) promises the
shapes, dtypes and layouts the real kernels return."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import awkernels
from awkernels import _contract

from conftest import KNOWN_BACKENDS  # noqa: F401  (sets TRITON_INTERPRET before awkernels loads triton)


def _arguments(op_name: str) -> list[str]:
    return [a.name for a in getattr(torch.ops.awnet, op_name).default._schema.arguments]


@pytest.mark.parametrize("public, op_name", [(awkernels.aw_conv2d, "aw_conv2d"),
                                             (awkernels.mix_batch_norm, "mix_batch_norm")])
def test_public_function_takes_the_schema_arguments(public, op_name):
    assert list(inspect.signature(public).parameters) == _arguments(op_name)


def test_every_implementation_has_the_declared_schema():
    declared = {**_contract.CONV_SCHEMAS, **_contract.BN_SCHEMAS, **_contract.TRITON_SCHEMAS}
    for name, schema in declared.items():
        registered = getattr(torch.ops.awnet, name).default._schema
        assert registered == torch._C.parse_schema(f"awnet::{name}{schema}"), name
    # The Triton implementations take the C++ ones' arguments, in order.
    for name in ("aw_conv2d", "aw_conv2d_backward", "mix_batch_norm", "mix_batch_norm_backward"):
        triton_name = name.replace("_backward", "") + "_triton" + ("_backward" if name.endswith("_backward") else "")
        assert _arguments(triton_name) == _arguments(name)


def test_backward_schemas_derive_from_the_forward():
    """A backward takes grad_y, what the forward saved, the forward's inputs and the gradients to compute."""
    forward = _arguments("aw_conv2d")
    assert _arguments("aw_conv2d_backward") == ["grad_y", "saved", *forward, "output_mask"]
    bn = _arguments("mix_batch_norm_backward")
    assert bn[:5] == ["grad_y", "mean", "invstd", "sample_mean", "sample_var"]
    assert bn[-2:] == ["output_mask", "prescale"] and _arguments("mix_batch_norm")[-1] == "prescale"
    assert set(bn[5:-2]) <= set(_arguments("mix_batch_norm"))


def _require(impl: str) -> None:
    if impl not in awkernels.available_backends():
        pytest.skip(f"the {impl} backend is not in this install ({awkernels.available_backends()})")


def _conv_cases():
    for channels_last in (False, True):
        for bias in (False, True):
            for level in ("layer", "filter"):
                yield channels_last, bias, level


@pytest.mark.parametrize("impl", ["cpp", "triton"])
@pytest.mark.parametrize("channels_last, with_bias, level", list(_conv_cases()))
def test_conv_fakes_match_the_kernels(impl, channels_last, with_bias, level):
    _require(impl)
    torch.manual_seed(0)
    x = torch.randn(3, 4, 9, 7)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(2, 6, 4, 3, 3)
    coeff = torch.rand(3, 2, 6) if level == "filter" else torch.rand(3, 2)
    bias = torch.randn(2, 6) if with_bias else None
    geometry = ([2, 1], [1, 0], [1, 2], 1)
    name = "aw_conv2d" if impl == "cpp" else "aw_conv2d_triton"
    inputs = (x, weight, coeff, bias, *geometry)
    y = getattr(torch.ops.awnet, name)(*inputs)
    dy = torch.randn_like(y)
    # The form that keeps what dcoeff reads (Triton: the epilogue strategy's bank outputs for K = 2 with
    # these few output pixels).
    keeping = getattr(torch.ops.awnet, "aw_conv2d_forward" if impl == "cpp" else "aw_conv2d_triton_forward")
    saved = keeping(*inputs)[1]
    mask = [True, True, True, with_bias]
    grads = getattr(torch.ops.awnet, f"{name}_backward")(dy, saved, *inputs, mask)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [mode.from_tensor(t) if t is not None else None for t in (x, weight, coeff, bias, dy, saved)]
        fx, fw, fc, fb, fdy, fsaved = fake
        fake_y = getattr(torch.ops.awnet, name)(fx, fw, fc, fb, *geometry)
        fake_saved = keeping(fx, fw, fc, fb, *geometry)[1]
        fake_grads = getattr(torch.ops.awnet, f"{name}_backward")(fdy, fsaved, fx, fw, fc, fb, *geometry, mask)
    for real, promised in zip((y, saved, *grads), (fake_y, fake_saved, *fake_grads)):
        assert (real.shape, real.dtype, real.stride()) == (promised.shape, promised.dtype, promised.stride())


@pytest.mark.parametrize("impl", ["cpp", "triton"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("prescaled", [False, True])
def test_mix_batch_norm_fakes_match_the_kernels(impl, channels_last, training, prescaled):
    _require(impl)
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 4)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    coeff = torch.rand(3, 2)
    prescale = torch.rand(3, 5) if prescaled else None
    params = (torch.rand(2, 5), torch.randn(2, 5), torch.zeros(2, 5), torch.ones(2, 5))
    name = "mix_batch_norm" if impl == "cpp" else "mix_batch_norm_triton"
    out = getattr(torch.ops.awnet, name)(x, coeff, *params, training, 0.1, 1e-5, prescale)
    saved = out[1:] if impl == "cpp" else (out[1], out[2], x.new_empty(0), x.new_empty(0))
    dy = torch.randn_like(out[0])
    grads = getattr(torch.ops.awnet, f"{name}_backward")(dy, *saved, x, coeff, *params[:2], training, 1e-5,
                                                        [True] * 4, prescale)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fx, fc, fdy = (mode.from_tensor(t) for t in (x, coeff, dy))
        fs = mode.from_tensor(prescale) if prescaled else None
        fparams = [mode.from_tensor(t) for t in params]
        fake_out = getattr(torch.ops.awnet, name)(fx, fc, *fparams, training, 0.1, 1e-5, fs)
        fsaved = [mode.from_tensor(t) for t in saved]
        fake_grads = getattr(torch.ops.awnet, f"{name}_backward")(fdy, *fsaved, fx, fc, *fparams[:2], training,
                                                                  1e-5, [True] * 4, fs)
    for real, promised in zip((*out, *grads), (*fake_out, *fake_grads)):
        assert (real.shape, real.dtype, real.stride()) == (promised.shape, promised.dtype, promised.stride())
