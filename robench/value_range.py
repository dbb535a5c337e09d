"""Inputs that are not images in [0, 1] (waveforms in [-1, 1]): how attacks and results handle
the data's own value range.

torchattacks clamps every adversarial example to [0, 1]. Rather than clip audio there, the
attacks run on u = (x - lo) / (hi - lo), which lies in [0, 1], against a model that first maps u
back (lo + (hi - lo) * u, exact and differentiable). Budgets follow the same map: an Linf or L2
eps of e in the data's units is e / (hi - lo) on u, and so is a step size. Rows are written
back in the data's units (eps, step size, mean Linf / L2 of the perturbation) with the range in
their `value_range` column, so 0.008 in a row of a [-1, 1] dataset means 0.008 of the waveform.

For the range (0, 1) every function here is the identity, so image results are unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from robench.errors import RobenchError

Range = tuple[float, float]
UNIT: Range = (0.0, 1.0)
# Datasets whose range is not [0, 1], by name (`fsdd:SPEAKER` included): what a checkpoint or
# a `robench.evaluate` call that predates the value_range field means.
_AUDIO_PREFIXES = ("fsdd", "speech-commands")


def for_dataset(name: str | None) -> Range:
    """The range of a dataset by name: (-1, 1) for the audio datasets, (0, 1) otherwise."""
    key = str(name or "").lower().replace("_", "-").partition(":")[0]
    return (-1.0, 1.0) if key in _AUDIO_PREFIXES else UNIT


def parse(value: Any, dataset: str | None = None) -> Range:
    """A range from meta.json ([lo, hi]), a CSV cell ("[-1.0, 1.0]") or a tuple; missing (older
    files) means the dataset's known range, (0, 1) for every image dataset."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return for_dataset(dataset)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RobenchError(f"value range {value!r} is not [low, high]; fix or delete that row") from None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise RobenchError(f"value range {value!r} is not [low, high]; fix or delete that row") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise RobenchError(f"value range [{lo}, {hi}] must have finite low < high")
    return (lo, hi)


def is_unit(value_range: Range) -> bool:
    return tuple(value_range) == UNIT


def width(value_range: Range) -> float:
    return value_range[1] - value_range[0]


def to_unit(x: torch.Tensor, value_range: Range) -> torch.Tensor:
    lo, hi = value_range
    return x if is_unit(value_range) else (x - lo) / (hi - lo)


def from_unit(u: torch.Tensor, value_range: Range) -> torch.Tensor:
    lo, hi = value_range
    return u if is_unit(value_range) else lo + (hi - lo) * u


class FromUnit(nn.Module):
    """`model` behind the map u in [0, 1] -> lo + (hi - lo) * u: what the attacks see."""

    def __init__(self, model: nn.Module, value_range: Range) -> None:
        super().__init__()
        self.model = model
        self.value_range = tuple(value_range)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(from_unit(u, self.value_range))

    def extra_repr(self) -> str:
        return f"value_range={list(self.value_range)}"


def wrap(model: nn.Module, value_range: Range) -> nn.Module:
    return model if is_unit(value_range) else FromUnit(model, value_range)


def in_unit(target: Any, source: Any, x_all: torch.Tensor, plan: Any, value_range: Range) -> tuple[Any, Any, torch.Tensor, Any]:
    """(target, source, inputs, plan) of an evaluation moved onto [0, 1]: the models wrapped in
    FromUnit, the inputs mapped, eps and step size divided by the range's width. `info` is left
    as it is: it keys the cells of finished work, which an image checkpoint must keep."""
    if is_unit(value_range):
        return target, source, x_all, plan
    scale = width(value_range)
    target = replace(target, model=wrap(target.model, value_range).eval())
    if source is not None:
        source = replace(source, model=wrap(source.model, value_range).eval())
    plan = replace(plan, eps=[e / scale for e in plan.eps], step_size=None if plan.step_size is None else plan.step_size / scale)
    return target, source, to_unit(x_all, value_range), plan


# The row's columns measured in input units: multiplied back by the width after the attack.
_SCALED = ("eps", "step_size", "mean_linf", "mean_l2")


def row_in_data_units(row: Mapping[str, Any], value_range: Range) -> dict[str, Any]:
    """A copy of a row computed on [0, 1], with its budgets and distances in the data's units
    and the range in its `value_range` column."""
    out = {**row, "value_range": [float(v) for v in value_range]}
    if not is_unit(value_range):
        scale = width(value_range)
        for key in _SCALED:
            if out.get(key) is not None:
                out[key] = out[key] * scale
    return out


def rows_in_data_units(rows: Iterable[Mapping[str, Any]], value_range: Range) -> list[dict[str, Any]]:
    return [row_in_data_units(row, value_range) for row in rows]


def on_row_in_data_units(on_row: Callable[[dict[str, Any]], None] | None, value_range: Range) -> Callable[[dict[str, Any]], None] | None:
    if on_row is None:
        return None
    return lambda row: on_row(row_in_data_units(row, value_range))


def eps_text(eps: float, value_range: Range, norm: str = "Linf") -> str:
    """A budget as robench shows it: on the 0..255 scale (`8/255`) for Linf on [0, 1] images;
    the plain value in the data's units otherwise (`0.008` of a [-1, 1] waveform)."""
    if is_unit(value_range) and norm != "L2":
        return f"{eps * 255:g}/255"
    return f"{eps:g}"


# Defenses whose own training loss never leaves the data's range whatever it is (convex
# combinations of inputs); every other loss-owning defense crafts or quantizes in [0, 1].
_RANGE_FREE_LOSSES = ("mixup",)


def check_defenses(stack: Any, value_range: Range, dataset: str) -> None:
    """Refuse, on data outside [0, 1], the defenses written for [0, 1] images: preprocessings
    (they filter, quantize or inpaint pixels) and training losses that craft or quantize there
    (adversarial training clamps to [0, 1], BPFC quantizes 8-bit pixels)."""
    if is_unit(value_range):
        return
    lo, hi = value_range
    for part in stack.parts:
        if part.owns_preprocess() or (part.owns_loss() and part.name not in _RANGE_FREE_LOSSES):
            raise RobenchError(f"defense {part.name!r} works on [0, 1] images and {dataset!r} holds values in [{lo:g}, {hi:g}]; "
                               f"on audio use none, tensor-dropout, binary (or their combination), defensive-dropout or mixup")
