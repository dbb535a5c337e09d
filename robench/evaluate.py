"""Run an attack suite against a checkpoint and produce one result row per (attack, eps)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robench.attacks import AttackSettings, AttackSpec
from robench.checkpoint import load_checkpoint
from robench.data import load_dataset, subset
from robench.errors import RobenchError
from robench.metrics import predict, resolve_device, versions
from robench.workspace import Workspace


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

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 1:
            raise RobenchError(f"--n must be >= 1, got {self.n}")
        if self.runs < 1:
            raise RobenchError(f"--runs must be >= 1, got {self.runs}")
        if self.steps is not None and self.steps < 1:
            raise RobenchError(f"--steps must be >= 1, got {self.steps}")
        if self.step_size is not None and not 0 < self.step_size <= 1:
            raise RobenchError(f"--step-size must be in (0, 1], got {self.step_size}")


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
    """Attack `name` and append the rows to the workspace CSV; returns the rows.

    For a stochastic defense every (attack, eps) is repeated `runs` times with fresh randomness
    (new adversarial examples and a new evaluation each time) and the mean and standard
    deviation of accuracy are recorded, as Defensive Tensorization averages over 10 runs.
    """
    console = console or Console(stderr=True)
    torch_device = resolve_device(device)
    loaded = load_checkpoint(workspace, name, torch_device)
    meta, model = loaded.meta, loaded.model
    data = load_dataset(dataset or meta["dataset"], data_dir, download)
    if data.name != meta["dataset"]:
        raise RobenchError(f"checkpoint {name!r} was trained on {meta['dataset']!r}, not {data.name!r}; drop --dataset or pick a checkpoint of that dataset")
    x, y = subset(data.test_x, data.test_y, plan.n, plan.seed)
    runs = plan.runs if loaded.defense.stochastic else 1
    common = {
        "checkpoint": name, "dataset": meta["dataset"], "arch": meta["arch"], "defense": meta["defense"],
        "defense_params": meta.get("defense_params", {}), "threat_model": "white-box", "eot": 1,
        "n": len(y), "runs": runs, "seed": plan.seed, "versions": versions(),
    }

    rows = []
    jobs = [(spec, eps) for spec in plan.suite for eps in plan.eps]
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with progress:
        task = progress.add_task(f"attack {name}", total=len(jobs) * runs)
        for spec, eps in jobs:
            settings = AttackSettings(eps=eps, steps=plan.steps, step_size=plan.step_size, seed=plan.seed, num_classes=meta["num_classes"])
            steps, step_size = spec.resolved(settings)
            clean_accs, robust_accs = [], []
            started = time.perf_counter()
            for run in range(runs):
                progress.update(task, description=f"{name}: {spec.name} eps={eps * 255:g}/255 run {run + 1}/{runs}")
                torch.manual_seed(plan.seed + run)
                clean_accs.append((predict(model, x, plan.batch_size, torch_device) == y).float().mean().item())
                adv = _craft(spec, model, settings, x, y, plan.batch_size, torch_device)
                robust_accs.append((predict(model, adv, plan.batch_size, torch_device) == y).float().mean().item())
                progress.advance(task)
            rows.append({
                **common, "attack": spec.name, "norm": spec.norm, "eps": eps, "steps": steps,
                "step_size": step_size, "restarts": 1 if spec.name in {"pgd", "aa"} else None,
                "clean_acc": statistics.fmean(clean_accs), "clean_acc_std": _std(clean_accs),
                "robust_acc": statistics.fmean(robust_accs), "robust_acc_std": _std(robust_accs),
                "seconds": round(time.perf_counter() - started, 3),
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
    workspace.append_results(rows)
    return rows


def _craft(spec: AttackSpec, model: torch.nn.Module, settings: AttackSettings, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    attack = spec.make(model, settings)
    batches = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        batches.append(attack(xb, yb).detach().cpu())
        # torchattacks may leave the model in train mode, which would change BatchNorm statistics.
        model.eval()
    return torch.cat(batches)


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0
