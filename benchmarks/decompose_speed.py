"""CPU speed of `robench decompose`d VGG16 (CIFAR variant), and the ADM solve time of a big layer.

Part 1, inference speed (thesis Table 2.2: 1.76x at rank 1/2 and 2.78x at rank 1/4 for VGG16 on
an i7-7800X). The original VGG16 and its decompositions at each --ranks fraction (every conv but
the first and the last replaced by `LowRankConv2d`, m = rank x n, as `robench decompose` does by
default) are timed side by side in one process, interleaved in rounds, median round per model:
latency per image at batch 1 (mean of --repeats forward passes per round) and throughput at
batch 128. The weights are random: speed does not depend on their values, and CIFAR-10 trained
VGG16 weights are not available here. Every model gets the same inference preparation
(`robench.decompose.speed.prepare`: batch norm folded into the preceding conv -- for a
decomposed layer its 1x1 combination conv, which becomes a single fused 1x1 conv + bias --,
in-place ReLU, channels_last). --plain adds the same models in plain eager NCHW form for
comparison.

Part 2, ADM solve time (Algorithm 1) for a 512-channel layer on --adm-samples output points:
responses of VGG16's conv10 (512 -> 512, 3x3, at 4x4) to CIFAR-10 images from
../shared/data/cifar10-partial (with their mirror images, to reach 100,000 points), or to uniform
noise without that file, through the random-init network or a trained VGG16 checkpoint
(--checkpoint NAME --workspace DIR; raw conv output, no batch-norm scaling). Y_hat = Y (the layer is fitted as
if it were the first one approximated); the time covers the whole `fit_l1` call (centring, H H^T,
the iterations) at rank 1/2 and 1/4, with NL2A's linear solve for comparison.

    python benchmarks/decompose_speed.py --threads 2

OMP_WAIT_POLICY is set to PASSIVE unless already set (see tensor_dropout_overhead.py: on shared
cores the spinning default makes short ops wait for descheduled workers).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.decompose.flops import count_parameters, total_flops  # noqa: E402
from robench.decompose.l1 import fit_l1  # noqa: E402
from robench.decompose.l2 import fit_l2  # noqa: E402
from robench.layers.decomposed import LowRankConv2d, conv_layers, replace_module  # noqa: E402
from robench.decompose.speed import prepare, side_by_side  # noqa: E402
from robench.models import build_model  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
THESIS = {1.0: "8.71 ms (1.00x)", 0.5: "4.94 ms (1.76x)", 0.25: "3.13 ms (2.78x)"}
CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-partial" / "cifar10_exact_subset.npz"


def decomposed(model: torch.nn.Module, rank: float) -> torch.nn.Module:
    model = copy.deepcopy(model)
    for _, path, conv in conv_layers(model)[1:-1]:
        replace_module(model, path, LowRankConv2d(conv, max(1, round(rank * conv.out_channels))))
    return model.eval()


def speed(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    base = build_model("vgg16", 3, 10, (32, 32), CIFAR_MEAN, CIFAR_STD).eval()
    models = {"full": base, **{f"{r:g}": decomposed(base, r) for r in args.ranks}}
    example = torch.rand(1, 3, 32, 32)
    variants = {"prepared": {k: prepare(m) for k, m in models.items()}}
    if args.plain:
        variants["plain eager NCHW"] = {k: copy.deepcopy(m) for k, m in models.items()}
    for label, group in variants.items():
        channels_last = label == "prepared"
        latency = side_by_side(group, (3, 32, 32), 1, args.repeats, args.rounds, channels_last=channels_last)
        batch = side_by_side(group, (3, 32, 32), 128, max(2, args.repeats // 20), args.rounds, channels_last=channels_last)
        print(f"\n## VGG16 CIFAR, {label}, {torch.get_num_threads()} thread(s)\n")
        print("| rank | params | FLOPs (MAC) | latency b1 (ms) | speedup | img/s b128 | speedup | thesis Table 2.2 |")
        print("|---|---|---|---|---|---|---|---|")
        for key, model in models.items():
            rank = 1.0 if key == "full" else float(key)
            print(f"| {key} | {count_parameters(model) / 1e6:.2f}M | {total_flops(model, example) / 1e6:.1f}M | "
                  f"{1000 * latency[key]:.2f} | {latency['full'] / latency[key]:.2f}x | {128 / batch[key]:.0f} | "
                  f"{batch['full'] / batch[key]:.2f}x | {THESIS.get(rank, '-')} |")


class _Stop(Exception):
    pass


@torch.no_grad()
def conv10_responses(samples: int, checkpoint: str | None, workspace: str | None, seed: int = 0) -> tuple[torch.Tensor, str]:
    torch.manual_seed(seed)
    if checkpoint:
        from robench.checkpoint import load_checkpoint
        from robench.workspace import Workspace, default_workspace

        model = load_checkpoint(Workspace(Path(workspace) if workspace else default_workspace()), checkpoint).model
        weights = f"checkpoint {checkpoint}"
    else:
        model = build_model("vgg16", 3, 10, (32, 32), CIFAR_MEAN, CIFAR_STD).eval()
        weights = "random-init weights"
    model.eval()
    _, path, conv = conv_layers(model)[9]
    needed = -(-samples // 16)                      # conv10 sees 4x4 maps at 32x32
    if CIFAR_SUBSET.is_file():
        data = np.load(CIFAR_SUBSET)
        images = torch.from_numpy(np.concatenate([data["train_images"], data["test_images"]])).permute(0, 3, 1, 2).float() / 255
        images = torch.cat([images, images.flip(3)])[:needed]
        source = f"{len(images)} CIFAR-10 subset images and mirrors"
    else:
        images = torch.rand(needed, 3, 32, 32)
        source = f"{needed} uniform noise images"
    captured = []

    def hook(module, inputs, output):
        captured.append(output.permute(0, 2, 3, 1).reshape(-1, output.shape[1]))
        raise _Stop

    handle = conv.register_forward_hook(hook)
    for start in range(0, len(images), 256):
        try:
            model(images[start:start + 256])
        except _Stop:
            pass
    handle.remove()
    y = torch.cat(captured)
    chosen = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:samples]
    return y[chosen].T.contiguous(), f"conv10 {conv.in_channels}->{conv.out_channels} 3x3 ({weights}), {len(chosen)} points from {source}"


def adm(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    y, what = conv10_responses(args.adm_samples, args.checkpoint, args.workspace)
    print(f"\n## ADM solve time, {what} ({time.perf_counter() - started:.0f} s to sample), {torch.get_num_threads()} thread(s)\n")
    print("| method | rank | iterations | final rel. error (eq. 2.20) | linear error ratio | seconds |")
    print("|---|---|---|---|---|---|")
    for rank in args.ranks:
        m = max(1, round(rank * y.shape[0]))
        for name, fit in (("l1", lambda: fit_l1(y, y, m, tol=args.tol)), ("l2", lambda: fit_l2(y, y, m))):
            t = time.perf_counter()
            result = fit()
            seconds = time.perf_counter() - t
            ratio = float((y - result.apply(y)).norm() / y.norm())
            solve = f"{result.rel_error:.2e}" if name == "l1" else "-"
            print(f"| {name} | {rank:g} (m={m}) | {result.iterations} | {solve} | {ratio:.4f} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ranks", type=lambda s: [float(v) for v in s.split(",")], default=[0.5, 0.25])
    parser.add_argument("--repeats", type=int, default=50, help="forward passes per round at batch 1")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--plain", action="store_true", help="also time the models without the inference preparation")
    parser.add_argument("--adm-samples", type=int, default=100_000)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--checkpoint", help="time the ADM on this trained VGG16 checkpoint's conv10 instead of random-init weights")
    parser.add_argument("--workspace", help="workspace of --checkpoint [default: $ROBENCH_WORKSPACE or ./robench-workspace]")
    parser.add_argument("--no-adm", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"# decompose_speed: torch {torch.__version__}, {args.threads} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if not args.no_speed:
        speed(args)
    if not args.no_adm:
        adm(args)


if __name__ == "__main__":
    main()
