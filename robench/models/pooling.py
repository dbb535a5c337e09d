"""Shape bookkeeping shared by the architectures that must run at several image sizes."""

from __future__ import annotations

from torch import nn


def halving_pool(size: tuple[int, int]) -> tuple[nn.MaxPool2d, tuple[int, int]]:
    """A 2x2 max-pool that leaves alone any side already at 1 pixel.

    Architectures designed for 32x32 pool more often than an 8x8 input can take;
    without this the feature map would collapse to 0 pixels and the forward pass
    would fail.
    """
    h, w = size
    kernel = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
    return nn.MaxPool2d(kernel_size=kernel, stride=kernel), (h // kernel[0], w // kernel[1])
