"""`mixup`: Zhang et al., ICLR 2018; the Mixup baseline of BPFC Tables 1-3.

Each batch is mixed with a shuffled copy of itself: x~ = l x_i + (1 - l) x_j with
l ~ Beta(alpha, alpha) drawn once per batch, and the loss is l ce(f(x~), y_i) + (1 - l)
ce(f(x~), y_j). alpha = 1 is Zhang et al.'s CIFAR-10 setting. Training only; inference is the
plain network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import Defense, Param, positive


class Mixup(Defense):
    name = "mixup"
    summary = "Mixup training: convex combinations of example pairs and of their labels."
    paper = "Zhang et al., ICLR 2018; BPFC Tables 1-3"
    params = (Param("mixup_alpha", float, 1.0, "Beta(alpha, alpha) parameter of the mixing weight (paper: 1.0)", positive),)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        partner = torch.randperm(len(x), device=x.device)
        logits = model(weight * x + (1 - weight) * x[partner])
        return weight * F.cross_entropy(logits, y) + (1 - weight) * F.cross_entropy(logits, y[partner])
