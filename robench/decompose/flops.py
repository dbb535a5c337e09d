"""Complexity bookkeeping in the thesis's unit: one FLOP = one multiply-accumulate (eq. 2.4
ignores the bias additions, and so do we)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def conv_flops(n: int, c: int, k: int | Sequence[int], h_out: int, w_out: int) -> int:
    """Eq. 2.4: C_orig = n (h_o w_o) (k^2 c)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    return n * h_out * w_out * kh * kw * c


def lowrank_flops(n: int, c: int, k: int | Sequence[int], m: int, h_out: int, w_out: int) -> int:
    """Eq. 2.7: C_decomp = m (h_o w_o) (k^2 c) + n (h_o w_o) m."""
    return conv_flops(m, c, k, h_out, w_out) + n * h_out * w_out * m


def module_flops(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates of every Conv2d and Linear for one forward pass of `example`
    (batch size 1), counted from the shapes the layers actually see."""
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def record(module: nn.Module, inputs, output) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                per_out = kh * kw * module.in_channels // module.groups
                counts[name] = counts.get(name, 0) + output[0].numel() * per_out
            else:
                counts[name] = counts.get(name, 0) + module.in_features * module.out_features * (output[0].numel() // module.out_features)
        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in hooks:
            handle.remove()
    return counts


def total_flops(model: nn.Module, example: torch.Tensor) -> int:
    return sum(module_flops(model, example).values())


def prefix_flops(counts: dict[str, int], path: str) -> int:
    """FLOPs of the module at `path` and everything inside it."""
    return sum(v for k, v in counts.items() if k == path or k.startswith(path + "."))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
