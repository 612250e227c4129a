"""The router's signals for one forward, shared by an `AWNet` and its layers, and the route semantics.

AW-Net (Wei, Zhao, Li, TPAMI 2024, https://arxiv.org/abs/2306.03430) hands every block the regulation
signals omega of its convolutions and a type mixture for its MixBN (and bank blend). An AW-Net wraps an
arbitrary CNN whose forward calls its layers with one argument, so the layers cannot receive these as
arguments: they read them from a `Signals` object that the AWNet fills at the start of every forward. It is
a plain object, not a Module, so torch.compile traces its mutation without a graph break.
"""
from __future__ import annotations

import torch

NUM_TYPES = 2  # [clean, adversarial]


class Signals:
    """What the router computed in the last forward. The tensors stay in the autograd graph."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.omegas: list[torch.Tensor] = []  # per AW convolution, (B, C_out); empty without Signal Heads
        self.mixes: list[torch.Tensor] | None = None  # per block, (B, 2): the forced route or its p_type
        self.type_logits: list[torch.Tensor] = []  # per block, (B, 2)
        self.p_types: list[torch.Tensor] = []  # per block, (B, 2)
        self.adversarial_score: torch.Tensor | None = None  # (B,)

    def block_mix(self, block_index: int) -> torch.Tensor:
        if self.mixes is None:
            raise RuntimeError("this layer belongs to an AWNet: call the AWNet, not its body")
        return self.mixes[block_index]

    def conv_inputs(self, conv_index: int, block_index: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        omega = self.omegas[conv_index] if self.omegas else None
        return omega, self.block_mix(block_index)

    # Copies and pickles of a model start with no signals: the last forward's tensors belong to its graph
    # (deepcopy refuses non-leaf tensors), and sharing between the copied layers is kept by deepcopy's memo.
    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.clear()


def route_mix(route: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The (B, 2) [clean, adversarial] coefficients that a forced route gives every block.

    route: 0 (clean) or 1 (adversarial) for the whole batch; a (B,) tensor of per-sample types (0/1, bool,
    or a float probability of "adversarial"); or a (B, 2) float tensor used as it is (a soft route).
    Values are not checked (that would sync the device): a (B,) entry r gives the row [1 - r, r].
    """
    batch = x.shape[0]
    if isinstance(route, int):
        if route not in (0, 1):
            raise ValueError(f"route must be 0 (clean) or 1 (adversarial), got {route}")
        adversarial = x.new_full((batch,), float(route))
    elif isinstance(route, torch.Tensor):
        route = route.to(device=x.device, dtype=x.dtype)
        if route.dim() == 2 and tuple(route.shape) == (batch, NUM_TYPES):
            return route
        if tuple(route.shape) != (batch,):
            raise ValueError(f"a route tensor must have shape (B,) = ({batch},) or (B, 2) = ({batch}, 2), "
                             f"got {tuple(route.shape)}")
        adversarial = route
    else:
        raise TypeError(f"route must be None, 0, 1 or a tensor, got {type(route).__name__}")
    return torch.stack((1 - adversarial, adversarial), dim=1)
