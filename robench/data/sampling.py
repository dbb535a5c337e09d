"""Deterministic subsets for --train-size and --n."""

from __future__ import annotations

import torch

from robench.errors import RobenchError


def subset(
    x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``size`` examples with class proportions preserved, deterministic in ``seed``.

    Per-class counts come from largest-remainder rounding, so they sum to exactly
    ``size``. The chosen examples keep their original order.
    """
    if len(x) != len(y):
        raise ValueError(f"subset: {len(x)} inputs but {len(y)} labels")
    n = len(y)
    if size is None or size >= n:
        return x, y
    if size < 1:
        raise RobenchError(f"subset size must be a positive number of examples, got {size}")

    labels = y.detach().cpu()
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = counts.double() * size / n
    take = quotas.floor().long()
    shortfall = size - int(take.sum())
    if shortfall:
        # Stable sort: ties go to the lower class index, keeping the choice a pure
        # function of (labels, size).
        order = torch.sort(quotas - take, descending=True, stable=True).indices
        take[order[:shortfall]] += 1

    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    permuted_labels = labels[perm]
    chosen = [perm[permuted_labels == c][:k] for c, k in zip(classes.tolist(), take.tolist()) if k]
    index = torch.sort(torch.cat(chosen)).values
    return x[index.to(x.device)], y[index.to(y.device)]
