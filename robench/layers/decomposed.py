"""The modules a decomposed convolution becomes, and how a checkpoint's meta.json rebuilds them.

A decomposed checkpoint records only the structure in meta.json (`"decomposition"`: layer path ->
{"type", ranks}); the weights live in model.safetensors like any other checkpoint. The shapes of
each replacement come from the conv it replaces in the freshly built architecture, so nothing
but the ranks has to be stored and nothing is unpickled.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from robench.errors import RobenchError

TYPES = ("lowrank", "tucker2", "cp")


class LowRankConv2d(nn.Module):
    """Eqs. 2.5-2.7: m basis filters W' = Q^T W (a k x k conv, no bias) followed by the 1x1
    linear combination P with the bias b''. Both are plain convolutions, so the pair runs on the
    same fast kernels as the layer it replaces (and in channels_last without copies)."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        _check_plain(conv)
        self.basis = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False, padding_mode=conv.padding_mode)
        self.combine = nn.Conv2d(rank, conv.out_channels, 1, bias=True)

    @property
    def rank(self) -> int:
        return self.basis.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.basis(x))

    @torch.no_grad()
    def set_factors(self, basis: torch.Tensor, combine: torch.Tensor, bias: torch.Tensor) -> None:
        """basis: (m, c, k, k) filters; combine: (n, m) matrix P; bias: (n,)."""
        self.basis.weight.copy_(basis.reshape(self.basis.weight.shape))
        self.combine.weight.copy_(combine.reshape(self.combine.weight.shape))
        self.combine.bias.copy_(bias)


class Tucker2Conv2d(nn.Module):
    """Kim et al.'s Tucker-2 form: 1x1 (c -> r_in), k x k core (r_in -> r_out), 1x1 (r_out -> n) + bias."""

    def __init__(self, conv: nn.Conv2d, rank_in: int, rank_out: int) -> None:
        super().__init__()
        _check_plain(conv)
        self.first = nn.Conv2d(conv.in_channels, rank_in, 1, bias=False)
        self.core = nn.Conv2d(rank_in, rank_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False, padding_mode=conv.padding_mode)
        self.last = nn.Conv2d(rank_out, conv.out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.core(self.first(x)))


class CPConv2d(nn.Module):
    """Lebedev et al.'s CP form: 1x1 (c -> R), depthwise k x 1, depthwise 1 x k, 1x1 (R -> n) + bias."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        _check_plain(conv)
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise RobenchError("cp decomposition needs a conv with numeric zero padding; use --method l1, l2 or tucker2 for this layer")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        self.first = nn.Conv2d(conv.in_channels, rank, 1, bias=False)
        self.vertical = nn.Conv2d(rank, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups=rank, bias=False)
        self.horizontal = nn.Conv2d(rank, rank, (1, kw), (1, sw), (0, pw), (1, dw), groups=rank, bias=False)
        self.last = nn.Conv2d(rank, conv.out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.horizontal(self.vertical(self.first(x))))


DECOMPOSED = (LowRankConv2d, Tucker2Conv2d, CPConv2d)


def _check_plain(conv: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise RobenchError(f"only ungrouped nn.Conv2d layers can be decomposed, got {conv!r}")


def conv_layers(model: nn.Module) -> list[tuple[str, str, nn.Conv2d]]:
    """(short name, module path, module) of every plain conv in forward-definition order;
    short names are conv1, conv2, ... so `--rank conv3=0.25` works on any architecture."""
    found = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d) and not _inside_decomposed(model, path)]
    return [(f"conv{i}", path, m) for i, (path, m) in enumerate(found, start=1)]


def _inside_decomposed(model: nn.Module, path: str) -> bool:
    parts = path.split(".")
    for cut in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:cut])), DECOMPOSED):
            return True
    return False


def replace_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def structure_entry(module: nn.Module, method: str) -> dict[str, Any]:
    if isinstance(module, LowRankConv2d):
        return {"type": "lowrank", "method": method, "rank": module.rank}
    if isinstance(module, Tucker2Conv2d):
        return {"type": "tucker2", "method": method, "rank_in": module.first.out_channels, "rank_out": module.core.out_channels}
    if isinstance(module, CPConv2d):
        return {"type": "cp", "method": method, "rank": module.first.out_channels}
    raise TypeError(type(module))


def build_decomposed(conv: nn.Conv2d, entry: dict[str, Any]) -> nn.Module:
    kind = entry.get("type")
    try:
        if kind == "lowrank":
            return LowRankConv2d(conv, int(entry["rank"]))
        if kind == "tucker2":
            return Tucker2Conv2d(conv, int(entry["rank_in"]), int(entry["rank_out"]))
        if kind == "cp":
            return CPConv2d(conv, int(entry["rank"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RobenchError(f"decomposition entry {entry!r} lacks a valid {exc}; decompose the checkpoint again") from None
    raise RobenchError(f"unknown decomposition type {kind!r} in meta.json (known: {', '.join(TYPES)}); decompose the checkpoint again")


def apply_structure(model: nn.Module, decomposition: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace the convs named in meta.json's "decomposition" by their decomposed modules (in
    place) so that the checkpoint's state dict loads strictly."""
    for path, entry in decomposition.items():
        try:
            conv = model.get_submodule(path)
        except AttributeError:
            conv = None
        if not isinstance(conv, nn.Conv2d):
            raise RobenchError(f"meta.json decomposes {path!r}, which is not a conv layer of this architecture; decompose the checkpoint again")
        replace_module(model, path, build_decomposed(conv, entry))
    return model


def decomposed_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    return ((p, m) for p, m in model.named_modules() if isinstance(m, DECOMPOSED))
