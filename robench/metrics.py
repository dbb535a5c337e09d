"""Accuracy of a (possibly stochastic) model, batched, without gradients."""

from __future__ import annotations

import functools
import statistics

import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: torch.device | str = "cpu") -> torch.Tensor:
    model.eval()
    preds = [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, device: torch.device | str = "cpu") -> float:
    return (predict(model, x, batch_size, device) == y).float().mean().item()


def accuracy_over_runs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, runs: int, batch_size: int = 512, device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean and standard deviation of accuracy over `runs` independent forward passes."""
    values = [accuracy(model, x, y, batch_size, device) for _ in range(max(1, runs))]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    import platform

    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("robench", "torch", "torchvision", "torchattacks", "tensorly"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return tuple(found.items())


def versions() -> dict[str, str]:
    """Versions recorded in every checkpoint and result row (read once per process)."""
    return dict(_versions())


def resolve_device(name: str) -> torch.device:
    from robench.errors import RobenchError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RobenchError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in {"cpu", "cuda"}:
        raise RobenchError(f"--device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)
