"""`bench plan`: what each job of a suite will cost, before anything runs.

Training: epochs x steps per epoch x the seconds of one training step (the defense's own loss,
adversarial example generation included), timed here on a random batch of the run's batch size
and input shape; or, when the workspace already holds epochs of that checkpoint, their
measured seconds. Attacks: the attacker's model passes per example (the same estimate the
attack prints before it starts, robench.evaluation.estimated_passes, times EOT and restarts)
x the seconds of one forward+backward pass per example, timed the same way. Both are upper
bounds in the sense of the attack's estimate (early stops skip broken examples) and leave out
data loading, checkpoint writes and the convergence check.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from rich.console import Console

from robench.errors import RobenchError

# Sizes of the datasets a suite may name when their files are not on this machine (planning a
# cluster run from a laptop): (input shape, classes, train examples, test examples).
KNOWN = {
    "mnist": ((1, 28, 28), 10, 60_000, 10_000),
    "fashion-mnist": ((1, 28, 28), 10, 60_000, 10_000),
    "cifar10": ((3, 32, 32), 10, 50_000, 10_000),
    "cifar100": ((3, 32, 32), 100, 50_000, 10_000),
    "svhn": ((3, 32, 32), 10, 73_257, 26_032),
}
CPU_TIMING_BATCH = 16


def _facts(dataset: str, data_dir: Path | None) -> SimpleNamespace:
    from robench.data import load_dataset

    try:
        data = load_dataset(dataset, data_dir, download=False)
        return SimpleNamespace(name=data.name, shape=(data.in_channels, *data.image_size), classes=data.num_classes,
                               train=len(data.train_y), test=len(data.test_y), mean=list(data.mean), std=list(data.std),
                               extra={k: getattr(data, k) for k in ("value_range",) if getattr(data, k, None) is not None})
    except RobenchError:
        key = dataset.lower().replace("_", "-")
        if key not in KNOWN:
            raise RobenchError(f"bench plan needs dataset {dataset!r} under --data-dir to know its size; point --data-dir at it") from None
        shape, classes, train, test = KNOWN[key]
        return SimpleNamespace(name=key, shape=shape, classes=classes, train=train, test=test,
                               mean=[0.5] * shape[0], std=[0.25] * shape[0], extra={})


def _model(settings: dict[str, Any], facts: SimpleNamespace, device: torch.device) -> tuple[torch.nn.Module, Any]:
    from robench.bench import _train_config
    from robench.checkpoint import build_defended
    from robench.registry import defense_stack

    config = _train_config(settings)
    meta = {"arch": config.arch, "dataset": facts.name, "input_shape": list(facts.shape), "num_classes": facts.classes,
            "mean": facts.mean, "std": facts.std, "defense": config.defense, "defense_params": config.defense_params, **facts.extra}
    torch.manual_seed(0)
    model, _ = build_defended(meta)
    return model.to(device), defense_stack(config.defense, config.defense_params)


def _timed(step: Any, repeats: int = 3) -> float:
    step()  # warm-up: allocation, cudnn autotuning
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def estimate(jobs: list[Any], workspace: Any, data_dir: Path | None, device: str, console: Console | None = None) -> tuple[list[tuple[float, str]], str]:
    """(seconds, basis) per job, and the device kind the seconds are on ("GPU" or "CPU")."""
    from robench.bench import _attack_plan, _train_config
    from robench.evaluation import estimated_passes
    from robench.metrics import resolve_device

    torch_device = resolve_device(device)
    console = console or Console(stderr=True)
    facts: dict[str, SimpleNamespace] = {}
    step_seconds: dict[str, float] = {}
    pass_seconds: dict[str, float] = {}
    stochastic_by_key: dict[str, bool] = {}
    results = []
    for job in jobs:
        s = job.settings
        name = s.get("dataset", "digits")
        if name not in facts:
            facts[name] = _facts(name, data_dir)
        data = facts[name]
        if job.kind == "decompose":
            results.append((0.0, "a decomposition: minutes at most, not timed"))
            continue
        config = _train_config(s)
        key = config.config_hash()
        if job.kind == "train":
            measured = _measured_epochs(workspace, job.run, key)
            if measured is not None:
                done, epoch_seconds = measured
                results.append(((config.epochs - done) * epoch_seconds, f"measured {epoch_seconds:.1f} s/epoch in the workspace, {config.epochs - done} epochs left"))
                continue
            if key not in step_seconds:
                console.print(f"timing a training step of {config.arch} / {config.defense} on {torch_device.type}")
                model, stack = _model(s, data, torch_device)
                # On a CPU the step time grows linearly with the batch: a ResNet-18 step at the
                # paper's 128 takes seconds here, so a part of the batch is timed and scaled.
                timed = config.batch_size if torch_device.type == "cuda" else min(config.batch_size, CPU_TIMING_BATCH)
                x = torch.rand(timed, *data.shape, device=torch_device)
                y = torch.randint(0, data.classes, (timed,), device=torch_device)
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)

                def step() -> None:
                    optimizer.zero_grad()
                    stack.loss(model.train(), x, y).backward()
                    optimizer.step()

                step_seconds[key] = _timed(step) * config.batch_size / timed
            train_n = min(config.train_size or data.train, data.train)
            steps = math.ceil(train_n / config.batch_size)
            results.append((config.epochs * steps * step_seconds[key], f"{1000 * step_seconds[key]:.0f} ms/step x {steps} steps x {config.epochs} epochs"))
            continue
        plan = _attack_plan(s)
        batch = plan.batch_size
        if key not in pass_seconds:
            console.print(f"timing an attack pass of {config.arch} / {config.defense} on {torch_device.type}")
            model, stack = _model(s, data, torch_device)
            model.eval()
            x = torch.rand(min(batch, 256 if torch_device.type == "cuda" else CPU_TIMING_BATCH), *data.shape, device=torch_device, requires_grad=True)
            y = torch.randint(0, data.classes, (len(x),), device=torch_device)
            pass_seconds[key] = _timed(lambda: torch.nn.functional.cross_entropy(model(x), y).backward()) / len(x)
            stochastic_by_key[key] = stack.stochastic
        stochastic = stochastic_by_key[key]
        n = min(plan.n or data.test, data.test)
        examples = len(range(0, n, batch)[job.shard[0] - 1 :: job.shard[1]]) * batch if job.shard != (0, 0) else 0
        examples = min(examples, n)
        eot = (plan.eot or 10) if stochastic else 1
        passes = 0
        for spec in plan.suite:
            for eps in (plan.eps if plan.bounded(spec) else plan.eps[:1]):
                settings = plan.settings(spec, eps, data.classes, eot, stochastic)
                forward, backward = estimated_passes(spec, settings, eot, data.classes)
                passes += max(forward, backward) * plan.restarts + (plan.runs if stochastic else 1)
        results.append((examples * passes * pass_seconds[key], f"{1e6 * pass_seconds[key]:.0f} µs/pass x {passes:,} passes x {examples} examples"))
    return results, "GPU" if torch_device.type == "cuda" else "CPU"



def _measured_epochs(workspace: Any, name: str, config_hash: str) -> tuple[int, float] | None:
    """(epochs done, mean seconds per epoch) of this checkpoint in the workspace, if it has any."""
    import json

    path = Path(workspace.checkpoint_dir(name)) / "meta.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    history = meta.get("history") or []
    if meta.get("config_hash") != config_hash or not history:
        return None
    return int(meta.get("epochs_done", len(history))), sum(r["seconds"] for r in history) / len(history)
