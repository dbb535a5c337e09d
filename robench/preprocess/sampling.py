"""Randomness of the preprocessing defenses: masks, and switching it off for the omniscient view.

A defense's random draws (pixel masks, the pick among K nearest patches) come from the global
torch RNG, so `torch.manual_seed` makes a run reproducible. A defense given a fixed seed
(`_frozen_seed`, set by `freeze` in defenses/base.py) draws the same masks in every forward
pass, which is what the omniscient attacker ("randomness off") crafts on. Finding the defenses
inside a model is the defenses layer's business, so this kernel-level module never imports it.
"""

from __future__ import annotations

import torch


def generator_for(defense: object) -> torch.Generator | None:
    seed = getattr(defense, "_frozen_seed", None)
    return None if seed is None else torch.Generator().manual_seed(seed)


def uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # A CPU generator cannot draw on CUDA; frozen draws are made on the CPU and moved.
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand(shape, generator=generator, dtype=dtype).to(device)
