"""Run an attack suite against a checkpoint and produce one result row per (attack, eps).

Evaluation protocol, chosen so that a randomized defense cannot look robust by luck:
- Each adversarial example is crafted once (with EOT for a stochastic model unless --eot 1),
  then the defended model classifies it `runs` times. The row's `robust_acc` is the mean
  accuracy over those runs (what the papers report), `robust_acc_std` its spread, and
  `robust_majority` the fraction of examples classified correctly in a strict majority of runs.
- A `worst-case` row per eps counts an example as robust only if it survives (by that majority
  vote) every bounded attack of the suite. Survivors are never picked by a single forward pass
  of a random model (AutoAttack PR #104).
- The test subset is streamed in batches: only per-example verdicts are kept, so memory does
  not grow with --n (black-box examples are written to the workspace cache as they come).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from robench.attacks import TARGET_MODES, AttackSettings, AttackSpec
from robench.attacks.threats import THREATS, attacker_view
from robench.checkpoint import LoadedCheckpoint, load_checkpoint
from robench.defenses.base import DefenseStack
from robench.data import load_dataset, subset
from robench.errors import RobenchError, unknown_name
from robench.layers.xnor import STE_CHOICES, set_ste
from robench.metrics import resolve_device, versions
from robench.parsing import eps_over_255, parse_bool
from robench.workspace import ResultRow, Workspace, atomic_save_tensors, load_tensors


@dataclass
class AttackRun:
    suite: list[AttackSpec]
    eps: list[float]
    n: int | None = 1000
    seed: int = 0
    runs: int = 10
    steps: int | None = None
    step_size: float | None = None
    batch_size: int = 256
    threat: str = "white-box"
    eot: int | None = None
    bpda: bool | None = None
    restarts: int = 1
    targeted: str | None = None
    norm: str | None = None
    source: str | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    ste: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("--n", self.n), ("--runs", self.runs), ("--steps", self.steps), ("--eot", self.eot), ("--restarts", self.restarts), ("--batch-size", self.batch_size)):
            if value is not None and value < 1:
                raise RobenchError(f"{name} must be >= 1, got {value}")
        if self.step_size is not None and not 0 < self.step_size <= 1:
            raise RobenchError(f"--step-size must be in (0, 1], got {self.step_size}")
        if self.threat not in THREATS:
            raise unknown_name("threat model", self.threat, THREATS)
        if (self.threat == "black-box") != (self.source is not None):
            raise RobenchError("--threat black-box needs --source NAME (the substitute checkpoint), and --source needs --threat black-box")
        if self.targeted is not None and self.targeted not in TARGET_MODES:
            raise RobenchError(f"--targeted must be one of {', '.join(TARGET_MODES)}, got {self.targeted!r}")
        if self.ste is not None and self.ste not in STE_CHOICES:
            raise RobenchError(f"--ste must be one of {', '.join(STE_CHOICES)}, got {self.ste!r}")
        if self.norm is not None and self.norm not in ("Linf", "L2"):
            raise RobenchError(f"--norm must be Linf or L2, got {self.norm!r}")
        for spec in self.suite:
            if (self.norm or spec.norms[0]) == "Linf" and spec.bounded and max(self.eps) > 1:
                raise RobenchError(f"--eps {max(self.eps):g} is larger than the [0, 1] image range of the Linf attack {spec.name!r}")

    def bounded(self, spec: AttackSpec) -> bool:
        """Does this attack respect eps (by design, or projected with ATTACK.project=true)?"""
        if spec.bounded:
            return True
        try:
            return parse_bool(self.options.get(spec.name, {}).get("project", False))
        except ValueError:
            # Planning counts anything but a yes-word as unprojected; making the attack refuses a malformed string.
            return False

    def settings(self, spec: AttackSpec, eps: float, num_classes: int, eot: int, stochastic: bool = True) -> AttackSettings:
        return AttackSettings(
            eps=eps, norm=self.norm, steps=self.steps, step_size=self.step_size, restarts=self.restarts,
            seed=self.seed, num_classes=num_classes, eot=eot if eot > 1 else (self.eot or 1), targeted=self.targeted,
            options=self.options.get(spec.name, {}), stochastic=stochastic,
        )


@torch.no_grad()
def correct_matrix(model: nn.Module, x: torch.Tensor, y: torch.Tensor, runs: int) -> torch.Tensor:
    """(runs, batch) booleans: was each example classified correctly in each run."""
    model.eval()
    return torch.stack([model(x).argmax(1) == y for _ in range(runs)])


class _Tally:
    """Streams per-batch verdicts into the numbers of one row."""

    def __init__(self, runs: int) -> None:
        self.per_run = torch.zeros(runs, dtype=torch.long)
        self.majority: list[torch.Tensor] = []
        self.linf = self.l2 = 0.0
        self.count = 0

    def add(self, correct: torch.Tensor, delta: torch.Tensor | None = None) -> None:
        correct = correct.cpu()
        self.per_run += correct.sum(1)
        self.majority.append(correct.sum(0) * 2 > correct.shape[0])
        self.count += correct.shape[1]
        if delta is not None:
            flat = delta.flatten(1).cpu()
            self.linf += flat.abs().amax(1).sum().item()
            self.l2 += flat.norm(dim=1).sum().item()

    @property
    def robust(self) -> torch.Tensor:
        return torch.cat(self.majority)

    def summary(self) -> dict[str, float]:
        accs = self.per_run.double() / max(self.count, 1)
        return {
            "mean": accs.mean().item(), "std": accs.std().item() if len(accs) > 1 else 0.0,
            "majority": self.robust.double().mean().item() if self.count else 0.0,
            "mean_linf": self.linf / max(self.count, 1), "mean_l2": self.l2 / max(self.count, 1),
        }


@dataclass
class Target:
    """A model under evaluation and what the rows say about it.

    `stochastic` is what the evaluation acts on (runs, EOT); `stochastic_by` says why:
    "declared" (its defense says so), "detected" (two forward passes on the same batch
    differed although nothing declared randomness) or "" (deterministic)."""

    model: nn.Module
    defense: DefenseStack
    info: dict[str, Any]
    stochastic: bool = False
    stochastic_by: str = ""

    @classmethod
    def of(cls, model: nn.Module, defense: DefenseStack, info: dict[str, Any], probe: torch.Tensor) -> "Target":
        """Declared randomness from the defense, undeclared randomness from the model itself."""
        if defense.stochastic:
            return cls(model, defense, info, True, "declared")
        if is_stochastic(model, probe):
            return cls(model, defense, info, True, "detected")
        return cls(model, defense, info)


@torch.no_grad()
def is_stochastic(model: nn.Module, x: torch.Tensor) -> bool:
    """Do two eval-mode forward passes on the same batch differ?

    The tolerance is far above float noise of a deterministic model and far below what any
    randomized defense changes; the RNG state is put back so detection shifts no later draw."""
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if x.is_cuda else None
    model.eval()
    first, second = model(x), model(x)
    torch.set_rng_state(state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
    return not torch.allclose(first, second, rtol=1e-4, atol=1e-5)


def run_attacks(
    target: Target,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    plan: AttackRun,
    device: torch.device,
    console: Console,
    source: Target | None = None,
    cache_path: Callable[[AttackSpec, AttackSettings], Path] | None = None,
) -> list[dict[str, Any]]:
    """The model-in core of every evaluation: attack `target` on (x_all, y_all) under `plan`
    and return one row per (attack, eps), plus a worst-case row per eps. Nothing is written;
    `source` (black-box) crafts the examples, cached through `cache_path` when given."""
    runs = plan.runs if target.stochastic else 1
    batches = [(start, min(start + plan.batch_size, len(y_all))) for start in range(0, len(y_all), plan.batch_size)]
    crafting = source or target
    if plan.ste is not None and set_ste(crafting.model, plan.ste) == 0:
        raise RobenchError(f"--ste picks the gradient of binary layers, and {crafting.info['checkpoint']!r} ({crafting.defense.spec}) has none; drop --ste")
    # The view depends on the attack only through whether it brings its own EOT; building one
    # per kind avoids re-copying the model (omniscient) for every attack of the suite.
    threat = "white-box" if source else plan.threat
    view_by_eot = {own: attacker_view(crafting.model, crafting.defense, threat, plan.eot, plan.bpda, own, crafting.stochastic_by) for own in {s.own_eot for s in plan.suite}}
    views = {spec.name: view_by_eot[spec.own_eot] for spec in plan.suite}
    for note in dict.fromkeys(n for v in view_by_eot.values() for n in v.notes):
        console.print(f"[cyan]note:[/] {note}")

    clean = _Tally(runs)
    torch.manual_seed(plan.seed)
    for start, stop in batches:
        clean.add(correct_matrix(target.model, x_all[start:stop].to(device), y_all[start:stop].to(device), runs))
    clean_summary = clean.summary()

    common = {
        **target.info, "stochastic": target.stochastic, "stochastic_by": target.stochastic_by,
        "threat_model": plan.threat, "source": plan.source, "targeted": plan.targeted,
        "n": len(y_all), "runs": runs, "seed": plan.seed, "versions": versions(),
        "clean_acc": clean_summary["mean"], "clean_acc_std": clean_summary["std"],
    }
    rows: list[dict[str, Any]] = []
    survivors: dict[float, torch.Tensor] = {}
    jobs = [(spec, eps) for spec in plan.suite for eps in (plan.eps if plan.bounded(spec) else plan.eps[:1])]
    name = target.info["checkpoint"]
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with progress:
        task = progress.add_task(f"attack {name}", total=len(jobs) * len(batches))
        for spec, eps in jobs:
            view = views[spec.name]
            stochastic_view = crafting.stochastic and plan.threat != "omniscient"
            settings = plan.settings(spec, eps, target.info["num_classes"], view.eot, stochastic_view)
            steps, step_size = spec.described_steps(settings)
            label = f"{spec.name} eps={eps_over_255(eps)}" if plan.bounded(spec) else spec.name
            cache = cache_path(spec, settings) if source is not None and cache_path is not None else None
            cached = load_tensors(cache)["adv"] if cache is not None and cache.is_file() else None
            # Cached black-box examples need no attack; their options are still validated.
            attack = None if cached is not None else spec.make(view.model, settings)
            if cached is not None:
                spec.resolved_options(settings)
            tally, left_in_train_mode = _Tally(runs), False
            crafted: list[torch.Tensor] = []
            started = time.perf_counter()
            torch.manual_seed(plan.seed)
            for start, stop in batches:
                progress.update(task, description=f"{name}: {label}")
                x, y = x_all[start:stop].to(device), y_all[start:stop].to(device)
                if cached is not None:
                    adv = cached[start:stop].to(device)
                else:
                    adv, left = _craft(spec, attack, view.model, target.model, x, y, plan.restarts, runs)
                    left_in_train_mode |= left
                    if cache is not None:
                        crafted.append(adv.cpu())
                tally.add(correct_matrix(target.model, adv, y, runs), adv - x)
                progress.advance(task)
            if cache is not None and cached is None:
                atomic_save_tensors(cache, {"adv": torch.cat(crafted)})
            result = tally.summary()
            if plan.bounded(spec):
                survivors[eps] = survivors.get(eps, torch.ones_like(tally.robust)) & tally.robust
            rows.append(ResultRow.checked({
                **common, "attack": spec.name, "norm": spec.norm_for(settings), "eps": eps if plan.bounded(spec) else None,
                "steps": steps, "step_size": step_size, "restarts": plan.restarts, "eot": _eot_used(spec, settings, view.eot), "bpda": view.bpda,
                "attack_options": {**plan.options.get(spec.name, {}), **({"ste": plan.ste} if plan.ste else {})},
                "robust_acc": result["mean"], "robust_acc_std": result["std"], "robust_majority": result["majority"],
                "mean_linf": result["mean_linf"], "mean_l2": result["mean_l2"], "train_mode_left": left_in_train_mode,
                "seconds": round(time.perf_counter() - started, 3),
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }))
    rows.extend(_worst_case_rows(plan, views, rows, survivors, common))
    return rows


def _worst_case_rows(plan: AttackRun, views: dict[str, Any], rows: list[dict[str, Any]], survivors: dict[float, torch.Tensor], common: dict[str, Any]) -> list[dict[str, Any]]:
    """Per eps, an example counts as robust only if it survived (by majority vote) every
    bounded attack of the suite; nothing to add with fewer than two bounded attacks."""
    bounded = [spec for spec in plan.suite if plan.bounded(spec)]
    if len(bounded) < 2:
        return []
    names = {s.name for s in bounded}
    worst_rows = []
    for eps, robust in survivors.items():
        worst = robust.double().mean().item()
        worst_rows.append(ResultRow.checked({
            **common, "attack": "worst-case", "norm": "/".join(sorted({s.norms[0] if not plan.norm else plan.norm for s in bounded})), "eps": eps,
            "steps": None, "step_size": None, "restarts": plan.restarts, "eot": max(r["eot"] for r in rows if r["attack"] in names),
            "bpda": any(views[s.name].bpda for s in bounded), "attack_options": {"suite": [s.name for s in bounded], **({"ste": plan.ste} if plan.ste else {})},
            "robust_acc": worst, "robust_acc_std": 0.0, "robust_majority": worst, "mean_linf": None, "mean_l2": None,
            "train_mode_left": any(r["train_mode_left"] for r in rows), "seconds": 0.0,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }))
    return worst_rows


def checkpoint_target(loaded: LoadedCheckpoint, probe: torch.Tensor) -> Target:
    meta = loaded.meta
    info = {
        "checkpoint": loaded.name, "dataset": meta["dataset"], "arch": meta["arch"], "defense": meta["defense"],
        "defense_params": meta.get("defense_params", {}), "num_classes": meta["num_classes"],
    }
    return Target.of(loaded.model, loaded.defense, info, probe)


def attack_checkpoint(
    workspace: Workspace,
    name: str,
    plan: AttackRun,
    data_dir: str | Path | None = None,
    download: bool = False,
    dataset: str | None = None,
    device: str = "auto",
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Attack checkpoint `name` under `plan`, append the rows to the workspace CSV, and return them."""
    console = console or Console(stderr=True)
    torch_device = resolve_device(device)
    loaded = load_checkpoint(workspace, name, torch_device)
    meta = loaded.meta
    data = load_dataset(dataset or meta["dataset"], data_dir, download)
    if data.name != meta["dataset"]:
        raise RobenchError(f"checkpoint {name!r} was trained on {meta['dataset']!r}, not {data.name!r}; drop --dataset or pick a checkpoint of that dataset")
    x_all, y_all = subset(data.test_x, data.test_y, plan.n, plan.seed)
    probe = x_all[: plan.batch_size].to(torch_device)
    target = checkpoint_target(loaded, probe)
    source = None
    if plan.source is not None:
        loaded_source = load_checkpoint(workspace, plan.source, torch_device)
        if loaded_source.meta["dataset"] != meta["dataset"]:
            raise RobenchError(f"--source {plan.source!r} was trained on {loaded_source.meta['dataset']!r}, the target on {meta['dataset']!r}; pick a substitute of the same dataset")
        source = checkpoint_target(loaded_source, probe)
    cache = lambda spec, settings: _cache_path(workspace, plan, spec, settings, data.name, len(y_all))  # noqa: E731
    rows = run_attacks(target, x_all, y_all, plan, torch_device, console, source, cache)
    workspace.append_results(rows)
    return rows


