"""`torch.autograd.gradcheck` (float64) of both ops on every backend: the backward passes against finite differences."""
from __future__ import annotations

import pytest
import torch

import awkernels

F64 = torch.float64


@pytest.mark.parametrize("shapes, level, conv_args", [
    pytest.param(dict(batch=2, c_in=3, c_out=4, size=(5, 5), kernel=(3, 3), banks=2), "filter",
                 dict(stride=1, padding=1, dilation=1, groups=1), id="filter-K2-3to4-5x5-p1"),
    pytest.param(dict(batch=2, c_in=4, c_out=4, size=(6, 6), kernel=(3, 3), banks=2), "layer",
                 dict(stride=2, padding=1, dilation=2, groups=2), id="layer-K2-s2-p1-d2-g2"),
    pytest.param(dict(batch=2, c_in=3, c_out=6, size=(5, 4), kernel=(3, 1), banks=3), "filter",
                 dict(stride=(2, 1), padding=(1, 0), dilation=1, groups=3), id="filter-K3-depthwise-3x1-s2x1"),
])
def test_aw_conv2d_gradcheck(backend, shapes, level, conv_args):
    torch.manual_seed(0)
    b, banks, c_out = shapes["batch"], shapes["banks"], shapes["c_out"]
    inputs = [
        torch.randn(b, shapes["c_in"], *shapes["size"], dtype=F64),
        torch.randn(banks, c_out, shapes["c_in"] // conv_args["groups"], *shapes["kernel"], dtype=F64),
        torch.randn((b, banks, c_out) if level == "filter" else (b, banks), dtype=F64),
        torch.randn(banks, c_out, dtype=F64),
    ]
    inputs = [t.to(backend.device).requires_grad_() for t in inputs]

    def conv(x, weight, coeff, bias):
        with awkernels.use_backend(backend.name):
            return awkernels.aw_conv2d(x, weight, coeff, bias, **conv_args)

    # Fast mode checks random projections of the Jacobian; the full Jacobian needs one backward per output
    # element, and a float64 convolution backward on CPU takes ~20 ms here (reference and cpp alike).
    assert torch.autograd.gradcheck(conv, inputs, fast_mode=True)


# attack: eval, gradients for x and coeff only; update: training, no coefficient gradient (a forced route);
# prescale-*: with a folded omega, whose gradient is checked too (with two banks: it does not depend on K).
@pytest.mark.parametrize("mode,banks", [(mode, banks) for mode in ("train", "eval", "attack", "update")
                                        for banks in (1, 2)]
                         + [("prescale-eval", 2), ("prescale-attack", 2), ("prescale-train", 2)])
def test_mix_batch_norm_gradcheck(backend, mode, banks):
    training = mode in ("train", "update", "prescale-train")
    torch.manual_seed(0)
    channels = 3
    x = 0.5 + 2 * torch.randn(2, channels, 3, 3, dtype=F64)
    # Soft coefficients well away from 0, so that finite differences never cross a bank's zero total weight.
    coeff = 0.5 + 0.5 * torch.rand(2, banks, dtype=F64)
    weight = 1 + 0.3 * torch.randn(banks, channels, dtype=F64)
    bias = 0.2 * torch.randn(banks, channels, dtype=F64)
    prescale = 0.5 + torch.rand(2, channels, dtype=F64)
    wrt = {"attack": ("x", "coeff"), "update": ("x", "weight", "bias"),
           "prescale-attack": ("x", "coeff", "prescale")}.get(mode, ("x", "coeff", "weight", "bias"))
    if mode in ("prescale-eval", "prescale-train"):
        wrt += ("prescale",)
    names = ("x", "coeff", "weight", "bias") + (("prescale",) if mode.startswith("prescale") else ())
    inputs = [t.to(backend.device).requires_grad_(name in wrt)
              for name, t in zip(names, (x, coeff, weight, bias, prescale))]
    running_mean = (0.5 * torch.randn(banks, channels, dtype=F64)).to(backend.device)
    running_var = (0.5 + torch.rand(banks, channels, dtype=F64)).to(backend.device)

    def mix_bn(x, coeff, weight, bias, prescale=None):
        # Fresh buffers per call: training mode updates them in place.
        with awkernels.use_backend(backend.name):
            return awkernels.mix_batch_norm(x, coeff, weight, bias, running_mean.clone(), running_var.clone(),
                                            training=training, momentum=0.1, eps=1e-5, prescale=prescale)

    assert torch.autograd.gradcheck(mix_bn, inputs)
