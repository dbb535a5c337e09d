"""Robust PCA, D = A + E with A low-rank and E sparse, by the inexact augmented Lagrange
multiplier method (IALM; Lin, Chen and Ma 2010, Algorithm 5), batched over matrices.

Algorithm 3 of the thesis initializes its weights from this decomposition of the masked image.
The defaults are IALM's: lambda = 1/sqrt(max(m, n)), mu_0 = 1.25/||D||_2, rho = 1.5,
Y_0 = D / max(||D||_2, ||D||_inf / lambda), stop at ||D - A - E||_F / ||D||_F < tol.
"""

from __future__ import annotations

import torch

from robench.preprocess.svt import soft_threshold, svt


def ialm(d: torch.Tensor, lam: float | None = None, tol: float = 1e-7, max_iter: int = 500, rho: float = 1.5) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(A, E, iterations) for every matrix of d (..., m, n). Matrices that converged early are
    frozen while the others continue, so a batch gives the same answer as one matrix at a time."""
    m, n = d.shape[-2:]
    lam = 1.0 / max(m, n) ** 0.5 if lam is None else lam
    spectral = torch.linalg.matrix_norm(d, ord=2).clamp_min(1e-12)[..., None, None]
    norm_inf = d.abs().amax((-2, -1), keepdim=True) / lam
    y = d / torch.maximum(spectral, norm_inf)
    mu = 1.25 / spectral
    mu_max = mu * 1e7
    d_norm = torch.linalg.matrix_norm(d).clamp_min(1e-12)[..., None, None]
    a = torch.zeros_like(d)
    e = torch.zeros_like(d)
    active = torch.ones_like(d_norm, dtype=torch.bool)
    it = 0
    for it in range(1, max_iter + 1):
        a_new = svt(d - e + y / mu, (1.0 / mu)[..., 0, 0])
        e_new = soft_threshold(d - a_new + y / mu, lam / mu)
        a = torch.where(active, a_new, a)
        e = torch.where(active, e_new, e)
        residual = d - a - e
        y = torch.where(active, y + mu * residual, y)
        mu = torch.where(active, torch.minimum(mu * rho, mu_max), mu)
        active = active & (torch.linalg.matrix_norm(residual)[..., None, None] / d_norm > tol)
        if not active.any():
            break
    return a, e, it
