"""Attacks (DESIGN.md section 5) on small models trained here on mnist5k: every attack lowers accuracy and
stays in the threat model, PGD agrees with torchattacks, the attacks leave the model as they found it, and
the adaptive attacks differentiate through a router (a routed test double, and the real AW-Net)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from awnet import attacks
from mnist_models import data, one_thread, robust, standard  # noqa: F401 (fixtures)

EPS, EPS_L2 = 0.1, 1.5

# name -> (attack(model, x, y), eps, norm)
ATTACKS = {
    "fgsm": (lambda m, x, y: attacks.fgsm(m, x, y, EPS), EPS, "linf"),
    "pgd": (lambda m, x, y: attacks.pgd(m, x, y, EPS, EPS / 4, 10), EPS, "linf"),
    "pgd-restarts": (lambda m, x, y: attacks.pgd(m, x, y, EPS, EPS / 4, 5, restarts=2), EPS, "linf"),
    "cw-linf": (lambda m, x, y: attacks.cw_linf(m, x, y, EPS, EPS / 4, 10), EPS, "linf"),
    "apgd-ce": (lambda m, x, y: attacks.apgd_ce(m, x, y, EPS, steps=20), EPS, "linf"),
    "apgd-dlr": (lambda m, x, y: attacks.apgd_dlr(m, x, y, EPS, steps=20), EPS, "linf"),
    "fgm-l2": (lambda m, x, y: attacks.fgsm(m, x, y, EPS_L2, norm="l2"), EPS_L2, "l2"),
    "pgd-l2": (lambda m, x, y: attacks.pgd(m, x, y, EPS_L2, EPS_L2 / 4, 10, norm="l2"), EPS_L2, "l2"),
    "apgd-ce-l2": (lambda m, x, y: attacks.apgd_ce(m, x, y, EPS_L2, steps=20, norm="l2"), EPS_L2, "l2"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def assert_in_threat_model(x_adv, x, eps, norm):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max().item() <= eps + 1e-6, f"{norm} distance {size.max().item()} > eps {eps}"
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


def test_apgd_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1): w_j = ceil(p_j N).
    assert attacks.checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert attacks.checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]


def test_losses():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = torch.tensor([0, 0])
    assert attacks.margin(logits, y).tolist() == [-2.0, 2.0]  # > 0 exactly when misclassified
    # DLR: margin / (z_pi1 - z_pi3), invariant to shifting and scaling the logits.
    assert torch.allclose(attacks.dlr(logits, y), torch.tensor([-2.0 / 3.0, 2.0 / 1.5]))
    assert torch.allclose(attacks.dlr(7 * logits - 3, y), attacks.dlr(logits, y))
    with pytest.raises(ValueError, match="3 classes"):
        attacks.dlr(logits[:, :2], y)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_lowers_accuracy_within_threat_model(name, standard, data):
    _, (x, y) = data
    attack, eps, norm = ATTACKS[name]
    torch.manual_seed(0)
    x_adv = attack(standard, x, y)
    assert_in_threat_model(x_adv, x, eps, norm)
    clean, adv = accuracy(standard, x, y), accuracy(standard, x_adv, y)
    assert clean > 0.85
    assert adv < clean - 0.2, f"{name}: clean {clean:.3f}, adversarial {adv:.3f}"


@pytest.mark.parametrize("model_name, eps", [("standard", 0.05), ("robust", 0.1)])
def test_pgd_agrees_with_torchattacks(model_name, eps, request, data):
    model = request.getfixturevalue(model_name)
    _, (x, y) = data
    torch.manual_seed(0)
    ours = accuracy(model, attacks.pgd(model, x, y, eps, eps / 4, 10), y)
    theirs = accuracy(model, torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True)(x, y), y)
    print(f"{model_name} eps={eps}: awnet pgd {ours:.4f}, torchattacks pgd {theirs:.4f}")
    assert 0.2 < theirs < 0.9, "pick a setting where robust accuracy is informative"
    assert abs(ours - theirs) <= 0.02


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_agrees_with_torchattacks(loss, robust, data):
    """torchattacks.APGD ports AutoAttack's reference code; ours is written from the paper."""
    _, (x, y) = data
    torch.manual_seed(0)
    ours = accuracy(robust, attacks.apgd(robust, x, y, 0.1, steps=20, loss=loss), y)
    reference = torchattacks.APGD(robust, norm="Linf", eps=0.1, steps=20, n_restarts=1, loss=loss, seed=0)
    theirs = accuracy(robust, reference(x, y), y)
    print(f"apgd-{loss} eps=0.1: awnet {ours:.4f}, torchattacks {theirs:.4f}")
    assert 0.2 < theirs < 0.9
    assert abs(ours - theirs) <= 0.02


def small_bn_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(),
                         nn.Linear(4 * 26 * 26, 10))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_leaves_model_as_found_and_takes_input_gradient_only(name, training):
    torch.manual_seed(0)
    model = small_bn_cnn().train(training)
    model[0].weight.requires_grad_(False)  # a frozen parameter must stay frozen, the others trainable
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    fired = []
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.register_hook(lambda g, n=n: fired.append(n))
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    attack, eps, norm = ATTACKS[name]
    assert_in_threat_model(attack(model, x, y), x, eps, norm)
    assert [m.training for m in model.modules()] == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert fired == [], f"autograd computed parameter gradients: {fired}"
    assert all(p.grad is None for p in model.parameters())


