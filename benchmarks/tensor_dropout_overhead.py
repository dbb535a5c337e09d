"""Time one training step of CIFAR ResNet-18: dense vs robench tensor dropout vs tltorch.

Variants, measured side by side in one process, interleaved round-robin (the order rotates every
round so none always runs first), median seconds per step:

1. dense      the plain model,
2. robench    `TensorDropout(theta=0.9, rank=0.5).build(model)` (robench.layers.tucker),
3. tltorch    every Conv2d replaced by `tltorch.FactorizedConv.from_conv(conv, rank=0.5,
              factorization='tucker')` with `tltorch.tensor_dropout(layer.weight, p=0.1)`
              (keep probability 0.9): the Defensive Tensorization paper's own stack. Skipped,
              with a note, when tensorly-torch is not installed (`pip install tensorly-torch`).
              tltorch reads rank=0.5 as half the parameters (e.g. ranks (49, 49, 2, 2) for a
              64x64x3x3 kernel), robench as half of each channel mode ((32, 32, 3, 3)), so
              the two do different work;
4. tltorch=ranks  the same, given robench's Tucker ranks layer by layer ((32, 32, 3, 3) for
              that kernel): the like-for-like comparison. Both ratios are printed,
              robench/tltorch and robench/tltorch=ranks. (tltorch randomizes modes of size > 3
              only; robench every channel mode of rank > 1: the first conv's 3 input channels,
              rank 2, are randomized by robench alone.)
              By default the tltorch layers are randomly initialized (decompose_weights=False):
              the HOOI decomposition of the dense weights takes about a minute on 2 cores and
              does not change the step time; --tltorch-decompose does it anyway.

With --compile two more variants run: `dense+compile` and `robench+compile`, the same models
under torch.compile (inductor). Under compile robench's tensor dropout zeroes dropped latent
indices with fixed-size masks instead of slicing them out (no data-dependent shapes), so the
ratio robench+compile / robench shows what the compiled step costs against the eager one.
Compilation happens in the warmup steps (give --warmup 2 or more), which are not timed.

A step is: zero the gradients, forward, cross-entropy, backward, and (unless --no-optimizer) one
SGD step, the same for every variant. All models are in train mode (batch-norm statistics
update; both tensor-dropout variants sample a fresh weight every forward pass).

    python benchmarks/tensor_dropout_overhead.py --batch 128 --repeats 5 --warmup 1

OpenMP wait policy: unless OMP_WAIT_POLICY is already set, this script sets it to PASSIVE
before torch starts its thread pool. On a machine whose cores are shared with other busy
processes, the default (spinning) policy makes every parallel region wait for a descheduled
worker thread, so each short op costs ~10-30 ms whatever its size: the step time then mostly
counts ops, not work, and swings with the other processes' load (on 2 shared cores, 2 threads,
batch 128, robench/dense ranged 0.79-1.40 across runs of the same code with the spinning policy,
against a steady 0.63 with PASSIVE, close to the 0.65 of a single thread). Run with
OMP_WAIT_POLICY=ACTIVE to measure the default. The header prints the policy in effect.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see the docstring

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.defenses.tensor_dropout import TensorDropout  # noqa: E402
from robench.layers.tucker import TuckerConv2d, ranks_for  # noqa: E402
from robench.models import build_model  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def dense_model() -> nn.Module:
    return build_model("resnet18", 3, 10, (32, 32), CIFAR_MEAN, CIFAR_STD)


def robench_model(base: nn.Module, theta: float, rank: float, implementation: str = "auto") -> nn.Module:
    model = TensorDropout(theta=theta, rank=rank).build(copy.deepcopy(base))
    for module in model.modules():
        if isinstance(module, TuckerConv2d):
            module.implementation = implementation
    return model


def tltorch_model(base: nn.Module, theta: float, rank: float, decompose: bool = False, same_ranks: bool = False) -> nn.Module | None:
    """tltorch's Tucker layers at `rank` as tltorch reads it (a fraction of the parameters), or,
    with `same_ranks`, at the per-mode Tucker ranks robench gives the same layer."""
    try:
        import tltorch
    except ImportError as err:  # optional dependency
        print(f"tltorch not importable ({err}); skipping the tltorch variants (pip install tensorly-torch)")
        return None
    model = copy.deepcopy(base)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                layer_rank = ranks_for(child.weight.shape, rank) if same_ranks else rank
                layer = tltorch.FactorizedConv.from_conv(child, rank=layer_rank, factorization="tucker", decompose_weights=decompose)
                tltorch.tensor_dropout(layer.weight, p=1.0 - theta)
                setattr(parent, name, layer.to(child.weight.device))
    return model


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer | None, device: torch.device):
    """One training step; returns (wall seconds, process CPU seconds)."""
    def step() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - cpu_start

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--theta", type=float, default=0.9, help="keep probability")
    parser.add_argument("--rank", type=float, default=0.5)
    parser.add_argument("--no-optimizer", action="store_true", help="time forward + backward only")
    parser.add_argument("--no-tltorch", action="store_true", help="skip the tltorch variants")
    parser.add_argument("--tltorch-decompose", action="store_true", help="initialize tltorch layers by Tucker decomposition (slow)")
    parser.add_argument("--robench-impl", choices=("auto", "reconstructed", "factorized"), default="auto",
                        help="TuckerConv2d.implementation for the robench variant")
    parser.add_argument("--compile", action="store_true", help="also time dense and robench under torch.compile")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    # tensorly warns about ranks above a mode's size and torch about meshgrid (inside tltorch).
    warnings.filterwarnings("ignore", category=UserWarning)
    base = dense_model()
    variants: dict[str, nn.Module] = {"dense": base, "robench": robench_model(base, args.theta, args.rank, args.robench_impl)}
    if not args.no_tltorch:
        tl_model = tltorch_model(base, args.theta, args.rank, args.tltorch_decompose)
        if tl_model is not None:
            variants["tltorch"] = tl_model
            variants["tltorch=ranks"] = tltorch_model(base, args.theta, args.rank, args.tltorch_decompose, same_ranks=True)

    if args.compile:
        variants["dense+compile"] = copy.deepcopy(base)
        variants["robench+compile"] = copy.deepcopy(variants["robench"])

    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    steps = {}
    for name, model in variants.items():
        model.to(device).train()
        optimizer = None if args.no_optimizer else torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        steps[name] = make_step(torch.compile(model) if name.endswith("+compile") else model, x, y, optimizer, device)

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()} "
          f"(OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), batch {args.batch}, "
          f"repeats {args.repeats} (+{args.warmup} warmup), theta {args.theta}, rank {args.rank}, robench {args.robench_impl}, "
          f"step = forward + backward{'' if args.no_optimizer else ' + SGD'}")
    names = list(steps)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.warmup + args.repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, cpu_seconds = steps[name]()
            if round_ >= args.warmup:
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)

    # Wall time is what the task is about; on a shared machine it also counts the time other
    # processes hold the cores, so the process CPU time (all threads) is shown beside it.
    med = {name: statistics.median(ts) for name, ts in wall.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    print(f"{'variant':<16} {'median s/step':>14} {'min':>8} {'max':>8} {'median CPU s/step':>18}")
    for name in names:
        print(f"{name:<16} {med[name]:>14.4f} {min(wall[name]):>8.4f} {max(wall[name]):>8.4f} {med_cpu[name]:>18.4f}")
    pairs = [("robench", "dense"), ("tltorch", "dense"), ("tltorch=ranks", "dense"), ("robench", "tltorch"), ("robench", "tltorch=ranks"),
             ("robench+compile", "robench"), ("dense+compile", "dense"), ("robench+compile", "dense+compile")]
    print(f"{'ratio':<32} {'wall':>7} {'CPU':>7}")
    for a, b in pairs:
        if a in med and b in med:
            print(f"{a + '/' + b:<32} {med[a] / med[b]:>7.3f} {med_cpu[a] / med_cpu[b]:>7.3f}")


if __name__ == "__main__":
    main()
