"""Running one training or evaluation over several processes started by torchrun.

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)
starts K copies of the same `robench` command. Each copy finds its place here; nothing else in
robench reads those variables.

- Backend: nccl when the processes train on CUDA devices, gloo otherwise (CPU), chosen from the
  device, never asked of the user. Each process on a GPU node takes the device LOCAL_RANK.
- Training: data parallel over the model as the defense builds it (robench/training.py).
- Evaluation: the blocks of every (attack, eps) are split over the ranks with the cell store's
  sharding (`--shard rank+1/K`); after a barrier, rank 0 assembles the rows from the cells and
  alone appends them to the workspace CSV, so the rows are those of a single process.

The workspace must be on a file system every process sees (the cell store and the checkpoint
are how the ranks share their work).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from robench.errors import RobenchError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# A rank that finishes its shard early waits at the barrier for the slowest one, which on a
# paper-scale evaluation can be hours; gloo's and nccl's default 30 minutes would kill the job.
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Session:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun (or a launcher like it) with more than one process?"""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def session(device: torch.device | None = None) -> Session | None:
    """This process's place in the run, starting the process group on first use; None when
    robench runs as a single process."""
    if not launched():
        return None
    import torch
    import torch.distributed as dist

    try:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise RobenchError("WORLD_SIZE is set but RANK is missing or not a number; start robench with torchrun, which sets both") from None
    if not dist.is_available():
        raise RobenchError("this torch build has no torch.distributed; run robench as a single process")
    if not dist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(local % max(torch.cuda.device_count(), 1))
        try:
            dist.init_process_group("nccl" if cuda else "gloo", timeout=BARRIER_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise RobenchError(f"cannot join the torchrun process group ({first}); check MASTER_ADDR/MASTER_PORT and that every process started") from None
    return Session(rank, world, local, dist.get_backend())


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun on GPUs, each process's own device (cuda:LOCAL_RANK)."""
    import torch

    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
    return device


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def split_evaluation(plan: Any, device: torch.device, run: Callable[[Any, bool], T], memory_only: bool = False) -> T:
    """Run an evaluation (`run(plan, write_rows)`) over every torchrun rank: each computes its
    shard of the blocks, then, after a barrier, every rank assembles the rows from the shared
    cells and only rank 0 writes them."""
    current = session(device)
    if current is None:
        return run(plan, True)
    if memory_only:
        raise RobenchError("under torchrun the ranks share their blocks through the workspace; pass workspace=... to evaluate")
    if plan.shard != (1, 1):
        raise RobenchError("under torchrun the ranks split the work themselves; drop --shard/--merge")
    run(replace(plan, shard=(current.rank + 1, current.world_size)), False)
    barrier()
    rows = run(replace(plan, shard=(0, 0)), current.main)
    # Rank 0 writes the rows while the others already hold them; none leaves before it is done,
    # so a script that reads the CSV after the run sees them.
    barrier()
    return rows


def quiet_unless_main(console: Any) -> Any:
    """Rank 0's progress bars and notes only: K copies of each would garble the terminal."""
    if launched() and int(os.environ.get("RANK", "0") or 0) != 0:
        from rich.console import Console

        return Console(stderr=True, quiet=True)
    return console


def main_first(action: Callable[[], None], device: torch.device) -> None:
    """Run `action` (e.g. discarding old cells) on rank 0 only, before any rank goes on."""
    current = session(device)
    if current is None or current.main:
        action()
    barrier()
