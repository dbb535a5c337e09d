"""Model architectures, each wrapped as ``Sequential(Normalize, network)``."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable, Sequence

from torch import nn

from robench.errors import RobenchError, unknown_name
from robench.models.lenet import LeNet
from robench.models.normalize import Normalize
from robench.models.resnet import ResNet18
from robench.models.small_cnn import SmallCNN
from robench.models.soundnet import soundnet5
from robench.models.external import external_network
from robench.models.vgg import VGG
from robench.registry import Registry

__all__ = ["ARCHITECTURES", "EXTERNAL_PREFIXES", "Normalize", "architecture", "build_model"]

_Builder = Callable[[int, int, tuple[int, int]], nn.Module]


def _key(name: str) -> str:
    """Tolerate the spellings people type (small_cnn, VGG16)."""
    return name.lower().replace("_", "-")


ARCHITECTURES: Registry[_Builder] = Registry("architecture", _key)
ARCHITECTURES.add("small-cnn", lambda c, k, size: SmallCNN(c, k, size), "3-conv CNN, fast on CPU; for 8x8 digits and 28x28 MNIST-scale data")
ARCHITECTURES.add("lenet", lambda c, k, size: LeNet(c, k, size), "LeNet with two extra conv layers (BPFC paper's MNIST/Fashion-MNIST model)")
ARCHITECTURES.add("resnet18", lambda c, k, size: ResNet18(c, k), "ResNet-18, CIFAR variant (3x3 stem, no max-pool)")
ARCHITECTURES.add("vgg16", lambda c, k, size: VGG("vgg16", c, k, size), "VGG-16 with batch norm, CIFAR variant")
ARCHITECTURES.add("soundnet5", soundnet5, "SoundNet5: five 1-D convs on raw waveforms (Defensive Tensorization appendix B); for fsdd / speech-commands")
ARCHITECTURES.add("vgg19", lambda c, k, size: VGG("vgg19", c, k, size), "VGG-19 with batch norm, CIFAR variant")

def _external(prefix: str, name: str, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return external_network(prefix, name, in_channels, num_classes)


# Architectures from elsewhere, named with a prefix: `torchvision:resnet18`, `timm:resnet18`, or
# `python:PKG.MODULE:FACTORY` (a callable returning an nn.Module, as `robench import` records).
# Kept apart from ARCHITECTURES, whose every entry builds as it is named.
EXTERNAL_PREFIXES: Registry[Callable[..., nn.Module]] = Registry("architecture")
for _prefix, _summary in (
    ("torchvision:NAME", "any torchvision classification model, first conv and classifier adapted to the dataset"),
    ("timm:NAME", "any timm model (pip install 'robench[timm]'), in_chans and num_classes set from the dataset"),
    ("python:PKG.MODULE:FACTORY", "your own: a callable returning an nn.Module that maps [0, 1] inputs (after Normalize) to logits"),
):
    EXTERNAL_PREFIXES.add(_prefix, partial(_external, _prefix.partition(":")[0]), _summary, prefix=True)
del _prefix, _summary


def architecture(arch: str) -> _Builder:
    """The builder (in_channels, num_classes, image_size) -> network that `arch` names."""
    builder = EXTERNAL_PREFIXES.get(arch, None) or ARCHITECTURES.get(arch, None)
    if builder is None:
        raise unknown_name("architecture", arch, [*ARCHITECTURES, *EXTERNAL_PREFIXES])
    return builder


def build_model(
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Module:
    """A freshly initialised model that takes [0, 1] pixels and returns logits (N, num_classes)."""
    builder = architecture(arch)
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
    network = builder(in_channels, num_classes, (height, width))
    return nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), ("net", network)]))
