"""XNOR-Net binary convolution (Rastegari et al., ECCV 2016), as Defensive Tensorization
section 6 writes it:

    I * W  ~=  (sgn(I) (*) sgn(W)) . K alpha

alpha (one per output filter) is the mean absolute value of that filter's weights; K (one per
output position) is A convolved with a box filter of the kernel's size, where A is the mean
absolute value of the input over channels. Both are the analytic optimum of the binary
approximation and are recomputed on every pass.

The sign has no useful derivative, so the backward pass uses a straight-through estimator
(STE). Training uses the clipped identity 1{|x| <= 1}; attackers may pick a smoother one
(`robench attack --ste tanh`), as Table 8 of the paper does: d tanh(x)/dx and d tanh(0.75 x)/dx.
Weights always use the clipped identity: an attacker differentiates with respect to the input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

STE_CHOICES = ("id", "tanh", "tanh0.75")


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, ste: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.ste = ste
        # sgn(0) = +1: a binary network has no zero state.
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        if ctx.ste == "id":
            return grad * (x.abs() <= 1).to(grad.dtype), None
        slope = 0.75 if ctx.ste == "tanh0.75" else 1.0
        return grad * slope * (1 - torch.tanh(slope * x) ** 2), None


def binary_sign(x: torch.Tensor, ste: str = "id") -> torch.Tensor:
    return _SignSTE.apply(x, ste)


def conv_weight(conv: nn.Module) -> torch.Tensor:
    """The kernel of a dense or Tucker-factorized conv (a fresh tensor-dropout draw for the latter)."""
    sample = getattr(conv, "sampled_weight", None)
    return sample() if sample is not None else conv.weight


class XNORConv2d(nn.Module):
    """Binarizes the input and the kernel of the wrapped conv: nn.Conv2d or TuckerConv2d, and
    also nn.Conv1d or TuckerConv1d (the kernel's dimensions say which; K is then A convolved
    with a 1-D box of the kernel's length). The name stays for the 2-D case it was written for."""

    def __init__(self, conv: nn.Module, ste: str = "id") -> None:
        super().__init__()
        self.conv = conv
        self.ste = ste

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        weight = conv_weight(conv)
        spatial = weight.shape[2:]
        convolve = F.conv1d if len(spatial) == 1 else F.conv2d
        alpha = weight.abs().mean(dim=tuple(range(1, weight.dim())))
        binary_weight = binary_sign(weight, "id")
        box = torch.full((1, 1, *spatial), 1.0 / math.prod(spatial), dtype=x.dtype, device=x.device)
        scale = convolve(x.abs().mean(dim=1, keepdim=True), box, None, conv.stride, conv.padding, conv.dilation)
        out = convolve(binary_sign(x, self.ste), binary_weight, None, conv.stride, conv.padding, conv.dilation)
        per_channel = (1, -1) + (1,) * len(spatial)
        out = out * scale * alpha.view(per_channel)
        if conv.bias is not None:
            out = out + conv.bias.view(per_channel)
        return out

    def extra_repr(self) -> str:
        return f"ste={self.ste}"


def set_ste(model: nn.Module, ste: str) -> int:
    """Switch the activation STE of every binary conv (the attacker's choice); returns how many."""
    layers = [m for m in model.modules() if isinstance(m, XNORConv2d)]
    for layer in layers:
        layer.ste = ste
    return len(layers)
