"""Image quilting (Guo et al., ICLR 2018, after Efros and Freeman): every patch of the input is
replaced by one of its K nearest patches in a database of clean training-image patches.

Patches of size `patch` are laid on a grid with `overlap` pixels shared between neighbours; the
image is padded (edge replication) so that the grid covers it exactly, and cropped back. Where
patches overlap their pixels are averaged (Guo et al. stitch along a minimum-error graph cut;
averaging is the cheap stand-in, documented as a difference). The nearest neighbours come from
batched squared distances ||q||^2 - 2 q.d + ||d||^2 on chunks of queries, so memory stays at
`query_chunk` x database size; the pick among the K nearest is uniform, which makes the
transformation random.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_patches(images: torch.Tensor, count: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    """`count` patches (count, C*patch*patch) at uniform positions of uniform images."""
    n, c, h, w = images.shape
    idx = torch.randint(n, (count,), generator=generator)
    top = torch.randint(h - patch + 1, (count,), generator=generator)
    left = torch.randint(w - patch + 1, (count,), generator=generator)
    rows = top[:, None] + torch.arange(patch)[None, :]
    cols = left[:, None] + torch.arange(patch)[None, :]
    picked = images[idx[:, None, None, None], torch.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    return picked.reshape(count, -1).contiguous()


def _grid(size: int, patch: int, stride: int) -> int:
    """Padded size whose grid of patches (step `stride`) ends exactly at the border."""
    if size <= patch:
        return patch
    return patch + stride * math.ceil((size - patch) / stride)


def quilt(x: torch.Tensor, database: torch.Tensor, patch: int = 5, overlap: int = 2, k: int = 10, query_chunk: int = 2048, generator: torch.Generator | None = None) -> torch.Tensor:
    """Quilted images (B, C, H, W); `database` is (D, C*patch*patch) on x's device."""
    b, c, h, w = x.shape
    stride = patch - overlap
    ph, pw = _grid(h, patch, stride), _grid(w, patch, stride)
    padded = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
    cols = F.unfold(padded, patch, stride=stride)  # (B, C*p*p, L)
    queries = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    db_sq = database.pow(2).sum(1)
    k = min(k, len(database))
    chosen = torch.empty(len(queries), dtype=torch.long, device=x.device)
    for start in range(0, len(queries), query_chunk):
        q = queries[start : start + query_chunk]
        dist = db_sq[None, :] - 2.0 * (q @ database.T)  # ||q||^2 does not change the ranking
        nearest = dist.topk(k, dim=1, largest=False).indices
        pick = torch.randint(k, (len(q), 1), generator=generator, device="cpu").to(x.device)
        chosen[start : start + len(q)] = nearest.gather(1, pick)[:, 0]
    replaced = database[chosen].reshape(b, -1, cols.shape[1]).transpose(1, 2)
    summed = F.fold(replaced, (ph, pw), patch, stride=stride)
    counts = F.fold(torch.ones_like(replaced[:1]), (ph, pw), patch, stride=stride)
    return (summed / counts)[..., :h, :w]
