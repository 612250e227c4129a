"""The router's signals for one forward, shared by an `AWNet` and its layers, and the route semantics.

AW-Net (Wei, Zhao, Li, TPAMI 2024, https://arxiv.org/abs/2306.03430) hands every block the regulation
signals omega of its convolutions and a type mixture for its MixBN (and bank blend). An AW-Net wraps an
arbitrary CNN whose forward calls its layers with one argument, so the layers cannot receive these as
arguments: they read them from a `Signals` object that the AWNet fills at the start of every forward. It is
a plain object, not a Module, so torch.compile traces its mutation without a graph break.

What the layers read is made once per forward for all of them (DESIGN.md section 3: a step's cost is its
number of kernels), already in the dtype the layers compute in: every AW convolution's coefficient is a
contiguous chunk of one buffer gathered from the router's concatenated output in one operation (with two
banks, times the block's mix gathered into the same chunks), and every MixBN's mix a contiguous (B, 2) row
of one gathered tensor.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .router import RouterOutput

NUM_TYPES = 2  # [clean, adversarial]
_CACHED_LAYOUTS = 16  # index tensors kept, a few per batch size: a run uses a few batch sizes


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the AW layers compute in: autocast's for x's device when it is on, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class Signals:
    """What the router computed in the last forward, and what each layer reads of it. The tensors stay in the
    autograd graph. Every layer reads its own slot (a tensor shared by several layers would have their
    gradients added one by one in the backward).

    Args:
        conv_channels: C_out of each AW convolution, in the order of the router's Signal Heads.
        conv_blocks: the block of each AW convolution.
        norm_blocks: the block of each MixBN.
        banks: K of every AW convolution.
    """

    def __init__(self, conv_channels: Sequence[int] = (), conv_blocks: Sequence[int] = (),
                 norm_blocks: Sequence[int] = (), banks: int = 1):
        self.conv_channels, self.conv_blocks = tuple(conv_channels), tuple(conv_blocks)
        self.norm_blocks, self.banks = tuple(norm_blocks), banks
        self.conv_starts = tuple(accumulate(self.conv_channels, initial=0))[:-1]  # in the concatenated channels
        self.clear()

    def clear(self) -> None:
        self.router: RouterOutput | None = None  # the router's outputs
        self.coeffs: list[torch.Tensor] = []  # per AW convolution, its aw_conv2d coefficient
        self.mixes: list[torch.Tensor] | None = None  # per MixBN, (B, 2): its block's forced route or p_type
        self.folding = False  # whether folded convolutions leave omega to their MixBN (AWNet.forward sets it)
        self._layouts: dict[tuple, torch.Tensor] = {}

    def update(self, router: RouterOutput, route: int | torch.Tensor | None, x: torch.Tensor) -> None:
        """Take a forward's router outputs and make every layer's input from them, in the layers' dtype."""
        self.router = router
        dtype = compute_dtype(x)
        if route is None:
            mix = router.p_type.to(dtype)  # (B, blocks, 2)
        else:
            mix = route_mix(route, x).to(dtype).unsqueeze(1)  # (B, 1, 2): every block alike
        every_block = mix.expand(-1, router.p_type.shape[1], -1)
        batch = x.shape[0]
        if router.signal is None:  # layer-level: the block's mix blends the banks; one bank is the static conv
            if self.banks > 1:
                self.mixes, self.coeffs = self._per_layer(every_block, convs="rows")
            else:
                self.mixes = self._per_layer(every_block)[0]
                self.coeffs = [x.new_ones(batch, 1, dtype=dtype)] * len(self.conv_blocks)
            return
        omega = router.signal.to(dtype).take(self._omega_layout(batch, x.device))  # every conv's chunk
        if self.banks == 1:
            self.mixes = self._per_layer(every_block)[0]
        else:  # a[b, k, o] = mix[b, block of o, k] * omega[b, o], gathered into the same chunks: one product
            self.mixes, mixes = self._per_layer(every_block, convs="channels")
            omega = mixes * omega
        self.coeffs = self._by_convolution(omega, batch)

    def conv_coeff(self, conv_index: int) -> torch.Tensor:
        if self.mixes is None:
            raise RuntimeError("this layer belongs to an AWNet: call the AWNet, not its body")
        return self.coeffs[conv_index]

    def norm_mix(self, norm_index: int) -> torch.Tensor:
        if self.mixes is None:
            raise RuntimeError("this layer belongs to an AWNet: call the AWNet, not its body")
        return self.mixes[norm_index]

    def norm_prescale(self, conv_index: int | None) -> torch.Tensor | None:
        """The (B, C) omega of the folded convolution `conv_index` before a MixBN, when folding; else None."""
        if conv_index is None or not self.folding:
            return None
        return self.conv_coeff(conv_index).squeeze(1)  # (B, 1, C_out): one bank; a view each way (not select's)

    def _layout(self, key: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """An index tensor, built once per key in eager mode. Under torch.compile it is built in the graph,
        where the compiler folds it, so the graph has no Python state to guard."""
        if torch.compiler.is_compiling():
            return build()
        if key not in self._layouts:
            if len(self._layouts) >= _CACHED_LAYOUTS:
                self._layouts.clear()
            self._layouts[key] = build()
        return self._layouts[key]

    def _per_layer(self, mix: torch.Tensor, convs: str | None = None) -> tuple[list[torch.Tensor], object]:
        """(B, blocks, 2) -> per MixBN its block's (B, 2) mix; and with convs="rows" per AW convolution its
        block's (B, 2) mix, with convs="channels" the flat (B, 2, C_out) chunks of every convolution (see
        `_by_convolution`). One gather for all of them: each gather of `mix` costs a kernel each way, and one
        more to add their gradients."""
        batch, blocks, types = mix.shape
        device = mix.device
        layers = self.norm_blocks + (self.conv_blocks if convs else ())

        def build() -> torch.Tensor:  # the flat indices into mix of every MixBN's rows, then every conv's
            sample = torch.arange(batch, device=device).view(-1, 1, 1)
            kind = torch.arange(types, device=device).view(1, -1, 1)
            rows = [(sample * blocks + block) * types + kind for block in layers]
            if convs == "channels":  # chunk (B, 2, C_out) of each convolution, row-major
                norms = len(self.norm_blocks)
                rows[norms:] = [row.expand(-1, -1, channels) for row, channels in zip(rows[norms:], self.conv_channels)]
            return torch.cat([row.flatten() for row in rows]) if rows else torch.zeros(0, dtype=torch.long, device=device)

        gathered = mix.take(self._layout(("mix", batch, convs, device), build))
        # One split (its backward is one cat) into every layer's piece.
        norms, row = len(self.norm_blocks), batch * types
        if convs == "channels":
            *pieces, chunks = gathered.split([row] * norms + [gathered.numel() - norms * row])
            return [piece.view(batch, types) for piece in pieces], chunks
        if not layers:
            return [], []
        pieces = [piece.view(batch, types) for piece in gathered.split(row)] if row else [gathered.view(0, types)] * len(layers)
        return pieces[:norms], pieces[norms:]

    def _omega_layout(self, batch: int, device: torch.device) -> torch.Tensor:
        """The flat indices into omega (B, sum of C_out) of every convolution's chunk (B, K, C_out), row-major
        (each omega repeated over the K banks)."""
        def build() -> torch.Tensor:
            total = sum(self.conv_channels)
            rows = torch.arange(batch, device=device).view(-1, 1, 1) * total
            return torch.cat([(rows + torch.arange(start, start + channels, device=device)).expand(
                -1, self.banks, -1).flatten() for start, channels in zip(self.conv_starts, self.conv_channels)])
        return self._layout(("omega", batch, self.banks, device), build)

    def _by_convolution(self, chunks: torch.Tensor, batch: int) -> list[torch.Tensor]:
        """The flat chunks of every AW convolution -> per convolution its contiguous (B, K, C_out) view (the ops
        read their coefficient contiguous: slices of one (B, K, sum of C_out) tensor would each cost a copy)."""
        sizes = [batch * self.banks * channels for channels in self.conv_channels]
        return [chunk.view(batch, self.banks, channels) for chunk, channels in zip(chunks.split(sizes), self.conv_channels)]

    # Copies and pickles of a model start with no signals: the last forward's tensors belong to its graph
    # (deepcopy refuses non-leaf tensors), and sharing between the copied layers is kept by deepcopy's memo.
    def __getstate__(self) -> dict:
        return {"conv_channels": self.conv_channels, "conv_blocks": self.conv_blocks,
                "norm_blocks": self.norm_blocks, "banks": self.banks}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


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