class RoutedDouble(nn.Module):
    """A stand-in for an AW-Net: a linear router types the input and blends a clean and a robust expert
    (the two-bank form); `route` forces the blend. Same interface as awnet.nn.AWNet."""

    def __init__(self, clean: nn.Module, robust: nn.Module):
        super().__init__()
        self.clean, self.robust = clean, robust
        self.router = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))

    def forward(self, x: torch.Tensor, route=None) -> torch.Tensor:
        type_logits = self.router(x)
        p_type = type_logits.softmax(1)
        self.type_logits, self.p_types, self.omegas = [type_logits], [p_type], []
        self.adversarial_score = p_type[:, 1]
        if route is None:
            mix = p_type
        elif isinstance(route, int) or route.dim() == 1:
            mix = F.one_hot(torch.as_tensor(route).expand(len(x)).long(), 2).float()
        else:
            mix = route
        return torch.log(mix[:, :1] * self.clean(x).softmax(1) + mix[:, 1:] * self.robust(x).softmax(1))


@pytest.fixture(scope="module")
def routed(standard, robust, data):
    """The standard and robust MLPs behind a router trained to tell clean digits from PGD examples."""
    (x, y), _ = data
    torch.manual_seed(0)
    model = RoutedDouble(standard, robust)
    inputs = torch.cat([x, attacks.pgd(standard, x, y, EPS, EPS / 4, 10)])
    types = torch.cat([torch.zeros(len(x)), torch.ones(len(x))]).long()
    opt = torch.optim.Adam(model.router.parameters(), 1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model.router(inputs), types)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def score(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        model(x)
    return model.adversarial_score.mean().item()


def test_adaptive_attacks_on_a_routed_model(routed, data):
    _, (x, y) = data
    torch.manual_seed(0)
    assert attacks.is_routed(routed) and not attacks.is_routed(routed.clean)
    clean_acc = accuracy(routed, x, y)
    results = {
        "pgd": attacks.pgd(routed, x, y, EPS, EPS / 4, 10),
        "router-evasion": attacks.router_evasion(routed, x, y, EPS, EPS / 4, 10),
        "forced-clean": attacks.forced_path(routed, x, y, 0, EPS, EPS / 4, 10),
        "forced-adv": attacks.forced_path(routed, x, y, 1, EPS, EPS / 4, 10),
    }
    acc = {name: accuracy(routed, x_adv, y) for name, x_adv in results.items()}
    scores = {name: score(routed, x_adv) for name, x_adv in results.items()}
    print(f"clean {clean_acc:.3f} (score {score(routed, x):.3f}); accuracy {acc}; score {scores}")
    for name, x_adv in results.items():
        assert_in_threat_model(x_adv, x, EPS, "linf")
        assert acc[name] < clean_acc - 0.1, name
    # The router flags end-to-end PGD; router evasion drives the score towards "clean" and fools more.
    assert scores["pgd"] > 0.25 and scores["router-evasion"] < 0.1
    assert acc["router-evasion"] < acc["pgd"]


def test_forced_route_and_routing_errors(routed, data):
    _, (x, y) = data
    x = x[:16]
    for route in (0, 1):
        with torch.no_grad():
            assert torch.equal(attacks.ForcedRoute(routed, route)(x), routed(x, route=route))
    with pytest.raises(TypeError, match="not a routed model"):
        attacks.router_evasion(routed.clean, x, y[:16], EPS, EPS / 4, 2)


def test_attacks_on_the_real_awnet(data):
    from awnet.models import build

    _, (x, y) = data
    x, y = x[::125], y[::125]  # 8 digits
    torch.manual_seed(0)
    model = build("smallcnn", aw=True).eval()
    assert attacks.is_routed(model)
    eps, alpha = 0.3, 0.1
    runs = [
        lambda: attacks.pgd(model, x, y, eps, alpha, 2),
        lambda: attacks.apgd_dlr(model, x, y, eps, steps=3),
        lambda: attacks.router_evasion(model, x, y, eps, alpha, 2),
        lambda: attacks.forced_path(model, x, y, 0, eps, alpha, 2),
        lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=2)(x, y),  # third-party, unchanged
    ]
    for run in runs:
        assert_in_threat_model(run(), x, eps, "linf")
    assert not model.training and all(p.grad is None for p in model.parameters())
    # The router-evasion objective differentiates through the router: its term changes the input gradient.
    grads = []
    for weight in (0.0, 1.0):
        x_in = x.clone().requires_grad_(True)
        loss, _ = attacks.router_evasion_objective(weight)(model, x_in, y)
        grads.append(torch.autograd.grad(loss.sum(), x_in)[0])
    assert not torch.allclose(grads[0], grads[1])


def test_a_training_attack_never_waits_for_the_device(data):
    """PGD with one restart, as adversarial training runs it, makes no host-device sync (`.item()`, `bool()`
    of a tensor): a profile of it on CPU records every scalar read as aten::_local_scalar_dense."""
    from torch.profiler import ProfilerActivity, profile

    from awnet.models import build

    _, (x, y) = data
    model = build("smallcnn", aw=True).train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attacks.pgd(model, x[:8], y[:8], 0.3, 0.1, 2)
        attacks.pgd(model, x[:8], y[:8], 0.3, 0.1, 2, restarts=2)  # may stop early: one sync allowed
    reads = [e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense"]
    assert reads == [1], f"scalar reads in two PGD runs: {reads} (expected one, from the second's restart check)"
