"""The workspace directory: checkpoints (safetensors + JSON, never pickle) and result CSVs.

Every write is atomic (write to a temporary file in the same directory, then rename), so an
interrupted run never leaves a half-written checkpoint, and CSV appends hold an exclusive lock
so that parallel attack runs do not interleave rows.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

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
    zero_gradients: float  # share of probed examples whose input gradient vanishes (robench.probes)
    saturated: float  # share of probed examples with a one-hot softmax (1.0: outputs are probabilities)
    converged: bool | None  # convergence check passed (None: not checked)
    converged_drop: float | None  # accuracy drop under 5x steps and 5 restarts on the check subsample
    batch_size: int  # examples per block: the unit every random draw is seeded by
    forward_passes: int  # the attacker's model passes, in examples (EOT samples counted)
    backward_passes: int
    seconds: float
    seed: int
    versions: dict[str, str]
    timestamp: str
    # [low, high] of the inputs, in which eps and the mean distances are measured; filled in by
    # robench.value_range. Files written before this column read as the dataset's known range.
    value_range: list[float] | None = None

    @classmethod
    def checked(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` as a row dict, refusing a missing or unknown column (a bug, not user input)."""
        return asdict(cls(**values))


RESULT_COLUMNS = [f.name for f in fields(ResultRow)]


def default_workspace() -> Path:
    return Path(os.environ.get("ROBENCH_WORKSPACE", "robench-workspace"))


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write (disk full, read-only, quota) as one line; the temporary file is gone
    and the previous version of `path` is untouched."""
    try:
        yield
    except OSError as exc:
        raise RobenchError(f"cannot write {path} ({exc.strerror or exc}): is the disk full or read-only? The previous version is unchanged; free space and re-run the same command") from exc


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _writing(path):
        _atomic_write_bytes(path, data)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
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
    with _writing(path):
        _atomic_save_tensors(path, tensors, metadata)


def _atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
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


def committed_files(meta: dict[str, Any]) -> dict[str, str]:
    """The weight and training-state files meta.json commits to (older checkpoints: the fixed names)."""
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    return {"model": files.get("model", "model.safetensors"), "train_state": files.get("train_state", "train_state.safetensors")}


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
                return self.inside(path)
        return self.inside(self.results / ("attacks.csv" if not candidates else f"attacks-{len(candidates) + 1}.csv"))

    @property
    def adversarial_cache(self) -> Path:
        return self.root / "adv-cache"

    def checkpoint_dir(self, name: str) -> Path:
        if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or any(ord(c) < 32 or c == "\x7f" for c in name):
            raise RobenchError(f"invalid checkpoint name {name!r}: use letters, digits, '-', '_' and '.'")
        size, limit = len(name.encode("utf-8", "surrogateescape")), 255
        folder = self.checkpoints
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            limit = min(limit, os.pathconf(folder, "PC_NAME_MAX"))
        except (OSError, ValueError):
            pass
        if size > limit:
            raise RobenchError(f"checkpoint name {name[:40]!r}... is {size} bytes long, over the file system's limit of {limit}; pass a shorter --name")
        return self.inside(self.checkpoints / name)

    def inside(self, path: Path) -> Path:
        """`path`, refused when it resolves (through symlinks) outside the workspace: nothing
        robench writes may land elsewhere."""
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise RobenchError(f"{path} resolves to {path.resolve()}, outside the workspace {root}; remove that symlink or pick another name")
        return path

    @property
    def cells(self) -> Path:
        return self.inside(self.root / "cells")

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
        from robench.meta import FIX, CheckpointMeta, parse_json

        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise RobenchError(f"{path} is not valid JSON ({exc}); {FIX}") from exc
        except OSError as exc:
            raise RobenchError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from exc
        meta = parse_json(text, str(path))
        # Every field typed and in range (one line naming the field); callers keep the plain dict.
        CheckpointMeta.from_dict(meta, str(path))
        return meta

    def write_meta(self, name: str, meta: dict[str, Any]) -> None:
        meta = {"format": FORMAT, **{k: v for k, v in meta.items() if k != "format"}}
        atomic_write_bytes(self.checkpoint_dir(name) / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())

    def append_results(self, rows: Iterable[Mapping[str, Any]]) -> Path:
        append_csv(self.results_csv, RESULT_COLUMNS, rows)
        return self.results_csv


def append_csv(path: Path, columns: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows under an exclusive lock (concurrent runs share one file); header when new.

    All or nothing: on a write error (disk full, quota, I/O) the file is cut back to the size it
    had, so a torn row never glues onto the next append."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = io.StringIO()
    writer = csv.DictWriter(lines, fieldnames=columns, extrasaction="ignore")
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            size = handle.seek(0, os.SEEK_END)
            header = io.StringIO()
            if size == 0:
                csv.DictWriter(header, fieldnames=columns).writeheader()
            elif _ends_torn(handle, size):
                # A crash of an older robench (or another tool) left a partial line: end it so
                # our rows start on a line of their own; readers skip the torn one.
                header.write("\n")
            try:
                handle.write((header.getvalue() + lines.getvalue()).encode())
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                handle.truncate(size)
                raise RobenchError(f"cannot write {path} ({exc.strerror or exc}): is the disk full or read-only? Nothing was added; free space and re-run the same command") from exc
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ends_torn(handle: Any, size: int) -> bool:
    handle.seek(size - 1)
    last = handle.read(1)
    handle.seek(size)
    return last != b"\n"


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
