"""`fgsm-at`: FGSM adversarial training (Goodfellow et al., ICLR 2015).

The loss mixes clean and FGSM examples with weight 0.5 each, Goodfellow's alpha = 0.5. This is
the FGSM-AT baseline of BPFC Tables 1-3, whose robustness to single-step attacks is known to
come from gradient masking (label leaking): it survives FGSM and collapses under PGD, which
`robench report`'s sanity flags point out.
"""

from __future__ import annotations

import torch
from torch import nn

from robench.defenses.adversarial_training import AdversarialTraining, at_clean_weight_param, at_eps_param, input_gradient, project


class FGSMAdversarialTraining(AdversarialTraining):
    name = "fgsm-at"
    summary = "FGSM adversarial training: half clean, half single-step FGSM examples."
    paper = "Goodfellow et al., ICLR 2015; the FGSM-AT baseline of BPFC Tables 1-3"
    params = (at_eps_param(), at_clean_weight_param(0.5))

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return project(x + self.at_eps * input_gradient(model, x, y).sign(), x, self.at_eps)
