"""Shared machinery of the adversarial-training defenses (`pgd-at`, `fgsm-at`, `rfgsm-at`).

Not a defense itself: each method is its own plugin file. They differ only in how the
adversarial batch is crafted; the loss is

    (1 - w) * ce(f(x_adv), y) + w * ce(f(x), y)      with w = --at-clean-weight

Examples are crafted against the model as built, so `tensor-dropout+pgd-at` attacks the
randomized network (a fresh tensor-dropout draw on every gradient), and a non-differentiable
preprocessing in the stack is crossed by straight-through BPDA, as a white-box attacker would.

Reading where the papers leave a choice: the model is put in eval mode while crafting (batch
norm uses its running statistics and no statistics are updated by the attack's iterates), as
the Madry lab's `robustness` library does, and back in train mode for the loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import Defense, Param, Preprocessed, fraction_below_one


def eps_budget(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1] on the [0, 1] pixel scale (e.g. 8/255 or 0.3)"


def at_eps_param(default: float = 8 / 255) -> Param:
    return Param("at_eps", float, default, "l-inf budget of the training attack on the [0, 1] scale, e.g. 8/255 (paper: 8/255 CIFAR-10, 0.3 MNIST, 0.1 Fashion-MNIST)", eps_budget)


def at_clean_weight_param(default: float) -> Param:
    return Param("at_clean_weight", float, default, "weight of the clean cross-entropy in the loss (0: adversarial examples only)", fraction_below_one)


class AdversarialTraining(Defense, ABC):
    """Subclasses implement `craft(model, x, y)` returning the adversarial batch."""

    at_eps: float
    at_clean_weight: float

    @abstractmethod
    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial version of the batch (x, y) against `model`, inside the eps-ball."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        view = attack_view(model)
        was_training = model.training
        model.eval()
        try:
            x_adv = self.craft(view, x, y).detach()
        finally:
            model.train(was_training)
        adversarial = F.cross_entropy(model(x_adv), y)
        if self.at_clean_weight == 0:
            return adversarial
        return (1 - self.at_clean_weight) * adversarial + self.at_clean_weight * F.cross_entropy(model(x), y)


def attack_view(model: nn.Module) -> nn.Module:
    """The model to differentiate: non-differentiable preprocessings crossed with BPDA."""
    if isinstance(model, Preprocessed) and not model.differentiable:
        return model.with_bpda()
    return model


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """Back into the l-inf ball of radius eps around x (eps may be per example) and [0, 1]."""
    if isinstance(eps, torch.Tensor):
        eps = eps.view(-1, *([1] * (x.ndim - 1)))
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
