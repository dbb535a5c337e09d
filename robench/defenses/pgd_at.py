"""`pgd-at`: PGD adversarial training (Madry et al., ICLR 2018).

Each batch is replaced by PGD examples: a uniform random start in the eps-ball, then
`--at-steps` signed-gradient steps of `--at-step-size`, projected after each. Defaults are the
CIFAR-10 recipe (8/255, 7 steps of 2/255), the PGD-AT baseline of BPFC Table 1; for MNIST use
0.3 / 40 / 0.01 and for Fashion-MNIST 0.1 / 40 / 0.01 (BPFC section 5.2).

`--random-eps` follows the comparison of Defensive Tensorization (Table 4: "we sample the
number of steps and eps randomly", after Kurakin et al. and ME-Net). Our reading: per example,
eps ~ U(0, at_eps]; per batch, steps ~ U{1, ..., at_steps}; the step size scales with eps
(at_step_size * eps / at_eps) so that every sampled attack can reach its ball.
"""

from __future__ import annotations

import torch
from torch import nn

from robench.defenses.adversarial_training import AdversarialTraining, at_clean_weight_param, at_eps_param, eps_budget, input_gradient, project
from robench.defenses.base import Param, at_least_one


class PGDAdversarialTraining(AdversarialTraining):
    name = "pgd-at"
    summary = "Madry PGD adversarial training: train on PGD examples (random start, projected signed steps)."
    paper = "Madry et al., ICLR 2018; the PGD-AT baseline of BPFC Tables 1-3 and Defensive Tensorization Tables 1 and 4"
    params = (
        at_eps_param(),
        Param("at_steps", int, 7, "PGD steps per batch (paper: 7 CIFAR-10, 40 MNIST)", at_least_one),
        Param("at_step_size", float, 2 / 255, "PGD step size on the [0, 1] scale (paper: 2/255 CIFAR-10, 0.01 MNIST)", eps_budget),
        Param("random_eps", bool, False, "sample eps per example in (0, at_eps] and the steps per batch in 1..at_steps (Defensive Tensorization's comparison)"),
        at_clean_weight_param(0.0),
    )

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        steps, eps, step_size = self.at_steps, self.at_eps, self.at_step_size
        if self.random_eps:
            steps = int(torch.randint(1, self.at_steps + 1, ()).item())
            eps = torch.rand(len(x), device=x.device).clamp_min(1e-3) * self.at_eps
            step_size = (eps * (self.at_step_size / self.at_eps)).view(-1, *([1] * (x.ndim - 1)))
        width = eps.view(-1, *([1] * (x.ndim - 1))) if isinstance(eps, torch.Tensor) else eps
        x_adv = project(x + (torch.rand_like(x) * 2 - 1) * width, x, eps)
        for _ in range(steps):
            x_adv = project(x_adv + step_size * input_gradient(model, x_adv, y).sign(), x, eps)
        return x_adv
