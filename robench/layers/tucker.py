"""Tucker-factorized convolution and linear layers with tensor dropout on the latent core.

The weight is W = G x_0 U_0 x_1 U_1 ... (core G, one factor per mode), as in section 3 of
Defensive Tensorization. Tensor dropout (eq. 4) multiplies the core by diagonal Bernoulli
sketching matrices on every mode and projects back with the original factors. We never build
those matrices: per mode we sample the kept latent indices, slice the core and the matching
factor columns, and contract only the sub-core. A mode that keeps no index makes the sketched
core, and hence the weight, exactly zero, which the contraction over an empty dimension gives
for free.

Rescaling (our choice; the paper states none). Each randomized mode keeps an index with
probability theta, independently of the other modes, so E[G~] = theta^m G where m is the number
of modes actually randomized. We scale the sub-core by 1 / theta^m, which makes E[W~] equal the
deterministic weight W for every layer. tltorch 0.5 scales by 1 / theta^ndim even when some
modes are exempt (rank 1), which shrinks or inflates those layers on average.

Which modes are randomized: eq. 3 puts a mask on every mode, spatial ones included, and
`drop_spatial` allows that. By default only the two channel modes are randomized: on the 3x3
kernels of small networks, dropping one of three spatial latent components changes the kernel's
shape rather than its rank budget, and at theta = 0.8 it took a digits CNN from 95% to 31%
clean accuracy in our measurement (robench docs/defenses.md). A mode whose rank is 1 is not randomized: dropping its only latent component would not lower
the rank, it would switch the whole layer off (plain layer dropout), which is not the method.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import tensorly
import torch
import torch.nn.functional as F
from tensorly.decomposition import tucker
from torch import nn


def ranks_for(shape: Sequence[int], fraction: float, spatial_fraction: float = 1.0) -> tuple[int, ...]:
    """Rank per mode: `fraction` of the channel modes (0 and 1), `spatial_fraction` of the rest."""
    ranks = []
    for mode, size in enumerate(shape):
        frac = fraction if mode < 2 else spatial_fraction
        ranks.append(max(1, min(size, int(round(frac * size)))))
    return tuple(ranks)


def _orthonormal(rows: int, cols: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols))
    return q[:, :cols]


class TuckerWeight(nn.Module):
    """A weight tensor held as a Tucker core plus factors, sampled with tensor dropout."""

    def __init__(self, shape: Sequence[int], ranks: Sequence[int], theta: float = 1.0, drop_modes: Sequence[int] | None = None) -> None:
        super().__init__()
        if len(shape) != len(ranks):
            raise ValueError("one rank per mode is needed")
        self.shape = tuple(int(s) for s in shape)
        self.ranks = tuple(int(r) for r in ranks)
        self.theta = float(theta)
        self.drop_modes = tuple(range(len(shape))) if drop_modes is None else tuple(drop_modes)
        self.core = nn.Parameter(torch.empty(self.ranks))
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(s, r)) for s, r in zip(self.shape, self.ranks))
        self.reset_parameters()

    @property
    def randomized_modes(self) -> tuple[int, ...]:
        if self.theta >= 1.0:
            return ()
        return tuple(mode for mode in self.drop_modes if self.ranks[mode] > 1)

    def reset_parameters(self, fan_in: int | None = None) -> None:
        """Orthonormal factors and a Gaussian core scaled so W has Kaiming-normal variance."""
        fan_in = fan_in or int(np.prod(self.shape[1:]))
        target_std = math.sqrt(2.0 / fan_in)
        # With orthonormal factor columns, each entry of W has variance std_G^2 * prod(r) / prod(n).
        core_std = target_std * math.sqrt(np.prod(self.shape) / np.prod(self.ranks))
        with torch.no_grad():
            self.core.normal_(0.0, core_std)
            for factor, size, rank in zip(self.factors, self.shape, self.ranks):
                factor.copy_(_orthonormal(size, rank))

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor) -> None:
        """Tucker (HOOI) decomposition of a trained dense weight with tensorly (numpy backend)."""
        with tensorly.backend_context("numpy"), warnings.catch_warnings():
            # tensorly warns when a rank equals a mode's full size; that is the intended case.
            warnings.simplefilter("ignore", UserWarning)
            core, factors = tucker(weight.detach().cpu().double().numpy(), rank=list(self.ranks), init="svd", n_iter_max=50, tol=1e-6)
        self.core.copy_(torch.from_numpy(np.ascontiguousarray(core)).to(self.core))
        for param, factor in zip(self.factors, factors):
            param.copy_(torch.from_numpy(np.ascontiguousarray(factor)).to(param))

    def forward(self) -> torch.Tensor:
        core = self.core
        factors = list(self.factors)
        # No `self.training` check: the defense randomizes at inference too.
        modes = self.randomized_modes
        if modes:
            for mode in modes:
                kept = (torch.rand(self.ranks[mode], device=core.device) < self.theta).nonzero().squeeze(1)
                core = core.index_select(mode, kept)
                factors[mode] = factors[mode].index_select(1, kept)
            core = core * (self.theta ** -len(modes))
        return _tucker_to_tensor(core, factors)


def _tucker_to_tensor(core: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    """Apply the mode products that grow the tensor least first (for conv kernels the full-rank
    spatial modes, then the channels), so every intermediate stays smaller than the weight."""
    order = sorted(range(core.ndim), key=lambda mode: factors[mode].shape[0] / max(core.shape[mode], 1))
    result = core
    for mode in order:
        # mode-n product: move the mode last, multiply by U^T, move it back.
        result = torch.movedim(torch.movedim(result, mode, -1) @ factors[mode].T, -1, mode)
    return result


class TuckerConv2d(nn.Module):
    """A Conv2d whose kernel (F, C, H, W) is Tucker-factorized and randomized by tensor dropout.

    Tensor dropout is applied in training AND at inference (the defense is stochastic at test
    time); theta = 1 makes the layer deterministic.
    """

    def __init__(self, conv: nn.Conv2d, ranks: Sequence[int], theta: float, decompose: bool, drop_spatial: bool = True) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not factorized")
        if conv.padding_mode != "zeros":
            raise ValueError("only zero padding is supported")
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight = TuckerWeight(conv.weight.shape, ranks, theta, drop_modes=None if drop_spatial else (0, 1))
        if decompose:
            self.weight.init_from(conv.weight)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        w = self.weight
        return f"shape={w.shape}, ranks={w.ranks}, theta={w.theta}, stride={self.stride}, padding={self.padding}"


class TuckerLinear(nn.Module):
    """A Linear layer whose (out, in) weight is factorized as U_out G U_in^T with dropout on G."""

    def __init__(self, linear: nn.Linear, ranks: Sequence[int], theta: float, decompose: bool) -> None:
        super().__init__()
        self.weight = TuckerWeight(linear.weight.shape, ranks, theta)
        if decompose:
            self.weight.init_from(linear.weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    def extra_repr(self) -> str:
        w = self.weight
        return f"shape={w.shape}, ranks={w.ranks}, theta={w.theta}"
