"""Reweighted low-rank keypoint completion with TV (thesis ch. 3, Algorithms 2 and 3, eqs. 3.11-3.25).

Given an image matrix X^a and the keypoint mask M (1 at high-sensitivity keypoints), the
keypoints are treated as missing and re-estimated from the other pixels by

    min_{Z,X,E} sum_j w_j sigma_j(Z) + eta ||X||_TV + lambda ||W^e . (1 - M) . E||_1
    s.t. X^a - Z = E, Z = X, 0 <= X <= 1                                     (eq. 3.14)

with the ADM of Algorithm 2 (inner loop, NSVT for Z, FGP for X, non-uniform soft thresholding
for E, multiplier updates, mu <- delta mu) inside the fixed-point loop of Algorithm 3 (the
keypoints of X^a' are replaced by the completion after every pass).

Readings of the thesis where it is ambiguous:
- Algorithm 2 step 1 prints L = X^a + X - E + Y1/mu + Y2/mu and the threshold mu^-1 W; the
  derivation (eqs. 3.16-3.18) gives L = (X^a + X - E + Y1/mu + Y2/mu) / 2 and (2 mu)^-1 W. The
  derivation is used. Likewise step 2's R = Z - Y2 is eq. 3.20's R = Z - Y2/mu.
- The growth factor delta of mu is not given; 1.5 (IALM's usual rho) with mu_0 = 1e-6 and
  mu_max = 1e10 from Algorithm 3.
- eps_X in w_j = 1/(sigma_j + eps_X) is not given; eps_X = eps_E = 1e-3 (the value given for
  eps_E). The weights are computed once from the IALM decomposition (as Algorithm 3 prints them)
  and kept over the outer iterations.
- Omega in the outer stopping rule is read as the keypoints (the only entries that change).
- FGP runs `fgp_iters` iterations per ADM step, warm-started from the previous step's dual.
"""

from __future__ import annotations

import torch

from robench.preprocess.rpca import ialm
from robench.preprocess.svt import nsvt, soft_threshold
from robench.preprocess.tv import tv_denoise


def adm(
    xa: torch.Tensor,
    observed: torch.Tensor,
    w_x: torch.Tensor,
    w_e: torch.Tensor,
    lam: float = 8.0,
    eta: float = 0.2,
    inner: int = 100,
    mu0: float = 1e-6,
    growth: float = 1.5,
    mu_max: float = 1e10,
    tol: float = 1e-7,
    fgp_iters: int = 10,
    errors: list[float] | None = None,
) -> torch.Tensor:
    """Algorithm 2. `observed` is 1 - M; `errors` receives the mean relative error of eq. 3.25
    after every step."""
    x = torch.zeros_like(xa)
    z = torch.zeros_like(xa)
    e = torch.zeros_like(xa)
    y1 = torch.zeros_like(xa)
    y2 = torch.zeros_like(xa)
    dual = None
    mu = mu0
    xa_norm = torch.linalg.matrix_norm(xa).clamp_min(1e-12)
    e_thresholds = lam * w_e * observed
    for _ in range(inner):
        lowrank = 0.5 * (xa + x - e + y1 / mu + y2 / mu)
        z = nsvt(lowrank, w_x / (2 * mu))
        x, dual = tv_denoise(z - y2 / mu, eta / mu, iters=fgp_iters, dual=dual, return_dual=True)
        e = soft_threshold(xa - z + y1 / mu, e_thresholds / mu)
        y1 = y1 + mu * (xa - z - e)
        y2 = y2 + mu * (x - z)
        mu = min(mu * growth, mu_max)
        relative = (torch.linalg.matrix_norm(xa - z - e) + torch.linalg.matrix_norm(x - z)) / xa_norm
        if errors is not None:
            errors.append(relative.mean().item())
        if (torch.linalg.matrix_norm(xa - z - e) / xa_norm).amax() <= tol:
            break
    return x


def rlkc(
    xa: torch.Tensor,
    keypoints: torch.Tensor,
    lam: float = 8.0,
    eta: float = 0.2,
    maxiter: int = 3,
    inner: int = 100,
    eps_x: float = 1e-3,
    eps_e: float = 1e-3,
    tol: float = 1e-6,
    fgp_iters: int = 10,
    errors: list[float] | None = None,
) -> torch.Tensor:
    """Algorithm 3: the completed matrices (..., m, n). `keypoints` is 1 where a pixel is
    treated as missing; any shape broadcastable to xa."""
    m, n = xa.shape[-2:]
    observed = (1 - keypoints.to(xa.dtype)).expand_as(xa)
    current = xa * observed
    a1, e1, _ = ialm(current)
    sigma = torch.linalg.svdvals(a1)
    w_x = 1.0 / (sigma + eps_x)
    w_e = 1.0 / (e1.abs() + eps_e)
    previous = torch.zeros_like(xa)
    completed = previous
    for _ in range(maxiter):
        completed = adm(current, observed, w_x, w_e, lam, eta, inner, fgp_iters=fgp_iters, errors=errors)
        current = current * observed + completed * (1 - observed)
        change = torch.linalg.matrix_norm((completed - previous) * (1 - observed)) / (m * n)
        previous = completed
        if change.amax() <= tol:
            break
    return completed
