"""Straight-through gradients for piecewise-constant operations anywhere in a model's forward.

BPDA (Athalye et al., 2018) replaces a non-differentiable step by the identity on the backward
pass. robench applies it to a defense's declared `preprocess`; a model can also quantize inside
its own `forward` (`torch.round(x * 8) / 8`), where no wrapper can reach. Under
`StraightThrough`, every call of a piecewise-constant torch function on a tensor that needs a
gradient returns the same values with the identity's gradient: y = x + (op(x) - x).detach().
The forward pass is unchanged, so only the attacker's gradient differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

PIECEWISE_CONSTANT = frozenset({
    torch.round, torch.floor, torch.ceil, torch.trunc, torch.sign, torch.fix,
    torch.Tensor.round, torch.Tensor.floor, torch.Tensor.ceil, torch.Tensor.trunc, torch.Tensor.sign,
})


class _StraightThroughMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        x = args[0] if args else None
        if func in PIECEWISE_CONSTANT and isinstance(x, torch.Tensor) and x.requires_grad and torch.is_tensor(out) and out.shape == x.shape:
            return x + (out - x).detach()
        return out


class StraightThrough(nn.Module):
    """`model` with piecewise-constant operations crossed straight-through on the backward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _StraightThroughMode():
            return self.model(x)


class KeepConnected(nn.Module):
    """`model` plus 0 * x, so that an output autograd cannot trace back to the input (a hard
    threshold, a detached preprocess) has a zero gradient instead of making the attack raise."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out + 0 * x.flatten(1).sum(1, keepdim=True) if x.requires_grad else out
