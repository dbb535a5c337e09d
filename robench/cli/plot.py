"""`robench plot ...`: parse, call robench.plots, say where the picture went."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from robench.cli.common import (
    DataDirOpt, DeviceOpt, DownloadOpt, OneLineErrors, WorkspaceOpt, _data_dir, _workspace, app, out, user_errors, warn,
)
from robench.parsing import eps_pixels

plot_app = typer.Typer(
    cls=OneLineErrors, no_args_is_help=True, rich_markup_mode="rich",
    help="Draw figures: robustness curves, loss landscapes, attacked images, decomposition charts (PNG, SVG or PDF).",
)
app.add_typer(plot_app, name="plot")

OutputOpt = typer.Option(None, "--output", "-o", help="File to write; .png, .svg or .pdf picks the format [default: WORKSPACE/plots/NAME.png, named after the inputs].", show_default=False)


def _early(output: Optional[Path]) -> None:
    """Refuse a bad --output (extension, a directory) before any work."""
    if output is not None:
        from robench.plots.style import output_format
        from robench.report import check_output

        output_format(output)
        check_output(output)


def _target(output: Optional[Path], ws, *parts: object) -> Path:
    """--output, or WORKSPACE/plots/KIND-INPUTS.png."""
    from robench.plots.style import default_path

    return output if output is not None else default_path(ws, *parts)


@plot_app.command("curves", epilog=(
    "[bold]Examples[/]\n\n"
    "  robench plot curves\n\n"
    "  robench plot curves --dataset digits -c base -c td-0.8 --attack fgsm --attack pgd\n\n"
    "  robench plot curves --attack worst-case -o figures/robustness.pdf"
))
@user_errors
def curves(
    dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="Only this dataset (repeatable)."),
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", "-c", help="Only this checkpoint (repeatable)."),
    attack: Optional[list[str]] = typer.Option(None, "--attack", help="Only this attack (repeatable; worst-case and verdict too)."),
    output: Optional[Path] = OutputOpt,
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Robust accuracy vs eps: one panel per attack, one line per checkpoint, std over runs as error bars."""
    from robench.plots.curves import check_attack_names, plot_curves
    from robench.report import Filters, load_results

    _early(output)
    check_attack_names(attack)
    ws = _workspace(workspace, write=False)
    rows = load_results(ws, Filters(dataset, checkpoint, attack), warn=warn)
    path = _target(output, ws, "curves", *(dataset or []), *(checkpoint or []), *(attack or []))
    points = plot_curves(rows, path)
    out.print(f"wrote {path} ({points['panel'].nunique()} panels, {points['series'].nunique()} lines)")


