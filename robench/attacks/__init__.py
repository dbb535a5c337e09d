"""The attack suite on top of torchattacks, with the papers' settings as defaults.

Settings and where they come from:
- BIM and PGD (Defensive Tensorization section 4, after Kurakin et al. and Song et al.): step
  1/255 and floor(min(eps*255 + 4, 1.25 * eps*255)) iterations (at least one); PGD starts from a
  random point in the eps-ball, BIM from the clean image.
- AutoAttack `aa` at the official "standard" strength: APGD-CE and APGD-T with 100 iterations
  (torchattacks defaults to 10), FAB-T with 100 iterations, Square with 5000 queries, fixed seed;
  each component attacks only what the previous ones left robust. `aa-rand` is the official
  version for randomized defenses: APGD-CE and APGD-DLR with EOT over 20 samples.
- DeepFool (thesis 3.5.1): at most 5 iterations, overshoot 0.02. CW (thesis 4.4.1): kappa 20,
  1000 steps, lr 0.005. Both are minimal-perturbation attacks: unbounded by default (their rows
  carry no eps); `--attack-opt deepfool.project=true` clips the result into the eps-ball.
- R+FGSM (Tramer et al.): a random step of eps/2 then one gradient step of eps/2.
- MI-FGSM (Dong et al.): 10 iterations of eps/10, decay 1.0.
- SPSA (Uesato et al., gradient-free): 100 iterations, 128 samples, perturbation 0.01, lr 0.01;
  smaller than the paper's batch of 8192 so that it runs on a CPU, raise it with --attack-opt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torchattacks
from torch import nn

from robench.errors import RobenchError
from robench.parsing import parse_bool, parse_number
from robench.registry import Registry

NORMS = ("Linf", "L2")
TARGET_MODES = ("random", "least-likely")

Craft = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttackSettings:
    eps: float
    norm: str | None = None
    steps: int | None = None
    step_size: float | None = None
    restarts: int = 1
    seed: int = 0
    num_classes: int = 10
    eot: int = 1
    targeted: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    # False for a deterministic model: attacks with their own EOT then take one sample, since
    # averaging identical gradients only multiplies the cost.
    stochastic: bool = True

    def own_eot(self, default: int) -> int:
        if not self.stochastic:
            return 1
        return self.eot if self.eot > 1 else default


@dataclass(frozen=True)
class AttackSpec:
    name: str
    summary: str
    norms: tuple[str, ...]
    build: Callable[[nn.Module, AttackSettings, dict[str, Any]], Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    iterative: bool = False
    bounded: bool = True
    targetable: bool = True
    native_restarts: bool = False
    # Attacks that average gradients over randomness themselves; the runner does not wrap
    # the model in EOT for them.
    own_eot: bool = False
    # Step size when the user gives none, from (eps, steps); None means the papers' 1/255.
    derived_step: Callable[[float, int], float] | None = None

    def norm_for(self, settings: AttackSettings) -> str:
        norm = settings.norm or self.norms[0]
        if norm not in self.norms:
            alternative = {"pgd": "pgd-l2", "pgd-l2": "pgd"}.get(self.name)
            hint = f"; use {alternative}" if alternative else ""
            raise RobenchError(f"attack {self.name!r} supports --norm {'/'.join(self.norms)}, not {norm}{hint}")
        return norm

    def resolved_options(self, settings: AttackSettings) -> dict[str, Any]:
        """Defaults overridden by --attack-opt, with the iteration rule and --steps applied."""
        values = dict(self.options)
        if "steps" in values and settings.steps is not None:
            values["steps"] = settings.steps
        if "step_size" in values and settings.step_size is not None:
            values["step_size"] = settings.step_size
        for key, raw in settings.options.items():
            if key not in values:
                known = ", ".join(sorted(values)) or "none"
                raise RobenchError(f"attack {self.name!r} has no option {key!r} (its options: {known})")
            values[key] = _coerce_like(values[key], raw, f"{self.name}.{key}")
        if values.get("steps", 0) is None:
            values["steps"] = paper_steps(settings.eps)
        if values.get("step_size", 0) is None:
            values["step_size"] = self.derived_step(settings.eps, values["steps"]) if self.derived_step else 1 / 255
        return values

    def make(self, model: nn.Module, settings: AttackSettings) -> Craft:
        norm = self.norm_for(settings)
        if settings.targeted and not self.targetable:
            raise RobenchError(f"attack {self.name!r} has no targeted mode; drop --targeted or use one of {', '.join(n for n, s in ATTACKS.items() if s.targetable)}")
        options = self.resolved_options(settings)
        attack = self.build(model, settings, {**options, "norm": norm})
        if settings.targeted:
            if settings.targeted == "random":
                attack.set_mode_targeted_random(quiet=True)
            else:
                attack.set_mode_targeted_least_likely(quiet=True)
        if not self.bounded and options.get("project"):
            return _projected(attack, settings.eps)
        return attack

    def described_steps(self, settings: AttackSettings) -> tuple[int | None, float | None]:
        """(iterations or queries, step size) for the result row; FGSM is one step of eps."""
        if self.name == "fgsm":
            return 1, settings.eps
        options = self.resolved_options(settings)
        return options.get("steps", options.get("n_queries")), options.get("step_size")


def paper_steps(eps: float) -> int:
    """floor(min(eps + 4, 1.25 eps)) with eps on the 0..255 scale, and never fewer than one."""
    e = eps * 255
    return max(1, math.floor(min(e + 4, 1.25 * e) + 1e-9))


def _coerce_like(default: Any, raw: Any, where: str) -> Any:
    if isinstance(raw, str):
        text = raw.strip()
        if isinstance(default, bool):
            try:
                return parse_bool(text)
            except ValueError:
                raise RobenchError(f"--attack-opt {where} expects true or false, got {raw!r}") from None
        try:
            value: Any = parse_number(text)
        except ValueError:
            raise RobenchError(f"--attack-opt {where} expects a number, got {raw!r}") from None
    else:
        value = raw
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int) or (default is None and where.endswith(".steps")):
        if float(value) != int(value) or int(value) < 1:
            raise RobenchError(f"--attack-opt {where} expects a positive integer, got {raw!r}")
        return int(value)
    if float(value) < 0:
        raise RobenchError(f"--attack-opt {where} must be >= 0, got {raw!r}")
    return float(value)


def _projected(attack: Any, eps: float) -> Craft:
    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv = attack(x, y)
        return (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)

    run.attack = attack  # type: ignore[attr-defined]
    return run


def _autoattack(model: nn.Module, s: AttackSettings, o: dict[str, Any]) -> Craft:
    norm, seed, restarts = o["norm"], s.seed, s.restarts
    components = [
        torchattacks.APGD(model, norm=norm, eps=s.eps, steps=o["steps"], n_restarts=restarts, seed=seed, loss="ce"),
        torchattacks.APGDT(model, norm=norm, eps=s.eps, steps=o["steps"], n_restarts=restarts, seed=seed, n_classes=s.num_classes),
        torchattacks.FAB(model, norm=norm, eps=s.eps, steps=o["steps"], n_restarts=restarts, seed=seed, multi_targeted=True, n_classes=s.num_classes),
        torchattacks.Square(model, norm=norm, eps=s.eps, n_queries=o["n_queries"], n_restarts=restarts, seed=seed),
    ]
    return _cascade(model, components, s.num_classes)


def _autoattack_apgd(model: nn.Module, s: AttackSettings, o: dict[str, Any]) -> Craft:
    components = [
        torchattacks.APGD(model, norm=o["norm"], eps=s.eps, steps=o["steps"], n_restarts=s.restarts, seed=s.seed, loss="ce"),
        torchattacks.APGDT(model, norm=o["norm"], eps=s.eps, steps=o["steps"], n_restarts=s.restarts, seed=s.seed, n_classes=s.num_classes),
    ]
    return _cascade(model, components, s.num_classes)


def _autoattack_rand(model: nn.Module, s: AttackSettings, o: dict[str, Any]) -> Craft:
    components = [
        torchattacks.APGD(model, norm=o["norm"], eps=s.eps, steps=o["steps"], n_restarts=s.restarts, seed=s.seed, loss=loss, eot_iter=s.own_eot(o["eot_iter"]))
        for loss in ("ce", "dlr")
    ]
    return _cascade(model, components, s.num_classes)


def _cascade(model: nn.Module, components: list[Any], num_classes: int) -> Craft:
    """Each component attacks what the previous ones left robust. Robust here means a single
    forward pass of the attacker's view of the model (which averages EOT samples for a
    stochastic model); the final verdict is the runner's majority vote over --runs."""
    for component in components:
        _cap_targets(component, num_classes)

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv = x.clone()
        robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for number, component in enumerate(components, 1):
            index = robust.nonzero().squeeze(1)
            if len(index) == 0:
                break
            if run.report is not None:
                # Long components (FAB-T, Square) would otherwise freeze the progress bar for minutes.
                run.report(f"{number}/{len(components)} {type(component).__name__}{'-' + component.loss if isinstance(getattr(component, 'loss', None), str) else ''} on {len(index)}")
            candidate = component(x[index], y[index])
            with torch.no_grad():
                fooled = model(candidate).argmax(1) != y[index]
            adv[index[fooled]] = candidate[fooled]
            robust[index[fooled]] = False
        return adv

    run.components = components  # type: ignore[attr-defined]
    run.report = None  # type: ignore[attr-defined]  # set by the runner: called with each component's name
    return run


