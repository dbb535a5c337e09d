"""A checkpoint's meta.json, typed: what `robench train`, `robench import` and `robench decompose`
write, validated field by field when a checkpoint is read, so that a hand-edited or foreign file
ends in one line naming the field instead of a traceback deep inside model building.

Unknown keys are kept (a newer robench may add fields); every known field has a fixed type.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from robench.errors import RobenchError

FORMAT = "robench-checkpoint/1"
MAX_DEPTH = 32  # JSON nesting (decomposition entries sit at depth 3)
MAX_INT_DIGITS = 30
MAX_DIM = 100_000  # a channel count or image side
MAX_PIXELS = 10**8  # C x H x W of one input
MAX_CLASSES = 100_000
MAX_RANK = 100_000
FIX = "delete the checkpoint folder and train (or import) it again"


@dataclass(frozen=True)
class CheckpointMeta:
    """meta.json of a checkpoint folder (`WORKSPACE/checkpoints/NAME/meta.json`).

    The fields `checkpoint.build_defended` needs to rebuild the model are required; the rest are
    optional (None when absent) but typed when present. `extra` holds keys this version does
    not know."""

    arch: str
    dataset: str
    defense: str
    input_shape: list[int]  # [channels, height, width]
    num_classes: int
    mean: list[float]  # per channel, applied inside the model
    std: list[float]
    # [low, high] of the inputs (audio: [-1, 1]); absent in older files, which mean [0, 1] images.
    value_range: list[float] | None = None
    defense_params: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    name: str | None = None
    status: str | None = None  # "training" or "complete"
    stochastic: bool | None = None
    normalization: str | None = None
    config: dict[str, Any] | None = None  # TrainConfig as a dict (trained checkpoints)
    config_hash: str | None = None
    seed: int | None = None  # None for imported checkpoints
    epochs: int | None = None
    epochs_done: int | None = None
    history: list[dict[str, Any]] | None = None
    optimizer_scalars: dict[str, Any] | None = None
    files: dict[str, str] | None = None  # the weight and training-state files meta.json commits to
    clean_acc: float | None = None
    clean_acc_std: float | None = None
    clean_acc_runs: int | None = None
    versions: dict[str, Any] | None = None
    created: str | None = None
    updated: str | None = None
    imported: dict[str, Any] | None = None  # `robench import`: factory, weights and their sha256
    decomposition: dict[str, dict[str, Any]] | None = None  # `robench decompose`: layer path -> structure
    decompose: dict[str, Any] | None = None  # `robench decompose`: summary, config and per-layer rows
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str, where: str = "meta.json") -> CheckpointMeta:
        """Parse and validate meta.json's text; any problem is a one-line RobenchError."""
        return cls.from_dict(parse_json(text, where), where)

    @classmethod
    def from_dict(cls, data: Any, where: str = "meta.json") -> CheckpointMeta:
        """Validate a loaded meta.json; any problem is a one-line RobenchError naming the field."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RobenchError(f"{where} is not a robench checkpoint (expected format {FORMAT!r}); train one with `robench train`")
        _check_tree(data, where)
        check = _Checker(data, where)
        check.text("arch", required=True)
        check.text("dataset", required=True)
        check.text("defense", required=True)
        shape = check.input_shape()
        check.integer("num_classes", 2, MAX_CLASSES, required=True)
        check.channels("mean", shape[0], positive=False)
        check.channels("std", shape[0], positive=True)
        check.mapping("defense_params")
        check.value_range("value_range")
        for key in ("name", "status", "normalization", "config_hash", "created", "updated"):
            check.text(key)
        check.boolean("stochastic")
        for key in ("config", "optimizer_scalars", "files", "versions", "imported", "decompose"):
            check.mapping(key)
        check.integer("seed", -(2**63), 2**64 - 1)  # what torch.manual_seed takes
        check.integer("epochs", 0, None)
        check.integer("epochs_done", 0, None)
        check.integer("clean_acc_runs", 1, None)
        check.number("clean_acc")
        check.number("clean_acc_std")
        check.records("history")
        check.decomposition()
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        if "decomposition" in values and not values["decomposition"]:
            values["decomposition"] = None  # older files may hold [] or {} for "not decomposed"
        values.setdefault("defense_params", {})
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The meta.json dict (absent optional fields left out, unknown keys kept)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}


def parse_json(text: str, where: str) -> Any:
    """json.loads with the nesting and integer-size limits meta.json needs, as RobenchErrors."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RobenchError(f"{where} is nested too deeply (more than {MAX_DEPTH} levels); {FIX}") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing a number of over 4300 digits
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else " ".join(str(exc).split())
        if "digits" in reason:
            raise RobenchError(f"{where} holds an integer of more than {MAX_INT_DIGITS} digits; {FIX}") from None
        raise RobenchError(f"{where} is not valid JSON ({reason}); {FIX}") from None


