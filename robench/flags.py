"""Sanity flags: signs that a robustness number comes from gradient masking or a weak evaluation.

`compute_flags` reads the result rows that `robench report` tabulates and returns the
inconsistencies a sound evaluation should not show (the reasoning behind each, and what to run
next, is in docs/flags.md). A flag is a prompt to run a stronger attack, not a verdict: every
comparison is made between rows of the same setting, and differences inside run-to-run noise
are not reported.

A column that is absent from the frame silences the flags that need it. A column that only
holds a setting fixed (threat model, EOT samples, BPDA, restarts, targeting) is taken as
constant at its default when absent, because older or foreign CSVs that lack it never varied it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from robench import value_range
from robench.workspace import attack_option


@dataclass(frozen=True)
class Flag:
    id: str
    title: str
    rows: tuple[str, ...]
    severity: str = "medium"


ITERATIVE_WEAKER = "iterative-weaker-than-single-step"
TRANSFER_STRONGER = "transfer-stronger-than-white-box"
NO_COLLAPSE = "no-collapse-at-large-eps"
EOT_STRONGER = "eot-much-stronger"
BPDA_STRONGER = "bpda-much-stronger"
RESTARTS_LOWER = "restarts-lower-accuracy"
TRAIN_MODE_LEFT = "train-mode-left"
GRADIENT_FREE_STRONGER = "gradient-free-much-stronger"
UNDECLARED_RANDOMNESS = "undeclared-randomness"
ZERO_GRADIENTS = "zero-gradients"
SATURATED_LOGITS = "saturated-logits"
NOT_CONVERGED = "not-converged"
# A probe fires when more than this share of the probed examples shows it (robench.probes.MOST).
PROBE_SHARE = 0.5

# Insertion order is the order flags are reported in.
FLAG_DOCS: dict[str, str] = {
    ITERATIVE_WEAKER: "an iterative attack leaves higher accuracy than FGSM at the same budget",
    TRANSFER_STRONGER: "a black-box or gray-box attack beats the same attack run white-box",
    GRADIENT_FREE_STRONGER: "a gradient-free attack (square, spsa) beats every gradient attack by more than 10 points",
    NO_COLLAPSE: "accuracy does not collapse at a huge budget, or rises as the budget grows",
    EOT_STRONGER: "averaging gradients over randomness (EOT) lowers accuracy by more than 10 points",
    BPDA_STRONGER: "straight-through gradients (BPDA) lower accuracy by more than 10 points",
    RESTARTS_LOWER: "random restarts lower accuracy by more than 5 points",
    TRAIN_MODE_LEFT: "an attack left a module in train mode",
    UNDECLARED_RANDOMNESS: "two forward passes on the same batch differed though the defense declares no randomness (evaluated with runs and EOT)",
    ZERO_GRADIENTS: "the input gradient of the loss vanishes on most examples: gradient attacks cannot move them",
    SATURATED_LOGITS: "the softmax is one-hot to float64 precision on most examples, or the outputs are already probabilities",
    NOT_CONVERGED: "5x the steps and 5 restarts lower this attack's accuracy by more than 2 points plus noise",
}

SEVERITY: dict[str, str] = {
    # These contradict what any sound attack must satisfy, so the robust number is suspect as a whole.
    ITERATIVE_WEAKER: "high",
    TRANSFER_STRONGER: "high",
    GRADIENT_FREE_STRONGER: "high",
    NO_COLLAPSE: "high",
    NOT_CONVERGED: "high",
    ZERO_GRADIENTS: "high",
    SATURATED_LOGITS: "high",
    # Randomness found by robench is handled (runs, EOT); the flag says the declaration is wrong.
    UNDECLARED_RANDOMNESS: "medium",
    # Here the stronger row already exists; what is wrong is the weaker number if it gets quoted.
    EOT_STRONGER: "medium",
    BPDA_STRONGER: "medium",
    # Train-mode layers change what was attacked (batch statistics, dropout), so the row may
    # describe a different model from the one evaluated.
    TRAIN_MODE_LEFT: "medium",
    RESTARTS_LOWER: "low",
}

ITERATIVE_LINF = frozenset({"bim", "pgd", "mifgsm", "apgd-ce", "apgd-dlr", "apgd-t", "eot-pgd", "aa", "aa-rand"})
SINGLE_STEP = "fgsm"
FULL_KNOWLEDGE = ("white-box", "omniscient")
PARTIAL_KNOWLEDGE = ("black-box", "gray-box")
# At an Linf budget of half the pixel range every image can be moved to the same uniform grey,
# so no classifier can do better than the most frequent class there. Smaller budgets are not
# "huge" for every dataset: 0.3 (76.5/255) is MNIST's standard budget, where adversarially
# trained models keep ~90%.
LARGE_EPS = 0.5

MIN_TOLERANCE = 0.02
EOT_GAP = 0.10
BPDA_GAP = 0.10
RESTARTS_GAP = 0.05
COLLAPSE_MARGIN = 0.10
DEFAULT_CHANCE = 0.1

# Budgets are compared after rounding so that 8/255 written by two runs, or read back from a
# CSV, lands in the same group.
EPS_DIGITS = 6


@dataclass(frozen=True)
class _Row:
    checkpoint: str
    attack: str
    norm: str
    eps: float | None
    targeted: str
    threat: str
    source: str
    eot: int
    bpda: bool
    restarts: int
    acc: float | None
    std: float
    chance: float
    train_mode_left: bool
    # The attacker's sign gradient in binary layers (`attack --ste`): another gradient, so
    # another attack setting, like BPDA.
    ste: str = ""

    @property
    def eps_key(self) -> float | None:
        return None if self.eps is None else round(self.eps, EPS_DIGITS)

    def order(self) -> tuple:
        return (self.checkpoint, self.attack, self.norm, self.targeted, self.eps is not None, self.eps_key or 0.0,
                self.threat, self.source, self.eot, self.bpda, self.restarts, self.acc is None, self.acc or 0.0)


def compute_flags(df: pd.DataFrame) -> list[Flag]:
    """Sanity flags for result rows (one row per setting, the latest already chosen)."""
    if df is None or df.empty or not {"checkpoint", "attack"} <= set(df.columns):
        return []
    columns = set(df.columns)
    rows = sorted(_normalise(df), key=_Row.order)
    measured = [r for r in rows if r.acc is not None]
    found: list[tuple[str, str, str]] = []
    if {"eps", "robust_acc"} <= columns:
        found += _iterative_weaker(measured)
        found += _no_collapse(measured)
        if "threat_model" in columns:
            found += _transfer_stronger(measured)
        found += _gradient_free_stronger(measured)
        if "eot" in columns:
            found += _eot_stronger(measured)
        if "bpda" in columns:
            found += _bpda_stronger(measured)
        if "restarts" in columns:
            found += _restarts_lower(measured)
    found += _probed(df)
    if "train_mode_left" in columns:
        found += [(TRAIN_MODE_LEFT, r.checkpoint, f"{r.checkpoint}: {_describe(r, show_acc=False)}") for r in rows if r.train_mode_left]
    return _collect(found)


def _probed(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The flags measured on the model itself (robench.probes, detected randomness) and the
    convergence check, one line per checkpoint or per unconverged row."""
    found = []
    for ckpt, group in df.groupby(df["checkpoint"].map(_text)):
        if "stochastic_by" in df.columns and (group["stochastic_by"].map(_text) == "detected").any():
            found.append((UNDECLARED_RANDOMNESS, ckpt, f"{ckpt}: its defense ({_text(group['defense'].iloc[0]) if 'defense' in df.columns else '?'}) declares none"))
        for column, flag_id, what in (("zero_gradients", ZERO_GRADIENTS, "zero input gradient"), ("saturated", SATURATED_LOGITS, "one-hot softmax")):
            if column in df.columns:
                share = max((_number(v) or 0.0 for v in group[column]), default=0.0)
                if share > PROBE_SHARE:
                    found.append((flag_id, ckpt, f"{ckpt}: {_pct(share)} of probed examples have a {what}"))
        if {"converged", "converged_drop"} <= set(df.columns):
            for _, row in group.iterrows():
                if _text(row["converged"]).lower() == "false":
                    eps = _number(row.get("eps"))
                    data_range = value_range.parse(row.get("value_range"), _text(row.get("dataset")) or None)
                    where = f" {value_range.eps_text(eps, data_range, _text(row.get('norm')) or 'Linf')}" if eps is not None else ""
                    found.append((NOT_CONVERGED, ckpt, f"{ckpt}: {_text(row['attack'])}{where} drops {_pct(_number(row['converged_drop']) or 0.0)} more with 5x steps and 5 restarts"))
    return found


