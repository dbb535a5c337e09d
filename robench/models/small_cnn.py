"""A small, fast CNN for 8x8 digits and 28x28 MNIST-scale inputs."""

from __future__ import annotations

import torch
from torch import nn

from robench.models.pooling import halving_pool


class SmallCNN(nn.Module):
    """conv32-conv64-pool-conv64 (each conv-BN-ReLU), pooled to at most 4x4, then fc128-fc(classes).

    Batch norm lets SGD run at the papers' lr of 0.1 and absorbs the scale jitter that a
    randomized defense (tensor dropout) puts on each layer's weights, as in ResNet-18.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        pool, (h, w) = halving_pool(image_size)
        # A fixed small grid (not global pooling) keeps some spatial layout for the
        # classifier while making the flatten size independent of the input size.
        grid = (min(4, h), min(4, w))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            pool,
            nn.Conv2d(64, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * grid[0] * grid[1], 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
