"""Convolution shapes of the CIFAR models (32x32 inputs), one entry per distinct layer shape."""
from typing import NamedTuple


class ConvShape(NamedTuple):
    layer: str
    c_in: int
    c_out: int
    kernel: int
    stride: int
    size: int  # input height = width

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1


RESNET18 = [
    ConvShape("stem", 3, 64, 3, 1, 32),
    ConvShape("layer1", 64, 64, 3, 1, 32),
    ConvShape("layer2.down", 64, 128, 3, 2, 32),
    ConvShape("layer2", 128, 128, 3, 1, 16),
    ConvShape("layer2.shortcut", 64, 128, 1, 2, 32),
    ConvShape("layer3.down", 128, 256, 3, 2, 16),
    ConvShape("layer3", 256, 256, 3, 1, 8),
    ConvShape("layer3.shortcut", 128, 256, 1, 2, 16),
    ConvShape("layer4.down", 256, 512, 3, 2, 8),
    ConvShape("layer4", 512, 512, 3, 1, 4),
    ConvShape("layer4.shortcut", 256, 512, 1, 2, 8),
]

WRN34_10 = [
    ConvShape("stem", 3, 16, 3, 1, 32),
    ConvShape("block1.first", 16, 160, 3, 1, 32),
    ConvShape("block1.shortcut", 16, 160, 1, 1, 32),
    ConvShape("block1", 160, 160, 3, 1, 32),
    ConvShape("block2.down", 160, 320, 3, 2, 32),
    ConvShape("block2.shortcut", 160, 320, 1, 2, 32),
    ConvShape("block2", 320, 320, 3, 1, 16),
    ConvShape("block3.down", 320, 640, 3, 2, 16),
    ConvShape("block3.shortcut", 320, 640, 1, 2, 16),
    ConvShape("block3", 640, 640, 3, 1, 8),
]
