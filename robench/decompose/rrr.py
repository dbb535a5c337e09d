"""Reduced-rank regression through the generalized SVD (thesis eqs. 2.15-2.16 and Lemma 1).

Problem: min_M ||M H - W||_F^2 subject to rank(M) <= m, with H (n x N) and W (n x N).

Lemma 1 with metrics K = I and Q = H H^T (the text writes "Q = H"; a metric matrix has to be
n x n and the only one that makes the GSVD solve eq. 2.15 is H H^T, which is our reading): let
H H^T = R R^T (Cholesky, R lower triangular). The full-rank solution is M_hat = W H^T (H H^T)^-1,
and since ||M H - W||^2 = ||(M - M_hat) R||_F^2 + const, the best rank-m M is the truncated SVD of
M_hat R mapped back: M_hat R = U* S* V*^T, M = U*_m S*_m V*_m^T R^-1. That is exactly the GSVD of
Lemma 1, U = U*, V = (R^T)^-1 V*, S = S*, truncated to the m largest singular values (eq. 2.16).
Note M_hat R = W H^T R^-T, so only the n x n matrix G = W H^T is needed: the N-long samples enter
once per call through one matrix product, and everything here is n x n in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Metric:
    """H H^T's Cholesky factor, computed once per layer and reused by every M-step."""

    chol: torch.Tensor  # R, lower triangular, float64

    @classmethod
    def of(cls, hht: torch.Tensor) -> "Metric":
        hht = hht.double()
        n = hht.shape[0]
        # A dead channel (always zero on the samples) makes H H^T singular; a ridge far below
        # the data's scale keeps the Cholesky factor defined without changing the fit.
        ridge = 1e-9 * float(hht.diagonal().mean().clamp_min(1e-30))
        eye = torch.eye(n, dtype=torch.float64)
        for attempt in range(6):
            chol, info = torch.linalg.cholesky_ex(hht + ridge * (10 ** (2 * attempt)) * eye)
            if int(info) == 0:
                return cls(chol)
        raise ValueError("H H^T is not positive definite even with a ridge")


def reduced_rank(g: torch.Tensor, metric: Metric, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (P, Qt), P: n x m, Qt: m x n, with M = P Qt the rank-m minimiser of
    ||M H - W||_F given G = W H^T.

    The left singular vectors U*_m of A = M_hat R come from the symmetric eigendecomposition of
    A A^T (U* S*^2 U*^T), about twice as fast as an SVD, which dominated the iteration time of
    Algorithm 1 on small sample counts; only the m leading components are used, which the
    squared spectrum resolves well in float64. Then M = U*_m U*_m^T M_hat = U*_m S*_m V*_m^T R^-1.
    The singular values are split evenly between P and Qt so that both layers of the decomposed
    conv have comparable scale for fine-tuning."""
    g = g.double()
    # A = M_hat R = G R^-T, i.e. solve A R^T = G.
    a = torch.linalg.solve_triangular(metric.chol.T, g, upper=True, left=False)
    values, vectors = torch.linalg.eigh(a @ a.T)
    u = vectors[:, -rank:].flip(1)
    sigma = values[-rank:].flip(0).clamp_min(0).sqrt()
    root = sigma.clamp_min(1e-12 * float(sigma.max().clamp_min(1e-300))).sqrt()
    p = u * root
    # U_m^T M_hat / root = U_m^T A R^-1 / root: solve X R = U_m^T A / root.
    qt = torch.linalg.solve_triangular(metric.chol, (u.T @ a) / root[:, None], upper=False, left=False)
    return p, qt