def _spec(name, summary, norms, build, options=None, **flags) -> AttackSpec:
    return AttackSpec(name, summary, tuple(norms), build, dict(options or {}), **flags)


_PAPER_STEPS = {"steps": None, "step_size": None}

ATTACKS: Registry[AttackSpec] = Registry("attack")
for _attack in (
    _spec("fgsm", "Fast Gradient Sign Method: one step of size eps", ["Linf"],
          lambda m, s, o: torchattacks.FGSM(m, eps=s.eps)),
    _spec("bim", "Basic Iterative Method: step 1/255, floor(min(eps+4, 1.25 eps)) steps (eps in 0..255)", ["Linf"],
          lambda m, s, o: torchattacks.BIM(m, eps=s.eps, alpha=o["step_size"], steps=o["steps"]), _PAPER_STEPS, iterative=True),
    _spec("pgd", "Projected Gradient Descent: as BIM, from a random start in the eps-ball", ["Linf"],
          lambda m, s, o: torchattacks.PGD(m, eps=s.eps, alpha=o["step_size"], steps=o["steps"], random_start=o["random_start"]),
          {**_PAPER_STEPS, "random_start": True}, iterative=True),
    _spec("pgd-l2", "PGD in the L2 ball: 50 steps of 2.5 eps / steps, random start", ["L2"],
          lambda m, s, o: torchattacks.PGDL2(m, eps=s.eps, alpha=o["step_size"], steps=o["steps"], random_start=o["random_start"]),
          {"steps": 50, "step_size": None, "random_start": True}, iterative=True, derived_step=lambda eps, steps: 2.5 * eps / steps),
    _spec("rfgsm", "R+FGSM (Tramer et al.): random step of eps/2, then a gradient step of eps/2", ["Linf"],
          lambda m, s, o: torchattacks.RFGSM(m, eps=s.eps, alpha=o["step_size"], steps=o["steps"]),
          {"steps": 1, "step_size": None}, derived_step=lambda eps, steps: eps / 2),
    _spec("mifgsm", "Momentum iterative FGSM (Dong et al.): 10 steps of eps/10, decay 1.0", ["Linf"],
          lambda m, s, o: torchattacks.MIFGSM(m, eps=s.eps, alpha=o["step_size"], steps=o["steps"], decay=o["decay"]),
          {"steps": 10, "step_size": None, "decay": 1.0}, iterative=True, derived_step=lambda eps, steps: eps / steps),
    _spec("apgd-ce", "Auto-PGD with cross-entropy, 100 iterations", ["Linf", "L2"],
          lambda m, s, o: torchattacks.APGD(m, norm=o["norm"], eps=s.eps, steps=o["steps"], n_restarts=s.restarts, seed=s.seed, loss="ce"),
          {"steps": 100}, iterative=True, targetable=False, native_restarts=True),
    _spec("apgd-dlr", "Auto-PGD with the DLR loss, 100 iterations", ["Linf", "L2"],
          lambda m, s, o: torchattacks.APGD(m, norm=o["norm"], eps=s.eps, steps=o["steps"], n_restarts=s.restarts, seed=s.seed, loss="dlr"),
          {"steps": 100}, iterative=True, targetable=False, native_restarts=True),
    _spec("apgd-t", "Targeted Auto-PGD (DLR), 100 iterations over the 9 most likely other classes", ["Linf", "L2"],
          lambda m, s, o: _cap_targets(torchattacks.APGDT(m, norm=o["norm"], eps=s.eps, steps=o["steps"], n_restarts=s.restarts, seed=s.seed, n_classes=s.num_classes), s.num_classes),
          {"steps": 100}, iterative=True, targetable=False, native_restarts=True),
    _spec("fab", "FAB (minimal-norm boundary attack), 100 iterations; fab.targeted=true for FAB-T", ["Linf", "L2"],
          lambda m, s, o: _cap_targets(torchattacks.FAB(m, norm=o["norm"], eps=s.eps, steps=o["steps"], n_restarts=s.restarts, seed=s.seed, multi_targeted=o["targeted"], n_classes=s.num_classes), s.num_classes),
          {"steps": 100, "targeted": False}, iterative=True, targetable=False, native_restarts=True),
    _spec("square", "Square Attack (score-based, gradient-free), 5000 queries", ["Linf", "L2"],
          lambda m, s, o: torchattacks.Square(m, norm=o["norm"], eps=s.eps, n_queries=o["n_queries"], n_restarts=s.restarts, seed=s.seed),
          {"n_queries": 5000}, native_restarts=True),
    _spec("aa", "AutoAttack standard: APGD-CE, APGD-T, FAB-T (100 iterations), Square (5000 queries)", ["Linf", "L2"],
          _autoattack, {"steps": 100, "n_queries": 5000}, iterative=True, targetable=False, native_restarts=True),
    _spec("aa-apgd", "AutoAttack's gradient part: APGD-CE then APGD-T (100 iterations); robench's verdict attack", ["Linf", "L2"],
          _autoattack_apgd, {"steps": 100}, iterative=True, targetable=False, native_restarts=True),
    _spec("aa-rand", "AutoAttack for randomized defenses: APGD-CE and APGD-DLR with EOT over 20 samples", ["Linf", "L2"],
          _autoattack_rand, {"steps": 100, "eot_iter": 20}, iterative=True, targetable=False, native_restarts=True, own_eot=True),
    _spec("deepfool", "DeepFool (minimal L2 perturbation): at most 5 iterations, overshoot 0.02; unbounded", ["L2"],
          lambda m, s, o: torchattacks.DeepFool(m, steps=o["steps"], overshoot=o["overshoot"]),
          {"steps": 5, "overshoot": 0.02, "project": False}, bounded=False, targetable=False),
    _spec("cw", "Carlini-Wagner L2: kappa 20, 1000 steps, lr 0.005, c 1; unbounded", ["L2"],
          lambda m, s, o: torchattacks.CW(m, c=o["c"], kappa=o["kappa"], steps=o["steps"], lr=o["lr"]),
          {"steps": 1000, "kappa": 20.0, "lr": 0.005, "c": 1.0, "project": False}, bounded=False),
    _spec("spsa", "SPSA (gradient-free): 100 iterations, 128 samples, delta 0.01, lr 0.01", ["Linf"],
          lambda m, s, o: torchattacks.SPSA(m, eps=s.eps, delta=o["delta"], lr=o["lr"], nb_iter=o["steps"], nb_sample=o["samples"], max_batch_size=o["max_batch_size"]),
          {"steps": 100, "samples": 128, "delta": 0.01, "lr": 0.01, "max_batch_size": 64}),
    _spec("eot-pgd", "PGD whose every step averages the gradient over --eot samples (default 20; 1 on a deterministic model)", ["Linf"],
          lambda m, s, o: torchattacks.EOTPGD(m, eps=s.eps, alpha=o["step_size"], steps=o["steps"], eot_iter=s.own_eot(o["eot_iter"]), random_start=True),
          {**_PAPER_STEPS, "eot_iter": 20}, iterative=True, own_eot=True),
):
    ATTACKS.add(_attack.name, _attack, _attack.summary)
