"""`robench decompose`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from robench.cli.common import DataDirOpt, DownloadOpt, WorkspaceOpt, _data_dir, _workspace, app, err, out, user_errors
from robench.cli.render import decompose_layers_table, decompose_summary_table
from robench.errors import RobenchError


@app.command(epilog=(
    "[bold]Examples[/]\n\n"
    "  robench decompose -c cifar10-vgg16 --method l1 --rank 0.5\n\n"
    "  robench decompose -c cifar10-vgg16 --method l2 --nonlinear --rank 1/4\n\n"
    "  robench decompose -c mnist-lenet --method l1 --rank 0.5,conv3=0.25 --skip none --samples 20000\n\n"
    "  robench train --dataset cifar10 --arch vgg16 --init cifar10-vgg16-l1-r0.5 --epochs 30 --lr 1e-5 --schedule 20 --batch-size 128 --weight-decay 0"
))
@user_errors
def decompose(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Trained checkpoint to decompose."),
    method: str = typer.Option("l1", "--method", "-m", help="l1 (thesis Algorithm 1), l2 (NL2A), tucker2 or cp."),
    rank: str = typer.Option("0.5", "--rank", "-r", help="Fraction m/n of each layer's filters kept, e.g. 0.5 or 1/4, and/or per layer: conv3=0.25."),
    samples: int = typer.Option(100_000, "--samples", help="Output points sampled from the training data per layer (the thesis: 100,000)."),
    skip: str = typer.Option("first,last", "--skip", help="Conv layers left as they are: first, last, conv names, or none."),
    nonlinear: bool = typer.Option(False, "--nonlinear", help="l2 only: NL2A's ReLU-aware approximation instead of the linear one."),
    two_step: bool = typer.Option(False, "--two-step", help="Iterative two-step: fine-tune briefly after each decomposed layer."),
    two_step_batches: int = typer.Option(200, "--two-step-batches", help="SGD batches of each --two-step fine-tune."),
    two_step_lr: float = typer.Option(1e-3, "--two-step-lr", help="Learning rate of each --two-step fine-tune."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="l1: weight of ||E||_1 [default: 1/sqrt(max(n, samples))].", show_default=False),
    tol: float = typer.Option(1e-4, "--tol", help="l1: stop when ||Z - MH - E||_F / ||Z||_F falls below this (eq. 2.20)."),
    max_iter: int = typer.Option(500, "--max-iter", help="l1: iteration cap of the ADM."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and fine-tuning."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per forward pass while sampling and fine-tuning."),
    test_size: Optional[int] = typer.Option(None, "--test-size", help="Measure clean accuracy on a class-stratified subset of the test split [default: all of it].", show_default=False),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure CPU latency (batch 1) and throughput (batch 128) of both models."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the new checkpoint [default: SOURCE-METHOD-rRANK].", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint of that name."),
    workspace: Optional[Path] = WorkspaceOpt,
    data_dir: Optional[Path] = DataDirOpt,
    download: bool = DownloadOpt,
) -> None:
    """Replace conv layers by m basis filters + a 1x1 combination (thesis ch. 2) and save the result as a new checkpoint.

    Prints per-layer FLOPs and error ratios and whole-model parameters, FLOPs, accuracy and CPU
    speed; rows are appended to WORKSPACE/decompositions/*.csv. Fine-tune the result with
    `robench train --init NAME`; attack and report it like any checkpoint.
    """
    from robench.decompose import DecomposeConfig, decompose_checkpoint

    for option, value in (("--two-step-lr", two_step_lr), ("--lambda", lam), ("--tol", tol)):
        if value is not None and not math.isfinite(value):
            raise RobenchError(f"{option} must be a finite number, got {value}")
    if not 0 <= seed <= 2**32 - 1:
        raise RobenchError(f"--seed must be an integer in [0, {2**32 - 1}], got {seed}")
    config = DecomposeConfig(
        method=method, rank=rank, samples=samples, skip=skip, nonlinear=nonlinear, two_step=two_step,
        two_step_batches=two_step_batches, two_step_lr=two_step_lr, lam=lam, tol=tol, max_iter=max_iter,
        seed=seed, batch_size=batch_size,
    )
    ws = _workspace(workspace)
    result = decompose_checkpoint(ws, checkpoint, config, name=name, data_dir=_data_dir(data_dir), download=download, console=err, overwrite=overwrite, test_size=test_size, measure_speed=speed)
    if result.skipped:
        out.print(f"already decomposed with these settings: [bold]{result.name}[/] (pass --overwrite to redo it)")
    if result.layers:
        out.print(decompose_layers_table(result.name, result.layers))
    s = result.summary
    out.print(decompose_summary_table(result.name, s))
    if "speedup" in s:
        out.print(f"CPU timings: {s.get('threads')} thread(s), median of alternating rounds, accuracy on {s.get('test_size')} test images")
    out.print(f"checkpoint: {ws.checkpoint_dir(result.name)}; fine-tune it with `robench train --init {result.name} --arch {s['arch']} --dataset {s['dataset']}`")