def format_flags(flags: Iterable[Flag]) -> str:
    """Plain-text block for the end of a report; empty when nothing was flagged."""
    lines = []
    for flag in flags:
        lines.append(f"[{flag.severity}] {flag.id}: {flag.title}")
        lines.extend(f"    {row}" for row in flag.rows)
    if lines:
        lines.append("See docs/flags.md for what each flag means and what to run next.")
    return "\n".join(lines) + ("\n" if lines else "")


def _collect(found: list[tuple[str, str, str]]) -> list[Flag]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for flag_id, checkpoint, text in found:
        grouped.setdefault((flag_id, checkpoint), []).append(text)
    rank = {flag_id: i for i, flag_id in enumerate(FLAG_DOCS)}
    return [
        Flag(flag_id, FLAG_DOCS[flag_id], tuple(dict.fromkeys(texts)), SEVERITY[flag_id])
        for (flag_id, _), texts in sorted(grouped.items(), key=lambda item: (rank[item[0][0]], item[0][1]))
    ]


# --- reading the frame -------------------------------------------------------------------


def _normalise(df: pd.DataFrame) -> list[_Row]:
    def column(name: str) -> list:
        return df[name].tolist() if name in df.columns else [None] * len(df)

    fields = zip(
        column("checkpoint"), column("attack"), column("norm"), column("eps"), column("targeted"),
        column("threat_model"), column("source"), column("eot"), column("bpda"), column("restarts"),
        column("robust_acc"), column("robust_acc_std"), column("num_classes"), column("train_mode_left"),
        column("attack_options"),
    )
    rows = []
    for ckpt, attack, norm, eps, targeted, threat, source, eot, bpda, restarts, acc, std, classes, train_left, options in fields:
        attack_name = _text(attack).lower()
        classes_n = _number(classes)
        rows.append(_Row(
            checkpoint=_text(ckpt) or "?",
            attack=attack_name or "?",
            norm=_norm(norm, attack_name),
            eps=_number(eps),
            targeted=_targeted(targeted),
            threat=_text(threat).lower() or "white-box",
            source=_text(source),
            eot=max(int(_number(eot) or 1), 1),
            bpda=_flag(bpda),
            restarts=max(int(_number(restarts) or 1), 1),
            acc=_number(acc),
            std=abs(_number(std) or 0.0),
            chance=1 / classes_n if classes_n and classes_n >= 2 else DEFAULT_CHANCE,
            train_mode_left=_flag(train_left),
            ste=_text(attack_option(options, "ste")),
        ))
    return rows


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text(value) -> str:
    return "" if _missing(value) else str(value).strip()


