"""Rank-k truncation of batched matrices, without a full SVD where a cheaper route is exact.

Small-matrix SVDs dominate the cost of every low-rank defense on CPU (LAPACK runs them one
matrix at a time). Two cheaper routes give the same best rank-k approximation:

- `gram`: the top-k eigenvectors of the smaller Gram matrix X X^T (one symmetric
  eigendecomposition, about 3x cheaper than an SVD of a 32x96 matrix). Exact for any k; it
  squares the condition number, which only matters for singular values below ~1e-3 of the
  largest, i.e. far below what an 8-bit image resolves.
- `randomized`: subspace iteration on k + oversample random directions (Halko, Martinsson and
  Tropp 2011, Algorithm 4.4) with `power_iters` passes, then an exact Rayleigh-Ritz step. Only
  matrix products and a thin QR, so it is the fast route when k is well below min(m, n); exact
  for matrices of rank <= k + oversample.
"""

from __future__ import annotations

import torch

METHODS = ("auto", "svd", "gram", "randomized")


def rank_of(rank: int | float, m: int, n: int) -> int:
    """An int rank, or a fraction in (0, 1] of min(m, n), rounded down as ME-Net's
    `int(svdprob * h)` does (0.8 of 32 rows keeps 25), at least 1."""
    full = min(m, n)
    if isinstance(rank, float) and rank <= 1.0:
        return max(1, min(full, int(rank * full + 1e-9)))
    return max(1, min(full, int(rank)))


def _orthonormal(y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(y, mode="reduced").Q


def top_svd(x: torch.Tensor, k: int, power_iters: int = 2, oversample: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U_k, S_k, V_k^T) of each matrix: the top-k singular triplets, by randomized subspace
    iteration where k + oversample is at most half of min(m, n), by a full SVD otherwise."""
    m, n = x.shape[-2:]
    if 2 * (k + oversample) > min(m, n):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        return u[..., :k], s[..., :k], vh[..., :k, :]
    wide = m <= n
    a = x if wide else x.mT
    q = _range(a, k + oversample, power_iters)
    small = q.mT @ a
    evals, vecs = torch.linalg.eigh(small @ small.mT)
    s = evals[..., -k:].flip(-1).clamp_min(0).sqrt()
    u = q @ vecs[..., -k:].flip(-1)
    vh = (u.mT @ a) / s.clamp_min(1e-12).unsqueeze(-1)
    return (u, s, vh) if wide else (vh.mT, s, u.mT)


def _range(a: torch.Tensor, columns: int, power_iters: int) -> torch.Tensor:
    # Fixed seed: this randomness is numerical, not part of any defense's stochasticity.
    gen = torch.Generator().manual_seed(0)
    omega = torch.randn(a.shape[-1], columns, generator=gen, dtype=a.dtype).to(a.device)
    q = _orthonormal(a @ omega)
    for _ in range(power_iters):
        q = _orthonormal(a @ (a.mT @ q))
    return q


def truncate(x: torch.Tensor, rank: int | float, method: str = "auto", power_iters: int = 2, oversample: int = 4) -> torch.Tensor:
    """Best rank-k approximation of each matrix in x (..., m, n)."""
    m, n = x.shape[-2:]
    k = rank_of(rank, m, n)
    if k >= min(m, n):
        return x.clone()
    if method == "auto":
        method = "randomized" if 2 * (k + oversample) <= min(m, n) else "gram"
    if method == "svd":
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        return (u[..., :k] * s[..., None, :k]) @ vh[..., :k, :]
    wide = m <= n
    a = x if wide else x.mT
    if method == "gram":
        _, vecs = torch.linalg.eigh(a @ a.mT)
        basis = vecs[..., -k:]
    elif method == "randomized":
        q = _range(a, k + oversample, power_iters)
        small = q.mT @ a
        _, vecs = torch.linalg.eigh(small @ small.mT)
        basis = q @ vecs[..., -k:]
    else:
        raise ValueError(f"unknown truncation method {method!r}; one of {', '.join(METHODS)}")
    out = basis @ (basis.mT @ a)
    return out if wide else out.mT
