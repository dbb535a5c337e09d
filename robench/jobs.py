"""A suite of benchmarks.toml as a graph of idempotent jobs, for `bench run --executor`,
`bench status` and `bench plan`.

Jobs: one `train` (or `decompose`) per checkpoint the suite makes, after the checkpoint it
starts from (`init`, `decompose.from`); then `attack` jobs, each computing one shard of a run's
blocks (the cell store's `--shard I/K`), after the target and, for a black-box run, its source.
A job is idempotent: training resumes or reuses a finished checkpoint, an attack shard skips
the blocks already in the cells, so a job that died (preempted, timed out, Ctrl-C) is simply
run again. The driver alone writes result rows: once a run's shards are done it merges them
from the cells (`--merge`), so the rows equal a single process's.

Each worker records its job's state in WORKSPACE/jobs/SUITE/ID.json (running, done, failed),
with the block files it owns; `bench status` reads those and checks them against the
checkpoints and the cell store, whatever executor ran the job.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robench.errors import RobenchError

# The workspace is shared by the driver and its workers; this file tells a worker it sees the
# same folder the driver made (not an empty local one of the same path).
MARKER = ".robench-workspace"


@dataclass(frozen=True)
class Job:
    id: str
    kind: str                   # train | decompose | attack
    run: str                    # the checkpoint it makes or attacks
    index: int                  # position of the run in the suite (its attack settings)
    settings: dict[str, Any] = field(compare=False, hash=False)
    shard: tuple[int, int] = (1, 1)
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Context:
    """What every worker needs, as plain values (it travels to Ray and SLURM workers)."""

    suite: str
    workspace: str
    data_dir: str | None = None
    download: bool = False
    device: str = "auto"
    threads: int = 1
    retrain: bool = False


def attack_blocks(settings: dict[str, Any]) -> int | None:
    """How many blocks a run's attack has (None when --n is unset: the whole test split)."""
    n = settings.get("n", 1000)
    return None if n is None else math.ceil(n / settings.get("attack_batch_size", 256))


def plan_jobs(suite: Any, shards: int) -> list[Job]:
    """The suite's jobs in a valid order; each attack in min(shards, its blocks) shards."""
    made: dict[str, str] = {}
    jobs: list[Job] = []
    for index, run in enumerate(suite.runs):
        if run.name in made:
            continue
        s = run.settings
        kind, parent = ("decompose", str(s["decompose"].get("from"))) if "decompose" in s else ("train", s.get("init"))
        jobs.append(Job(f"{kind}/{run.name}", kind, run.name, index, s, after=tuple(made[p] for p in [parent] if p in made)))
        made[run.name] = jobs[-1].id
    attacked = [run.name for run in suite.runs]
    for index, run in enumerate(suite.runs):
        s = run.settings
        k = max(1, min(shards, attack_blocks(s) or shards))
        label = run.name if attacked.count(run.name) == 1 else f"{run.name}#{index}"
        after = tuple(made[p] for p in (run.name, s.get("source")) if p in made)
        jobs.extend(Job(f"attack/{label}/{i}of{k}", "attack", run.name, index, s, (i, k), after) for i in range(1, k + 1))
    return jobs


def state_path(workspace: Path, suite: str, job_id: str) -> Path:
    return workspace / "jobs" / suite / (job_id.replace("/", "__") + ".json")


