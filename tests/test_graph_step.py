"""Whole-step capture (`awnet train --cuda-graph`, awnet.train.graph): the step written for a CUDA graph computes
what the eager step computes, and a replayed step computes what the same step computes eagerly."""
from __future__ import annotations

import pytest
import torch

import awnet
from awnet.attacks import step_size
from awnet.train import TrainConfig, train
from awnet.train.graph import CapturedStep
from awnet.train.loop import GraphStep, make_schedule, train_step
from awnet.train.recipes import RECIPES, RecipeContext
from mnist_models import one_thread  # noqa: F401 (fixture)

CUDA = torch.cuda.is_available()
EPS = 0.3
RAMP = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]  # eps per step: the recorded step must read each new value


def _run(recipe: str, aw: bool, device: torch.device, graph: str, model: str = "smallcnn", batch: int = 8,
         amp: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.nn.Module]:
    """The losses and statistics of len(RAMP) steps from the same start, and the model after them: through
    `train_step` ("eager"), or `GraphStep` run eagerly ("uncaptured") or recorded ("captured")."""
    torch.manual_seed(0)
    options = {"banks": 1} if aw else {}
    net = awnet.models.build(model, aw=aw, **options).to(device).train()
    teachers = [awnet.models.build(model).to(device).eval() for _ in range(2)] if recipe == "awnet" else [None] * 2
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                fused=device.type == "cuda" or None)
    schedule = make_schedule(optimizer, 4 * len(RAMP), 0.25)  # the lr changes at every step too
    ctx = RecipeContext(net, net, 0.0, 0.0, attack_steps=2, clean_teacher=teachers[0], robust_teacher=teachers[1])
    shape = (1, 28, 28) if model == "smallcnn" else (3, 32, 32)
    batches = [(torch.rand(batch, *shape, device=device), torch.randint(0, 10, (batch,), device=device))
               for _ in RAMP]
    if graph == "eager":
        scaler = torch.amp.GradScaler("cuda", enabled=False)

        def step(x, y, eps, alpha):
            ctx.eps, ctx.alpha = eps, alpha
            return train_step(ctx, RECIPES[recipe], optimizer, scaler, schedule, x, y, amp)
    else:
        step = GraphStep(ctx, RECIPES[recipe], optimizer, schedule, amp, capture=graph == "captured")
    torch.manual_seed(1)
    losses, stats = [], []
    for (x, y), eps in zip(batches, RAMP):
        loss, values = step(x, y, eps, step_size(eps, ctx.attack_steps))
        losses.append(loss.clone())
        stats.append(torch.stack(list(values.values())).clone())
    return losses, stats, net


def _assert_same_runs(a, b, rtol: float, atol: float) -> None:
    for name, first, second in (("loss", a[0], b[0]), ("statistics", a[1], b[1])):
        for step, (one, other) in enumerate(zip(first, second)):
            torch.testing.assert_close(other, one, rtol=rtol, atol=atol, msg=lambda m: f"step {step} {name}: {m}")
    for (name, one), other in zip(a[2].state_dict().items(), b[2].state_dict().values()):
        torch.testing.assert_close(other, one, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("recipe,aw", [("pgd-at", False), ("trades", False), ("awnet", True),
                                       ("awnet-scratch", True)])
def test_the_step_written_for_a_graph_computes_the_eager_step(recipe, aw):
    # Up to rounding: the graph's step draws its random start as uniform(-1, 1) * eps (eps is a tensor) and
    # reads a float32 learning rate.
    cpu = torch.device("cpu")
    _assert_same_runs(_run(recipe, aw, cpu, "eager"), _run(recipe, aw, cpu, "uncaptured"), rtol=1e-4, atol=1e-5)


def test_captured_step_needs_a_warmup_and_runs_uncaptured_steps_as_given():
    with pytest.raises(ValueError, match="warmup"):
        CapturedStep(lambda x: x, warmup=0)
    calls = []
    step = CapturedStep(lambda x: calls.append(x) or x * 2, capture=False)
    assert [step(torch.tensor(float(i))).item() for i in range(5)] == [0, 2, 4, 6, 8] and len(calls) == 5


def test_cuda_graph_is_refused_where_it_cannot_record(tmp_path):
    config = TrainConfig(recipe="pgd-at", out=str(tmp_path), epochs=1, n_train=100, batch_size=50, val_n=20,
                         progress=False, cuda_graph=True, device="cpu")
    with pytest.raises(ValueError, match="cuda_graph cannot be used here: it records CUDA kernels"):
        train(config)
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: records and replays CUDA graphs (scripts/gpu-check runs it)")
@pytest.mark.parametrize("recipe,aw,model", [("pgd-at", False, "resnet18"), ("awnet-scratch", True, "resnet18"),
                                             ("awnet", True, "smallcnn")])
def test_a_replayed_step_computes_the_uncaptured_step(recipe, aw, model):
    # Three eager steps, the recorded one, two replays. bfloat16 autocast as training runs it; MixBN's
    # coefficient gradient in an attack adds with float atomics, so equal up to their order.
    cuda = torch.device("cuda")
    runs = [_run(recipe, aw, cuda, graph, model, batch=32, amp=True) for graph in ("uncaptured", "captured")]
    _assert_same_runs(*runs, rtol=2e-2, atol=2e-3)
