"""What the durable cell store costs: the `quick` suite's attacks with every finished block
saved to disk (what `robench attack` does) against the same core keeping blocks in memory only
(a library call without a workspace).

The quick suite's `none` model (digits small-CNN, 30 epochs, seed 0) is trained once in a
temporary workspace; then FGSM and PGD at 16/255 and 32/255 on its 450 test examples (blocks of
--batch-size), without the verdict attack or convergence check (the papers' protocol: what the
cell store wraps, not what it adds). The two variants alternate for --repeats rounds after one
warm-up round, on one thread; the script prints the median seconds of each and the ratio.

    python benchmarks/cell_store_overhead.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from robench.attacks import parse_suite  # noqa: E402
from robench.cells import Cells  # noqa: E402
from robench.checkpoint import load_checkpoint  # noqa: E402
from robench.data import load_dataset, subset  # noqa: E402
from robench.evaluation import AttackRun, checkpoint_target, run_attacks  # noqa: E402
from robench.training import TrainConfig, train  # noqa: E402
from robench.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        train(TrainConfig(epochs=30, seed=0), ws, name="quick-none", data_dir=args.data_dir, console=quiet)
        loaded = load_checkpoint(ws, "quick-none")
        data = load_dataset("digits", args.data_dir)
        plan = AttackRun(suite=parse_suite("fgsm,pgd"), eps=[16 / 255, 32 / 255], n=450, runs=10, batch_size=args.batch_size, verdict=False, convergence_check=False)
        x, y = subset(data.test_x, data.test_y, plan.n, plan.seed)
        target = checkpoint_target(loaded, x[: plan.batch_size])
        device = torch.device("cpu")

        def in_memory() -> list:
            return run_attacks(target, x, y, plan, device, quiet)

        def on_disk(round_: int) -> list:
            cells = Cells(ws.cells / f"round-{round_}")  # a fresh folder: every block computed and written
            return run_attacks(target, x, y, plan, device, quiet, cells=cells, on_row=lambda row: ws.append_results([row]))

        seconds: dict[str, list[float]] = {"memory": [], "disk": []}
        reference = None
        for round_ in range(args.repeats + 1):
            for label in ("memory", "disk") if round_ % 2 == 0 else ("disk", "memory"):
                started = time.perf_counter()
                rows = in_memory() if label == "memory" else on_disk(round_)
                elapsed = time.perf_counter() - started
                numbers = [(r["attack"], r["eps"], r["robust_acc"]) for r in rows]
                assert reference is None or numbers == reference, "the cell store changed a number"
                reference = numbers
                if round_ > 0:
                    seconds[label].append(elapsed)
    memory, disk = statistics.median(seconds["memory"]), statistics.median(seconds["disk"])
    print(f"quick suite attacks (digits none, fgsm+pgd at 16/255 and 32/255, n=450, blocks of {args.batch_size}), {args.threads} thread(s), medians of {args.repeats}")
    print(f"  blocks in memory   {memory:6.2f} s")
    print(f"  blocks on disk     {disk:6.2f} s   (cell files, CSV appends with fsync)")
    print(f"  ratio disk / memory {disk / memory:.3f}")


if __name__ == "__main__":
    main()