def _eot_used(spec: AttackSpec, settings: AttackSettings, view_eot: int) -> int:
    """Gradient samples per step: the wrapper's, or the attack's own (eot-pgd, aa-rand)."""
    if spec.own_eot:
        return settings.own_eot(int(spec.resolved_options(settings)["eot_iter"]))
    return view_eot


def _craft(spec: AttackSpec, attack, view: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, restarts: int, runs: int) -> tuple[torch.Tensor, bool]:
    """Adversarial examples for one batch, and whether the attack left a module in train mode.

    Attacks without restarts of their own are re-run `restarts` times; each example keeps the
    candidate the defended model gets right least often over `runs` evaluations."""
    adv = attack(x, y).detach()
    left = _reset_eval(view, target)
    if restarts > 1 and not spec.native_restarts:
        best = correct_matrix(target, adv, y, runs).sum(0)
        for _ in range(restarts - 1):
            candidate = attack(x, y).detach()
            left |= _reset_eval(view, target)
            score = correct_matrix(target, candidate, y, runs).sum(0)
            better = score < best
            adv[better], best[better] = candidate[better], score[better]
    return adv, left


def _reset_eval(*models: nn.Module) -> bool:
    # torchattacks may leave a model in train mode, which would change BatchNorm statistics and
    # dropout; we record that it happened (a sanity flag) and put every module back in eval.
    left = any(module.training for model in models for module in model.modules())
    for model in models:
        model.eval()
    return left


def _cache_path(workspace: Workspace, plan: AttackRun, spec: AttackSpec, settings: AttackSettings, dataset: str, n: int) -> Path:
    """One file per (source, attack settings, test subset): one source serves many targets."""
    key = json.dumps({
        "source_hash": workspace.read_meta(plan.source).get("config_hash"), "attack": spec.name,
        "options": spec.resolved_options(settings), "eps": settings.eps, "norm": spec.norm_for(settings),
        "restarts": plan.restarts, "targeted": plan.targeted, "eot": plan.eot, "bpda": plan.bpda,
        "dataset": dataset, "n": n, "seed": plan.seed, "batch_size": plan.batch_size,
    }, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return workspace.adversarial_cache / plan.source / f"{spec.name}-{digest}.safetensors"
