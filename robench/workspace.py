"""The workspace directory: checkpoints (safetensors + JSON, never pickle) and result CSVs.

Every write is atomic (write to a temporary file in the same directory, then rename), so an
interrupted run never leaves a half-written checkpoint, and CSV appends hold an exclusive lock
so that parallel attack runs do not interleave rows.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robench.errors import RobenchError, unknown_name

FORMAT = "robench-checkpoint/1"


@dataclass(frozen=True)
class ResultRow:
    """One row of `WORKSPACE/results/*.csv`: one attack at one eps against one model (or the
    `worst-case` row over the suite). The CSV columns are these fields, in this order;
    accuracies are fractions, eps is in the data's units."""

    checkpoint: str
    dataset: str
    arch: str
    defense: str
    defense_params: dict[str, Any]
    stochastic: bool
    stochastic_by: str  # "declared", "detected" (two forward passes differed) or ""
    num_classes: int
    attack: str
    threat_model: str
    source: str | None
    norm: str
    eps: float | None  # None for unbounded attacks (deepfool, cw)
    steps: int | None
    step_size: float | None
    restarts: int
    targeted: str | None
    eot: int
    bpda: bool
    attack_options: dict[str, Any]
    n: int
    runs: int
    clean_acc: float
    clean_acc_std: float
    robust_acc: float
    robust_acc_std: float
    robust_majority: float
    mean_linf: float | None
    mean_l2: float | None
    train_mode_left: bool
    seconds: float
    seed: int
    versions: dict[str, str]
    timestamp: str

    @classmethod
    def checked(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` as a row dict, refusing a missing or unknown column (a bug, not user input)."""
        return asdict(cls(**values))


RESULT_COLUMNS = [f.name for f in fields(ResultRow)]


def default_workspace() -> Path:
    return Path(os.environ.get("ROBENCH_WORKSPACE", "robench-workspace"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # safetensors refuses shared or non-contiguous storage; a clone per tensor is cheap here.
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RobenchError(f"{path} is missing; re-run `robench train` to recreate this checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RobenchError(f"{path} is not a readable safetensors file ({reason}); delete the checkpoint folder and train it again") from exc


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def results_csv(self) -> Path:
        """The CSV new rows go to: the first attacks*.csv whose header is today's columns (an
        older robench's file is left as it is and still read by `report`)."""
        candidates = sorted(self.results.glob("attacks*.csv")) if self.results.is_dir() else []
        for path in candidates:
            with open(path, newline="") as handle:
                header = next(csv.reader(handle), None)
            if header is None or header == RESULT_COLUMNS:
                return path
        return self.results / ("attacks.csv" if not candidates else f"attacks-{len(candidates) + 1}.csv")

    @property
    def adversarial_cache(self) -> Path:
        return self.root / "adv-cache"

    def checkpoint_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise RobenchError(f"invalid checkpoint name {name!r}: use letters, digits, '-', '_' and '.'")
        return self.checkpoints / name

    def checkpoint_names(self) -> list[str]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(p.name for p in self.checkpoints.iterdir() if (p / "meta.json").is_file())

    def read_meta(self, name: str) -> dict[str, Any]:
        path = self.checkpoint_dir(name) / "meta.json"
        if not path.is_file():
            known = self.checkpoint_names()
            if known:
                raise unknown_name(f"checkpoint in {self.root}", name, known)
            raise RobenchError(f"no checkpoint {name!r} in {self.root}: train one with `robench train --name {name}` or pass --workspace")
        try:
            meta = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RobenchError(f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); delete the checkpoint folder and train it again") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise RobenchError(f"{path} is not a robench checkpoint (expected format {FORMAT!r}); train one with `robench train`")
        return meta

    def write_meta(self, name: str, meta: dict[str, Any]) -> None:
        meta = {"format": FORMAT, **{k: v for k, v in meta.items() if k != "format"}}
        atomic_write_bytes(self.checkpoint_dir(name) / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())

    def append_results(self, rows: Iterable[Mapping[str, Any]]) -> Path:
        append_csv(self.results_csv, RESULT_COLUMNS, rows)
        return self.results_csv


def append_csv(path: Path, columns: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows under an exclusive lock (concurrent runs share one file); header when new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0, os.SEEK_END)
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if handle.tell() == 0:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row.get(k)) for k in columns})
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _csv_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def attack_option(cell: Any, key: str) -> Any:
    """One entry of a results row's `attack_options` cell (JSON as written above), or None."""
    try:
        options = json.loads(cell) if isinstance(cell, str) else cell
    except ValueError:
        return None
    return options.get(key) if isinstance(options, dict) else None
