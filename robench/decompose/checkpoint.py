"""`robench decompose` on a workspace: decompose a checkpoint with `decompose_model`, save the
result as a new checkpoint and append its rows to WORKSPACE/decompositions/{layers,models}.csv.

The rows are also kept in the new checkpoint's meta.json ("decompose_rows"), written before the
CSVs: a re-run that finds the checkpoint complete appends whichever rows a crash kept out of the
CSVs (matched on checkpoint name and timestamp), so no row is lost and none is doubled.
"""

from __future__ import annotations

import copy
import csv
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from robench.checkpoint import build_defended, load_checkpoint, load_state
from robench.data import Dataset, load_dataset, subset
from robench.decompose import DecomposeConfig, DecomposedModel, _inner, decompose_model, plan_layers
from robench.errors import RobenchError, unknown_name
from robench.layers.decomposed import conv_layers
from robench.metrics import versions
from robench.workspace import Workspace, append_csv, atomic_save_tensors

LAYER_COLUMNS = [
    "checkpoint", "source", "method", "layer", "path", "in_channels", "out_channels", "kernel", "rank",
    "flops_before", "flops_after", "flops_ratio", "linear_error", "nonlinear_error", "samples",
    "iterations", "solve_error", "seconds", "timestamp",
]
MODEL_COLUMNS = [
    "checkpoint", "source", "dataset", "arch", "method", "rank", "skip", "nonlinear", "two_step",
    "samples", "params_before", "params_after", "flops_before", "flops_after", "flops_ratio",
    "clean_acc_before", "clean_acc_after", "latency_ms_original", "latency_ms_decomposed", "speedup",
    "throughput_original", "throughput_decomposed", "throughput_speedup", "threads", "seconds",
    "timestamp",
]
CSV_FILES = {"layers": LAYER_COLUMNS, "models": MODEL_COLUMNS}


@dataclass
class DecomposeResult:
    name: str
    meta: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def decompositions_dir(workspace: Workspace) -> Path:
    """Outside results/, whose every CSV `robench report` reads as attack rows."""
    return workspace.root / "decompositions"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def decompose_checkpoint(
    workspace: Workspace,
    source: str,
    config: DecomposeConfig,
    name: str | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    console: Console | None = None,
    overwrite: bool = False,
    test_size: int | None = None,
    measure_speed: bool = True,
    speed_repeats: int = 20,
) -> DecomposeResult:
    """Decompose checkpoint `source` into a new checkpoint (`name`, default SOURCE-METHOD-rRANK);
    an existing one made with the same settings is reused (skipped=True)."""
    from robench.distributed import launched

    if launched():
        # K processes would each decompose and write the same checkpoint.
        raise RobenchError("decompose runs as one process; start it without torchrun (bench run --executor spreads a suite's decompositions)")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    source_meta = workspace.read_meta(source)
    name = _target_name(source, source_meta, config, name)
    reused = _reuse(workspace, name, config.config_hash(source), overwrite)
    if reused is not None:
        return reused
    loaded = load_checkpoint(workspace, source)
    _check_layers(loaded.model, source, source_meta, config)
    dataset = _dataset(source, source_meta, data_dir, download)
    test_x, test_y = _test_split(dataset, test_size, config.seed)
    timestamp = _now()
    runs = int(source_meta.get("clean_acc_runs", 1)) if source_meta.get("stochastic") else 1
    result = decompose_model(loaded.model, dataset.train_x, dataset.train_y, config, test_x=test_x, test_y=test_y,
                             loss=loaded.defense.loss, runs=runs, measure_speed=measure_speed, speed_repeats=speed_repeats,
                             console=console, label=f"decompose {source} ({config.method})")
    summary = {"source": source, "dataset": dataset.name, "arch": source_meta["arch"], **result.summary,
               "seconds": round(time.perf_counter() - started, 1)}
    meta = _decomposed_meta(source_meta, name, config, result, summary, runs, timestamp)
    _save(workspace, name, meta, result.model)
    _append_missing_rows(workspace, meta)
    return DecomposeResult(name, meta, meta["decompose_rows"]["layers"], summary)


def _target_name(source: str, source_meta: dict[str, Any], config: DecomposeConfig, name: str | None) -> str:
    if source_meta.get("decomposition"):
        raise RobenchError(f"checkpoint {source!r} is already decomposed; decompose its source {source_meta.get('decompose', {}).get('source', '?')!r} instead")
    name = name or config.default_name(source)
    if name == source:
        raise RobenchError(f"--name {name!r} is the source checkpoint; pick another name")
    return name


def _reuse(workspace: Workspace, name: str, config_hash: str, overwrite: bool) -> DecomposeResult | None:
    """The existing checkpoint `name` when it is this decomposition, complete (with its CSV rows
    appended if a crash kept them out); None when it is to be made; an error when it is another."""
    if overwrite or not (workspace.checkpoint_dir(name) / "meta.json").is_file():
        return None
    existing = workspace.read_meta(name)
    if existing.get("config_hash") != config_hash or existing.get("status") != "complete":
        raise RobenchError(f"checkpoint {name!r} already exists; pick another --name or pass --overwrite to replace it")
    _append_missing_rows(workspace, existing)
    layers = list(existing.get("decompose_rows", {}).get("layers", []))
    return DecomposeResult(name, existing, layers, existing.get("decompose", {}), skipped=True)


