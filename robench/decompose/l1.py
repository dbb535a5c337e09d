"""Algorithm 1 of the thesis: L1-norm low-rank approximation of a layer's responses by ADM.

Problem (eq. 2.12): min ||M||_* + lambda ||E||_1  s.t.  E = Z - M H, where Z = Y - mean(Y) are the
centred responses of the original network and H = Y_hat - mean(Y_hat) those of the original
filters applied to the already-approximated network's input (asymmetric, eq. 2.10). ADM on the
augmented Lagrangian (eq. 2.13) alternates:

- M: reduced-rank regression of (Z - E + L/mu) on H at the given rank, by the GSVD of Lemma 1
  (eqs. 2.15-2.16; `robench.decompose.rrr`). With the rank fixed, ||M||_* drops out (eq. 2.15).
- E: soft thresholding of Q = Z - M H + L/mu at lambda/mu (eqs. 2.17-2.18).
- L: L + mu (Z - M H - E) (eq. 2.19);  mu: min(1.1 mu, 1e10).
- stop when ||Z - M H - E||_F / ||Z||_F < tol (eq. 2.20), measured after the E-step.

Initialisation as Algorithm 1: M = 0, E = 0, L = H / ||H||_F, mu = 1e-3.

Readings where the thesis is silent:

- lambda is not given; we use the robust-PCA default 1 / sqrt(max(n, N)) (the thesis's
  references [35, 57], which the mu schedule also follows).
- Z and H are divided by one common scalar, the RMS of Z, before iterating. M is unchanged by a
  common scale, but the path of the soft threshold lambda/mu relative to the residuals is not, and
  this makes the fixed mu = 1e-3 start mean the same thing for every layer and dataset.
- tol is not given; 1e-4 (see docs/decompose.md for how the result depends on it).

Speed: per iteration the only O(n^2 N) work is two matrix products, M H (as P (Q^T H) when
m < n/2) and clamp(Q) H^T (float32, BLAS); everything else is four elementwise passes in place or
n x n float64. The identities behind it: after the E-step L_new / mu = clamp(Q, -lambda/mu,
lambda/mu) exactly (so E = Q - clamp(Q) is never stored), and the next M-step needs W only
through W H^T = M H H^T - L H^T / mu + (1 + mu / mu_next) clamp(Q) H^T, where L H^T is the
previous iteration's mu clamp(Q) H^T. Five n x N float32 buffers in all (Z, H, Q, two clamps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from robench.decompose.rrr import Metric, reduced_rank


@dataclass
class LowRankMap:
    """Y ~ P @ Qt @ Y_hat + bias, P: n x m, Qt: m x n (float64)."""

    p: torch.Tensor
    qt: torch.Tensor
    bias: torch.Tensor
    iterations: int = 0
    rel_error: float = 0.0
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)

    @property
    def matrix(self) -> torch.Tensor:
        return self.p @ self.qt

    def apply(self, yhat: torch.Tensor) -> torch.Tensor:
        """The approximated responses for uncentred Y_hat (n x N), float32."""
        m = self.matrix.float()
        return torch.addmm(self.bias.float()[:, None], m, yhat)


def _centred(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = y.double().mean(dim=1)
    return y - mean.float()[:, None], mean


def fit_l1(
    y: torch.Tensor,
    yhat: torch.Tensor,
    rank: int,
    lam: float | None = None,
    tol: float = 1e-4,
    max_iter: int = 500,
    mu: float = 1e-3,
    delta: float = 1.1,
    mu_max: float = 1e10,
    callback: Callable[[int, float], None] | None = None,
) -> LowRankMap:
    """Algorithm 1 on responses y (original) and yhat (approximated input), both n x N."""
    started = time.perf_counter()
    n, samples = y.shape
    if yhat.shape != y.shape:
        raise ValueError(f"Y {tuple(y.shape)} and Y_hat {tuple(yhat.shape)} differ in shape")
    if not 1 <= rank <= n:
        raise ValueError(f"rank {rank} not in [1, {n}]")
    z, ybar = _centred(y.float())
    h, hbar = _centred(yhat.float())
    scale = float(z.pow(2).mean().sqrt())
    if scale == 0.0 or not math.isfinite(scale):
        # Constant responses: the bias alone reproduces them.
        zero_p, zero_q = torch.zeros(n, rank, dtype=torch.float64), torch.zeros(rank, n, dtype=torch.float64)
        return LowRankMap(zero_p, zero_q, ybar, 0, 0.0, time.perf_counter() - started)
    z.div_(scale)
    h.div_(scale)
    lam = 1.0 / math.sqrt(max(n, samples)) if lam is None else lam
    z_norm = float(torch.linalg.vector_norm(z))

    hht = (h @ h.T).double()
    metric = Metric.of(hht)
    h_norm = float(hht.diagonal().sum().sqrt())
    # L is kept as L / mu = `prev` * ratio: after an E-step L_new / mu = clamp(Q) exactly.
    prev = h.div(h_norm * mu)                   # L_0 / mu_0 = H / (||H||_F mu_0)
    ratio = 1.0
    lh = hht / h_norm                           # L H^T, n x n
    g = (z @ h.T).double() + lh / mu            # W H^T with E = 0
    work = torch.empty_like(z)                  # Q = Z - M H + L / mu
    clamped = torch.empty_like(z)               # clamp(Q, +-lambda/mu)
    history: list[float] = []
    p = qt = None
    err = float("inf")
    iteration = 0
    for iteration in range(1, max_iter + 1):
        p, qt = reduced_rank(g, metric, rank)
        torch.add(z, prev, alpha=ratio, out=work)
        if 2 * rank < n:
            # M H = P (Q^T H): cheaper than the n x n product at ranks below n / 2.
            work.addmm_(p.float(), qt.float() @ h, alpha=-1.0)
        else:
            work.addmm_((p @ qt).float(), h, alpha=-1.0)
        threshold = lam / mu
        torch.clamp(work, -threshold, threshold, out=clamped)
        # Residual Z - M H - E = clamp(Q) - L / mu (eq. 2.20), in the buffer L / mu leaves.
        prev.mul_(-ratio).add_(clamped)
        err = float(torch.linalg.vector_norm(prev)) / z_norm
        history.append(err)
        if callback is not None:
            callback(iteration, err)
        if err < tol:
            break
        mu_next = min(delta * mu, mu_max)
        # With E = Q - clamp(Q) (eq. 2.18) and L_new = mu clamp(Q) (eq. 2.19), the next M-step's
        # W = Z - E + L_new / mu_next gives W H^T = M H H^T - L H^T / mu + (1 + mu / mu_next) clamp(Q) H^T:
        # one N-long product per iteration besides M H.
        ch = (clamped @ h.T).double()
        g = (p @ qt) @ hht - lh / mu + (1.0 + mu / mu_next) * ch
        lh = mu * ch
        prev, clamped = clamped, prev
        ratio = mu / mu_next
        mu = mu_next
    m = p @ qt
    bias = ybar - m @ hbar                      # b'' = y_bar - M y_hat_bar (eq. 2.10)
    return LowRankMap(p, qt, bias, iteration, err, time.perf_counter() - started, history)
