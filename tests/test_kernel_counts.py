"""Kernel budgets of the C++ ops, counted with torch.profiler on the CPU (DESIGN.md section 3): the count of
work-doing leaf operators carries over to the GPU, where each one is a launch."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import awkernels

# Leaf operators that launch no work: allocations, views, and dtype/layout no-ops.
NO_WORK = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty", "aten::view",
           "aten::as_strided", "aten::reshape", "aten::_reshape_alias", "aten::unsqueeze", "aten::squeeze",
           "aten::expand", "aten::permute", "aten::transpose", "aten::t", "aten::slice", "aten::select",
           "aten::detach", "aten::alias", "aten::lift_fresh", "aten::to", "aten::contiguous", "aten::resize_",
           "detach", "aten::result_type"}

pytestmark = pytest.mark.skipif("cpp" not in awkernels.available_backends(), reason="the C++ extension is not built")


def kernels(fn) -> list[str]:
    """The kernels fn runs, by name: operators that do work and run no other operator that does (a C++ pass
    that allocates its output is one kernel; an op made of kernels is none)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def count(event) -> list[str]:
        inner = [name for child in event.cpu_children for name in count(child)]
        if inner or event.name in NO_WORK or event.name.startswith("autograd::"):
            return inner
        return [event.name]
    return [name for e in prof.events() if e.cpu_parent is None for name in count(e)]


def mixbn_inputs(layout: str, banks: int = 2):
    x = torch.randn(8, 32, 12, 12)
    x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    coeff = torch.softmax(torch.randn(8, banks), 1)
    params = [torch.rand(banks, 32) + 0.5, torch.randn(banks, 32)]
    stats = [torch.zeros(banks, 32), torch.ones(banks, 32)]
    return x.requires_grad_(), coeff.requires_grad_(), [p.requires_grad_() for p in params], stats


# What one MixBN call launches, by (training, the gradients asked): its passes over the pixels, and a finalize
# kernel of its own only for the coefficient gradient in training (a sum over the channels) and for the
# parameter gradients in eval.
MIXBN_KERNELS = {
    (True, "all"): (["bn_moments", "bn_train_forward"], ["bn_grad_sums", "bn_finalize_backward", "bn_grad_input"]),
    (True, "no coeff"): (["bn_moments", "bn_train_forward"], ["bn_grad_sums", "bn_train_grad_input"]),
    (False, "all"): (["bn_eval_forward"], ["bn_eval_grad", "bn_finalize_backward"]),
    (False, "x and coeff"): (["bn_eval_forward"], ["bn_eval_grad"]),  # every attack step
    # An attack step of a one-bank AW-Net: the convolution's omega folded in, its gradient from the same pass.
    (False, "x, coeff and prescale"): (["bn_eval_forward"], ["bn_eval_grad"]),
}


@pytest.mark.parametrize("training,grads", MIXBN_KERNELS, ids=lambda v: str(v))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_mix_batch_norm_kernels_per_direction(training, grads, layout):
    """Two passes each way in training (a forced route: the update step), one each way in an attack step."""
    x, coeff, (weight, bias), (mean, var) = mixbn_inputs(layout)
    prescale = torch.rand(x.shape[:2]) + 0.5 if "prescale" in grads else None
    wrt = {"all": (x, coeff, weight, bias), "no coeff": (x, weight, bias), "x and coeff": (x, coeff),
           "x, coeff and prescale": (x, coeff, prescale)}[grads]
    for t in (coeff, weight, bias, prescale):
        if t is not None:
            t.requires_grad_(any(t is w for w in wrt))
    with awkernels.use_backend("cpp"):
        out = []
        forward = kernels(lambda: out.append(
            awkernels.mix_batch_norm(x, coeff, weight, bias, mean, var, training, 0.1, 1e-5, prescale)))
        grad = torch.randn_like(out[0])
        backward = kernels(lambda: torch.autograd.grad(out[0], wrt, grad))
    expected_forward, expected_backward = MIXBN_KERNELS[training, grads]
    assert forward == [f"awnet::cpu::{name}" for name in expected_forward], forward
    assert backward == [f"awnet::cpu::{name}" for name in expected_backward], backward


def test_budget_counts_work():
    """The counter sees ATen work: the reference MixBN (dozens of small ops) is far over the budget."""
    x, coeff, (weight, bias), (mean, var) = mixbn_inputs("contiguous")
    with awkernels.use_backend("reference"):
        forward = kernels(lambda: awkernels.mix_batch_norm(x, coeff, weight, bias, mean, var, True, 0.1, 1e-5))
    assert len(forward) > 10, forward


def conv_calls(fn) -> dict[str, int]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    return {name: names.count(name) for name in ("aten::convolution", "aten::convolution_backward")}


@pytest.mark.parametrize("banks,level", [(1, "filter"), (2, "layer"), (2, "filter")])
@pytest.mark.parametrize("pass_", ["attack", "fwdbwd"])
def test_aw_conv2d_backward_runs_no_forward_convolution(banks, level, pass_):
    """The backward reads the bank outputs the forward kept: one convolution backward, no convolution."""
    x = torch.randn(4, 8, 10, 10, requires_grad=True)
    weight = torch.randn(banks, 16, 8, 3, 3, requires_grad=pass_ == "fwdbwd")
    coeff = torch.rand((4, banks, 16) if level == "filter" else (4, banks), requires_grad=True)
    wrt = (x, weight, coeff) if pass_ == "fwdbwd" else (x, coeff)
    with awkernels.use_backend("cpp"):
        y = awkernels.aw_conv2d(x, weight, coeff, None, 1, 1)
        calls = conv_calls(lambda: torch.autograd.grad(y, wrt, torch.randn_like(y)))
    assert calls == {"aten::convolution": 0, "aten::convolution_backward": 1}, calls
