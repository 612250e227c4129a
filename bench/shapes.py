"""Convolution shapes of the CIFAR models (32x32 inputs): (name, C_in, C_out, kernel, stride, input size)."""

RESNET18 = [
    ("stem", 3, 64, 3, 1, 32),
    ("layer1", 64, 64, 3, 1, 32),
    ("layer2.down", 64, 128, 3, 2, 32),
    ("layer2", 128, 128, 3, 1, 16),
    ("layer2.shortcut", 64, 128, 1, 2, 32),
    ("layer3.down", 128, 256, 3, 2, 16),
    ("layer3", 256, 256, 3, 1, 8),
    ("layer3.shortcut", 128, 256, 1, 2, 16),
    ("layer4.down", 256, 512, 3, 2, 8),
    ("layer4", 512, 512, 3, 1, 4),
    ("layer4.shortcut", 256, 512, 1, 2, 8),
]