def _number(value) -> float | None:
    if _missing(value) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag(value) -> bool:
    # A CSV column of booleans with gaps comes back as objects ("True", 1.0, NaN), not as bool.
    if _missing(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "y", "t"}
    return bool(value)


def _targeted(value) -> str:
    text = _text(value).lower()
    return "" if text in {"", "none", "no", "false", "0", "untargeted"} else text


def _norm(value, attack: str) -> str:
    text = _text(value).lower()
    if text in {"l2", "2"}:
        return "L2"
    if text in {"linf", "inf", "l_inf"}:
        return "Linf"
    if text:
        return _text(value)
    # Without a norm column the attack's name is the only hint, and robench's L2 attacks say so.
    return "L2" if attack.endswith("-l2") else "Linf"


# --- describing rows ---------------------------------------------------------------------


def _eps_text(row: _Row) -> str:
    if row.eps is None:
        return ""
    if row.norm == "Linf":
        scaled = row.eps * 255
        if abs(scaled - round(scaled)) < 1e-4:
            return f"{round(scaled)}/255"
        return f"{row.eps:g}"
    return f"{row.norm} {row.eps:g}"


def _qualifiers(row: _Row, forced: tuple[str, ...]) -> dict[str, str]:
    parts = {"threat": row.threat + (f" from {row.source}" if row.source else "")}
    if row.targeted:
        parts["targeted"] = f"targeted {row.targeted}"
    if row.eot > 1 or "eot" in forced:
        parts["eot"] = f"eot {row.eot}"
    if row.bpda or "bpda" in forced:
        parts["bpda"] = "bpda" if row.bpda else "no bpda"
    if row.restarts > 1 or "restarts" in forced:
        parts["restarts"] = f"{row.restarts} restart" + ("s" if row.restarts > 1 else "")
    if row.ste:
        parts["ste"] = f"ste {row.ste}"
    return parts