def _check_tree(data: Any, where: str) -> None:
    """Nesting depth and integer sizes anywhere in the document (iterative: no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise RobenchError(f"{where} is nested too deeply (more than {MAX_DEPTH} levels); {FIX}")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_INT_DIGITS:
            raise RobenchError(f"{where} holds an integer of more than {MAX_INT_DIGITS} digits; {FIX}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def fail(self, key: str, expected: str) -> RobenchError:
        return RobenchError(f"{self.where}: field {key!r} must be {expected}, got {_shown(self.data.get(key))}; {FIX}")

    def present(self, key: str, required: bool) -> bool:
        if key in self.data and (self.data[key] is not None or required):
            return True
        if required:
            raise RobenchError(f"{self.where}: field {key!r} is missing; {FIX}")
        return False

    def text(self, key: str, required: bool = False) -> None:
        if self.present(key, required) and not (isinstance(self.data[key], str) and self.data[key]):
            raise self.fail(key, "a non-empty string")

    def boolean(self, key: str) -> None:
        if self.present(key, False) and not isinstance(self.data[key], bool):
            raise self.fail(key, "true or false")

    def mapping(self, key: str) -> None:
        if self.present(key, False) and not isinstance(self.data[key], dict):
            raise self.fail(key, "an object")

    def number(self, key: str) -> None:
        if self.present(key, False) and not _is_number(self.data[key]):
            raise self.fail(key, "a finite number")

    def integer(self, key: str, low: int, high: int | None, required: bool = False) -> None:
        if not self.present(key, required):
            return
        value = self.data[key]
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise self.fail(key, f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}")

    def input_shape(self) -> list[int]:
        self.present("input_shape", True)
        shape = self.data["input_shape"]
        # Exactly [C, H, W]: every writer stores that, and build_model unpacks (H, W).
        ok = isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and 1 <= v <= MAX_DIM for v in shape)
        if not ok:
            raise self.fail("input_shape", f"[channels, height, width], integers in [1, {MAX_DIM}]")
        if math.prod(shape) > MAX_PIXELS:
            raise self.fail("input_shape", f"at most {MAX_PIXELS} values per input")
        return shape

    def channels(self, key: str, count: int, positive: bool) -> None:
        self.present(key, True)
        values = self.data[key]
        ok = isinstance(values, list) and len(values) == count and all(_is_number(v) and (v > 0 or not positive) for v in values)
        if not ok:
            kind = "positive finite numbers" if positive else "finite numbers"
            raise self.fail(key, f"a list of {kind}, one per input channel ({count})")

    def value_range(self, key: str) -> None:
        if not self.present(key, False):
            return
        value = self.data[key]
        if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value) and value[0] < value[1]):
            raise self.fail(key, "[low, high], two finite numbers with low < high")

    def records(self, key: str) -> None:
        if self.present(key, False):
            value = self.data[key]
            if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
                raise self.fail(key, "a list of objects")

    def decomposition(self) -> None:
        if not self.present("decomposition", False):
            return
        value = self.data["decomposition"]
        if isinstance(value, list) and not value:
            return
        if not (isinstance(value, dict) and all(isinstance(k, str) and k and isinstance(v, dict) for k, v in value.items())):
            raise self.fail("decomposition", "an object mapping conv layer paths to objects")
        for path, entry in value.items():
            for key, rank in entry.items():
                if key.startswith("rank") and not (_is_int(rank) and 1 <= rank <= MAX_RANK):
                    raise RobenchError(f"{self.where}: field 'decomposition' entry {path!r} has {key} {_shown(rank)}, not an integer in [1, {MAX_RANK}]; {FIX}")
