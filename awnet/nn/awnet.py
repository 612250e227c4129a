"""`AWNet`: the AW-Net wrapper that runs the router and hands each layer its signals.

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430), "Adversarial Weight-Varied Network": a body CNN
whose convolutions are `AWConv2d` and whose batch norms are `MixBatchNorm2d`, and an `AdversarialRouter`
that sees the same input. `awnet.convert` makes one from any static CNN.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from .aw_conv import AWConv2d
from .mix_bn import MixBatchNorm2d
from .router import AdversarialRouter
from .signals import Signals


class _LayerTracer(torch.fx.Tracer):
    """Traces a body with its AW layers as single calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (AWConv2d, MixBatchNorm2d)) or super().is_leaf_module(m, qualname)


def omega_folds(body: nn.Module) -> list[tuple[AWConv2d, MixBatchNorm2d]]:
    """The (AWConv2d, MixBatchNorm2d) pairs of `body` where the convolution's output goes only into the MixBN
    and the convolution has one bank and no bias: there omega can scale the MixBN's input instead of the
    convolution's output (DESIGN.md section 3), which in eval the MixBN's per-(sample, channel) map absorbs.
    Both must be called once per forward (a shared layer's other calls would lose or gain omega). Found by
    tracing the body with torch.fx; a body it cannot trace has none (it runs as it is)."""
    try:
        graph = _LayerTracer().trace(body)
    except Exception:  # data-dependent Python in a user's CNN: no fold, nothing else changes
        return []
    modules = dict(body.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), MixBatchNorm2d) or not node.args:
            continue
        source, norm = node.args[0], modules[node.target]
        if (not isinstance(source, torch.fx.Node) or source.op != "call_module" or len(source.users) != 1
                or calls[source.target] != 1 or calls[node.target] != 1):
            continue
        conv = modules.get(source.target)
        if (isinstance(conv, AWConv2d) and conv.banks == 1 and conv.bias is None
                and conv.out_channels == norm.num_features):
            pairs.append((conv, norm))
    return pairs


class AWNet(nn.Module):
    """``logits = body(x)`` with every AW layer steered by ``router(x)``.

    forward(x, route=None): x are images in [0, 1] (the body normalises). route=None mixes each block's
    MixBN (and bank blend) by its p_type; route forces the type for every block: 0 (clean), 1 (adversarial),
    a (B,) per-sample tensor or a (B, 2) soft route (see `signals.route_mix`). Training passes the true type.

    After a forward, `omegas`, `type_logits`, `p_types` and `adversarial_score` hold the router's outputs,
    still in the autograd graph (an attack differentiates through them; they keep that forward's graph alive
    until the next one). They live in the shared `Signals`, which torch.compile(fullgraph=True) traces.
    """

    def __init__(self, body: nn.Module, router: AdversarialRouter):
        super().__init__()
        self.body = body
        self.router = router
        convs = [m for m in body.modules() if isinstance(m, AWConv2d)]
        norms = [m for m in body.modules() if isinstance(m, MixBatchNorm2d)]
        if router.omega and router.conv_channels != tuple(conv.out_channels for conv in convs):
            raise ValueError(f"the router's Signal Heads give {router.conv_channels} channels, the body's "
                             f"AWConv2d layers have {tuple(conv.out_channels for conv in convs)}")
        banks = {conv.banks for conv in convs}
        if len(banks) > 1:  # the signals are made for all convolutions at once
            raise ValueError(f"the body's AWConv2d layers must share one number of banks, got {sorted(banks)}")
        for layer in convs + norms:
            if not 0 <= layer.block_index < router.num_blocks:
                raise ValueError(f"a layer's block_index {layer.block_index} has no Type Head "
                                 f"(the router has {router.num_blocks})")
        self.signals = Signals([conv.out_channels for conv in convs], [conv.block_index for conv in convs],
                               [norm.block_index for norm in norms], banks.pop() if banks else 1)
        for layer in convs + norms:
            layer.signals = self.signals
        for conv_index, conv in enumerate(convs):
            conv.conv_index = conv_index
        for norm_index, norm in enumerate(norms):
            norm.norm_index = norm_index
        if router.omega:
            for conv, norm in omega_folds(body):
                conv.folded, norm.prescale_conv = True, conv.conv_index
        self.config: dict | None = None  # the builder's arguments when built by awnet.models.build

    def forward(self, x: torch.Tensor, route: int | torch.Tensor | None = None) -> torch.Tensor:
        self.signals.update(self.router(x), route, x)
        # In eval (inference, every attack step) a folded convolution's omega goes to its MixBN. In training
        # the batch statistics are of the scaled output, which the convolution's own pass makes.
        self.signals.folding = not self.training
        return self.body(x)

    @property
    def omegas(self) -> list[torch.Tensor]:
        """Per AW convolution, (B, C_out); empty for a two-bank AW-Net without omega."""
        out = self.signals.router
        return [] if out is None or out.signal is None else list(out.signal.split(self.signals.conv_channels, 1))

    @property
    def type_logits(self) -> list[torch.Tensor]:
        """Per block, (B, 2) [clean, adversarial] logits: the type loss's input."""
        out = self.signals.router
        return [] if out is None else list(out.type_logits.unbind(1))

    @property
    def p_types(self) -> list[torch.Tensor]:
        """Per block, (B, 2) softmax of the type logits."""
        out = self.signals.router
        return [] if out is None else list(out.p_type.unbind(1))

    @property
    def adversarial_score(self) -> torch.Tensor | None:
        """(B,): mean over blocks of p_type[:, 1], the router's detection score."""
        out = self.signals.router
        return None if out is None else out.adversarial_score

    def type_loss(self, types: torch.Tensor) -> torch.Tensor:
        """Mean over blocks of the cross-entropy of the last forward's type logits against the true types
        (B,), 0 = clean and 1 = adversarial."""
        logits = self.signals.router.type_logits  # (B, blocks, 2): every block has B samples, one mean over all
        return F.cross_entropy(logits.flatten(0, 1), types.repeat_interleave(logits.shape[1]))
