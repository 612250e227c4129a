"""The model layer (DESIGN.md section 4): AW layers, router, AWNet, builders, convert() and checkpoints."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import awkernels
import awnet
from awnet.nn import AWConv2d, AWNet, MixBatchNorm2d
from conftest import assert_close

TOL = 1e-4  # float32, relative to max |expected| (DESIGN.md section 2)
ROUTES = [None, 0, 1, "per-sample"]


def images(name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    shape = (batch, 1, 28, 28) if name == "smallcnn" else (batch, 3, 32, 32)
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def randomize_bns(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affines, so that a BN mix-up shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


def static_and_aw(name: str, banks: int = 1, omega: bool = True, seed: int = 0) -> tuple[nn.Module, AWNet]:
    torch.manual_seed(seed)
    static = randomize_bns(awnet.models.build(name), seed).eval()
    return static, awnet.convert(static, banks=banks, omega=omega).eval()


def perturb_signal_heads(model: AWNet, scale: float = 0.5, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    heads = model.router.signal_heads  # every Signal Head, one Linear
    with torch.no_grad():
        heads.weight.copy_(scale * torch.randn(heads.weight.shape, generator=g))
        heads.bias.copy_(scale * torch.randn(heads.bias.shape, generator=g))


def make_adversarial_side_differ(model: AWNet) -> None:
    """Shift the adversarial BNs and (with two banks) scale the adversarial banks."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MixBatchNorm2d):
                m.bias[1] += 0.3
            elif isinstance(m, AWConv2d) and m.banks == 2:
                m.weight[1] *= 1.5


def route_arg(route, batch: int):
    return torch.arange(batch) % 2 if route == "per-sample" else route


# --- builders -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smallcnn", "resnet18", "preact_resnet18", "wrn34_10"])
def test_builders_give_logits_and_config(name):
    static = awnet.models.build(name, num_classes=7).eval()
    aw = awnet.models.build(name, num_classes=7, aw=True, banks=2).eval()
    x = images(name, batch=1)
    with torch.no_grad():
        assert static(x).shape == (1, 7)
        assert aw(x).shape == (1, 7)
    assert static.config == {"name": name, "num_classes": 7, "aw": False}
    assert aw.config == {"name": name, "num_classes": 7, "aw": True, "banks": 2, "omega": True, "router_width": 64}
    assert isinstance(aw, AWNet)
    assert not any(type(m) in (nn.Conv2d, nn.BatchNorm2d) for m in aw.body.modules())
    static_params = sum(p.numel() for p in static.parameters())
    conv_params = sum(m.weight.numel() for m in static.modules() if isinstance(m, nn.Conv2d))
    aw_body_params = sum(p.numel() for p in aw.body.parameters())
    bn_params = sum(m.weight.numel() * 2 for m in static.modules() if isinstance(m, nn.BatchNorm2d))
    assert aw_body_params == static_params + conv_params + bn_params  # a second bank and a second BN


def test_build_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        awnet.models.build("vgg")
    with pytest.raises(ValueError, match="pass aw=True"):
        awnet.models.build("smallcnn", banks=2)
    with pytest.raises(ValueError, match="banks must be 1 or 2"):
        awnet.models.build("smallcnn", aw=True, banks=3)
    with pytest.raises(ValueError, match="one bank and no omega"):
        awnet.models.build("smallcnn", aw=True, banks=1, omega=False)
    with pytest.raises(ValueError, match="num_classes"):
        awnet.models.build("smallcnn", num_classes=0)


# --- the invariant: a converted network computes its static network -----------------------------------------

