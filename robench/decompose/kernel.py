"""Data-free baselines: decompose the kernel tensor itself with tensorly.

- tucker2 (Kim et al., ICLR 2016): Tucker on the output and input channel modes only,
  W ~ G x_0 U_out x_1 U_in, run as 1x1 (U_in^T) -> k x k (G) -> 1x1 (U_out) + bias.
- cp (Lebedev et al., ICLR 2015): rank-R CP of the 4-way kernel, run as 1x1 -> depthwise k x 1
  -> depthwise 1 x k -> 1x1 + bias.

Rank fractions apply per mode: tucker2 keeps round(rank * n) output and round(rank * c) input
components, cp keeps R = round(rank * n) rank-one terms. Both use tensorly's numpy backend in
float64, so robench's global tensorly backend (used by tensor-dropout) is left alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from tensorly.decomposition import parafac, partial_tucker
from torch import nn

from robench.layers.decomposed import CPConv2d, Tucker2Conv2d


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)


@torch.no_grad()
def tucker2(conv: nn.Conv2d, rank_in: int, rank_out: int, seed: int = 0) -> Tucker2Conv2d:
    weight = conv.weight.detach().double().cpu().numpy()
    (core, (u_out, u_in)), _ = partial_tucker(weight, rank=[rank_out, rank_in], modes=[0, 1], init="svd", random_state=seed)
    module = Tucker2Conv2d(conv, rank_in, rank_out)
    module.first.weight.copy_(torch.from_numpy(np.ascontiguousarray(u_in.T))[:, :, None, None])
    module.core.weight.copy_(torch.from_numpy(np.ascontiguousarray(core)))
    module.last.weight.copy_(torch.from_numpy(np.ascontiguousarray(u_out))[:, :, None, None])
    module.last.bias.copy_(_bias(conv))
    return module


@torch.no_grad()
def cp(conv: nn.Conv2d, rank: int, seed: int = 0) -> CPConv2d:
    weight = conv.weight.detach().double().cpu().numpy()
    with warnings.catch_warnings():
        # The SVD initialisation pads a rank above a mode's size with random columns, as wanted.
        warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
        weights, (a, b, c, d) = parafac(weight, rank=rank, init="svd", random_state=seed, n_iter_max=200)
    module = CPConv2d(conv, rank)
    t = lambda arr: torch.from_numpy(np.ascontiguousarray(arr))  # noqa: E731
    module.first.weight.copy_(t(b.T)[:, :, None, None])
    module.vertical.weight.copy_(t(c.T)[:, None, :, None])
    module.horizontal.weight.copy_(t(d.T)[:, None, None, :])
    module.last.weight.copy_(t(a * weights[None, :])[:, :, None, None])
    module.last.bias.copy_(_bias(conv))
    return module
