"""awnet: AW-Net, the Adversarial Weight-Varied Network, on the `awkernels` operators.

Wei, Zhao, Li, "Revisiting the Trade-off between Accuracy and Robustness via Weight Distribution of
Filters", TPAMI 2024, https://arxiv.org/abs/2306.03430. `awnet.nn` holds the layers and the `AWNet` wrapper,
`awnet.models.build` the networks, `awnet.convert` turns a static CNN into an AW-Net, and `awnet.save` /
`awnet.load` write and read checkpoints.
"""
from . import models, nn
from .checkpoint import load, save
from .convert import convert

__all__ = ["convert", "load", "models", "nn", "save"]