def _record(ctx: Context, job: Job, state: str, **extra: Any) -> None:
    from robench.workspace import atomic_write_bytes

    path = state_path(Path(ctx.workspace), ctx.suite, job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"job": job.id, "state": state, "host": socket.gethostname(), "pid": os.getpid(),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
    atomic_write_bytes(path, json.dumps(body, indent=1).encode())


def visible_workspace(path: str) -> Path:
    root = Path(path)
    if not (root / MARKER).is_file():
        raise RobenchError(f"workspace {root} is not visible on {socket.gethostname()}: the driver and every worker must see one "
                           "shared folder (NFS, Lustre, ...); pass --workspace on such a file system")
    return root


def execute(job: Job, ctx: Context) -> dict[str, Any]:
    """Run one job in this process (a pool worker, a Ray task or a SLURM job)."""
    import torch
    from rich.console import Console

    torch.set_num_threads(ctx.threads)
    started = time.perf_counter()
    from robench.workspace import Workspace

    ws = Workspace(visible_workspace(ctx.workspace))
    _record(ctx, job, "running")
    quiet = Console(stderr=True, quiet=True)
    owned: list[str] = []
    try:
        if job.kind == "attack":
            from robench.bench import _attack_plan
            from robench.evaluation import attack_checkpoint

            plan = replace(_attack_plan(job.settings), shard=job.shard)
            attack_checkpoint(ws, job.run, plan, data_dir=ctx.data_dir, download=ctx.download, device=ctx.device, console=quiet, owned=owned)
        elif job.kind == "decompose":
            from robench.decompose import decompose_run

            decompose_run(job.settings["decompose"], ws, job.run, data_dir=ctx.data_dir, download=ctx.download, console=quiet, overwrite=ctx.retrain)
        else:
            from robench.bench import _train_config
            from robench.training import train

            train(_train_config(job.settings), ws, name=job.run, data_dir=ctx.data_dir, download=ctx.download,
                  device=ctx.device, console=quiet, overwrite=ctx.retrain)
    except BaseException as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _record(ctx, job, "failed", error=line, traceback=traceback.format_exc()[-4000:])
        if isinstance(exc, RobenchError):
            raise RobenchError(f"{job.id}: {line}") from None
        # Whatever the engine, what comes back is one picklable line; the traceback is in the state file.
        raise RobenchError(f"{job.id} failed on {socket.gethostname()} ({type(exc).__name__}: {line}); "
                           f"see {state_path(Path(ctx.workspace), ctx.suite, job.id)}") from None
    seconds = round(time.perf_counter() - started, 3)
    _record(ctx, job, "done", seconds=seconds, blocks=sorted({str(Path(p).relative_to(ws.root)) for p in owned}))
    return {"job": job.id, "seconds": seconds, "host": socket.gethostname()}


def job_state(ws: Any, suite: str, job: Job) -> tuple[str, str]:
    """(state, detail) of one job: done, running, failed or pending. `done` is checked against
    the workspace (a finished checkpoint of the same settings; every block file the shard owns),
    not only taken from the worker's record."""
    path = state_path(ws.root, suite, job.id)
    record = json.loads(path.read_text()) if path.is_file() else None
    if job.kind in ("train", "decompose"):
        meta_file = ws.checkpoint_dir(job.run) / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if meta.get("status") == "complete" and (job.kind == "decompose" or _same_settings(job, meta)):
            return "done", f"clean {100 * meta.get('clean_acc', float('nan')):.1f}%"
        progress = f"epoch {meta.get('epochs_done', 0)}/{meta.get('epochs', '?')}" if meta else ""
    else:
        if record is not None and record["state"] == "done":
            missing = [b for b in record.get("blocks", []) if not (ws.root / b).is_file()]
            if not missing:
                return "done", f"{len(record.get('blocks', []))} blocks, {record.get('seconds', 0):.0f} s"
            return "pending", f"{len(missing)} of its blocks are gone (--fresh?)"
        progress = ""
    if record is None:
        return "pending", progress
    if record["state"] == "running":
        alive = record["host"] != socket.gethostname() or _pid_alive(record["pid"])
        return ("running", f"{record['host']} pid {record['pid']} {progress}".strip()) if alive else ("pending", f"interrupted {progress}".strip())
    if record["state"] == "failed":
        return "failed", record.get("error", "")
    return "pending", progress


def _same_settings(job: Job, meta: dict[str, Any]) -> bool:
    from robench.bench import _train_config

    try:
        return meta.get("config_hash") == _train_config(job.settings).config_hash()
    except RobenchError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

