"""robench's `aa` against the official AutoAttack on the same model and examples.

The official code (github fra31/auto-attack) is never a robench dependency: point
--autoattack-src at a checkout of it (or have `autoattack` importable) and this script puts it
on sys.path for this run only. Both attacks run AutoAttack "standard" (APGD-CE, APGD-T, FAB-T,
Square; 100 iterations, 5000 queries, seed 0) at Linf --eps on the same examples of a digits
small-CNN (`none`, trained for the purpose in a temporary workspace), each example crafted once
(robench with --runs 1, no verdict attack, no convergence check). The attacks run alternately,
--repeats times each, on one thread; the script prints both robust accuracies, the median wall
times and the ratio robench / official.

    python benchmarks/autoattack_parity.py --autoattack-src /path/to/auto-attack --n 100
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

import robench  # noqa: E402
from robench.data import load_dataset, subset  # noqa: E402
from robench.training import TrainConfig, train  # noqa: E402
from robench.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--autoattack-src", type=Path, help="checkout of github.com/fra31/auto-attack")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--eps", type=str, default="32/255")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.autoattack_src:
        sys.path.insert(0, str(args.autoattack_src))
    try:
        from autoattack import AutoAttack
    except ImportError:
        sys.exit("the official AutoAttack is not importable: pass --autoattack-src PATH (a checkout of github.com/fra31/auto-attack)")
    torch.set_num_threads(args.threads)
    eps = _eps(args.eps)

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        train(TrainConfig(epochs=args.epochs, seed=0), ws, name="base", data_dir=args.data_dir, console=Console(quiet=True))
        model = robench.load("base", workspace=ws.root).model.eval()
        data = load_dataset("digits", args.data_dir)
        x, y = subset(data.test_x, data.test_y, args.n, 0)

        def run_robench() -> float:
            rows = robench.evaluate(model, (x, y), suite="aa", eps=eps, n=None, runs=1, batch_size=len(y), verdict=False, convergence_check=False)
            return rows[0]["robust_acc"]

        def run_official() -> float:
            adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, verbose=False, device="cpu")
            adv = adversary.run_standard_evaluation(x, y, bs=len(y))
            with torch.no_grad():
                return (model(adv).argmax(1) == y).double().mean().item()

        times: dict[str, list[float]] = {"robench": [], "official": []}
        accs: dict[str, float] = {}
        for _ in range(args.repeats):
            for label, run in (("robench", run_robench), ("official", run_official)):
                started = time.perf_counter()
                accs[label] = run()
                times[label].append(time.perf_counter() - started)

    robench_s, official_s = statistics.median(times["robench"]), statistics.median(times["official"])
    print(f"digits small-cnn (none, {args.epochs} epochs), {args.n} examples, Linf eps {args.eps}, {args.threads} thread(s), medians of {args.repeats}")
    print(f"  robench aa      robust {accs['robench'] * 100:5.1f}%   {robench_s:7.1f} s")
    print(f"  official AA     robust {accs['official'] * 100:5.1f}%   {official_s:7.1f} s")
    print(f"  robust accuracy difference {100 * (accs['robench'] - accs['official']):+.1f} points; time ratio robench / official {robench_s / official_s:.2f}")


def _eps(text: str) -> float:
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


if __name__ == "__main__":
    main()
