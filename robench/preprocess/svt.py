"""Singular value thresholding: uniform (SVT), non-uniform (NSVT), and elementwise soft thresholding.

NSVT, D_w(X) = U diag(max(sigma_j - w_j, 0)) V^T, is the exact proximal operator of the
weighted nuclear norm sum_j w_j sigma_j only when the weights are non-decreasing in j
(sigma sorted in decreasing order; Gu et al., CVPR 2014). The reweighting of Algorithm 3,
w_j = 1 / (sigma_j + eps), gives exactly such weights, so the closed form is used as the thesis
uses it (eq. 3.18).
"""

from __future__ import annotations

import torch


def _svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.linalg.svd(x, full_matrices=False)


def svt(x: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """D_tau(X) = U max(S - tau, 0) V^T, tau a scalar or one value per matrix."""
    u, s, vh = _svd(x)
    tau = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
    if tau.dim():
        tau = tau.unsqueeze(-1)
    return (u * torch.clamp(s - tau, min=0).unsqueeze(-2)) @ vh


def nsvt(x: torch.Tensor, weights: torch.Tensor, return_singular: bool = False):
    """Non-uniform SVT: singular value j is shrunk by weights[..., j] (shape (..., min(m, n)))."""
    u, s, vh = _svd(x)
    shrunk = torch.clamp(s - weights, min=0)
    out = (u * shrunk.unsqueeze(-2)) @ vh
    return (out, shrunk) if return_singular else out


def soft_threshold(x: torch.Tensor, thresholds: float | torch.Tensor) -> torch.Tensor:
    """S_t(x) = sign(x) max(|x| - t, 0) elementwise; t a scalar or a tensor broadcastable to x
    (non-uniform thresholds, e.g. lambda/mu * W^e * (1 - M) in Algorithm 2, step 3)."""
    return torch.sign(x) * torch.clamp(x.abs() - thresholds, min=0)
