"""AutoAttack and Square from torchattacks in awnet's evaluation (issue 19): they stay in the threat model,
break an undefended model, run end to end through an AW-Net's router, leave the model and the caller's RNG as
they found them, get their rows in `evaluate`'s report with the check that Square does not beat the gradient
attacks (which fails on a model whose gradients are masked), and `awnet eval --autoattack` runs them."""
from __future__ import annotations

import copy
import json
from functools import partial

import pytest
import torch
import torchattacks
from torch import nn

import awnet
from awnet import attacks, cli
from awnet.eval import evaluate
from awnet.eval.report import (
    AUTOATTACK_ATTACKS, attack_suite, check_gradient_free, check_square_after_gradients, default_attack_names,
    format_table,
)
from mnist_models import data, one_thread, standard  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.3  # MNIST's radius: an undefended model falls within a few steps or queries
RUNS = {"autoattack": attacks.autoattack, "square": partial(attacks.square, n_queries=1000)}


class ZeroGrad(nn.Module):
    """Gradient masking by construction: `model`'s function, but every input gradient is exactly 0."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.detach() + 0 * x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def assert_in_threat_model(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1


@pytest.fixture(scope="module")
def digits(data):
    _, (x, y) = data
    return x[::62][:16], y[::62][:16]  # 16 test digits


def tiny_awnet() -> nn.Module:
    torch.manual_seed(0)
    static = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                           nn.Linear(4 * 13 * 13, 10))
    return awnet.convert(static, router_width=8).eval()


@pytest.mark.parametrize("name", list(RUNS))
def test_attack_breaks_an_undefended_model_within_the_threat_model(name, standard, digits):
    x, y = digits
    rng = torch.get_rng_state()
    x_adv = RUNS[name](standard, x, y, EPS)
    assert torch.equal(torch.get_rng_state(), rng), "torchattacks' reseeding leaked into the caller's RNG"
    assert_in_threat_model(x_adv, x, EPS)
    clean, robust = accuracy(standard, x, y), accuracy(standard, x_adv, y)
    print(f"{name} eps={EPS}: clean {clean:.3f}, robust {robust:.3f}")
    assert clean >= 0.75 and robust <= 0.1
    assert torch.equal(RUNS[name](standard, x, y, EPS), x_adv), "the seed fixes the result"


@pytest.mark.parametrize("name", list(RUNS))
def test_attack_runs_end_to_end_through_the_router(name, digits):
    x, _ = digits
    model = tiny_awnet()
    y = model(x).argmax(1)  # every sample starts right: the attack must query the model to fool it
    router_calls, routes = [], []
    model.router.register_forward_hook(lambda module, args, out: router_calls.append(args[0].shape[0]))
    model.register_forward_pre_hook(lambda module, args, kwargs: routes.append(kwargs.get("route")),
                                    with_kwargs=True)
    x_adv = RUNS[name](model, x, y, EPS)
    assert_in_threat_model(x_adv, x, EPS)
    assert len(router_calls) > 10 and routes == [None] * len(router_calls)
    assert accuracy(model, x_adv, y) <= 0.5


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", list(RUNS))
def test_attack_leaves_the_model_as_found(name, training):
    torch.manual_seed(0)
    # Masked gradients keep APGD from fooling the samples, so that FAB (which calls backward) runs too.
    model = ZeroGrad(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(),
                                   nn.Linear(4 * 26 * 26, 10))).train(training)
    model.model[1].train(not training)  # mixed modes: torchattacks' model.train() would flip this one
    model.model[0].weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append([m.training for m in model.modules()]))
    assert_in_threat_model(RUNS[name](model, x, y, 0.2), x, 0.2)
    assert seen and all(s == modes for s in seen), "the attack runs the model in the caller's modes"
    assert [m.training for m in model.modules()] == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters()), "FAB's backward filled parameter gradients"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(RUNS))
def test_attack_on_a_gpu_model_returns_on_the_inputs_device(name, standard, digits):
    x, y = digits
    model = copy.deepcopy(standard).cuda()  # the shared fixture stays on the CPU
    for device in ("cpu", "cuda"):
        x_adv = RUNS[name](model, x.to(device), y.to(device), EPS)
        assert_in_threat_model(x_adv, x.to(device), EPS)
        assert accuracy(model, x_adv.cuda(), y.cuda()) <= 0.1


def test_bad_input_raises_naming_the_argument(standard, digits):
    x, y = digits
    for run in RUNS.values():
        with pytest.raises(ValueError, match=r"x must be images in \[0, 1\]"):
            run(standard, x * 2, y, EPS)
        with pytest.raises(ValueError, match="eps must be >= 0"):
            run(standard, x, y, -0.1)
        with pytest.raises(ValueError, match=r"x must be images \(B, C, H, W\)"):
            run(standard, x.flatten(1), y, EPS)
    with pytest.raises(ValueError, match="n_queries must be an int >= 1"):
        attacks.square(standard, x, y, EPS, n_queries=0)
    with pytest.raises(ValueError, match="n_classes must be an int >= 4"):
        attacks.autoattack(standard, x, y, EPS, n_classes=3)
    three_classes = nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    with pytest.raises(ValueError, match="n_classes must be an int >= 4"):
        attacks.autoattack(three_classes, x, y % 3, EPS)


def test_gradient_free_check_from_numbers():
    passed = check_gradient_free({"pgd": 0.50, "cw": 0.45, "square": 0.44})
    assert passed["passed"] and passed["detail"]["strongest_gradient_attack"] == "cw"
    failed = check_gradient_free({"pgd": 0.50, "cw": 0.45, "square": 0.42})
    assert not failed["passed"] and failed["detail"]["square"] == 0.42 and failed["detail"]["slack"] == 0.02
    assert set(failed) == {"name", "passed", "detail"}  # the format of the other masking checks
    # FGSM (one step) and AutoAttack (Square is one of its attacks) are no gradient attacks to compare with.
    assert not check_gradient_free({"fgsm": 0.20, "autoattack": 0.10, "pgd": 0.50, "square": 0.30})["passed"]
    assert check_gradient_free({"fgsm": 0.20, "autoattack": 0.10, "square": 0.30}) is None
    assert check_gradient_free({"pgd": 0.50, "cw": 0.45}) is None


def test_square_taking_exactly_the_slack_passes():
    """2 of 100 samples is 2 points, the slack: it passes although 0.55 - 0.53 is 0.020000000000000018 in
    floating point (an mnist5k run failed on that); 3 of 100 fails."""
    stages = {"samples": 100, "apgd-ce": 60, "apgd-t": 55, "fab-t": 55, "square": 53}
    assert check_square_after_gradients(stages)["passed"]
    assert not check_square_after_gradients({**stages, "square": 52})["passed"]
    float32 = float(torch.tensor(0.53))  # accuracies come from float32 means
    assert check_gradient_free({"pgd": float(torch.tensor(0.55)), "square": float32})["passed"]
    assert not check_gradient_free({"pgd": float(torch.tensor(0.55)), "square": float(torch.tensor(0.52))})["passed"]


def test_evaluate_reports_both_rows_and_the_check(standard, digits):
    x, y = digits
    assert not set(AUTOATTACK_ATTACKS) & set(default_attack_names(standard) + default_attack_names(tiny_awnet()))
    suite = attack_suite(["fgsm", "pgd", "autoattack", "square"], EPS, steps=5, square_queries=1000)
    library = f"torchattacks {torchattacks.__version__}"
    assert suite[2].settings == {
        "norm": "linf", "eps": EPS, "version": "standard", "components": ["apgd-ce", "apgd-t", "fab-t", "square"],
        "target_classes": "min(classes - 1, 9)", "square_queries": 5000, "seed": 0, "library": library}
    assert suite[3].settings == {"norm": "linf", "eps": EPS, "n_queries": 1000, "p_init": 0.8, "restarts": 1,
                                 "loss": "margin", "seed": 0, "library": library}
    reports = {}
    for label, model in (("undefended", standard), ("masked", ZeroGrad(standard))):
        reports[label] = report = evaluate(model, x, y, suite, EPS, checks=False, progress=False)
        m = report["metrics"]
        print(label, m["robust_accuracy"], report["checks"])
        assert list(m["robust_accuracy"]) == ["fgsm", "pgd", "autoattack", "square"]
        assert all(m["worst_case_robust_accuracy"] <= acc for acc in m["robust_accuracy"].values())
        assert [c["name"] for c in report["checks"]] == ["square not stronger than gradient attacks",
                                                         "square finds little that autoattack's gradient attacks missed"]
        assert report["checks_passed"] is all(c["passed"] for c in report["checks"])
        # AutoAttack's stages: the samples left after each component, each stage on what the ones before left.
        stages = m["autoattack_stages"]
        assert list(stages) == ["apgd-ce", "apgd-t", "fab-t", "square"]
        assert list(stages.values()) == sorted(stages.values(), reverse=True)
        assert stages["square"] == pytest.approx(m["robust_accuracy"]["autoattack"], abs=1 / len(x))
        assert "check: square not stronger" in format_table(report)
        json.dumps(report)
    assert reports["undefended"]["checks_passed"]
    # Masked gradients: PGD finds nothing, Square (and AutoAttack, through its Square) breaks the model.
    masked = reports["masked"]["metrics"]["robust_accuracy"]
    assert masked["pgd"] >= 0.75 and masked["square"] <= 0.1 and masked["autoattack"] <= 0.1
    assert not any(c["passed"] for c in reports["masked"]["checks"]), reports["masked"]["checks"]
    # There APGD-CE, APGD-T and FAB-T leave the samples and AutoAttack's Square takes them.
    assert reports["masked"]["metrics"]["autoattack_stages"]["fab-t"] >= 0.5
    # Batches sum into one count: the same stages from two batches as from one.
    two_batches = evaluate(ZeroGrad(standard), x, y, suite[2:3], EPS, batch_size=len(x) // 2 + 1, checks=False,
                           progress=False)
    assert two_batches["metrics"]["autoattack_stages"]["fab-t"] >= 0.5
    assert two_batches["checks"][0]["detail"]["robust_after"] == two_batches["metrics"]["autoattack_stages"]


def test_cli_eval_autoattack(tmp_path):
    args = cli.build_parser().parse_args(["eval", "--checkpoint", "model.safetensors", "--autoattack"])
    assert args.autoattack and not cli.build_parser().parse_args(["eval", "--checkpoint", "m"]).autoattack
    torch.manual_seed(0)
    path = tmp_path / "awnet-smallcnn.safetensors"
    awnet.save(awnet.models.build("smallcnn", aw=True), path)
    out = tmp_path / "report.json"
    assert cli.main(["eval", "--checkpoint", str(path), "--dataset", "mnist5k", "--eps", "0.3", "-n", "8",
                     "--attacks", "pgd,square", "--autoattack", "--steps", "2", "--no-checks", "--no-progress",
                     "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["attacks"]) == ["pgd", "square", "autoattack"]  # square once
    assert set(report["metrics"]["robust_accuracy"]) == {"pgd", "square", "autoattack"}
    assert report["attacks"]["square"]["n_queries"] == 5000
    assert [c["name"] for c in report["checks"]] == ["square not stronger than gradient attacks",
                                                     "square finds little that autoattack's gradient attacks missed"]
