"""VGG-16 / VGG-19 with batch norm in the CIFAR form (one linear layer on 512 features)."""

from __future__ import annotations

import torch
from torch import nn

from robench.models.pooling import halving_pool

# Simonyan & Zisserman configurations D (16 layers) and E (19 layers); "M" is a max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """Conv3x3-BN-ReLU stacks and five max-pools, then global average pool and fc(512 -> classes).

    At 32x32 the five pools leave a 1x1 map, so the average pool is a no-op and
    this is the usual CIFAR VGG. Smaller inputs skip the pools that would shrink a
    side below 1 pixel; larger ones are averaged down to 512 features.
    """

    def __init__(self, config: str, in_channels: int, num_classes: int,
                 image_size: tuple[int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in CONFIGS[config]:
            if item == "M":
                pool, size = halving_pool(size)
                layers.append(pool)
            else:
                layers += [
                    nn.Conv2d(channels, int(item), kernel_size=3, padding=1),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(),
                ]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))
