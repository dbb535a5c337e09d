"""Smoothed-rank-function completion with a TV term: SPLIC, thesis Algorithm 4 (eqs. 4.3-4.10).

    min_X F_delta(X) + lambda C(X)   s.t.  X_ij = x_ij on the anchors (mask = 1),
    F_delta(X) = l - sum_k exp(-sigma_k^2 / (2 delta^2))           (eq. 4.3)

solved by projected gradient steps with graduated non-convexity: `inner` (7) steps per delta,
then delta <- rho * delta (rho = 0.45), starting from the largest singular value of the
masked image.

Readings of the thesis where it is ambiguous:
- Step size. Step 8 writes X - mu (grad F_delta + lambda grad C) with grad F_delta from eq. 4.9,
  sigma / delta^2 exp(-sigma^2 / 2 delta^2). Taken literally the step on a singular value is
  mu sigma / delta^2, which overshoots (sigma changes sign and grows) as soon as delta <
  sqrt(mu) ~ 0.7, i.e. after the third delta level on a [0, 1] image: the iteration diverges.
  The smoothed-rank-function method the thesis cites ([110], after SL0) scales the F_delta step
  by delta^2, so each step shrinks sigma_k by the factor 1 - mu exp(-sigma_k^2 / 2 delta^2);
  robench uses that scaling (`scale_by_delta=True`) and leaves the TV step as written.
- Rank truncation (steps 4-5): the current estimate is replaced by its rank-r truncation before
  the gradient step (X_t = U S V^T with S truncated), so the rank constraint is enforced every
  step; the anchors are then re-imposed by the projection of step 9.
- The TV gradient is eq. 4.10 as printed: 2x_ij - x_i+1,j - x_i,j+1 inside, one difference on
  the last row / column, 0 at the last pixel; i.e. minus the sum of the forward differences.
- Only the top r singular triplets are needed (step 5 zeroes the rest); for small r they come
  from randomized subspace iteration (robench.preprocess.lowrank.top_svd, 2 power iterations,
  4 extra columns) instead of a full SVD. On 64 CIFAR-10 test images at r = 8 this changes the
  PSNR of the output by 0.02 dB (22.14 vs 22.12 dB) and runs 3x faster.
- maxiter counts delta levels (`outer`), each of 7 steps; the stopping rule
  ||X_t+1 - X_t||_F / (mn) <= eps is checked after each level, over the whole batch.
"""

from __future__ import annotations

import torch

from robench.preprocess.lowrank import rank_of, top_svd


def tv_gradient(x: torch.Tensor) -> torch.Tensor:
    """Eq. 4.10."""
    g = torch.zeros_like(x)
    g[..., :-1, :] -= x[..., 1:, :] - x[..., :-1, :]
    g[..., :, :-1] -= x[..., :, 1:] - x[..., :, :-1]
    return g


def srf_complete(
    x: torch.Tensor,
    mask: torch.Tensor,
    rank: int | float = 0.5,
    lam: float = 0.02,
    rho: float = 0.45,
    mu: float = 0.5,
    inner: int = 7,
    outer: int = 8,
    eps: float = 0.0,
    scale_by_delta: bool = True,
    history: list[float] | None = None,
) -> torch.Tensor:
    """Complete x (..., m, n) from its entries where mask == 1. `history`, when given, receives
    max ||X_t+1 - X_t||_F / (mn) after every step (the quantity of the stopping rule)."""
    m, n = x.shape[-2:]
    r = rank_of(rank, m, n)
    mask = mask.to(x.dtype).expand_as(x)
    anchors = x * mask
    current = anchors.clone()
    delta = torch.linalg.matrix_norm(current, ord=2).clamp_min(1e-6)[..., None]
    for _ in range(outer):
        change = torch.zeros((), dtype=x.dtype, device=x.device)
        for _ in range(inner):
            u, s, vh = top_svd(current, r)
            truncated = (u * s.unsqueeze(-2)) @ vh
            weight = torch.exp(-s * s / (2 * delta * delta))
            shrink = s * weight if scale_by_delta else s / (delta * delta) * weight
            grad_f = (u * shrink.unsqueeze(-2)) @ vh
            stepped = truncated - mu * (grad_f + lam * tv_gradient(truncated))
            nxt = (1 - mask) * stepped + anchors
            change = torch.linalg.matrix_norm(nxt - current).amax() / (m * n)
            if history is not None:
                history.append(change.item())
            current = nxt
        delta = delta * rho
        if change <= eps:
            break
    return current