@pytest.mark.parametrize("banks", [1, 2])
@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_converted_model_computes_static_model_in_eval(name, banks):
    static, aw = static_and_aw(name, banks)
    x = images(name)
    with torch.no_grad():
        expected = static(x)
        for route in ROUTES:
            assert_close(aw(x, route=route_arg(route, 2)), expected, TOL, f"{name} banks={banks} route={route}")
            assert all(torch.equal(w, torch.ones_like(w)) for w in aw.omegas)  # omega = 1 exactly
    convs = [m for m in static.modules() if isinstance(m, nn.Conv2d)]
    assert [w.shape for w in aw.omegas] == [(2, c.out_channels) for c in convs]
    assert len(aw.p_types) == len(aw.type_logits) == aw.router.num_blocks
    assert all(p.shape == (2, 2) and torch.allclose(p.sum(1), torch.ones(2)) for p in aw.p_types)
    assert aw.adversarial_score.shape == (2,)
    assert_close(aw.adversarial_score, torch.stack([p[:, 1] for p in aw.p_types]).mean(0), 1e-6, "score")


def test_two_banks_without_omega_compute_static_model():
    static, aw = static_and_aw("smallcnn", banks=2, omega=False)
    x = images("smallcnn")
    with torch.no_grad():
        for route in ROUTES:
            assert_close(aw(x, route=route_arg(route, 2)), static(x), TOL, f"route={route}")
    assert aw.omegas == [] and aw.router.signal_heads is None


@pytest.mark.parametrize("route", [0, 1])
def test_forced_route_in_training_matches_static_training_step(route):
    # The true type selects one BN: with every sample of one type, that BN sees the static BN's batch.
    static, aw = static_and_aw("smallcnn", banks=2)
    static.train()
    aw.train()
    x = images("smallcnn", batch=4)
    assert_close(aw(x, route=route), static(x), TOL, "training logits")
    static_bns = [m for m in static.modules() if isinstance(m, nn.BatchNorm2d)]
    mix_bns = [m for m in aw.modules() if isinstance(m, MixBatchNorm2d)]
    for bn, mix in zip(static_bns, mix_bns):
        assert_close(mix.running_mean[route], bn.running_mean, TOL, "updated running mean")
        assert_close(mix.running_var[route], bn.running_var, TOL, "updated running var")
        assert not torch.equal(mix.running_mean[1 - route], bn.running_mean)  # the other type's BN kept its own


# --- the router steers the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("banks", [1, 2])
def test_signal_heads_change_the_output(banks):
    static, aw = static_and_aw("smallcnn", banks)
    perturb_signal_heads(aw)
    x = images("smallcnn")
    with torch.no_grad():
        logits = aw(x, route=0)
    assert all((w - 1).abs().max() > 0.1 for w in aw.omegas)
    assert all(((w > 0) & (w < 2)).all() for w in aw.omegas)  # omega = 2 sigmoid(z)
    assert (logits - static(x)).abs().max() > 1e-2


@pytest.mark.parametrize("banks", [1, 2])
@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_route_selects_the_bns_and_banks(name, banks):
    static, aw = static_and_aw(name, banks)
    make_adversarial_side_differ(aw)
    x = images(name)
    with torch.no_grad():
        clean, adversarial = aw(x, route=0), aw(x, route=1)
        per_sample = aw(x, route=torch.tensor([0, 1]))
        as_floats = aw(x, route=torch.tensor([0.0, 1.0]))
        soft = aw(x, route=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        expected = static(x)
    assert_close(clean, expected, TOL, "clean route")  # only the adversarial side changed
    assert (adversarial - clean).abs().max() > 1e-2
    for got in (per_sample, as_floats, soft):  # each sample routed on its own
        assert_close(got[0], clean[0], TOL, "sample 0 (clean)")
        assert_close(got[1], adversarial[1], TOL, "sample 1 (adversarial)")


def test_unforced_route_mixes_by_p_type():
    _, aw = static_and_aw("smallcnn", banks=2)
    make_adversarial_side_differ(aw)
    x = images("smallcnn")
    heads, blocks = aw.router.type_heads, aw.router.num_blocks  # every Type Head, one Linear
    with torch.no_grad():
        heads.weight.zero_()  # a router sure that everything is clean, then adversarial
        heads.bias.copy_(torch.tensor([30.0, -30.0]).repeat(blocks))
        sure_clean = aw(x)
        assert aw.adversarial_score.max() < 1e-6
        heads.bias.copy_(torch.tensor([-30.0, 30.0]).repeat(blocks))
        sure_adversarial = aw(x)
        assert_close(sure_clean, aw(x, route=0), TOL, "p_type = clean")
        assert_close(sure_adversarial, aw(x, route=1), TOL, "p_type = adversarial")
        heads.bias.zero_()
        halfway = aw(x)
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in aw.p_types)
    assert (halfway - sure_clean).abs().max() > 1e-3 and (halfway - sure_adversarial).abs().max() > 1e-3


