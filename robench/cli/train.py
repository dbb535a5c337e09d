"""`robench train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from robench.cli.common import DataDirOpt, DeviceOpt, DownloadOpt, WorkspaceOpt, _data_dir, _workspace, app, did_you_mean, err, out, user_errors
from robench.errors import RobenchError


def _defense_options(tokens: list[str]) -> dict[str, Any]:
    """Options the train command does not know itself are defense parameters (`--theta 0.8`)."""
    values: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or len(token) == 2:
            raise RobenchError(f"unexpected argument {token!r}; defense parameters are options like --theta 0.8")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            if following is not None and not following.startswith("--"):
                value, index = following, index + 1
            else:
                value = "true"
        values[key.replace("-", "_")] = value
        index += 1
    return values


def _check_misspelled(ctx: typer.Context, defense: str, values: dict[str, Any]) -> None:
    """A leftover option close to one of train's own (`--epoch`) is a typo, not a defense
    parameter: say so, rather than "defense 'none' has no parameter 'epoch'"."""
    from robench.registry import defense_stack

    accepted = defense_stack(defense).param_values
    own = [opt for param in ctx.command.params for opt in getattr(param, "opts", []) if opt.startswith("--")]
    for key in values:
        if key not in accepted:
            option = "--" + key.replace("_", "-")
            hint = did_you_mean(option, own)
            if hint:
                raise RobenchError(f"no such option {option}{hint} (see `robench train --help`)")


def _own_defaults(attribute: str, common: str) -> str:
    """`common`, then the defenses that train with their own value (`10; tensor-dropout 20`)."""
    try:
        from robench.registry import defenses

        own = [f"{name} {getattr(cls, attribute)}" for name, cls in sorted(defenses().items()) if getattr(cls, attribute, None) is not None]
    except RobenchError:
        own = []
    return "; ".join([common, *own])


def _defense_epilog() -> str:
    try:
        from robench.registry import defenses

        lines = []
        for name, cls in sorted(defenses().items()):
            opts = ", ".join(f"{p.option} ({p.default})" for p in cls.params)
            if opts:
                lines.append(f"[bold]{name}[/]: {opts}")
        params = "\n\n".join(lines)
    except RobenchError:
        params = "see `robench list defenses --verbose`"
    return (
        "Defense parameters are passed as options after the defense:\n\n" + params + "\n\n"
        "[bold]Examples[/]\n\n"
        "  robench train --defense tensor-dropout --theta 0.8\n\n"
        "  robench train --dataset mnist --arch lenet --epochs 5 --data-dir ../shared/data\n\n"
        "  robench train --dataset cifar10 --arch resnet18 --epochs 350 --schedule 150,250 --weight-decay 1e-6 --defense tensor-dropout --theta 0.9 --init cifar10-td1\n\n"
        "  robench train --dataset npz:my_images.npz --optimizer adam --lr 1e-3"
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, epilog=_defense_epilog())
@user_errors
def train(
    ctx: typer.Context,
    defense: str = typer.Option("none", "--defense", "-d", help="Defense name; combine with '+' (see `robench list defenses`)."),
    dataset: str = typer.Option("digits", "--dataset", help="digits, mnist, fashion-mnist, cifar10, cifar100, svhn or npz:PATH."),
    arch: str = typer.Option("small-cnn", "--arch", help="small-cnn, lenet, resnet18, vgg16, vgg19, torchvision:NAME, timm:NAME or python:PKG.MODULE:FACTORY."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"Training epochs [default: {_own_defaults('default_epochs', '10')}].", show_default=False),
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Learning rate [default: 1e-3 for adam; for sgd {_own_defaults('default_lr', '0.1')}].", show_default=False),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch size."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (momentum 0.9) or adam."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="Weight decay (the paper's CIFAR-10 recipe uses 1e-6)."),
    momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum, in [0, 1]."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Epochs where the lr is multiplied by --gamma, e.g. 150,250; 'none' keeps it constant [default: at 150/350 and 250/350 of --epochs, as the paper].", show_default=False),
    gamma: float = typer.Option(0.1, "--gamma", help="Factor applied to the lr at each --schedule epoch (BPFC's recipe: 0.2, i.e. lr/5, /25, /125)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (weights, shuffling, dropout masks)."),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="Train on a seeded, class-stratified subset of this many examples."),
    init: Optional[str] = typer.Option(None, "--init", help="Start from this checkpoint's weights (dense ones are Tucker-decomposed for tensor-dropout)."),
    name: Optional[str] = typer.Option(None, "--name", help="Checkpoint name [default: derived from the settings].", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint of the same name trained with other settings (same settings: resume or reuse)."),
    compile: bool = typer.Option(False, "--compile", help="Run the model under torch.compile."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="Under torchrun on GPUs: batch-norm statistics over the global batch (SyncBatchNorm) instead of each process's share."),
    workspace: Optional[Path] = WorkspaceOpt,
    data_dir: Optional[Path] = DataDirOpt,
    download: bool = DownloadOpt,
    device: str = DeviceOpt,
) -> None:
    """Train a (defended) model and save it as a checkpoint in the workspace.

    Re-running an interrupted command resumes from the last completed epoch.
    """
    from robench.training import TrainConfig, train as run_training

    milestones = None
    if schedule is not None:
        try:
            milestones = [] if schedule.strip().lower() == "none" else [int(p) for p in schedule.split(",") if p.strip()]
        except ValueError:
            raise RobenchError(f"--schedule expects comma-separated epochs like 150,250 or 'none', got {schedule!r}") from None
    defense_params = _defense_options(ctx.args)
    _check_misspelled(ctx, defense, defense_params)
    config = TrainConfig(
        dataset=dataset, arch=arch, defense=defense, defense_params=defense_params, epochs=epochs,
        optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size, schedule=milestones,
        gamma=gamma, seed=seed, train_size=train_size, init=init,
    )
    ws = _workspace(workspace)
    result = run_training(config, ws, name=name, data_dir=_data_dir(data_dir), download=download, device=device, compile=compile, console=err, overwrite=overwrite, sync_bn=sync_bn)
    meta = result.meta
    verb = "already trained" if result.skipped else "trained"
    std = f" ± {100 * meta['clean_acc_std']:.2f} over {meta['clean_acc_runs']} runs" if meta.get("clean_acc_runs", 1) > 1 else ""
    out.print(f"{verb} [bold]{result.name}[/]: clean test accuracy {100 * meta['clean_acc']:.2f}%{std}")
    out.print(f"checkpoint: {ws.checkpoint_dir(result.name)}")
