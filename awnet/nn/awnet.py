"""`AWNet`: the AW-Net wrapper that runs the router and hands each layer its signals.

AW-Net (Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430), "Adversarial Weight-Varied Network": a body CNN
whose convolutions are `AWConv2d` and whose batch norms are `MixBatchNorm2d`, and an `AdversarialRouter`
that sees the same input. `awnet.convert` makes one from any static CNN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .aw_conv import AWConv2d
from .mix_bn import MixBatchNorm2d
from .router import AdversarialRouter
from .signals import Signals, route_mix


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
        self.signals = Signals()
        convs = [m for m in body.modules() if isinstance(m, AWConv2d)]
        norms = [m for m in body.modules() if isinstance(m, MixBatchNorm2d)]
        if router.omega and router.conv_channels != tuple(conv.out_channels for conv in convs):
            raise ValueError(f"the router's Signal Heads give {router.conv_channels} channels, the body's "
                             f"AWConv2d layers have {tuple(conv.out_channels for conv in convs)}")
        for layer in convs + norms:
            if not 0 <= layer.block_index < router.num_blocks:
                raise ValueError(f"a layer's block_index {layer.block_index} has no Type Head "
                                 f"(the router has {router.num_blocks})")
            layer.signals = self.signals
        for conv_index, conv in enumerate(convs):
            conv.conv_index = conv_index
        self.config: dict | None = None  # the builder's arguments when built by awnet.models.build

    def forward(self, x: torch.Tensor, route: int | torch.Tensor | None = None) -> torch.Tensor:
        out = self.router(x)
        signals = self.signals
        signals.omegas, signals.type_logits, signals.p_types = out.omegas, out.type_logits, out.p_types
        signals.adversarial_score = out.adversarial_score
        signals.mixes = out.p_types if route is None else [route_mix(route, x)] * len(out.p_types)
        return self.body(x)

    @property
    def omegas(self) -> list[torch.Tensor]:
        """Per AW convolution, (B, C_out); empty for a two-bank AW-Net without omega."""
        return self.signals.omegas

    @property
    def type_logits(self) -> list[torch.Tensor]:
        """Per block, (B, 2) [clean, adversarial] logits: the type loss's input."""
        return self.signals.type_logits

    @property
    def p_types(self) -> list[torch.Tensor]:
        """Per block, (B, 2) softmax of the type logits."""
        return self.signals.p_types

    @property
    def adversarial_score(self) -> torch.Tensor | None:
        """(B,): mean over blocks of p_type[:, 1], the router's detection score."""
        return self.signals.adversarial_score

    def type_loss(self, types: torch.Tensor) -> torch.Tensor:
        """Mean over blocks of the cross-entropy of the last forward's type logits against the true types
        (B,), 0 = clean and 1 = adversarial."""
        return torch.stack([F.cross_entropy(logits, types) for logits in self.type_logits]).mean()
