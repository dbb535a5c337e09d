"""`defensive-dropout`: Wang et al. (ICCAD 2018), the comparison of Defensive Tensorization
Table 6b: dropout on the activations of the first fully connected layer, kept on at test time,
so the defended model is stochastic.

Placement: after the first `nn.Linear` of the network when another linear layer follows it (the
"activation of the first fully connected layer"); dropout commutes with the ReLU that follows,
so before or after it is the same. A network whose only linear layer is the classifier
(ResNet-18, VGG) gets the dropout on that layer's input features instead, since dropping logits
is not the method. Inverted dropout (kept units scaled by 1 / (1 - p)) keeps the expected
activation equal to the deterministic network's; derandomizing sets p = 0.

The rate: Wang et al. pick the test-time dropout rate per dataset to trade accuracy for
robustness; 0.5 is our default, set it with --dropout-rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import Defense, Param, open_unit_interval
from robench.errors import RobenchError


class AlwaysDropout(nn.Module):
    """Dropout that stays on in eval mode (the defense is the test-time randomness)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.rate, training=self.rate > 0)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class DefensiveDropout(Defense):
    name = "defensive-dropout"
    summary = "Dropout on the first fully connected layer's activations, kept on at test time (stochastic)."
    paper = "Wang et al., ICCAD 2018; Defensive Tensorization Table 6b"
    params = (Param("dropout_rate", float, 0.5, "probability of dropping each activation, in training and at test time", open_unit_interval),)

    @property
    def stochastic(self) -> bool:
        return True

    def build(self, model: nn.Module, pretrained: bool = False) -> nn.Module:
        linears = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children() if isinstance(child, nn.Linear)]
        if not linears:
            raise RobenchError("defensive-dropout needs a network with a fully connected layer; pick another --arch")
        parent, name, first = linears[0]
        dropout = AlwaysDropout(self.dropout_rate)
        wrapped = nn.Sequential(first, dropout) if len(linears) > 1 else nn.Sequential(dropout, first)
        setattr(parent, name, wrapped)
        return model

    def derandomize(self, model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, AlwaysDropout):
                module.rate = 0.0
