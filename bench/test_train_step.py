"""One PGD-10 adversarial-training step (10 attack steps in eval mode, as the recipes craft them, then the
update) end to end: AW-ResNet-18 on our kernels (`auto`) and on the reference backend, against the static
ResNet-18 it is built from.
On a GPU: ResNet-18 at batch 128 (AWNET_BENCH_BATCH) under bfloat16 autocast; on CPU, float32, the small
MNIST CNN at batch 100 and ResNet-18 at batch 8 (issue 18's settings)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import awkernels
import awnet
from awnet.attacks import pgd
from awnet.train.recipes import eval_mode
from bench.conftest import CUDA, DEVICE, measure
from bench.test_aw_conv2d import BATCH

IMAGES = {"smallcnn": (1, 28, 28), "resnet18": (3, 32, 32)}
MODELS = {"resnet18": BATCH} if CUDA else {"smallcnn": 100, "resnet18": 8}  # model: batch
VARIANTS = {  # name: (aw, banks, backend)
    "static": (False, 1, "auto"),
    "awnet-banks1": (True, 1, "auto"),
    "awnet-banks2": (True, 2, "auto"),
    "awnet-banks1-reference": (True, 1, "reference"),
    "awnet-banks2-reference": (True, 2, "reference"),
}


def training_step(variant: str, model_name: str = next(iter(MODELS))):
    """One PGD-10 training step of `variant` on a fixed batch: the step (a function returning the detached
    loss), its model and its optimizer."""
    aw, banks, backend = VARIANTS[variant]
    batch = MODELS[model_name]
    model = awnet.models.build(model_name, aw=aw, banks=banks).to(DEVICE).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, *IMAGES[model_name], device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    forward = (lambda inputs: model(inputs, route=1)) if aw else model

    def update():
        with awkernels.use_backend(backend), torch.autocast(DEVICE.type, torch.bfloat16, enabled=CUDA):
            with eval_mode(model):  # as the recipes craft it: running statistics, an AW-Net's router
                x_adv = pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=10)
            loss = F.cross_entropy(forward(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return update, model, optimizer


def make_step(variant: str, model_name: str = next(iter(MODELS))):
    """`training_step` as a function that times the same work at every call: it starts by restoring the
    parameters, buffers and momentum that the model had after its first (warm-up) step, so the update of one
    round never changes what the next round computes (one fused copy, the same for every variant)."""
    update, model, optimizer = training_step(variant, model_name)
    update()  # creates the momentum buffers
    state = [*model.parameters(), *model.buffers(), *(s["momentum_buffer"] for s in optimizer.state.values())]
    saved = [t.detach().clone() for t in state]

    def step():
        with torch.no_grad():
            torch._foreach_copy_(state, saved)
        return update()
    return step


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_name", MODELS)
def test_pgd10_training_step(benchmark, model_name, variant):
    loss = measure(benchmark, make_step(variant, model_name), impl=variant, model=model_name, layer="train-step",
                   case="pgd10", dtype="bfloat16-autocast" if CUDA else "float32", batch=MODELS[model_name],
                   **{"pass": "train-step"})
    assert torch.isfinite(loss)