@pytest.mark.parametrize("route", [None, 1, "soft"])
@pytest.mark.parametrize("banks,omega", [(1, True), (2, True), (2, False)])
def test_signals_give_every_layer_its_block_mix_and_omega(banks, omega, route):
    """What each layer reads, and the gradients through it, are those of the plain formulas: MixBN j gets its
    block's mix; AW convolution i gets omega_i (one bank), mix x omega_i (two banks) or the mix (no omega)."""
    _, aw = static_and_aw("resnet18", banks, omega)
    perturb_signal_heads(aw) if omega else None
    x = images("resnet18", batch=3)
    if route == "soft":
        route = torch.rand(3, 2)
    aw(x, route=route)
    signals, out = aw.signals, aw.signals.router
    convs = [m for m in aw.body.modules() if isinstance(m, AWConv2d)]
    norms = [m for m in aw.body.modules() if isinstance(m, MixBatchNorm2d)]
    mix = out.p_type if route is None else awnet.nn.signals.route_mix(route, x).unsqueeze(1).expand_as(out.p_type)
    omegas = out.signal.split(signals.conv_channels, 1) if omega else [None] * len(convs)
    expected = {}
    for norm in norms:
        expected[f"norm {norm.norm_index}"] = (signals.norm_mix(norm.norm_index), mix[:, norm.block_index])
    for conv, omega_i in zip(convs, omegas):
        block_mix = mix[:, conv.block_index]
        plain = (omega_i.unsqueeze(1) if banks == 1 else block_mix.unsqueeze(2) * omega_i.unsqueeze(1)
                 if omega else block_mix)
        expected[f"conv {conv.conv_index}"] = (signals.conv_coeff(conv.conv_index), plain)
    for name, (got, want) in expected.items():
        assert got.shape == want.shape and got.is_contiguous(), name
        assert torch.equal(got, want), name
    # The gradients that reach the router's outputs through the gathers equal those through the formulas.
    if route is not None and not omega:  # nothing the layers read depends on the router
        return
    sources = [t for t in (out.signal, out.type_logits) if t is not None]
    weights = {name: torch.randn_like(want) for name, (_, want) in expected.items()}
    got = torch.autograd.grad(sum((g * weights[n]).sum() for n, (g, _) in expected.items()), sources,
                              retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(sum((w * weights[n]).sum() for n, (_, w) in expected.items()), sources,
                               allow_unused=True)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            assert_close(g, w, 1e-5, "router output gradient")


def test_bad_routes_are_refused():
    _, aw = static_and_aw("smallcnn")
    x = images("smallcnn")
    with pytest.raises(ValueError, match="route must be 0"):
        aw(x, route=2)
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(2,\)"):
        aw(x, route=torch.zeros(3))
    with pytest.raises(TypeError, match="route must be"):
        aw(x, route="clean")


def per_head_state_dict(model: AWNet) -> dict[str, torch.Tensor]:
    """`model`'s state dict in the layout before the router's heads were fused: one Linear per head."""
    state, router = model.state_dict(), model.router
    for param in ("weight", "bias"):
        signal, types = state.pop(f"router.heads.{param}").split([router.signal_size, 2 * router.num_blocks])
        for heads, rows, sizes in (("signal_heads", signal, router.conv_channels),
                                   ("type_heads", types, (2,) * router.num_blocks)):
            for i, part in enumerate(rows.split(sizes)):
                state[f"router.{heads}.{i}.{param}"] = part.clone()
    return state


def per_kind_state_dict(model: AWNet) -> dict[str, torch.Tensor]:
    """`model`'s state dict in the layout with one Linear for the Signal Heads and one for the Type Heads."""
    state, router = model.state_dict(), model.router
    for param in ("weight", "bias"):
        signal, types = state.pop(f"router.heads.{param}").split([router.signal_size, 2 * router.num_blocks])
        state[f"router.signal_heads.{param}"], state[f"router.type_heads.{param}"] = signal.clone(), types.clone()
    return state


def per_head_router(router, state: dict[str, torch.Tensor], x: torch.Tensor):
    """The router's outputs computed as before the fusion, head by head from a per-head state dict."""
    features = router.features(router.normalize(x))

    def head(kind: str, i: int) -> torch.Tensor:
        return F.linear(features, state[f"router.{kind}.{i}.weight"], state[f"router.{kind}.{i}.bias"])

    omegas = [2 * torch.sigmoid(head("signal_heads", i)) for i in range(len(router.conv_channels))]
    type_logits = [head("type_heads", j) for j in range(router.num_blocks)]
    p_types = [logits.softmax(dim=1) for logits in type_logits]
    return omegas, type_logits, p_types, torch.stack([p[:, 1] for p in p_types]).mean(dim=0)


@pytest.mark.parametrize("banks", [1, 2])
def test_fused_heads_compute_the_per_head_router(banks):
    _, aw = static_and_aw("resnet18", banks)
    perturb_signal_heads(aw)
    x = images("resnet18")
    with torch.no_grad():
        aw(x)
        omegas, type_logits, p_types, score = per_head_router(aw.router, per_head_state_dict(aw), x)
    for name, got, expected in (("omega", aw.omegas, omegas), ("type logits", aw.type_logits, type_logits),
                                ("p_type", aw.p_types, p_types)):
        assert len(got) == len(expected), name
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_close(g, e, 1e-6, f"{name} {i}")
    assert_close(aw.adversarial_score, score, 1e-6, "adversarial score")


def test_a_per_head_state_dict_and_checkpoint_still_load(tmp_path):
    from awnet.checkpoint import FORMAT, _digest

    torch.manual_seed(0)
    model = randomize_bns(awnet.models.build("resnet18", aw=True, banks=2)).eval()
    perturb_signal_heads(model)
    old = per_head_state_dict(model)
    assert "router.signal_heads.19.weight" in old and "router.type_heads.8.bias" in old
    x = images("resnet18")
    fresh = awnet.models.build("resnet18", aw=True, banks=2).eval()
    fresh.load_state_dict(old)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    config = json.dumps(model.config, sort_keys=True)
    path = tmp_path / "per_head.safetensors"
    save_file(old, path, {"format": FORMAT, "config": config, "sha256": _digest(config, old)})
    with torch.no_grad():
        assert torch.equal(awnet.load(path)(x), model(x))
    del old["router.type_heads.3.weight"]
    with pytest.raises(ValueError, match="misses heads"):
        fresh.load_state_dict(old)


def test_a_state_dict_with_one_linear_per_kind_of_head_still_loads():
    torch.manual_seed(0)
    model = randomize_bns(awnet.models.build("resnet18", aw=True, banks=2)).eval()
    perturb_signal_heads(model)
    fresh = awnet.models.build("resnet18", aw=True, banks=2).eval()
    fresh.load_state_dict(per_kind_state_dict(model))
    x = images("resnet18")
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_a_run_saved_with_one_linear_per_kind_of_head_resumes_its_momentum():
    """The optimizer state of the older layout maps onto the fused heads: momentum concatenated like the rows."""
    from awnet.train.loop import fused_head_optimizer_state

    torch.manual_seed(0)
    net = awnet.models.build("smallcnn", aw=True)
    router = net.router
    older = []  # the parameters in the older model's order: the heads as one Linear per kind
    for name, p in net.named_parameters():
        if name == "router.heads.weight":
            weights = p.detach().split([router.signal_size, 2 * router.num_blocks])
            biases = router.heads.bias.detach().split([router.signal_size, 2 * router.num_blocks])
            older += [t.clone().requires_grad_() for pair in zip(weights, biases) for t in pair]
        elif name != "router.heads.bias":
            older.append(p.detach().clone().requires_grad_())
    before = torch.optim.SGD(older, lr=0.1, momentum=0.9)
    for p in older:
        p.grad = torch.randn_like(p)
    before.step()
    after = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    after.load_state_dict(fused_head_optimizer_state(before.state_dict(), net))
    momentum = {name: after.state[p]["momentum_buffer"] for name, p in net.named_parameters()}
    olds = iter(older)
    for name, p in net.named_parameters():
        if name == "router.heads.weight":
            signal_w, signal_b, type_w, type_b = (before.state[next(olds)]["momentum_buffer"] for _ in range(4))
            assert torch.equal(momentum[name], torch.cat([signal_w, type_w]))
            assert torch.equal(momentum["router.heads.bias"], torch.cat([signal_b, type_b]))
        elif name != "router.heads.bias":
            assert torch.equal(momentum[name], before.state[next(olds)]["momentum_buffer"]), name


# --- gradients through the router ---------------------------------------------------------------------------

@pytest.mark.parametrize("banks", [1, 2])
def test_task_loss_gradients_reach_router_and_input_through_it(banks):
    _, aw = static_and_aw("smallcnn", banks)
    perturb_signal_heads(aw)
    make_adversarial_side_differ(aw)
    x = images("smallcnn").requires_grad_()
    y = torch.tensor([3, 7])
    F.cross_entropy(aw(x), y).backward()  # unforced: p_type mixes MixBN and the banks
    router = aw.router
    for name, p in router.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, f"no task-loss gradient reaches router.{name}"
    full = x.grad.clone()

    # The same loss with the router reading a detached input: what is left is the body's path only.
    forward = router.forward
    router.forward = lambda inp: forward(inp.detach())
    x.grad = None
    F.cross_entropy(aw(x), y).backward()
    assert (full - x.grad).abs().max() > 1e-3 * full.abs().max()


def test_router_outputs_stay_in_the_graph_and_type_loss_trains_type_heads():
    _, aw = static_and_aw("smallcnn")
    perturb_signal_heads(aw)
    x = images("smallcnn").requires_grad_()
    aw(x)
    for what in (aw.adversarial_score.sum(), aw.omegas[0].sum()):
        (grad,) = torch.autograd.grad(what, x, retain_graph=True)
        assert grad.abs().max() > 0
    loss = aw.type_loss(torch.tensor([0, 1]))
    expected = sum(F.cross_entropy(t, torch.tensor([0, 1])) for t in aw.type_logits) / len(aw.type_logits)
    assert_close(loss, expected, 1e-6, "type loss")
    loss.backward()
    grad = aw.router.heads.weight.grad
    type_grads = grad[aw.router.signal_size:].split(2)  # per Type Head
    assert len(type_grads) == aw.router.num_blocks and all(g.abs().max() > 0 for g in type_grads)
    assert not grad[:aw.router.signal_size].any(), "the type loss reaches the Signal Heads"


def test_compiled_aw_resnet18_runs_forward_and_backward_without_graph_break():
    # fullgraph=True fails on any graph break; aot_eager traces the forward and the joint backward graph as
    # inductor does, without inductor's minutes of C++ code generation on CPU.
    torch._dynamo.reset()
    _, aw = static_and_aw("resnet18")
    perturb_signal_heads(aw)
    make_adversarial_side_differ(aw)
    aw.train()
    eager = copy.deepcopy(aw)  # the same start: the training forward updates the running statistics
    route = torch.tensor([0, 1])
    results = []
    for model in (torch.compile(aw, fullgraph=True, backend="aot_eager"), eager):
        x = images("resnet18").requires_grad_()
        logits = model(x, route=route)
        net = getattr(model, "_orig_mod", model)
        (logits.square().sum() + net.type_loss(route)).backward()
        assert len(net.omegas) == 20 and net.adversarial_score.shape == (2,)
        results.append([logits, x.grad] + [p.grad for p in net.router.parameters()])
    for got, expected in zip(*results):
        assert_close(got, expected, 1e-3, "compiled vs eager")


# --- convert() ------------------------------------------------------------------------------------------------

def test_convert_groups_layers_into_blocks():
    _, aw = static_and_aw("resnet18")
    assert aw.router.num_blocks == 9  # the stem and eight BasicBlocks
    block = aw.body.layer2[0]
    indices = {m.block_index for m in block.modules() if isinstance(m, (AWConv2d, MixBatchNorm2d))}
    assert len(indices) == 1  # the shortcut Sequential belongs to its residual block
    assert aw.body.conv1.block_index == aw.body.bn1.block_index == 0

    class ConvNormAct(nn.Sequential):  # a Sequential subclass (torchvision's Conv2dNormActivation) is a block
        def __init__(self, cin, cout):
            super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.Flatten())
    assert awnet.convert(plain).router.num_blocks == 1
    stacked = nn.Sequential(ConvNormAct(3, 4), ConvNormAct(4, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    converted = awnet.convert(stacked)
    assert converted.router.num_blocks == 2
    assert [m.block_index for m in converted.modules() if isinstance(m, AWConv2d)] == [0, 1]


def test_convert_handles_arbitrary_cnns():
    # Bias, groups, dilation, 'same' padding, a BN without affine, a conv used twice: the converted net still
    # computes the static one.
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding="same", groups=2, bias=True)
    static = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, dilation=2, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                           conv, conv, nn.BatchNorm2d(8, affine=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 5))
    randomize_bns(static)
    x = torch.rand(3, 3, 20, 20)
    static(x)  # one training step gives the affine-free BN its statistics
    static.eval()
    aw = awnet.convert(static, banks=2).eval()
    with torch.no_grad():
        assert_close(aw(x), static(x), TOL, "arbitrary CNN")
    assert aw.body[3] is aw.body[4] and isinstance(aw.body[3], AWConv2d)
    assert not aw.body[5].affine and "body.5.weight" not in aw.state_dict()
    assert aw.router.conv_channels == (8, 8) and aw.config is None
    assert type(static[0]) is nn.Conv2d  # the input model is left as it was


