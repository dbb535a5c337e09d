"""Tucker-factorized convolution and linear layers with tensor dropout on the latent core.

The weight is W = G x_0 U_0 x_1 U_1 ... (core G, one factor per mode), as in section 3 of
Defensive Tensorization. Tensor dropout (eq. 4) multiplies the core by diagonal Bernoulli
sketching matrices on every mode and projects back with the original factors. We never build
those matrices: per mode we sample the kept latent indices, slice the core and the matching
factor columns, and contract only the sub-core. A mode that keeps no index makes the sketched
core, and hence the weight, exactly zero, which the contraction over an empty dimension gives
for free. TuckerConv2d may also skip building the weight and run the equivalent sequence of
convolutions with the sampled factors (see its docstring); the sampled layer is the same.

Rescaling (our choice; the paper states none). Each randomized mode keeps an index with
probability theta, independently of the other modes, so E[G~] = theta^m G where m is the number
of modes actually randomized. We scale the sub-core by 1 / theta^m, which makes E[W~] equal the
deterministic weight W for every layer. tltorch 0.5 scales by 1 / theta^ndim even when some
modes are exempt (rank 1), which inflates those layers on average.

Which modes are randomized: eq. 3 puts a mask on every mode, spatial ones included, and
`drop_spatial` allows that. By default only the two channel modes are randomized: on the 3x3
kernels of small networks, dropping one of three spatial latent components changes the kernel's
shape rather than its rank budget: at theta = 0.8 a digits CNN trained 30 epochs reached
55% +- 31% clean accuracy with it against 95% +- 2% without (docs/defenses.md). A mode whose rank is 1 is not randomized: dropping its only latent component would not lower
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
from tensorly.decomposition import partial_tucker, tucker
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

    # Zero dropped latent indices with a mask instead of slicing them out (see `sample`); always
    # on under torch.compile, settable here to get the compiled computation in eager mode.
    fixed_shape: bool = False

    def __init__(self, shape: Sequence[int], ranks: Sequence[int], theta: float = 1.0, drop_modes: Sequence[int] | None = None,
                 factor_modes: Sequence[int] | None = None) -> None:
        super().__init__()
        if len(shape) != len(ranks):
            raise ValueError("one rank per mode is needed")
        self.shape = tuple(int(s) for s in shape)
        # Modes without a factor keep their full size in the core (factor = identity): with only
        # mode 0 factorized this is the matrix case of the paper's section 6 (Table 7).
        self.factor_modes = tuple(range(len(shape))) if factor_modes is None else tuple(sorted(factor_modes))
        self.ranks = tuple(int(r) if m in self.factor_modes else s for m, (s, r) in enumerate(zip(self.shape, ranks)))
        self.theta = float(theta)
        self.drop_modes = tuple(range(len(shape))) if drop_modes is None else tuple(drop_modes)
        self.core = nn.Parameter(torch.empty(self.ranks))
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(self.shape[m], self.ranks[m])) for m in self.factor_modes)
        self.reset_parameters()

    def factor_list(self) -> list[torch.Tensor | None]:
        """One entry per mode: its factor, or None where the mode is not factorized."""
        by_mode = dict(zip(self.factor_modes, self.factors))
        return [by_mode.get(m) for m in range(len(self.shape))]

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
            for factor, mode in zip(self.factors, self.factor_modes):
                factor.copy_(_orthonormal(self.shape[mode], self.ranks[mode]))

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor) -> None:
        """Tucker (HOOI) decomposition of a trained dense weight with tensorly (numpy backend)."""
        with tensorly.backend_context("numpy"), warnings.catch_warnings():
            # tensorly warns when a rank equals a mode's full size; that is the intended case.
            warnings.simplefilter("ignore", UserWarning)
            array = weight.detach().cpu().double().numpy()
            if len(self.factor_modes) == len(self.shape):
                core, factors = tucker(array, rank=list(self.ranks), init="svd", n_iter_max=50, tol=1e-6)
            else:
                ranks = [self.ranks[m] for m in self.factor_modes]
                (core, factors), _ = partial_tucker(array, rank=ranks, modes=list(self.factor_modes), init="svd", n_iter_max=50, tol=1e-6)
        self.core.copy_(torch.from_numpy(np.ascontiguousarray(core)).to(self.core))
        for param, factor in zip(self.factors, factors):
            param.copy_(torch.from_numpy(np.ascontiguousarray(factor)).to(param))

    def forward(self) -> torch.Tensor:
        core, factors, scale = self.sample()
        return _tucker_to_tensor(core, factors, scale)

    def sample(self) -> tuple[torch.Tensor, list[torch.Tensor], float]:
        """One tensor-dropout draw: the kept sub-core, the matching factor columns, and the
        rescaling 1 / theta^m that the caller must apply (it is folded into the smallest operand
        of the contraction rather than multiplied into the core).

        Eager mode slices out the kept indices, so the contraction only touches the sub-core.
        Under torch.compile the number of kept indices would be a data-dependent shape, which
        inductor cannot always compile (torch 2.14: "cannot determine truth value of
        Relational"); there the dropped indices are zeroed by a fixed-size 0/1 mask instead.
        Both give exactly the same sampled weight distribution: a zeroed core slice contributes
        nothing to the contraction, just as a removed one."""
        core = self.core
        factors = self.factor_list()
        # No `self.training` check: the defense randomizes at inference too.
        modes = self.randomized_modes
        masked = self.fixed_shape or torch.compiler.is_compiling()
        for mode in modes:
            keep = torch.rand(self.ranks[mode], device=core.device) < self.theta
            if masked:
                shape = [1] * core.ndim
                shape[mode] = self.ranks[mode]
                core = core * keep.to(core.dtype).reshape(shape)
                continue
            kept = keep.nonzero().squeeze(1)
            core = core.index_select(mode, kept)
            if factors[mode] is not None:
                factors[mode] = factors[mode].index_select(1, kept)
        return core, factors, self.theta ** -len(modes) if modes else 1.0


def _tucker_to_tensor(core: torch.Tensor, factors: Sequence[torch.Tensor | None], scale: float = 1.0) -> torch.Tensor:
    """scale * core x_0 U_0 x_1 U_1 ..., skipping the modes whose factor is None.

    The modes from 2 on (the spatial modes of a conv kernel) are merged into one by a Kronecker
    product of their factors (a 9 x 9 matrix for a full-rank 3x3 kernel), so a conv kernel is a
    3-mode problem. Mode products are applied in the order of least total work (see
    `_product_order`), each as one matrix multiplication on a contiguous unfolding: a leading or
    trailing mode needs no copy; a middle mode is first moved to the end (a copy of the current,
    still small, intermediate) and the layout is tracked, so the weight is permuted back once.
    The scale multiplies the smallest operand (core or a factor)."""
    out_shape = [core.shape[m] if u is None else u.shape[0] for m, u in enumerate(factors)]
    factors = list(factors)
    if core.ndim > 3 and all(u is not None for u in factors[2:]):
        merged = factors[2]
        for u in factors[3:]:
            merged = torch.kron(merged, u)
        core = core.reshape(core.shape[0], core.shape[1], math.prod(core.shape[2:]))
        factors = factors[:2] + [merged]
    if scale != 1.0:
        operands = [core] + [u for u in factors if u is not None]
        smallest = min(range(len(operands)), key=lambda i: operands[i].numel())
        if smallest == 0:
            core = core * scale
        else:
            index = [m for m, u in enumerate(factors) if u is not None][smallest - 1]
            factors[index] = factors[index] * scale
    result = core.contiguous()
    layout = list(range(core.ndim))  # layout[i]: the mode stored in dimension i of `result`
    for mode in _product_order(core.shape, factors):
        u = factors[mode]
        pos = layout.index(mode)
        dims = list(result.shape)
        if pos == 0:
            result = (u @ result.reshape(dims[0], math.prod(dims[1:]))).reshape([u.shape[0]] + dims[1:])
        else:
            if pos != len(dims) - 1:
                result = result.movedim(pos, -1).contiguous()
                layout.append(layout.pop(pos))
                dims = list(result.shape)
            result = (result.reshape(math.prod(dims[:-1]), dims[-1]) @ u.T).reshape(dims[:-1] + [u.shape[0]])
    if layout != sorted(layout):
        result = result.permute([layout.index(m) for m in range(len(layout))]).contiguous()
    return result.reshape(out_shape)


def _product_order(core_shape: Sequence[int], factors: Sequence[torch.Tensor | None]) -> list[int]:
    """The order of mode products with the least multiply-adds.

    Applying mode k (rank r_k -> size n_k) to an intermediate of S entries costs S * n_k and
    multiplies S by n_k / r_k; swapping two adjacent products shows that k should come before j
    exactly when 1/r_k - 1/n_k < 1/r_j - 1/n_j, so sorting by that key is optimal. A mode that
    kept no index goes last: everything before it is then empty, and it yields the zeros."""
    def key(mode: int) -> float:
        rank = core_shape[mode]
        return math.inf if rank == 0 else 1.0 / rank - 1.0 / max(factors[mode].shape[0], 1)

    return sorted((m for m, u in enumerate(factors) if u is not None), key=key)


def _product_macs(core_shape: Sequence[int], factors: Sequence[torch.Tensor | None]) -> int:
    """Multiply-adds of `_tucker_to_tensor` (without the Kronecker merge, which changes little)."""
    dims = list(core_shape)
    total = 0
    for mode in _product_order(dims, factors):
        total += math.prod(dims) * factors[mode].shape[0]
        dims[mode] = factors[mode].shape[0]
    return total


class TuckerConv2d(nn.Module):
    """A Conv2d whose kernel (F, C, H, W) is Tucker-factorized and randomized by tensor dropout.

    Tensor dropout is applied in training AND at inference (the defense is stochastic at test
    time); theta = 1 makes the layer deterministic.

    Two computations give the same output for the sampled weight W~ = G~ x U~_0 x U~_1 x K
    (conv is linear in its kernel; they differ only by float rounding): "reconstructed" builds W~
    and runs one conv2d; "factorized" runs a 1x1 conv onto the kept input-channel components
    (U~_1^T), the core conv with the spatially reconstructed sub-core (G~ x K), and a 1x1 conv
    back to the output channels (U~_0). Building W~ costs about F * C * kh * kw * rank multiply-
    adds per forward pass whatever the batch (with its backward, ~10% of a CIFAR ResNet-18
    training step at batch 128 on CPU, nearly all in the 256/512-channel layers), while the
    factorized convs cost less than even the dense conv wherever the spatial kernel is larger
    than 1x1 and the channels are wide. Where few input channels or a 1x1 kernel leave little to
    save (the 3-channel stem, 1x1 shortcuts) the two extra convs and their activations cost
    more. "auto" (default) picks per call from the actual shapes with `_conv_costs`; set
    `implementation` on the instance (or the class) to force one.
    """

    implementation: str = "auto"  # "auto" | "reconstructed" | "factorized"

    def __init__(self, conv: nn.Conv2d, ranks: Sequence[int], theta: float, decompose: bool, drop_spatial: bool = True,
                 factor_modes: Sequence[int] | None = None) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not factorized")
        if conv.padding_mode != "zeros":
            raise ValueError("only zero padding is supported")
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        drop_modes = None if drop_spatial else (0, 1)
        if factor_modes is not None:
            drop_modes = tuple(factor_modes)
        self.weight = TuckerWeight(conv.weight.shape, ranks, theta, drop_modes=drop_modes, factor_modes=factor_modes)
        if decompose:
            self.weight.init_from(conv.weight)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        core, factors, scale = self.weight.sample()
        if self._factorized(x, core, factors):
            # 1x1 conv with U~_1^T, core conv (spatial factors only), 1x1 conv with U~_0.
            kernel = _tucker_to_tensor(core, [None, None, *factors[2:]], scale)
            h = F.conv2d(x, factors[1].T.contiguous()[:, :, None, None])
            h = F.conv2d(h, kernel, None, self.stride, self.padding, self.dilation)
            return F.conv2d(h, factors[0][:, :, None, None], self.bias)
        return F.conv2d(x, _tucker_to_tensor(core, factors, scale), self.bias, self.stride, self.padding, self.dilation)

    def sampled_weight(self) -> torch.Tensor:
        """One tensor-dropout draw of the full kernel (for layers that transform the kernel, e.g. XNOR)."""
        return _tucker_to_tensor(*self.weight.sample())

    def _factorized(self, x: torch.Tensor, core: torch.Tensor, factors: list[torch.Tensor]) -> bool:
        if self.implementation not in ("auto", "reconstructed", "factorized"):
            raise ValueError(f"implementation must be auto, reconstructed or factorized, got {self.implementation!r}")
        if self.implementation == "reconstructed" or core.numel() == 0 or any(u is None for u in factors):
            return False  # an empty mode makes the kernel zero: reconstruct (zero-channel convs may fail)
        if self.implementation == "factorized":
            return True
        reconstructed, factorized = _conv_costs(x.shape, core.shape, factors, self.stride, self.padding, self.dilation)
        return factorized < reconstructed

    def extra_repr(self) -> str:
        w = self.weight
        return (f"shape={w.shape}, ranks={w.ranks}, theta={w.theta}, stride={self.stride}, padding={self.padding}, "
                f"implementation={self.implementation}")


class TuckerConv1d(TuckerConv2d):
    """A Conv1d whose kernel (F, C, K) is Tucker-factorized and randomized by tensor dropout, with
    the same sampling, modes and 1 / theta^m rescaling as TuckerConv2d (the weight is a 3-mode
    tensor; the time mode plays the spatial modes' part).

    Always "reconstructed": one conv1d with the sampled kernel. The 1-D kernels of SoundNet5 have
    at most 256 x 128 x 8 entries, so building them is cheap next to convolving 16,000-sample
    signals, and the factorized path's two extra activations would be the long ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        core, factors, scale = self.weight.sample()
        return F.conv1d(x, _tucker_to_tensor(core, factors, scale), self.bias, self.stride, self.padding, self.dilation)


# Cost, in multiply-adds, of one activation entry written and read back by a convolution. On
# CPU (oneDNN) each conv call also reorders its NCHW input and output to a blocked layout, so the
# narrow 1x1 convs of the factorized path are memory-bound. Fitted to per-layer forward+backward
# timings of CIFAR ResNet-18 in fp32 at batch 128 on 1 and 2 CPU threads (70-130 reproduce which
# computation is faster on every layer); the choice only flips on layers where both cost about
# the same (64 channels at 32x32). Not calibrated on GPU.
_ACTIVATION_COST = 100


def _conv_costs(x_shape: Sequence[int], core_shape: Sequence[int], factors: Sequence[torch.Tensor], stride, padding, dilation) -> tuple[float, float]:
    """Modelled cost (multiply-adds plus `_ACTIVATION_COST` per extra activation entry) of the
    reconstructed and the factorized computation of one TuckerConv2d call."""
    n = math.prod(x_shape[:-3]) if len(x_shape) > 3 else 1
    c, hi, wi = x_shape[-3:]
    f, kh, kw = factors[0].shape[0], factors[2].shape[0], factors[3].shape[0]
    a, b = core_shape[0], core_shape[1]
    out = []
    pads = (0, 0) if isinstance(padding, str) else padding
    for size, k, s, d, p in zip((hi, wi), (kh, kw), stride, dilation, pads):
        out.append(size if padding == "same" else (size + 2 * p - d * (k - 1) - 1) // s + 1)
    hw_in, hw_out = hi * wi, out[0] * out[1]
    reconstructed = _product_macs(core_shape, factors) + n * hw_out * f * c * kh * kw
    kernel_macs = _product_macs(core_shape, [None, None, *factors[2:]])
    factorized = kernel_macs + n * (hw_in * c * b + hw_out * (a * b * kh * kw + a * f))
    # The factorized path writes and reads two extra activations (b and a channels).
    factorized += _ACTIVATION_COST * 2 * n * (b * hw_in + a * hw_out)
    return float(reconstructed), float(factorized)


class TuckerLinear(nn.Module):
    """A Linear layer whose (out, in) weight is factorized as U_out G U_in^T with dropout on G."""

    def __init__(self, linear: nn.Linear, ranks: Sequence[int], theta: float, decompose: bool, factor_modes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.weight = TuckerWeight(linear.weight.shape, ranks, theta, drop_modes=factor_modes, factor_modes=factor_modes)
        if decompose:
            self.weight.init_from(linear.weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    def extra_repr(self) -> str:
        w = self.weight
        return f"shape={w.shape}, ranks={w.ranks}, theta={w.theta}"
