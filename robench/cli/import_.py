"""`robench import`."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional

import typer

from robench.cli.common import DataDirOpt, WorkspaceOpt, _data_dir, _workspace, app, out, user_errors
from robench.errors import RobenchError


@app.command("import", epilog=(
    "[bold]Examples[/]\n\n"
    "  robench import my-cnn --model my_models.cnn:build --weights cnn.safetensors --dataset mnist\n\n"
    "  robench import my-resnet --model my_models:resnet --weights resnet.pth --dataset cifar10 --mean 0.4914,0.4822,0.4465 --std 0.247,0.2435,0.2616\n\n"
    "  robench attack -c my-cnn --suite fgsm,pgd --eps 0.1,0.3"
))
@user_errors
def import_(
    name: str = typer.Argument(..., help="Name of the new checkpoint."),
    model: str = typer.Option(..., "--model", help="PKG.MODULE:FACTORY, a callable returning your nn.Module (importable; PYTHONPATH counts)."),
    dataset: str = typer.Option(..., "--dataset", help="The dataset the model classifies (its test split is what `attack` uses)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A .safetensors file or a .pt/.pth state dict (never a pickled module) [default: the factory's own weights].", show_default=False),
    mean: Optional[str] = typer.Option(None, "--mean", help="Per-channel mean to normalize with inside the model, e.g. 0.1307 [default: none, the network normalizes itself].", show_default=False),
    std: Optional[str] = typer.Option(None, "--std", help="Per-channel std, with --mean.", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint of that name."),
    workspace: Optional[Path] = WorkspaceOpt,
    data_dir: Optional[Path] = DataDirOpt,
) -> None:
    """Turn your own trained network into a robench checkpoint (safetensors + meta.json).

    Afterwards `attack`, `report`, `decompose` and `train --init` treat it like a trained one;
    meta.json records the factory, the normalization and the weights file's sha256.
    """
    from robench.api import import_model

    if (mean is None) != (std is None):
        raise RobenchError("--mean and --std go together; give both or neither")
    mean_values, std_values = _floats(mean, "--mean"), _floats(std, "--std")
    if mean_values is not None and len(mean_values) != len(std_values):
        raise RobenchError(f"--mean has {len(mean_values)} values and --std {len(std_values)}; give one of each per input channel")
    with warnings.catch_warnings():
        # torch warns about a foreign .pt's pickle protocol before refusing it; the refusal says it all.
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        loaded = import_model(
            name, model, dataset=dataset, weights=weights, mean=mean_values, std=std_values,
            workspace=_workspace(workspace), data_dir=_data_dir(data_dir), overwrite=overwrite,
        )
    meta = loaded.meta
    std_text = f" ± {100 * meta['clean_acc_std']:.2f} over {meta['clean_acc_runs']} runs (randomness detected)" if meta["clean_acc_runs"] > 1 else ""
    out.print(f"imported [bold]{name}[/] ({model}): clean test accuracy {100 * meta['clean_acc']:.2f}%{std_text}")
    out.print(f"checkpoint: {_workspace(workspace).checkpoint_dir(name)}")


def _floats(text: Optional[str], option: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RobenchError(f"{option} expects comma-separated numbers like 0.4914,0.4822,0.4465, got {text!r}") from None
    if not values:
        raise RobenchError(f"{option} is empty; give one number per input channel, like 0.4914,0.4822,0.4465")
    if not all(math.isfinite(v) for v in values) or (option == "--std" and not all(v > 0 for v in values)):
        kind = "positive finite numbers" if option == "--std" else "finite numbers"
        raise RobenchError(f"{option} must be {kind}, got {text!r}")
    return values