@pytest.mark.parametrize("banks", [1, 2])
def test_a_cnn_without_batch_norm_converts_and_trains(banks):
    """No MixBN: the router's signals gather only the convolutions' coefficients."""
    torch.manual_seed(0)
    static = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.Flatten(), nn.Linear(6 * 16 * 16, 5))
    aw = awnet.convert(static, banks=banks).train()
    x = torch.rand(2, 3, 20, 20)
    with torch.no_grad():
        assert_close(aw(x, route=0), static(x), TOL, "a new router leaves the network static")
    perturb_signal_heads(aw)
    F.cross_entropy(aw(x), torch.tensor([1, 3])).backward()
    assert aw.router.heads.weight.grad.abs().max() > 0


# --- omega folded into the MixBN after its convolution ---------------------------------------------------------

def _unfolded(model: AWNet) -> AWNet:
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(m, AWConv2d):
            m.folded = False
        elif isinstance(m, MixBatchNorm2d):
            m.prescale_conv = None
    return clone


@pytest.mark.parametrize("name,folds", [("smallcnn", 3), ("resnet18", 20)])
def test_omega_folded_into_the_mixbn_computes_the_unfolded_network(name, folds):
    """In eval each convolution's omega scales its MixBN's input instead of its output: the same logits and
    the same gradients for the input (through the router too) and the parameters; training is unfolded."""
    _, aw = static_and_aw(name)
    perturb_signal_heads(aw)
    make_adversarial_side_differ(aw)
    assert sum(isinstance(m, AWConv2d) and m.folded for m in aw.modules()) == folds
    reference = _unfolded(aw)
    x = images(name, batch=3)
    for training in (False, True):
        results = []
        for model in (aw.train(training), reference.train(training)):
            xi = x.clone().requires_grad_()
            logits = model(xi)
            params = [p for p in model.parameters() if p.requires_grad]
            results.append([logits, *torch.autograd.grad((logits * torch.arange(10.0)).sum(), [xi, *params])])
        for i, (got, want) in enumerate(zip(*results)):
            assert_close(got, want, 1e-5, f"{'train' if training else 'eval'} output/gradient {i}")


