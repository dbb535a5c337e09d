"""Randomness of the preprocessing defenses: masks, and switching it off for the omniscient view.

A defense's random draws (pixel masks, the pick among K nearest patches) come from the global
torch RNG, so `torch.manual_seed` makes a run reproducible. `freeze` gives the copies of a
defense inside a model a fixed seed: every forward pass then draws the same masks, which is
what the omniscient attacker ("randomness off") crafts on.
"""

from __future__ import annotations

import torch
from torch import nn


def generator_for(defense: object) -> torch.Generator | None:
    seed = getattr(defense, "_frozen_seed", None)
    return None if seed is None else torch.Generator().manual_seed(seed)


def uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # A CPU generator cannot draw on CUDA; frozen draws are made on the CPU and moved.
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand(shape, generator=generator, dtype=dtype).to(device)


def freeze(model: nn.Module, kind: type, seed: int = 0) -> None:
    """Fix the seed of every `kind` defense inside model's Preprocessed wrappers."""
    from robench.defenses.base import Preprocessed

    for module in model.modules():
        if isinstance(module, Preprocessed):
            for defense in module._defenses:
                if isinstance(defense, kind):
                    defense._frozen_seed = seed
