"""robench's own number for a model: a verdict per eps that does not depend on the user's suite.

- The verdict at an eps counts an example robust only if it survived (by majority vote over
  --runs) every bounded attack run at that eps: the user's suite plus, when the suite has no
  reliable attack there, one robench adds. Reliable means AutoAttack's gradient part at its
  settings: APGD-CE then APGD-T (`aa-apgd`, or `aa`) for a deterministic model; the same with
  EOT inside (`aa-rand`) for a stochastic one (declared or detected). BPDA comes from the
  attacker's view, as for every attack. When the probes see masked gradients or saturated
  outputs, Square (gradient-free) is added too, since no gradient attack is then reliable.
- The row names the attack with the lowest accuracy at that eps (`set_by`); with --no-verdict
  nothing is added and a verdict without a reliable attack is marked weak.
- Convergence check: each iterative attack with a step schedule (BIM, PGD, MI-FGSM, EOT-PGD)
  is re-run on a seeded subsample of min(n, 100) examples with 5x its steps and 5 restarts.
  Reading of "the subsample's binomial noise" (issue 11): one standard error of the original
  accuracy on the subsample, sqrt(p (1 - p) / m); the drop is flagged above 2 points plus that.
  APGD, AutoAttack and the gradient-free attacks adapt their own step sizes and restarts, so
  they are not re-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from robench.attacks import AttackSpec, get_attack

VERDICT = "verdict"
CHECK_EXAMPLES = 100
CHECK_STEPS = 5
CHECK_RESTARTS = 5
CHECK_TOLERANCE = 0.02
# Attacks whose step count the check multiplies: a fixed schedule that may stop short.
SCHEDULED = frozenset({"bim", "pgd", "pgd-l2", "mifgsm", "eot-pgd"})


@dataclass(frozen=True)
class Addition:
    spec: AttackSpec
    why: str


def reliable(names: set[str], stochastic: bool) -> bool:
    """Does the suite already hold an attack the verdict can rest on?"""
    if stochastic:
        return "aa-rand" in names
    return bool({"aa", "aa-apgd"} & names) or {"apgd-ce", "apgd-t"} <= names


def additions(suite: list[AttackSpec], stochastic: bool, masked: bool) -> list[Addition]:
    """The attacks robench adds to the suite for its verdict, with the reason for each."""
    names = {spec.name for spec in suite}
    added = []
    if not reliable(names, stochastic):
        name = "aa-rand" if stochastic else "aa-apgd"
        why = "the model is random and the suite has no aa-rand" if stochastic else "the suite has no APGD-CE + APGD-T"
        added.append(Addition(get_attack(name), why))
    if masked and "square" not in names:
        added.append(Addition(get_attack("square"), "gradients are masked (zero-gradients or saturated-logits), so only a gradient-free attack can be trusted"))
    return added


def checked(spec: AttackSpec) -> bool:
    return spec.name in SCHEDULED


def tolerance(accuracy: float, examples: int) -> float:
    return CHECK_TOLERANCE + math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(examples, 1))