def test_only_a_one_bank_bias_free_convolution_feeding_only_its_mixbn_is_folded():
    torch.manual_seed(0)
    shared = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    static = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8),  # folded
        nn.Conv2d(8, 8, 3, bias=True), nn.BatchNorm2d(8),  # a bias: not
        nn.Conv2d(8, 8, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(8),  # something between: not
        shared, nn.ReLU(), shared, nn.BatchNorm2d(8),  # called twice: not
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    aw = awnet.convert(static)
    assert [m.folded for m in aw.modules() if isinstance(m, AWConv2d)] == [True, False, False, False]
    assert [m.prescale_conv for m in aw.modules() if isinstance(m, MixBatchNorm2d)] == [0, None, None, None]
    two_banks = awnet.convert(static, banks=2)
    assert not any(m.folded for m in two_banks.modules() if isinstance(m, AWConv2d))
    perturb_signal_heads(aw)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert_close(aw.eval()(x), _unfolded(aw).eval()(x), 1e-5, "partly folded")


def test_convert_refuses_what_it_cannot_reproduce():
    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(ValueError, match="subclass"):
        awnet.convert(nn.Sequential(MyConv(3, 4, 3)))
    with pytest.raises(ValueError, match="padding_mode"):
        awnet.convert(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")))
    with pytest.raises(ValueError, match="track_running_stats"):
        awnet.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None)))
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        awnet.convert(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="already an AWNet"):
        awnet.convert(awnet.models.build("smallcnn", aw=True))


