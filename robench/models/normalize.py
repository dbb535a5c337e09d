"""Input normalization that lives inside the model."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel.

    Kept as the model's first layer so that callers (training, every attack) feed
    and clip raw [0, 1] pixels, and epsilons stay in pixel units. The stats are
    persistent buffers: they travel with ``.to(device)`` and the state dict.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(s) for s in std], dtype=torch.float32)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"
