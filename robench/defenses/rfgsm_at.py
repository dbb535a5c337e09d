"""`rfgsm-at`: R+FGSM adversarial training (Tramèr et al., ICLR 2018).

A random signed step of size alpha first (x' = x + alpha * sign(N(0, I))), then an FGSM step
of eps - alpha from x'. Tramèr et al. use alpha = eps / 2 and train on half clean, half
adversarial examples; those are the defaults. This is the "Adv. training + R FGSM" row of
Defensive Tensorization Table 4.
"""

from __future__ import annotations

import torch
from torch import nn

from robench.defenses.adversarial_training import AdversarialTraining, at_clean_weight_param, at_eps_param, input_gradient, project
from robench.defenses.base import Param, fraction_below_one


class RFGSMAdversarialTraining(AdversarialTraining):
    name = "rfgsm-at"
    summary = "R+FGSM adversarial training: a random signed step, then FGSM for the rest of the budget."
    paper = "Tramèr et al., ICLR 2018; Defensive Tensorization Table 4"
    params = (
        at_eps_param(),
        Param("at_alpha", float, 0.5, "size of the random step as a fraction of --at-eps (paper: 0.5)", fraction_below_one),
        at_clean_weight_param(0.5),
    )

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        alpha = self.at_alpha * self.at_eps
        start = (x + alpha * torch.randn_like(x).sign()).clamp(0, 1)
        return project(start + (self.at_eps - alpha) * input_gradient(model, start, y).sign(), x, self.at_eps)