def test_deepcopy_after_a_forward_keeps_layers_bound_to_the_copy():
    _, aw = static_and_aw("smallcnn")
    x = images("smallcnn")
    expected = aw(x)
    clone = copy.deepcopy(aw)  # the last forward's non-leaf tensors are not copied
    assert clone.omegas == [] and clone.adversarial_score is None
    assert all(m.signals is clone.signals for m in clone.modules() if isinstance(m, (AWConv2d, MixBatchNorm2d)))
    with torch.no_grad():
        assert_close(clone(x), expected, 1e-6, "copy")


# --- the layers on their own ----------------------------------------------------------------------------------

def test_aw_conv2d_layer_is_omega_scaled_and_bank_blended():
    torch.manual_seed(0)
    layer = AWConv2d(4, 6, 3, padding=1, bias=True, banks=2)
    x, omega, mix = torch.randn(2, 4, 5, 5), torch.rand(2, 6) + 0.5, torch.rand(2, 2)
    y = layer(x, omega=omega, mix=mix)
    for b in range(2):  # per sample, against a static conv with the blended filters
        w = torch.einsum("k,koihw->oihw", mix[b], layer.weight) * omega[b, :, None, None, None]
        bias = (mix[b] @ layer.bias) * omega[b]
        assert_close(y[b:b + 1], F.conv2d(x[b:b + 1], w, bias, padding=1), TOL, f"sample {b}")
    with pytest.raises(ValueError, match="needs mix"):
        layer(x, omega=omega)
    one_bank = AWConv2d(4, 6, 3, bias=False)
    assert_close(one_bank(x), F.conv2d(x, one_bank.weight[0]), TOL, "no signals: the static conv")


