"""Chunked application of a batched kernel, and PSNR.

A 10,000-image test set preprocessed in one call would hold every intermediate SVD of every
image at once (tens of GiB for 32x32x3 images with a few hundred iterations of workspace);
`chunked` bounds peak memory by the chunk size instead.
"""

from __future__ import annotations

from typing import Callable

import torch


def chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 256, progress: bool = False, description: str = "preprocess") -> torch.Tensor:
    """fn applied to x[i:i+chunk] for each chunk; the results are written into one output."""
    if len(x) <= chunk:
        return fn(x)
    out = torch.empty_like(x)
    starts = range(0, len(x), chunk)
    if not progress:
        for start in starts:
            out[start : start + chunk] = fn(x[start : start + chunk])
        return out
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=len(x))
        for start in starts:
            out[start : start + chunk] = fn(x[start : start + chunk])
            bar.advance(task, min(chunk, len(x) - start))
    return out


def psnr(x: torch.Tensor, reference: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per leading item (per image)."""
    mse = (x - reference).flatten(1).pow(2).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(peak**2 / mse)