del _attack


def _cap_targets(attack: Any, num_classes: int) -> Any:
    """APGD-T and FAB-T target the 9 most likely other classes, fewer when there are fewer."""
    if hasattr(attack, "n_target_classes"):
        attack.n_target_classes = min(9, num_classes - 1)
    return attack


def get_attack(name: str) -> AttackSpec:
    return ATTACKS.get(name)


def parse_suite(text: str) -> list[AttackSpec]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise RobenchError("--suite is empty: name attacks, e.g. --suite fgsm,pgd (see `robench list attacks`)")
    return [get_attack(n) for n in names]


def parse_attack_options(items: list[str], suite: list[AttackSpec]) -> dict[str, dict[str, str]]:
    """`pgd.steps=500` -> {"pgd": {"steps": "500"}}; values are checked when the attack is built."""
    options: dict[str, dict[str, str]] = {}
    names = {spec.name for spec in suite}
    for item in items:
        target, sep, value = item.partition("=")
        attack, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise RobenchError(f"--attack-opt {item!r} must look like ATTACK.OPTION=VALUE, e.g. pgd.steps=500")
        get_attack(attack)
        if attack not in names:
            raise RobenchError(f"--attack-opt {item!r} names attack {attack!r}, which is not in --suite")
        spec = ATTACKS[attack]
        if key not in spec.options:
            known = ", ".join(sorted(spec.options)) or "none"
            raise RobenchError(f"attack {attack!r} has no option {key!r} (its options: {known})")
        options.setdefault(attack, {})[key] = value
    return options


def parse_eps(text: str, option: str = "--eps") -> float:
    """`8/255` or a decimal in the input's units ([0, 1] images); a bare integer above 1 is a
    mistake (pixels on the 0..255 scale) that we refuse rather than guess."""
    raw = text.strip()
    try:
        value = parse_number(raw)
    except ValueError:
        raise RobenchError(f"{option} {raw!r} is not a number; write it as a fraction like 8/255 or a decimal like 0.03") from None
    if not math.isfinite(value) or value < 0:
        raise RobenchError(f"{option} {raw!r} must be a finite number >= 0")
    if value > 1 and raw.isdigit():
        raise RobenchError(f"{option} {raw!r} is larger than the [0, 1] image range; did you mean {raw}/255?")
    # Decimals above 1 are legitimate L2 budgets; Linf attacks refuse them (AttackRun).
    return value


def parse_eps_list(text: str) -> list[float]:
    values = [parse_eps(part) for part in text.split(",") if part.strip()]
    if not values:
        raise RobenchError("--eps is empty: give values like 2/255,8/255")
    return values