def _describe(row: _Row, ref: _Row | None = None, forced: tuple[str, ...] = (), show_acc: bool = True) -> str:
    """`pgd 8/255 (white-box, eot 10) 41.0%`; against `ref`, only what differs from it is spelled out."""
    parts = _qualifiers(row, forced)
    if ref is not None:
        same = _qualifiers(ref, forced)
        parts = {k: v for k, v in parts.items() if k in forced or same.get(k) != v}
    text = " ".join(p for p in (row.attack, _eps_text(row)) if p)
    if parts:
        text += f" ({', '.join(parts.values())})"
    if show_acc and row.acc is not None:
        text += f" {_pct(row.acc)}"
    return text


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _pair(flag_id: str, row: _Row, sign: str, other: _Row, forced: tuple[str, ...] = ()) -> tuple[str, str, str]:
    return flag_id, row.checkpoint, f"{row.checkpoint}: {_describe(row, forced=forced)} {sign} {_describe(other, ref=row, forced=forced)}"


# --- the checks --------------------------------------------------------------------------


def _tolerance(a: _Row, b: _Row, floor: float = MIN_TOLERANCE) -> float:
    # Two standard deviations of the noisier row: a gap inside run-to-run noise says nothing.
    return max(floor, 2 * max(a.std, b.std))


