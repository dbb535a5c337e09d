"""ME-Net's matrix estimators (Yang et al., ICML 2019), batched: USVT, Soft-Impute, nuclear norm.

`mask` is 1 on observed entries and 0 on missing ones; the observed values of `x` are the
data, the missing ones are ignored. The estimators work on any value range; ME-Net maps
pixels to [-1, 1] first (the `me-net` defense does so too).

- `usvt`: fill the missing entries with 0, rescale by 1/p_hat (the observed fraction of each
  matrix), keep the top `rank` singular components. ME-Net keeps a fixed fraction of the
  spectrum (`svdprob`, 0.8 of the rows) rather than Chatterjee's universal threshold
  (2 + eta) sqrt(n p_hat), which on a 32x96 image keeps fewer than one component on average;
  `threshold=True` gives Chatterjee's rule.
- `soft_impute`: Mazumder, Hastie and Tibshirani (2010): Z <- SVT_lambda(P_obs(X) + P_miss(Z))
  from Z = 0 until the relative change ||Z_new - Z||^2 / ||Z||^2 falls below `tol`; lambda
  defaults to the largest singular value of the zero-filled matrix / 50.
- `nucnorm`: min_Z mu ||Z||_* + ||P_obs(Z - X)||_F^2 (ME-Net's objective, mu = 1), solved to
  `tol` by accelerated proximal gradient (FISTA): step 1/2, prox = SVT at mu/2.
"""

from __future__ import annotations

import torch

from robench.preprocess.lowrank import truncate
from robench.preprocess.svt import svt


def usvt(x: torch.Tensor, mask: torch.Tensor, rank: int | float = 0.8, threshold: bool = False, eta: float = 0.01, method: str = "auto") -> torch.Tensor:
    mask = mask.to(x.dtype).expand_as(x)
    p_hat = mask.mean((-2, -1), keepdim=True).clamp_min(1.0 / mask[0].numel())
    y = x * mask / p_hat
    if not threshold:
        return truncate(y, rank, method=method)
    m, n = x.shape[-2:]
    u, s, vh = torch.linalg.svd(y, full_matrices=False)
    # Chatterjee's rule assumes entries in [-1, 1].
    cut = (2.0 + eta) * torch.sqrt(max(m, n) * p_hat[..., 0])
    return (u * torch.where(s >= cut, s, torch.zeros_like(s)).unsqueeze(-2)) @ vh


def soft_impute(x: torch.Tensor, mask: torch.Tensor, shrink: float | None = None, iters: int = 100, tol: float = 1e-3) -> tuple[torch.Tensor, int]:
    """(completed matrices, iterations run). Converged matrices stop changing."""
    mask = mask.to(x.dtype).expand_as(x)
    observed = x * mask
    if shrink is None:
        lam = torch.linalg.matrix_norm(observed, ord=2) / 50.0
    else:
        lam = torch.full(x.shape[:-2], float(shrink), dtype=x.dtype, device=x.device)
    z = torch.zeros_like(x)
    active = torch.ones(x.shape[:-2] + (1, 1), dtype=torch.bool, device=x.device)
    it = 0
    for it in range(1, iters + 1):
        z_new = svt(observed + (1 - mask) * z, lam)
        change = (z_new - z).pow(2).sum((-2, -1), keepdim=True) / z.pow(2).sum((-2, -1), keepdim=True).clamp_min(1e-12)
        z = torch.where(active, z_new, z)
        active = active & (change > tol)
        if not active.any():
            break
    return z, it


def nucnorm(x: torch.Tensor, mask: torch.Tensor, mu: float = 1.0, iters: int = 300, tol: float = 1e-5) -> tuple[torch.Tensor, int]:
    """(completed matrices, iterations run) for min mu ||Z||_* + ||mask * (Z - x)||_F^2."""
    mask = mask.to(x.dtype).expand_as(x)
    target = x * mask
    z = target.clone()
    v = z.clone()
    t = 1.0
    active = torch.ones(x.shape[:-2] + (1, 1), dtype=torch.bool, device=x.device)
    it = 0
    for it in range(1, iters + 1):
        # Gradient of the data term is 2 mask (v - x); its Lipschitz constant is 2.
        z_new = svt(v - mask * v + target, mu / 2.0)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        v_new = z_new + ((t - 1.0) / t_next) * (z_new - z)
        change = torch.linalg.matrix_norm(z_new - z)[..., None, None] / torch.linalg.matrix_norm(z).clamp_min(1e-12)[..., None, None]
        z = torch.where(active, z_new, z)
        v = torch.where(active, v_new, v)
        t = t_next
        active = active & (change > tol)
        if not active.any():
            break
    return z, it
