"""Whole-step capture on CUDA (`awnet train --cuda-graph`, DESIGN.md section 6): a training step recorded once
as a CUDA graph and replayed for every later batch, so the few thousand kernels of a PGD-10 step cost one
launch of host time instead of one each.

A replay repeats the recorded kernels on the recorded memory, so the step it records must be written for that
(`awnet.train.loop.GraphStep`): the batch is copied into the recorded input tensors; what changes from step
to step (eps, the attack's step size, the learning rate) is read from 0-dim device tensors filled before each
replay, never from a Python number; the state a step carries to the next (parameters, momentum, running
statistics, MTARD's weights) is updated in place; and nothing in it reads the device (tests/test_host_sync.py).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor


class CapturedStep:
    """`step(*inputs)`, a function that updates a model and returns device tensors, replayed from one CUDA graph.

    The first `warmup` calls run eagerly on a side stream (as torch's whole-network capture recipe asks: lazy
    initialisation, the allocator, cuDNN's and Triton's autotuners and the optimizer's momentum buffers settle
    there); the next call is recorded and replayed, and every later call copies its inputs into the recorded
    ones and replays. Each call returns the recorded outputs, which the next call overwrites. With
    `capture=False` every call simply runs `step`: the eager reference a captured run is compared with.
    """

    def __init__(self, step: Callable[..., Any], warmup: int = 3, capture: bool = True):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the momentum buffers exist before the capture), got {warmup}")
        self.step, self.warmup, self.capture = step, warmup, capture
        self.calls = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.inputs: tuple[Tensor, ...] = ()
        self.outputs: Any = None

    def __call__(self, *inputs: Tensor) -> Any:
        self.calls += 1
        if not self.capture:
            return self.step(*inputs)
        if self.graph is not None:
            for recorded, given in zip(self.inputs, inputs):
                recorded.copy_(given)
            self.graph.replay()
            return self.outputs
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        self.inputs = tuple(given.clone() for given in inputs)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs = self.step(*self.inputs)
        self.graph = graph
        graph.replay()  # recording ran nothing: this is the step of this call's batch
        return self.outputs


__all__ = ["CapturedStep"]
