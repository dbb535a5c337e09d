"""What the attacker crafts on, per threat model; the evaluation always uses the defended model.

- white-box: the defended model itself. A non-differentiable preprocessing is crossed with BPDA;
  a stochastic model is wrapped in EOT (logits averaged over k independent forward passes, so
  the gradient every attack follows is the average of k sampled gradients).
- gray-box: the network without its preprocessing defense (the attacker does not know it).
- black-box: a substitute checkpoint (`--source`), attacked white-box.
- omniscient: the defended model with its randomness switched off (theta = 1 for tensor dropout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robench.defenses.base import DefenseStack, Preprocessed
from robench.errors import RobenchError, unknown_name

THREATS = ("white-box", "gray-box", "black-box", "omniscient")
# The papers tried EOT up to 20 samples with PGD-500; 10 is the default for stochastic models.
DEFAULT_EOT = 10


class EOT(nn.Module):
    """Expectation over Transformation: the mean of `samples` independent forward passes."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        self.model = model
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.model(x)
        for _ in range(self.samples - 1):
            total = total + self.model(x)
        return total / self.samples


@dataclass
class AttackerView:
    model: nn.Module
    eot: int
    bpda: bool
    notes: list[str]


def attacker_view(model: nn.Module, stack: DefenseStack, threat: str, eot: int | None, bpda: bool | str | None, own_eot: bool = False,
                  stochastic_by: str | None = None) -> AttackerView:
    """The model an attack differentiates through. `eot` / `bpda` None mean: on where needed;
    `bpda` "force" crosses every preprocess straight-through, declared differentiable or not.

    `stochastic_by` is "detected" when the model's randomness was found by running it although
    its defense declares none; EOT then applies as for a declared random defense."""
    if threat not in THREATS:
        raise unknown_name("threat model", threat, THREATS)
    notes: list[str] = []
    detected = stochastic_by == "detected"
    if threat == "omniscient":
        if detected:
            raise RobenchError(f"--threat omniscient switches a defense's randomness off, and the randomness of this model was detected, not declared by {stack.spec!r}; use white-box")
        if not stack.stochastic:
            raise RobenchError(f"--threat omniscient needs a stochastic defense; {stack.spec!r} is deterministic (use white-box)")
        return AttackerView(stack.derandomized(model), 1, False, [f"crafting on {stack.spec} with its randomness off"])
    view = model
    preprocessing = isinstance(model, Preprocessed)
    if threat == "gray-box":
        if not preprocessing:
            raise RobenchError(f"--threat gray-box hides a preprocessing defense, and {stack.spec!r} has none; use white-box")
        view = model.model
        notes.append(f"gray-box: crafting on the network without the {stack.spec} preprocessing")
        use_bpda = False
    else:
        needs_bpda = preprocessing and (not stack.differentiable or bpda == "force")
        use_bpda = needs_bpda if bpda is None else (bool(bpda) and needs_bpda)
        if use_bpda and bpda == "force":
            view = model.with_bpda(force=True)
            notes.append(f"--force-bpda: every preprocess of {stack.spec} is crossed straight-through, declared differentiable or not")
        elif use_bpda:
            view = model.with_bpda()
            notes.append(f"{stack.spec} preprocessing is not differentiable: gradients use BPDA")
    samples = 1
    # Gray-box crafts on the bare network: randomness that lives only in the hidden
    # preprocessing (random masks of splic, me-net, tvm) is not there to average over.
    random_view = detected or (stack.stochastic and not (threat == "gray-box" and all(p.owns_preprocess() for p in stack.parts if p.stochastic)))
    if random_view and not own_eot:
        samples = DEFAULT_EOT if eot is None else eot
        if samples > 1:
            view = EOT(view, samples)
            why = f"the model (defense {stack.spec}) is random: two forward passes on the same batch differed, though nothing declares it" if detected else f"{stack.spec} is stochastic"
            notes.append(f"{why}: every gradient averages {samples} EOT samples (--eot 1 gives the papers' non-adaptive numbers)")
    elif eot not in (None, 1) and not random_view:
        notes.append(f"--eot {eot} ignored: {stack.spec} is deterministic" + (" without its preprocessing" if stack.stochastic else ""))
    # Wrappers start in train mode like every new nn.Module; torchattacks would then "restore"
    # train mode onto the whole network after each call.
    return AttackerView(view.eval(), samples, use_bpda, notes)
