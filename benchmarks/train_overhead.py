"""Per-epoch training time of `none`, `bpfc`, `pgd-at` (7 steps) and `tensor-dropout`, relative to
`none`, measured side by side in one process.

Each defense trains its own copy of the same network through robench's own loss hooks
(`DefenseStack.loss`, so exactly what `robench train` runs) on the same fixed batches. An
"epoch" is `--batches` optimizer steps; epochs of the variants are interleaved round-robin
with a rotating order, and the median over `--repeats` epochs is reported. The expected costs:
BPFC one extra forward and backward (~2x `none`); PGD-AT `steps` input-gradient passes plus the
training pass (~(steps + 1)x, a little less because crafting needs no weight gradients).

    python benchmarks/train_overhead.py                      # LeNet on MNIST-sized inputs
    python benchmarks/train_overhead.py --arch small-cnn --size 8 --channels 1

Random inputs are used: the time of a step does not depend on the pixel values. OpenMP's wait
policy is set to PASSIVE unless set already (see benchmarks/tensor_dropout_overhead.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.models import build_model  # noqa: E402
from robench.registry import defense_stack  # noqa: E402

VARIANTS = {
    "none": ("none", {}),
    "bpfc": ("bpfc", {"bpfc_k": 7, "bpfc_lambda": 30.0, "bpfc_lambda_schedule": "none"}),
    "pgd-at (7 steps)": ("pgd-at", {"at_eps": 0.3, "at_steps": 7, "at_step_size": 0.01}),
    "tensor-dropout 0.9": ("tensor-dropout", {"theta": 0.9}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="lenet")
    parser.add_argument("--size", type=int, default=28, help="image side")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="optimizer steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x = torch.rand(args.batches, args.batch, args.channels, args.size, args.size)
    y = torch.randint(0, 10, (args.batches, args.batch))
    setups = {}
    for label, (spec, params) in VARIANTS.items():
        stack = defense_stack(spec, params)
        model = stack.build(build_model(args.arch, args.channels, 10, (args.size, args.size), [0.5] * args.channels, [0.25] * args.channels)).train()
        stack.start_epoch(0, 1)
        setups[label] = (stack, model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))

    def epoch(label: str) -> float:
        stack, model, optimizer = setups[label]
        started = time.perf_counter()
        for i in range(args.batches):
            optimizer.zero_grad(set_to_none=True)
            stack.loss(model, x[i], y[i]).backward()
            optimizer.step()
        return time.perf_counter() - started

    for label in setups:  # warm-up: allocator, oneDNN kernels
        epoch(label)
    times: dict[str, list[float]] = {label: [] for label in setups}
    labels = list(setups)
    for r in range(args.repeats):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            times[label].append(epoch(label))

    base = statistics.median(times["none"])
    print(f"{args.arch}, {args.channels}x{args.size}x{args.size}, batch {args.batch}, {args.batches} steps per epoch, "
          f"{args.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, median of {args.repeats}")
    print(f"{'defense':<22}{'s / epoch':>10}{'x none':>9}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:<22}{median:>10.3f}{median / base:>9.2f}")


if __name__ == "__main__":
    main()
