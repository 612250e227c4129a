"""awnet.nn: the AW-Net layers (Wei, Zhao, Li, TPAMI 2024, https://arxiv.org/abs/2306.03430)."""
from .aw_conv import AWConv2d
from .awnet import AWNet
from .mix_bn import MixBatchNorm2d
from .normalize import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD, Normalize
from .router import AdversarialRouter, RouterOutput
from .signals import Signals, route_mix

__all__ = [
    "AWConv2d",
    "AWNet",
    "AdversarialRouter",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "MixBatchNorm2d",
    "Normalize",
    "RouterOutput",
    "Signals",
    "route_mix",
]