def test_mix_batch_norm_layer_selects_a_bn_per_sample_in_training():
    torch.manual_seed(0)
    layer = MixBatchNorm2d(3)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(2, 3) + 0.5)
        layer.bias.copy_(torch.randn(2, 3))
    x = torch.randn(4, 3, 5, 5)
    types = torch.tensor([0, 0, 1, 1])
    y = layer(x, mix=awnet.nn.route_mix(types, x))
    for k, rows in ((0, slice(0, 2)), (1, slice(2, 4))):
        expected = F.batch_norm(x[rows], None, None, layer.weight[k], layer.bias[k], training=True)
        assert_close(y[rows], expected, TOL, f"type {k}")
    with pytest.raises(ValueError, match="needs mix"):
        layer(x)


# --- checkpoints ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,aw,banks", [("smallcnn", False, 1), ("smallcnn", True, 2), ("resnet18", True, 1)])
def test_save_load_round_trip_gives_identical_logits(tmp_path, name, aw, banks):
    torch.manual_seed(0)
    model = randomize_bns(awnet.models.build(name, aw=aw, banks=banks)).eval()
    if aw:
        perturb_signal_heads(model)
        make_adversarial_side_differ(model)
    path = tmp_path / "model.safetensors"
    awnet.save(torch.compile(model) if aw else model, path)  # a compiled wrapper saves its module
    loaded = awnet.load(path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    x = images(name)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    awnet.save(awnet.models.build("smallcnn", aw=True), path)
    return path


def test_truncated_checkpoint_is_refused(checkpoint):
    data = checkpoint.read_bytes()
    for size in (len(data) - 100, 200, 4):
        checkpoint.write_bytes(data[:size])
        with pytest.raises(ValueError, match="not a readable safetensors file"):
            awnet.load(checkpoint)


def test_tampered_checkpoint_is_refused(checkpoint):
    data = bytearray(checkpoint.read_bytes())
    data[-10] ^= 0xFF  # one weight byte
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="integrity check"):
        awnet.load(checkpoint)