def _group(rows: Iterable[_Row], key: Callable[[_Row], tuple]) -> list[list[_Row]]:
    groups: dict[tuple, list[_Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return list(groups.values())


def _setting(row: _Row) -> tuple:
    """What every comparison holds fixed: the model, the budget and its norm, the target choice."""
    return row.checkpoint, row.norm, row.eps_key, row.targeted, row.ste


def _iterative_weaker(rows: list[_Row]) -> list[tuple[str, str, str]]:
    found = []
    linf = [r for r in rows if r.norm == "Linf" and r.eps is not None]
    # BPDA is held fixed too: a BPDA FGSM against a plain PGD mixes two effects, and the BPDA flag covers that gap.
    for group in _group(linf, lambda r: (*_setting(r), r.threat, r.source, r.eot, r.bpda)):
        single = [r for r in group if r.attack == SINGLE_STEP]
        for row in group:
            if row.attack not in ITERATIVE_LINF:
                continue
            for fgsm in single:
                if row.acc > fgsm.acc + _tolerance(row, fgsm):
                    found.append(_pair(ITERATIVE_WEAKER, row, ">", fgsm))
    return found


GRADIENT_FREE = frozenset({"square", "spsa"})
GRADIENT_FREE_GAP = 0.10


def _gradient_free_stronger(rows: list[_Row]) -> list[tuple[str, str, str]]:
    """A query-only attack far below the best gradient attack at the same budget: the
    gradients mislead (masking, shattered sign gradients), so the gradient numbers overstate
    robustness (Athalye et al. 2018; Carlini et al. 2019's checklist)."""
    found = []
    linf = [r for r in rows if r.norm == "Linf" and r.eps is not None and r.threat in FULL_KNOWLEDGE]
    for group in _group(linf, lambda r: (r.checkpoint, r.norm, r.eps_key, r.targeted)):
        gradient = [r for r in group if r.attack in ITERATIVE_LINF or r.attack == SINGLE_STEP]
        free = [r for r in group if r.attack in GRADIENT_FREE]
        if not gradient or not free:
            continue
        best = min(gradient, key=lambda r: r.acc)
        for row in free:
            if best.acc > row.acc + max(GRADIENT_FREE_GAP, _tolerance(best, row)):
                found.append(_pair(GRADIENT_FREE_STRONGER, best, ">", row))
    return found


def _transfer_stronger(rows: list[_Row]) -> list[tuple[str, str, str]]:
    found = []
    for group in _group(rows, lambda r: (*_setting(r), r.attack)):
        full = [r for r in group if r.threat in FULL_KNOWLEDGE]
        if not full:
            continue
        # Against the strongest full-knowledge row: a weak white-box variant (no EOT, one restart)
        # beside a strong one is the business of the EOT/restart flags, not a transfer anomaly.
        best = min(full, key=lambda r: r.acc)
        for row in group:
            if row.threat in PARTIAL_KNOWLEDGE and row.acc < best.acc - _tolerance(row, best):
                found.append(_pair(TRANSFER_STRONGER, row, "<", best))
    return found


def _no_collapse(rows: list[_Row]) -> list[tuple[str, str, str]]:
    found = []
    for row in rows:
        if row.norm == "Linf" and row.eps is not None and row.eps >= LARGE_EPS - 1e-9:
            limit = row.chance + COLLAPSE_MARGIN
            if row.acc > limit:
                found.append((NO_COLLAPSE, row.checkpoint, f"{row.checkpoint}: {_describe(row)} > {_pct(limit)} (chance {_pct(row.chance)} + 10 points)"))
    curves = [r for r in rows if r.eps is not None]
    for curve in _group(curves, lambda r: (r.checkpoint, r.norm, r.targeted, r.attack, r.threat, r.source, r.eot, r.bpda, r.restarts)):
        # Compared with the lowest accuracy at any smaller budget, so a slow climb over several
        # budgets is caught even when each step stays inside the tolerance.
        lowest: _Row | None = None
        for row in sorted(curve, key=lambda r: r.eps_key):
            if lowest is not None and row.eps_key > lowest.eps_key and row.acc > lowest.acc + _tolerance(row, lowest):
                found.append(_pair(NO_COLLAPSE, row, ">", lowest))
            if lowest is None or row.acc < lowest.acc:
                lowest = row
    return found


def _gap_check(rows: list[_Row], flag_id: str, knob: str, is_stronger: Callable[[_Row], bool],
               is_baseline: Callable[[_Row], bool], gap: float, attack_family: Callable[[_Row], str] = lambda r: r.attack) -> list[tuple[str, str, str]]:
    """Rows where turning `knob` on lowers accuracy by more than `gap` against the otherwise-equal row."""
    knobs = ("eot", "bpda", "restarts")
    held = tuple(k for k in knobs if k != knob)
    found = []

    def key(r: _Row) -> tuple:
        return (*_setting(r), attack_family(r), r.threat, r.source, *(getattr(r, k) for k in held))

    for group in _group(rows, key):
        baselines = [r for r in group if is_baseline(r)]
        for row in group:
            if not is_stronger(row):
                continue
            for base in baselines:
                if base.acc - row.acc > _tolerance(row, base, gap):
                    found.append(_pair(flag_id, row, "<", base, forced=(knob,)))
    return found


def _eot_family(row: _Row) -> str:
    # eot-pgd is PGD with averaged gradients, so its plain-PGD counterpart is the baseline.
    return "pgd" if row.attack == "eot-pgd" and row.eot > 1 else row.attack


def _eot_stronger(rows: list[_Row]) -> list[tuple[str, str, str]]:
    return _gap_check(rows, EOT_STRONGER, "eot", lambda r: r.eot > 1, lambda r: r.eot == 1, EOT_GAP, _eot_family)


def _bpda_stronger(rows: list[_Row]) -> list[tuple[str, str, str]]:
    return _gap_check(rows, BPDA_STRONGER, "bpda", lambda r: r.bpda, lambda r: not r.bpda, BPDA_GAP)


def _restarts_lower(rows: list[_Row]) -> list[tuple[str, str, str]]:
    return _gap_check(rows, RESTARTS_LOWER, "restarts", lambda r: r.restarts > 1, lambda r: r.restarts == 1, RESTARTS_GAP)