@plot_app.command("landscape", epilog=(
    "[bold]Examples[/]\n\n"
    "  robench plot landscape -c td-0.8\n\n"
    "  robench plot landscape -c td-0.8 --eps 32/255 --span-eps 4 --draws 10\n\n"
    "  robench plot landscape -c base --index 7 --steps 61 -o landscape.svg"
))
@user_errors
def landscape(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Checkpoint name in the workspace."),
    index: int = typer.Option(0, "--index", help="Which test image of the checkpoint's dataset."),
    eps: str = typer.Option("8/255", "--eps", help="Budget marked on the plot (the Linf ball), e.g. 8/255."),
    span: Optional[str] = typer.Option(None, "--span", help="Half-width of the mesh in [0, 1] pixel units [default: 0.5, the paper's].", show_default=False),
    span_eps: Optional[float] = typer.Option(None, "--span-eps", help="Half-width of the mesh in multiples of --eps, e.g. 4 for +-4 eps.", show_default=False),
    steps: int = typer.Option(41, "--steps", help="Mesh points per axis (odd: the centre is the image)."),
    draws: int = typer.Option(1, "--draws", help="Stochastic model: 1 = one fixed (seeded) draw, N > 1 = mean loss over N draws."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random direction and of the model's draws."),
    output: Optional[Path] = OutputOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    data_dir: Optional[Path] = DataDirOpt,
    download: bool = DownloadOpt,
    device: str = DeviceOpt,
) -> None:
    """Loss contours around one test image, along sign(input gradient) and a random orthogonal direction, eps ball marked."""
    from robench.attacks import parse_eps
    from robench.plots.landscape import checkpoint_landscape, plot_landscape

    _early(output)
    budget = parse_eps(eps)
    half = parse_eps(span, "--span") if span is not None else None
    ws = _workspace(workspace, write=False)
    result = checkpoint_landscape(ws, checkpoint, index=index, eps=budget, span=half, span_eps=span_eps, steps=steps, draws=draws,
                                  seed=seed, data_dir=_data_dir(data_dir), download=download, device=device)
    width = f"span{span_eps:g}eps" if span_eps is not None else f"span{eps_pixels(half if half is not None else 0.5)}"
    path = _target(output, ws, "landscape", checkpoint, f"i{index}", f"eps{eps_pixels(budget)}", width, f"draws{result.draws}", f"seed{seed}")
    plot_landscape(result.landscape, path, eps=budget, title=result.title)
    out.print(f"wrote {path} (loss at the image {result.centre_loss:.4f}, {result.title.splitlines()[-1]})")


@plot_app.command("samples", epilog=(
    "[bold]Examples[/]\n\n"
    "  robench plot samples -c base --attack pgd --eps 8/255\n\n"
    "  robench plot samples -c tvm --attack pgd --eps 16/255 --n 6\n\n"
    "  robench plot samples -c td-0.8 --attack fgsm --eps 8/255 --eot 1 -o fgsm-samples.pdf"
))
@user_errors
def samples(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Checkpoint name in the workspace."),
    attack: str = typer.Option("pgd", "--attack", help="Attack crafting the images (see `robench list attacks`)."),
    eps: str = typer.Option("8/255", "--eps", help="Budget: a fraction like 8/255 or a decimal."),
    n: int = typer.Option(4, "--n", help="Rows: test images (the class-stratified subset `robench attack --n N --seed S` starts from)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the images picked, the attack and the model's draws."),
    eot: Optional[int] = typer.Option(None, "--eot", help="Gradient samples per step for a stochastic defense [default: 10; 1 = non-adaptive].", show_default=False),
    attack_opt: Optional[list[str]] = typer.Option(None, "--attack-opt", help="ATTACK.OPTION=VALUE, e.g. pgd.steps=50 (repeatable)."),
    output: Optional[Path] = OutputOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    data_dir: Optional[Path] = DataDirOpt,
    download: bool = DownloadOpt,
    device: str = DeviceOpt,
) -> None:
    """A grid, one row per image: clean, adversarial, perturbation (amplified), purified (preprocessing defenses); true and predicted labels."""
    from robench.attacks import get_attack, parse_attack_options, parse_eps
    from robench.plots.samples import checkpoint_samples, plot_samples

    _early(output)
    spec = get_attack(attack)
    budget = parse_eps(eps)
    options = parse_attack_options(attack_opt or [], [spec]).get(spec.name, {})
    ws = _workspace(workspace, write=False)
    grid = checkpoint_samples(ws, checkpoint, spec.name, budget, n=n, seed=seed, eot=eot, options=options,
                              data_dir=_data_dir(data_dir), download=download, device=device)
    path = _target(output, ws, "samples", checkpoint, spec.name, f"eps{eps_pixels(budget)}", f"n{n}", f"seed{seed}")
    plot_samples(grid, path)
    fooled = sum(p != t for p, t in zip(grid.adv_pred, grid.labels))
    shown = "in the data's units" if grid.waveforms else f"x{grid.scale:.3g}"
    out.print(f"wrote {path} ({grid.rows} rows; {fooled} of {grid.rows} adversarial examples misclassified; perturbation shown {shown})")


@plot_app.command("decompose", epilog=(
    "[bold]Examples[/]\n\n"
    "  robench plot decompose -c cifar10-vgg16-l1-r0.5\n\n"
    "  robench plot decompose -c vgg16-l1-r0.5 -c vgg16-l1-r0.25 -c vgg16-l2-r0.5 -o ranks.pdf"
))
@user_errors
def decompose(
    checkpoint: list[str] = typer.Option(..., "--checkpoint", "-c", help="A `robench decompose` checkpoint (repeatable: side by side)."),
    output: Optional[Path] = OutputOpt,
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Per conv layer: FLOPs before and after, linear and non-linear error ratios (the thesis's Figs. 2.4-2.8)."""
    from robench.plots.decompose import decompose_layers, plot_decompose

    _early(output)
    ws = _workspace(workspace, write=False)
    frame = decompose_layers(ws, checkpoint)
    path = _target(output, ws, "decompose", *dict.fromkeys(checkpoint))
    plot_decompose(frame, path)
    out.print(f"wrote {path} ({frame['layer'].nunique()} layers, {frame['checkpoint'].nunique()} checkpoint(s))")


@plot_app.command("tradeoff", epilog=(
    "[bold]Examples[/]\n\n"
    "  robench plot tradeoff\n\n"
    "  robench plot tradeoff --dataset cifar10 --attack pgd --eps 8/255"
))
@user_errors
def tradeoff(
    dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="Only this dataset (repeatable)."),
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", "-c", help="Only this checkpoint (repeatable)."),
    attack: Optional[str] = typer.Option(None, "--attack", help="The robust accuracy shown [default: verdict, else worst-case, else the first attack].", show_default=False),
    eps: Optional[str] = typer.Option(None, "--eps", help="Comma-separated budgets shown [default: every budget of that attack].", show_default=False),
    output: Optional[Path] = OutputOpt,
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Clean and robust accuracy against CPU speedup and parameters, for decomposed checkpoints and their sources."""
    from robench.attacks import parse_eps_list
    from robench.plots.curves import check_attack_names
    from robench.plots.decompose import plot_tradeoff, tradeoff_points
    from robench.report import Filters, load_results

    _early(output)
    check_attack_names([attack] if attack else None)
    budgets = parse_eps_list(eps) if eps is not None else None
    ws = _workspace(workspace, write=False)
    rows = load_results(ws, Filters(dataset, checkpoint, None), warn=warn)
    points = tradeoff_points(ws, rows, attack, budgets)
    path = _target(output, ws, "tradeoff", *(dataset or []), *(checkpoint or []), attack, *(f"eps{eps_pixels(e)}" for e in budgets or []))
    plot_tradeoff(points, path)
    out.print(f"wrote {path} ({points['checkpoint'].nunique()} checkpoints)")
