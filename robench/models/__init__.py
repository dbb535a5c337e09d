"""Model architectures, each wrapped as ``Sequential(Normalize, network)``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from torch import nn

from robench.errors import RobenchError, unknown_name
from robench.models.lenet import LeNet
from robench.models.normalize import Normalize
from robench.models.resnet import ResNet18
from robench.models.small_cnn import SmallCNN
from robench.models.external import external_network
from robench.models.vgg import VGG

__all__ = ["ARCHITECTURES", "EXTERNAL_PREFIXES", "Normalize", "build_model"]

ARCHITECTURES: dict[str, str] = {
    "small-cnn": "3-conv CNN, fast on CPU; for 8x8 digits and 28x28 MNIST-scale data",
    "lenet": "LeNet with two extra conv layers (BPFC paper's MNIST/Fashion-MNIST model)",
    "resnet18": "ResNet-18, CIFAR variant (3x3 stem, no max-pool)",
    "vgg16": "VGG-16 with batch norm, CIFAR variant",
    "vgg19": "VGG-19 with batch norm, CIFAR variant",
}

_Builder = Callable[[int, int, tuple[int, int]], nn.Module]

_BUILDERS: dict[str, _Builder] = {
    "small-cnn": lambda c, k, size: SmallCNN(c, k, size),
    "lenet": lambda c, k, size: LeNet(c, k, size),
    "resnet18": lambda c, k, size: ResNet18(c, k),
    "vgg16": lambda c, k, size: VGG("vgg16", c, k, size),
    "vgg19": lambda c, k, size: VGG("vgg19", c, k, size),
}


# Architectures from elsewhere, named with a prefix: `torchvision:resnet18`, `timm:resnet18`, or
# `python:PKG.MODULE:FACTORY` (a callable returning an nn.Module, as `robench import` records).
EXTERNAL_PREFIXES: dict[str, str] = {
    "torchvision:NAME": "any torchvision classification model, first conv and classifier adapted to the dataset",
    "timm:NAME": "any timm model (pip install 'robench[timm]'), in_chans and num_classes set from the dataset",
    "python:PKG.MODULE:FACTORY": "your own: a callable returning an nn.Module that maps [0, 1] inputs (after Normalize) to logits",
}


def build_model(
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Module:
    """A freshly initialised model that takes [0, 1] pixels and returns logits (N, num_classes)."""
    prefix, colon, rest = arch.strip().partition(":")
    key = arch.strip().lower().replace("_", "-")
    if colon and prefix in ("torchvision", "timm", "python"):
        key = arch.strip()
    elif key not in _BUILDERS:
        raise unknown_name("architecture", arch, [*ARCHITECTURES, *EXTERNAL_PREFIXES])
    if in_channels < 1 or num_classes < 1:
        raise RobenchError(
            f"model needs at least 1 input channel and 1 class, got {in_channels} and {num_classes}"
        )
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise RobenchError(f"image size must be positive, got {height}x{width}")
    if len(mean) != in_channels or len(std) != in_channels:
        raise RobenchError(
            f"normalization stats have {len(mean)} mean and {len(std)} std values "
            f"for {in_channels} input channel(s)"
        )
    if any(float(s) <= 0 for s in std):
        raise RobenchError(f"normalization std values must be positive, got {tuple(std)}")
    if colon and prefix in ("torchvision", "timm", "python"):
        network = external_network(prefix, rest, in_channels, num_classes)
    else:
        network = _BUILDERS[key](in_channels, num_classes, (height, width))
    return nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), ("net", network)]))