def test_checkpoint_with_edited_config_or_foreign_file_is_refused(checkpoint, tmp_path):
    with safe_open(checkpoint, framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(metadata["config"])
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, edited, {**metadata, "config": json.dumps({**config, "banks": 2})})
    with pytest.raises(ValueError, match="integrity check"):
        awnet.load(edited)
    foreign = tmp_path / "foreign.safetensors"
    save_file(tensors, foreign)
    with pytest.raises(ValueError, match="not an awnet checkpoint"):
        awnet.load(foreign)
    pickle = tmp_path / "model.pt"
    torch.save({"x": torch.ones(2)}, pickle)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        awnet.load(pickle)


def test_save_refuses_a_model_it_could_not_rebuild(tmp_path):
    model = awnet.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="has none"):
        awnet.save(model, tmp_path / "model.safetensors")
    assert not list(tmp_path.iterdir())


def test_flop_counts_follow_the_static_network():
    # With the reference backend a one-bank AW-Net costs its static network's FLOPs plus the router's and
    # the blending's: under 10% more for ResNet-18.
    from torch.utils.flop_counter import FlopCounterMode

    static, aw = static_and_aw("resnet18")
    x = images("resnet18", batch=1)
    counts = []
    for model in (static, aw):
        with awkernels.use_backend("reference"), FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        counts.append(counter.get_total_flops())
    assert counts[0] < counts[1] < 1.1 * counts[0]


def test_import_awnet_gives_the_whole_package():
    """`import awnet` exposes every subpackage (attacks, data, eval and train on first use, so that importing
    the layers does not pay for torchattacks' scipy or matplotlib, and Dynamo, 2 s, is left to a compilation)."""
    import subprocess
    import sys

    code = ("import sys, awnet\n"
            "lazy = [name for name in ('awnet.attacks', 'awnet.eval', 'awnet.train', 'torchattacks', 'torch._dynamo') "
            "if name in sys.modules]\n"
            "assert not lazy, lazy\n"
            "assert callable(awnet.attacks.pgd) and callable(awnet.attacks.autoattack)\n"
            "assert callable(awnet.eval.evaluate) and callable(awnet.eval.plot_tradeoff)\n"
            "assert callable(awnet.train.train) and callable(awnet.data.load_dataset)\n"
            "assert callable(awnet.from_teachers) and callable(awnet.convert)\n"
            "assert {'attacks', 'data', 'eval', 'train', 'nn', 'models'} <= set(dir(awnet))\n"
            "try:\n    awnet.no_such_thing\nexcept AttributeError as e:\n    assert 'no_such_thing' in str(e)\n"
            "else:\n    raise AssertionError('awnet.no_such_thing resolved')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
