"""The attack suite on top of torchattacks, with the papers' settings as defaults.

Settings (Defensive Tensorization, section 4, after Kurakin et al. and Song et al.): BIM and PGD
use a step of 1/255 and floor(min(eps*255 + 4, 1.25 * eps*255)) iterations (at least one);
PGD starts from a random point in the eps-ball. AutoAttack runs at the official "standard"
strength: APGD-CE and APGD-T with 100 iterations (torchattacks defaults to 10), FAB-T with 100
iterations, Square with 5000 queries, and a fixed seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import torch
import torchattacks
from torch import nn

from robench.errors import RobenchError, unknown_name


@dataclass(frozen=True)
class AttackSettings:
    eps: float
    steps: int | None = None
    step_size: float | None = None
    seed: int = 0
    num_classes: int = 10


@dataclass(frozen=True)
class AttackSpec:
    name: str
    summary: str
    norm: str
    iterative: bool
    make: Callable[[nn.Module, AttackSettings], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

    def resolved(self, settings: AttackSettings) -> tuple[int | None, float | None]:
        """The steps and step size this attack will use (None where it has no such notion)."""
        if not self.iterative:
            return (1, settings.eps) if self.name == "fgsm" else (None, None)
        steps = settings.steps if settings.steps is not None else paper_steps(settings.eps)
        step_size = settings.step_size if settings.step_size is not None else 1 / 255
        return steps, step_size


def paper_steps(eps: float) -> int:
    """floor(min(eps + 4, 1.25 eps)) with eps on the 0..255 scale, and never fewer than one."""
    e = eps * 255
    return max(1, math.floor(min(e + 4, 1.25 * e) + 1e-9))


def _fgsm(model: nn.Module, s: AttackSettings):
    return torchattacks.FGSM(model, eps=s.eps)


def _bim(model: nn.Module, s: AttackSettings):
    steps, step = ATTACKS["bim"].resolved(s)
    return torchattacks.BIM(model, eps=s.eps, alpha=step, steps=steps)


def _pgd(model: nn.Module, s: AttackSettings):
    steps, step = ATTACKS["pgd"].resolved(s)
    return torchattacks.PGD(model, eps=s.eps, alpha=step, steps=steps, random_start=True)


def _autoattack(model: nn.Module, s: AttackSettings):
    """Standard AutoAttack: each component attacks only what the previous ones left robust."""
    n_target = min(9, s.num_classes - 1)
    components = [
        torchattacks.APGD(model, norm="Linf", eps=s.eps, steps=100, n_restarts=1, seed=s.seed, loss="ce"),
        torchattacks.APGDT(model, norm="Linf", eps=s.eps, steps=100, n_restarts=1, seed=s.seed, n_classes=s.num_classes),
        torchattacks.FAB(model, norm="Linf", eps=s.eps, steps=100, n_restarts=1, seed=s.seed, multi_targeted=True, n_classes=s.num_classes),
        torchattacks.Square(model, norm="Linf", eps=s.eps, n_queries=5000, n_restarts=1, seed=s.seed),
    ]
    for component in components[1:3]:
        component.n_target_classes = n_target

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv = x.clone()
        robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for component in components:
            index = robust.nonzero().squeeze(1)
            if len(index) == 0:
                break
            candidate = component(x[index], y[index])
            with torch.no_grad():
                fooled = model(candidate).argmax(1) != y[index]
            adv[index[fooled]] = candidate[fooled]
            robust[index[fooled]] = False
        return adv

    return run


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("fgsm", "Fast Gradient Sign Method (one step of size eps)", "Linf", False, _fgsm),
        AttackSpec("bim", "Basic Iterative Method: step 1/255, floor(min(eps+4, 1.25 eps)) steps, no random start", "Linf", True, _bim),
        AttackSpec("pgd", "Projected Gradient Descent: as BIM, from a random start in the eps-ball", "Linf", True, _pgd),
        AttackSpec("aa", "AutoAttack standard: APGD-CE, APGD-T, FAB-T (100 iterations each), Square (5000 queries)", "Linf", False, _autoattack),
    )
}


def get_attack(name: str) -> AttackSpec:
    if name not in ATTACKS:
        raise unknown_name("attack", name, ATTACKS)
    return ATTACKS[name]


def parse_suite(text: str) -> list[AttackSpec]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise RobenchError("--suite is empty: name attacks, e.g. --suite fgsm,pgd (see `robench list attacks`)")
    return [get_attack(n) for n in names]


def parse_eps(text: str) -> float:
    """`8/255` or a decimal in the input's units ([0, 1] images); a bare integer above 1 is a
    mistake (pixels on the 0..255 scale) that we refuse rather than guess."""
    raw = text.strip()
    try:
        value = float(Fraction(raw)) if "/" in raw else float(raw)
    except (ValueError, ZeroDivisionError):
        raise RobenchError(f"--eps {raw!r} is not a number; write it as a fraction like 8/255 or a decimal like 0.03") from None
    if not math.isfinite(value) or value < 0:
        raise RobenchError(f"--eps {raw!r} must be a finite number >= 0")
    if value > 1:
        hint = f"; did you mean {raw}/255?" if raw.isdigit() else ""
        raise RobenchError(f"--eps {raw!r} is larger than the [0, 1] image range{hint}")
    return value


def parse_eps_list(text: str) -> list[float]:
    values = [parse_eps(part) for part in text.split(",") if part.strip()]
    if not values:
        raise RobenchError("--eps is empty: give values like 2/255,8/255")
    return values
