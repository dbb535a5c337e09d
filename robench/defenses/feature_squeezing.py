"""`feature-squeezing`: Xu et al. (NDSS 2018), as configured in Defensive Tensorization Table 4:
colour-depth reduction to 5 bits combined with a 2x2 median filter, applied to every input.

A preprocessing defense: the network is trained normally and the squeezer sits inside the
model that attacks see. Rounding has zero gradient almost everywhere, so it is declared not
differentiable and white-box attacks cross it with BPDA (identity backward, Athalye et al.).

Readings where the text leaves a choice:
- Order: bit-depth reduction first, then the median filter.
- Bit depth b keeps 2^b levels: round(x * (2^b - 1)) / (2^b - 1), as in Xu et al.'s code.
- The 2x2 median follows scipy.ndimage.median_filter(size=2), the implementation Xu et al.
  used: the window covers the pixel and its upper/left neighbours, the image edge is repeated,
  and of the four values the upper middle one (the 3rd smallest) is taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robench.defenses.base import Defense, Param


def _bits(value: int) -> str | None:
    return None if 1 <= value <= 8 else "must be between 1 and 8"


def _median_size(value: int) -> str | None:
    return None if 1 <= value <= 7 else "must be between 1 (off) and 7"


def reduce_bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-channel median over size x size windows, scipy's placement and rank for even sizes."""
    if size == 1:
        return x
    before, after = size // 2, (size - 1) // 2
    padded = F.pad(x, (before, after, before, after), mode="replicate")
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # N, C, H, W, size, size
    flat = windows.reshape(*windows.shape[:4], size * size)
    return flat.sort(dim=-1).values[..., (size * size) // 2]


class FeatureSqueezing(Defense):
    name = "feature-squeezing"
    summary = "Input squeezing: colour depth reduced to 5 bits, then a 2x2 median filter (not differentiable: BPDA)."
    paper = "Xu et al., NDSS 2018; the baseline of Defensive Tensorization Table 4 (5 bits + 2x2 median)"
    differentiable = False
    params = (
        Param("squeeze_bits", int, 5, "bits of colour depth kept (paper: 5)", _bits),
        Param("median_size", int, 2, "side of the median filter window, 1 = no filter (paper: 2)", _median_size),
    )

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(reduce_bit_depth(x, self.squeeze_bits), self.median_size)