def _check_layers(model: nn.Module, source: str, source_meta: dict[str, Any], config: DecomposeConfig) -> None:
    """Refuse before loading any data: no plain convs (a defense factorized them), bad --rank or --skip."""
    if not conv_layers(_inner(model)):
        raise RobenchError(f"checkpoint {source!r} has no plain conv layers to decompose (defense {source_meta.get('defense')!r} may have factorized them); decompose an undefended checkpoint")
    plan_layers(_inner(model), config)


def _dataset(source: str, source_meta: dict[str, Any], data_dir: str | Path | None, download: bool) -> Dataset:
    dataset = load_dataset(source_meta["dataset"], data_dir, download)
    if [dataset.in_channels, *dataset.image_size] != list(source_meta["input_shape"]):
        raise RobenchError(f"dataset {dataset.name!r} images are {dataset.in_channels}x{dataset.image_size}, but {source!r} was trained on {source_meta['input_shape']}")
    return dataset


def _test_split(dataset: Dataset, test_size: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if test_size is None:
        return dataset.test_x, dataset.test_y
    if test_size < 1:
        raise RobenchError(f"--test-size must be >= 1, got {test_size}")
    return subset(dataset.test_x, dataset.test_y, test_size, seed)


def _decomposed_meta(source_meta: dict[str, Any], name: str, config: DecomposeConfig, result: DecomposedModel,
                     summary: dict[str, Any], runs: int, timestamp: str) -> dict[str, Any]:
    """The source's meta.json with the decomposition, its numbers and its CSV rows."""
    source = summary["source"]
    layers = [{"checkpoint": name, "source": source, **row, "timestamp": timestamp} for row in result.layers]
    brief = [{k: r[k] for k in ("layer", "path", "rank", "flops_ratio", "linear_error", "nonlinear_error")} for r in layers]
    # "files" names the source's own weight files; this checkpoint has model.safetensors.
    meta = {k: v for k, v in copy.deepcopy(source_meta).items() if k not in {"optimizer_scalars", "format", "files"}}
    meta.update({
        "name": name, "status": "complete", "decomposition": result.structure,
        "decompose": {**summary, "config": asdict(config), "layers": brief},
        "config_hash": config.config_hash(source), "history": [], "clean_acc": summary["clean_acc_after"],
        "clean_acc_std": result.clean_acc_std, "clean_acc_runs": runs,
        "versions": versions(), "created": timestamp, "updated": _now(),
        "decompose_rows": {"layers": layers, "models": [{"checkpoint": name, **summary, "timestamp": timestamp}]},
    })
    return meta


def _save(workspace: Workspace, name: str, meta: dict[str, Any], model: nn.Module) -> None:
    """Weights, then meta.json (which marks the checkpoint complete)."""
    # The saved state must rebuild from meta.json alone; check before anything is written.
    rebuilt, _ = build_defended(meta)
    load_state(rebuilt, model.state_dict(), f"decomposed {name}")
    run_dir = workspace.checkpoint_dir(name)
    atomic_save_tensors(run_dir / "model.safetensors", model.state_dict())
    stale = run_dir / "train_state.safetensors"
    if stale.exists():
        stale.unlink()
    workspace.write_meta(name, meta)


def _append_missing_rows(workspace: Workspace, meta: dict[str, Any]) -> None:
    """Append the checkpoint's rows (from its meta.json) to each CSV that does not have them yet."""
    for key, columns in CSV_FILES.items():
        rows = meta.get("decompose_rows", {}).get(key) or []
        path = decompositions_dir(workspace) / f"{key}.csv"
        if rows and not _has_rows(path, rows[0]["checkpoint"], rows[0]["timestamp"]):
            append_csv(path, columns, rows)


def _has_rows(path: Path, checkpoint: str, timestamp: str) -> bool:
    if not path.is_file():
        return False
    with open(path, newline="", errors="replace") as handle:
        return any(row.get("checkpoint") == checkpoint and row.get("timestamp") == timestamp for row in csv.DictReader(handle))


def decompose_run(settings: dict[str, Any], workspace: Workspace, name: str, data_dir: str | Path | None = None,
                  download: bool = False, console: Console | None = None, overwrite: bool = False) -> DecomposeResult:
    """A benchmarks.toml run whose checkpoint comes from decomposing an earlier run's:
    `decompose = { from = "RUN", method = "l1", rank = 0.5, ... }` (keys as DecomposeConfig's,
    plus `from`, `test_size` and `speed`)."""
    known = {f.name: f.type for f in DecomposeConfig.__dataclass_fields__.values()}
    extra = {"from", "test_size", "speed"}
    unknown = sorted(set(settings) - set(known) - extra)
    if unknown:
        raise unknown_name(f"key of run {name!r}'s decompose table", unknown[0], [*known, *extra])
    if "from" not in settings:
        raise RobenchError(f"run {name!r}: the decompose table needs from = \"CHECKPOINT\" (an earlier run's name)")
    values = {k: v for k, v in settings.items() if k in known}
    if "rank" in values:
        values["rank"] = str(values["rank"])
    try:
        config = DecomposeConfig(**values)
    except TypeError as exc:
        raise RobenchError(f"run {name!r}: bad decompose table ({exc})") from None
    return decompose_checkpoint(workspace, str(settings["from"]), config, name=name, data_dir=data_dir, download=download,
                                console=console, overwrite=overwrite, test_size=settings.get("test_size"),
                                measure_speed=bool(settings.get("speed", True)))
