"""The L2 baseline the thesis calls NL2A: Zhang et al.'s asymmetric reduced-rank approximation of
responses ("Accelerating very deep convolutional networks", TPAMI 2016), linear and non-linear.

Linear: min_{M, b} ||Y - (M Y_hat + b)||_F^2, rank(M) <= m. With b = y_bar - M y_hat_bar this is
reduced-rank regression of the centred Y on the centred Y_hat, solved in closed form by the GSVD
(`robench.decompose.rrr`) -- the same M-step Algorithm 1 uses, once, with W = Z.

Non-linear (ReLU r): min sum_i ||r(y_i) - r(M y_hat_i + b)||^2, rank(M) <= m. Zhang et al. relax it
with auxiliary responses z_i: min ||r(y_i) - r(z_i)||^2 + beta ||z_i - (M y_hat_i + b)||^2, and
alternate (a) M, b by the linear solution with target Z, and (b) z elementwise in closed form:
the better of z = min(z', 0) (cost r(y)^2 + beta (z - z')^2) and z = max((r(y) + beta z') / (1 + beta), 0),
where z' = M y_hat + b. Our reading of their schedule (not in the thesis): start from the linear
solution, 25 iterations at beta = 0.01, then 25 at beta = 1.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from robench.decompose.l1 import LowRankMap, _centred
from robench.decompose.rrr import Metric, reduced_rank

SCHEDULE = ((0.01, 25), (1.0, 25))


def fit_l2(
    y: torch.Tensor,
    yhat: torch.Tensor,
    rank: int,
    nonlinear: bool = False,
    schedule: tuple[tuple[float, int], ...] = SCHEDULE,
    callback: Callable[[int, float], None] | None = None,
) -> LowRankMap:
    started = time.perf_counter()
    n = y.shape[0]
    if yhat.shape != y.shape:
        raise ValueError(f"Y {tuple(y.shape)} and Y_hat {tuple(yhat.shape)} differ in shape")
    if not 1 <= rank <= n:
        raise ValueError(f"rank {rank} not in [1, {n}]")
    y = y.float()
    h, hbar = _centred(yhat.float())
    metric = Metric.of((h @ h.T).double())
    z, zbar = _centred(y)
    p, qt = reduced_rank(z @ h.T, metric, rank)
    bias = zbar - (p @ qt) @ hbar
    if not nonlinear:
        return LowRankMap(p, qt, bias, 1, 0.0, time.perf_counter() - started)
    target = y.clamp_min(0)                               # r(y)
    step = 0
    history: list[float] = []
    pred = LowRankMap(p, qt, bias).apply(yhat.float())                # z'
    for beta, iterations in schedule:
        for _ in range(iterations):
            step += 1
            neg = pred.clamp_max(0)
            pos = (target + beta * pred).div_(1 + beta).clamp_min_(0)
            cost_neg = target.square() + beta * (neg - pred).square()
            cost_pos = (target - pos).square() + beta * (pos - pred).square()
            aux = torch.where(cost_neg < cost_pos, neg, pos)
            del neg, pos, cost_neg, cost_pos
            z, zbar = _centred(aux)
            p, qt = reduced_rank(z @ h.T, metric, rank)
            bias = zbar - (p @ qt) @ hbar
            pred = LowRankMap(p, qt, bias).apply(yhat.float())
            loss = float(torch.linalg.vector_norm(target - pred.clamp_min(0)) / torch.linalg.vector_norm(target).clamp_min(1e-30))
            history.append(loss)
            if callback is not None:
                callback(step, loss)
    return LowRankMap(p, qt, bias, step, history[-1] if history else 0.0, time.perf_counter() - started, history)
