"""The modified LeNet used for MNIST and Fashion-MNIST in the BPFC paper."""

from __future__ import annotations

import torch
from torch import nn

from robench.models.pooling import halving_pool


class LeNet(nn.Module):
    """LeNet with two additional convolutional layers (Addepalli et al., CVPR 2020, "BPFC").

    Our reading, following the network in the authors' released code rather than
    the paper's one-line description:

        conv(32, 5x5) - ReLU - conv(32, 5x5) - ReLU - maxpool 2
        conv(64, 5x5) - ReLU - conv(64, 5x5) - ReLU - maxpool 2
        fc(512) - ReLU - fc(classes)

    All convolutions use padding 2 ("same"), so a 28x28 input reaches the
    classifier as 64x7x7, exactly as in the original. The flatten size is computed
    from ``image_size``, and a pool is skipped on a side that is already 1 pixel,
    so the same network also runs on 8x8 digits and 32x32 colour images.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        pool1, size = halving_pool(image_size)
        pool2, (h, w) = halving_pool(size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            pool1,
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            pool2,
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * h * w, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
