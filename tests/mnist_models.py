"""Small models trained on the real mnist5k digits in seconds, shared by the attack, evaluation and training
tests, and the one-thread fixture those modules use."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from awnet import attacks
from awnet.data import mnist5k


@pytest.fixture(scope="module")
def one_thread():
    # The CI machine's 2 cores are shared: one thread avoids oversubscription stalls (10x slower with 2).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return mnist5k("train"), mnist5k("test")


def train_mlp(x: torch.Tensor, y: torch.Tensor, adv_eps: float = 0.0, epochs: int = 5) -> nn.Module:
    """A 784-128-10 MLP, Adam, batch 100; with adv_eps, PGD-AT (Madry) with a 3-step PGD crafted in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            xb, yb = x[perm[i:i + 100]], y[perm[i:i + 100]]
            if adv_eps:
                xb = attacks.pgd(model.eval(), xb, yb, adv_eps, adv_eps / 2, 3)
            loss = F.cross_entropy(model.train()(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def standard(data):
    (x, y), _ = data
    return train_mlp(x, y)


@pytest.fixture(scope="module")
def robust(data):
    (x, y), _ = data
    return train_mlp(x, y, adv_eps=0.1, epochs=8)
