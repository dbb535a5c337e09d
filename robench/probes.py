"""Gradient-masking probes: measured on the model before any attack, never taken from what a
defense declares (AutoAttack's checks, extended).

- Vanishing gradients: the share of examples whose input gradient of the cross-entropy is
  exactly zero or below 1e-12 in L2 norm. Quantized inputs (torch.round), a saturated softmax
  or a non-differentiable step inside `forward` all give this; a gradient attack then makes no
  progress and its number means nothing.
- Saturated outputs: the share of examples whose softmax is one-hot to float64 precision (the
  top logit beats the runner-up by more than 40, where 1 - p_max < 1e-17), or outputs that are
  already probabilities (non-negative rows summing to one), which a cross-entropy on top of
  them flattens.

Reading of "most inputs" (issue 11): more than half of the probed examples. A trained,
undefended digits CNN has margins of about 5-25 and no zero gradients, so neither probe comes
near its threshold without masking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GRADIENT_FLOOR = 1e-12
SATURATION_MARGIN = 40.0
MOST = 0.5


@dataclass(frozen=True)
class Probes:
    zero_gradients: float  # share of examples with a vanishing input gradient
    saturated: float  # share of examples with a one-hot softmax (1.0 when outputs are probabilities)
    disconnected: bool = False  # the output does not depend on the input in autograd's graph at all

    @property
    def masked_gradients(self) -> bool:
        return self.zero_gradients > MOST

    @property
    def saturated_outputs(self) -> bool:
        return self.saturated > MOST


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Probes:
    """Both probes on one batch, in eval mode; the RNG state is put back afterwards, so
    probing shifts no later random draw."""
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if x.is_cuda else None
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        grad = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
    torch.set_rng_state(state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
    norms = grad.flatten(1).norm(dim=1) if grad is not None else torch.zeros(len(x))
    zero = (norms <= GRADIENT_FLOOR).double().mean().item()
    out = logits.detach().double()
    if bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones(len(out), dtype=out.dtype), atol=1e-5):
        return Probes(zero, 1.0, grad is None)
    top2 = out.topk(2, dim=1).values if out.shape[1] > 1 else torch.cat([out, out], 1)
    saturated = ((top2[:, 0] - top2[:, 1]) > SATURATION_MARGIN).double().mean().item()
    return Probes(zero, saturated, grad is None)
