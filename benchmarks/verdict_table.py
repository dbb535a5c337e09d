"""robench's verdict against the papers' protocol and an independent strong attack, per model.

Models (digits small-CNN, trained here in a temporary workspace): `none`, `tensor-dropout`
theta 0.8, `feature-squeezing` (3 bits, declared non-differentiable), and three defenses that
hide their nature, each wrapping the `none` model and declared ordinary: input rounding with
torch.round, logits x 1e4, Gaussian input noise (sigma 0.1) in forward.

For each: `robench.evaluate` with the papers' suite (fgsm, pgd; their worst-case row), with the
verdict and the convergence check on, at --eps on --n examples; and an independent attack
written here: PGD with 100 steps of eps/4 (halved at 50% and 75%), random start, 5 restarts
(BPDA through the rounding / squeezing, the CW margin loss on scaled logits, EOT over 10
samples on a random model, averaged over 3 evaluations). Printed: the three accuracies, the
flags, and the cost of the verdict attack and of the convergence check as ratios of the suite's
own time (from the rows' `seconds`).

    python benchmarks/verdict_table.py --n 100 --epochs 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

import robench  # noqa: E402
from robench.data import load_dataset, subset  # noqa: E402
from robench.flags import compute_flags  # noqa: E402
from robench.training import TrainConfig, train  # noqa: E402
from robench.workspace import Workspace  # noqa: E402
from test_verdict import Noisy, Rounded, Scaled, strong_pgd  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--eps", type=float, default=32 / 255)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--only", default="", help="comma-separated model names to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        for name, defense, params in (("none", "none", {}), ("td0.8", "tensor-dropout", {"theta": 0.8})):
            train(TrainConfig(epochs=args.epochs, seed=0, defense=defense, defense_params=params), ws, name=name, data_dir=args.data_dir, console=quiet)
        base = robench.load("none", workspace=ws.root).model
        td = robench.load("td0.8", workspace=ws.root).model
        data = load_dataset("digits", args.data_dir)
        x, y = subset(data.test_x, data.test_y, args.n, 0)
        models = {
            "none": (base, {}, lambda: strong_pgd(base, x, y, args.eps)),
            "tensor-dropout 0.8": (td, {}, lambda: _mean(lambda: strong_pgd(td, x, y, args.eps, eot=10, restarts=1))),
            "feature-squeezing 3 bits": (base, {"defense": "feature-squeezing", "defense_params": {"squeeze_bits": 3}}, None),
            "rounding (hidden)": (Rounded(base), {}, lambda: strong_pgd(Rounded(base, straight_through=True), x, y, args.eps)),
            "logits x 1e4 (hidden)": (Scaled(base), {}, lambda: strong_pgd(Scaled(base), x, y, args.eps, loss="margin")),
            "gaussian noise (hidden)": (Noisy(base), {}, lambda: _mean(lambda: strong_pgd(Noisy(base), x, y, args.eps, eot=10, restarts=1))),
        }
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        lines = []
        for label, (model, extra, independent) in models.items():
            if wanted and label.split()[0] not in wanted:
                continue
            started = time.perf_counter()
            rows = robench.evaluate(model, "digits", suite="fgsm,pgd", eps=args.eps, n=args.n, console=quiet, **extra)
            total = time.perf_counter() - started
            frame = pd.DataFrame(list(rows))
            by = {r["attack"]: r for r in rows}
            suite_s = sum(by[a]["seconds"] for a in ("fgsm", "pgd")) - _check_seconds(by["pgd"])
            added = [r for r in rows if r["attack_options"].get("added_by") == "verdict"]
            verdict_s = sum(r["seconds"] for r in added)
            if independent is None:
                independent = lambda: strong_pgd(_bpda_squeezed(base), x, y, args.eps)  # noqa: E731
            ref = independent()
            flags = sorted({f.id for f in compute_flags(frame)})
            lines.append(
                f"| {label} | {by['worst-case']['robust_acc'] * 100:.1f} | {by['verdict']['robust_acc'] * 100:.1f} ({by['verdict']['attack_options']['set_by']}) | "
                f"{ref * 100:.1f} | {', '.join(flags) or '-'} | {verdict_s / suite_s:.1f}x | {_check_seconds(by['pgd']) / suite_s:.1f}x | {total:.0f} s |"
            )
            print(lines[-1], flush=True)
    print(f"\ndigits small-CNN ({args.epochs} epochs), {args.n} examples, Linf eps {round(args.eps * 255)}/255, 1 thread")
    print("| model | papers' worst-case (fgsm, pgd) % | verdict % (set by) | independent strong PGD % | flags | verdict attack cost / suite | convergence check / suite | wall |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


def _check_seconds(pgd_row: dict) -> float:
    # The check's seconds are added to the row; its passes tell its share (25x the steps x restarts).
    total_passes = pgd_row["forward_passes"] or 1
    steps = pgd_row["steps"] or 1
    own = pgd_row["n"] * steps * max(pgd_row["eot"], 1)
    return pgd_row["seconds"] * max(total_passes - own, 0) / total_passes


def _mean(run, times: int = 3) -> float:
    return sum(run() for _ in range(times)) / times


def _bpda_squeezed(model):
    """Feature squeezing with an identity backward over its whole preprocessing, written here
    from the defense's own forward functions (bit depth, then the median filter)."""
    from robench.defenses.feature_squeezing import median_filter, reduce_bit_depth

    class Squeezed(torch.nn.Module):
        def forward(self, x):
            squeezed = median_filter(reduce_bit_depth(x, 3), 2)
            return model(x + (squeezed - x).detach())

    return Squeezed()


if __name__ == "__main__":
    main()
