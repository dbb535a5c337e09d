"""The cell store: per-block verdicts of an evaluation, saved as they are computed, so that an
interrupted attack resumes from its last finished block and shards of one evaluation, run in
separate processes or machines, add up to the rows a single run gives.

A cell is one (target, attack settings, eps, example subset, block size) combination; its key is
a hash of all of these, so a changed setting never reuses stale verdicts. Each block of examples
is one file, written atomically: (runs, block) correctness booleans and per-example perturbation
norms, plus the block's seconds and model passes. Rows are always assembled from the blocks in
order, whether they were computed now or loaded, so a resumed or sharded run sums the same
numbers in the same order as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import safe_open

from robench.errors import RobenchError
from robench.workspace import atomic_save_tensors, atomic_write_bytes, load_tensors


@dataclass
class Block:
    """One block's verdicts: `correct` (runs, b); `linf`, `l2` per example (None for clean)."""

    correct: torch.Tensor
    linf: torch.Tensor | None = None
    l2: torch.Tensor | None = None
    seconds: float = 0.0
    left_in_train_mode: bool = False
    forward_passes: int = 0
    backward_passes: int = 0


def block_seed(seed: int, *parts: Any) -> int:
    """The seed of one block's random draws, from the run's seed and what the block is (attack,
    eps, first example index): independent of which process computes it, or when."""
    text = json.dumps([seed, *parts], default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & (2**63 - 1)


class Cells:
    """Block files of one evaluation under `root` (None: kept in memory only, for library
    calls without a workspace)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._memory: dict[tuple[str, int], Block] = {}
        self.owned: list[str] | None = None

    def key(self, label: str, settings: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        return f"{safe}-{digest}"

    def _path(self, cell: str, start: int) -> Path:
        assert self.root is not None
        return self.root / cell / f"block-{start:09d}.safetensors"

    def has(self, cell: str, start: int) -> bool:
        """Is the block done? A stat, not a read: the loops ask this for every block they own,
        which `owned` (when a list) records, as the files a shard job is answerable for."""
        if self.owned is not None and self.root is not None:
            self.owned.append(str(self._path(cell, start)))
        return self._exists(cell, start)

    def _exists(self, cell: str, start: int) -> bool:
        if self.root is None:
            return (cell, start) in self._memory
        return self._path(cell, start).is_file()

    def get(self, cell: str, start: int) -> Block | None:
        if self.root is None:
            return self._memory.get((cell, start))
        path = self._path(cell, start)
        if not path.is_file():
            return None
        tensors = load_tensors(path)  # a damaged file gets its one-line error here
        with safe_open(str(path), "pt") as handle:  # the header only: the block's seconds and passes
            info = json.loads(handle.metadata()["info"])
        return Block(tensors["correct"].bool(), tensors.get("linf"), tensors.get("l2"), **info)

    def put(self, cell: str, start: int, block: Block) -> None:
        if self.root is None:
            self._memory[(cell, start)] = block
            return
        tensors = {"correct": block.correct.to(torch.uint8)}
        if block.linf is not None:
            tensors.update(linf=block.linf, l2=block.l2)
        info = {k: getattr(block, k) for k in ("seconds", "left_in_train_mode", "forward_passes", "backward_passes")}
        atomic_save_tensors(self._path(cell, start), tensors, metadata={"info": json.dumps(info)})

    def count(self, cell: str, starts: list[int]) -> int:
        return sum(self._exists(cell, s) for s in starts)

    @contextlib.contextmanager
    def _locked(self, cell: str) -> Iterator[None]:
        assert self.root is not None
        (self.root / cell).mkdir(parents=True, exist_ok=True)
        with open(self.root / cell / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish_once(self, cell: str, publish: Callable[[], None]) -> bool:
        """Run `publish` (append the cell's row) unless it already ran for this cell, in this
        process or another shard's; True if it ran now."""
        if self.root is None:
            if (cell, -1) in self._memory:
                return False
            publish()
            self._memory[(cell, -1)] = Block(torch.zeros(0))
            return True
        with self._locked(cell):
            marker = self.root / cell / "published"
            if marker.exists():
                return False
            publish()
            atomic_write_bytes(marker, b"")
            return True

    def discard(self) -> None:
        """`--fresh`: forget every block of this target's evaluations."""
        self._memory.clear()
        if self.root is not None and self.root.exists():
            try:
                shutil.rmtree(self.root)
            except OSError as exc:
                raise RobenchError(f"cannot remove {self.root} ({exc.strerror}); delete it by hand and re-run") from exc
