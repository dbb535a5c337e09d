"""The in-memory dataset every command works on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Dataset:
    """A whole classification dataset held as tensors.

    Inputs are float32 NCHW in ``value_range`` ([0, 1] for images; (-1, 1) for waveforms,
    stored as (N, 1, 1, samples)); ``mean``/``std`` are not applied here but baked into the
    model, so attacks work in the data's own range (robench.value_range maps it to [0, 1]).
    """

    name: str
    # repr=False: printing a Dataset should not dump megabytes of pixels.
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of an NCHW tensor."""
    var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    # A constant channel (e.g. a blank border band) would otherwise divide by zero
    # inside the model's Normalize layer.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def one_line(exc: BaseException) -> str:
    """Squash a library's (often multi-line) exception text into one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
