"""SoundNet5: the end-to-end raw-waveform network of Defensive Tensorization's appendix B."""

from __future__ import annotations

import torch
from torch import nn

from robench.errors import RobenchError

# [in, out, kernel, stride, padding] of the five convolutions, as appendix B lists them.
CONVS = ((1, 16, 64, 2, 32), (16, 32, 32, 2, 16), (32, 64, 16, 2, 8), (64, 128, 8, 2, 4), (128, 256, 4, 2, 2))
POOL = 3
HIDDEN = 256


def feature_length(samples: int) -> int:
    """Time steps left after the five conv + pool stages for an input of `samples` samples."""
    length = samples
    for _, _, kernel, stride, padding in CONVS:
        length = (length + 2 * padding - kernel) // stride + 1
        length = length // POOL
    return length


def min_samples() -> int:
    """The shortest input that leaves at least one time step for the classifier."""
    low, high = 1, 1 << 20
    while low < high:
        mid = (low + high) // 2
        if feature_length(mid) >= 1:
            high = mid
        else:
            low = mid + 1
    return low


class SoundNet5(nn.Module):
    """Five 1-D convolutions (kernels 64/32/16/8/4, stride 2, padding 32/16/8/4/2; channels
    16/32/64/128/256), each followed by a max-pooling, then linear 512 -> 256 -> classes.

    Input: (N, 1, 1, samples) waveforms (robench's audio layout) or (N, 1, samples).

    Readings of appendix B, where it is silent:
    - The paper writes the kernels as 1 x k with stride 1 x 2 and padding 0 x p: 1-D
      convolutions along time, which is what this is (nn.Conv1d).
    - Pooling size: not stated. Max-pooling of size 3 (stride 3) after every convolution is the
      one uniform size for which a 1 s, 16 kHz input (16,000 samples) reaches exactly the stated
      512 = 256 channels x 2 time steps at the first linear layer (size 2 leaves 16 steps, 4
      leaves none).
    - Non-linearity and normalization: not stated; SoundNet (Aytar et al., 2016), which the
      paper builds on, puts batch norm and a ReLU after each convolution, and so do we
      (conv -> BN -> ReLU -> max-pool); a ReLU sits between the two linear layers.
    - Another input length: the first linear layer takes 256 x L inputs, where L is the number
      of time steps the five stages leave for that length (`feature_length`); everything else is
      unchanged. 16,000 samples give L = 2, the paper's 512. Inputs shorter than
      `min_samples()` leave no time step and are refused.
    """

    def __init__(self, in_channels: int, num_classes: int, samples: int) -> None:
        super().__init__()
        if in_channels != 1:
            raise RobenchError(f"soundnet5 takes mono waveforms (1 channel), got {in_channels} channels; pick another --arch")
        steps = feature_length(samples)
        if steps < 1:
            raise RobenchError(f"soundnet5 needs inputs of at least {min_samples()} samples, got {samples}; pick another --arch or longer clips")
        layers: list[nn.Module] = []
        for c_in, c_out, kernel, stride, padding in CONVS:
            layers += [nn.Conv1d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(POOL)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(CONVS[-1][1] * steps, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.flatten(1, 2)  # (N, 1, 1, T) -> (N, 1, T)
        return self.classifier(self.features(x))


def soundnet5(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> SoundNet5:
    """Builder for robench's (channels, classes, (height, width)) signature: a waveform is 1 x T."""
    height, width = image_size
    if height != 1:
        raise RobenchError(f"soundnet5 takes waveforms (inputs of height 1, e.g. --dataset fsdd), got {height}x{width} images; pick another --arch")
    return SoundNet5(in_channels, num_classes, width)
