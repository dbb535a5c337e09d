"""The `robench` command line: parse, call the library, render. No algorithm lives here."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robench.errors import RobenchError

app = typer.Typer(
    name="robench",
    help="Train defended models, attack them with a standard suite, and compare the results.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Run named suites from benchmarks.toml and check their expected accuracy.", no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(bench_app, name="bench")

out = Console()
err = Console(stderr=True)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace directory [env: ROBENCH_WORKSPACE; default ./robench-workspace].", show_default=False)
DataDirOpt = typer.Option(None, "--data-dir", help="Where datasets live [env: ROBENCH_DATA; default ./data].", show_default=False)
DownloadOpt = typer.Option(False, "--download", help="Download a missing torchvision dataset (needs internet).")
DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda or auto.")


def user_errors(command: Callable) -> Callable:
    """Turn RobenchError into one line on stderr and exit code 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RobenchError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]; completed epochs are saved, re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def _workspace(path: Optional[Path]):
    from robench.workspace import Workspace, default_workspace

    return Workspace(Path(path) if path else default_workspace())


def _data_dir(path: Optional[Path]) -> Path:
    from robench.data import default_data_dir

    return Path(path) if path else default_data_dir()


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
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate [default: 0.1 for sgd, 1e-3 for adam].", show_default=False),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch size."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (momentum 0.9) or adam."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="Weight decay (the paper's CIFAR-10 recipe uses 1e-6)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Epochs where the lr is multiplied by --gamma, e.g. 150,250; 'none' keeps it constant [default: at 150/350 and 250/350 of --epochs, as the paper].", show_default=False),
    gamma: float = typer.Option(0.1, "--gamma", help="Factor applied to the lr at each --schedule epoch (BPFC's recipe: 0.2, i.e. lr/5, /25, /125)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (weights, shuffling, dropout masks)."),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="Train on a seeded, class-stratified subset of this many examples."),
    init: Optional[str] = typer.Option(None, "--init", help="Start from this checkpoint's weights (dense ones are Tucker-decomposed for tensor-dropout)."),
    name: Optional[str] = typer.Option(None, "--name", help="Checkpoint name [default: derived from the settings].", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint of the same name trained with other settings (same settings: resume or reuse)."),
    compile: bool = typer.Option(False, "--compile", help="Run the model under torch.compile."),
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
    config = TrainConfig(
        dataset=dataset, arch=arch, defense=defense, defense_params=_defense_options(ctx.args), epochs=epochs,
        optimizer=optimizer, lr=lr, weight_decay=weight_decay, batch_size=batch_size, schedule=milestones,
        gamma=gamma, seed=seed, train_size=train_size, init=init,
    )
    ws = _workspace(workspace)
    result = run_training(config, ws, name=name, data_dir=_data_dir(data_dir), download=download, device=device, compile=compile, console=err, overwrite=overwrite)
    meta = result.meta
    verb = "already trained" if result.skipped else "trained"
    std = f" ± {100 * meta['clean_acc_std']:.2f} over {meta['clean_acc_runs']} runs" if meta.get("clean_acc_runs", 1) > 1 else ""
    out.print(f"{verb} [bold]{result.name}[/]: clean test accuracy {100 * meta['clean_acc']:.2f}%{std}")
    out.print(f"checkpoint: {ws.checkpoint_dir(result.name)}")


@app.command(epilog=(
    "[bold]Examples[/]\n\n"
    "  robench attack -c td-0.8 --suite fgsm,bim,pgd,aa --eps 2/255,8/255,16/255\n\n"
    "  robench attack -c td-0.8 --suite pgd --eps 8/255 --eot 1          [dim]# the papers' non-adaptive number[/]\n\n"
    "  robench attack -c td-0.8 --suite pgd,aa-rand --eps 8/255 --attack-opt pgd.steps=500 --restarts 5\n\n"
    "  robench attack -c td-0.8 --suite fgsm,pgd --threat black-box --source vgg-substitute\n\n"
    "  robench attack -c td-0.8 --suite pgd --threat omniscient\n\n"
    "  robench attack -c base --suite pgd-l2,deepfool,cw --eps 0.5 --norm L2"
))
@user_errors
def attack(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Checkpoint name in the workspace."),
    suite: str = typer.Option("fgsm,pgd", "--suite", help="Comma-separated attacks (see `robench list attacks`)."),
    eps: str = typer.Option("2/255,8/255", "--eps", help="Comma-separated budgets: fractions like 8/255 or decimals."),
    threat: str = typer.Option("white-box", "--threat", help="white-box, gray-box, black-box (with --source) or omniscient."),
    source: Optional[str] = typer.Option(None, "--source", help="Substitute checkpoint that crafts the examples (black-box)."),
    eot: Optional[int] = typer.Option(None, "--eot", help="Gradient samples per step for a stochastic defense [default: 10; 1 = the papers' non-adaptive attack].", show_default=False),
    bpda: Optional[bool] = typer.Option(None, "--bpda/--no-bpda", help="BPDA through non-differentiable preprocessing [default: on where needed].", show_default=False),
    restarts: int = typer.Option(1, "--restarts", help="Random restarts; each example keeps its strongest candidate."),
    targeted: Optional[str] = typer.Option(None, "--targeted", help="random or least-likely target class (attacks that support it)."),
    norm: Optional[str] = typer.Option(None, "--norm", help="Linf or L2, for attacks that support both [default: each attack's own].", show_default=False),
    ste: Optional[str] = typer.Option(None, "--ste", help="Gradient of sgn in binary (XNOR) layers for the attacker: id (clipped identity), tanh or tanh0.75 [default: the one the model trained with].", show_default=False),
    attack_opt: Optional[list[str]] = typer.Option(None, "--attack-opt", help="ATTACK.OPTION=VALUE, e.g. pgd.steps=500 (repeatable; see `robench list attacks -v`)."),
    n: Optional[int] = typer.Option(1000, "--n", help="Number of test examples (a seeded, class-stratified subset)."),
    runs: int = typer.Option(10, "--runs", help="Evaluations of each example for a stochastic defense (mean, std and majority vote)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Iterations of iterative attacks [default: BIM/PGD floor(min(eps+4, 1.25 eps)), eps in 0..255].", show_default=False),
    step_size: Optional[str] = typer.Option(None, "--step-size", help="Step of BIM/PGD [default: 1/255].", show_default=False),
    seed: int = typer.Option(0, "--seed", help="Seed for the example subset and the attacks."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Must match the checkpoint's dataset [default: the checkpoint's].", show_default=False),
    batch_size: int = typer.Option(256, "--batch-size", help="Examples per attack batch."),
    workspace: Optional[Path] = WorkspaceOpt,
    data_dir: Optional[Path] = DataDirOpt,
    download: bool = DownloadOpt,
    device: str = DeviceOpt,
) -> None:
    """Attack a checkpoint on its dataset's test split; append one CSV row per (attack, eps).

    Stochastic defenses are attacked with EOT and non-differentiable preprocessing with BPDA
    by default; a `worst-case` row counts an example robust only if every attack failed.
    """
    from robench.attacks import parse_attack_options, parse_eps, parse_eps_list, parse_suite
    from robench.evaluation import AttackRun, attack_checkpoint
    from robench.parsing import format_eps

    specs = parse_suite(suite)
    plan = AttackRun(
        suite=specs, eps=parse_eps_list(eps), n=n, seed=seed, runs=runs, steps=steps,
        step_size=parse_eps(step_size, "--step-size") if step_size else None, batch_size=batch_size, threat=threat,
        eot=eot, bpda=bpda, restarts=restarts, targeted=targeted, norm=norm, source=source,
        options=parse_attack_options(attack_opt or [], specs), ste=ste,
    )
    ws = _workspace(workspace)
    rows = attack_checkpoint(ws, checkpoint, plan, data_dir=_data_dir(data_dir), download=download, dataset=dataset, device=device, console=err)
    first = rows[0]
    title = f"{checkpoint} ({first['threat_model']}): accuracy (%) over {first['n']} test examples"
    if first["runs"] > 1:
        title += f", mean ± std of {first['runs']} runs, majority vote"
    table = Table(title=title)
    for column in ("attack", "eps", "steps", "eot", "clean", "robust") + (("majority",) if first["runs"] > 1 else ()) + ("seconds",):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for row in rows:
        spread = (lambda m, s: f"{100 * m:.1f} ± {100 * s:.1f}") if row["runs"] > 1 else (lambda m, s: f"{100 * m:.1f}")
        eps_text = "-" if row["eps"] is None else format_eps(row["eps"], row["norm"])
        cells = [row["attack"], eps_text, str(row["steps"] or "-"), str(row["eot"]),
                 spread(row["clean_acc"], row["clean_acc_std"]), spread(row["robust_acc"], row["robust_acc_std"])]
        if row["runs"] > 1:
            cells.append(f"{100 * row['robust_majority']:.1f}")
        table.add_row(*cells, f"{row['seconds']:.1f}")
    out.print(table)
    if any(row["train_mode_left"] for row in rows):
        out.print("[yellow]warning:[/] an attack left the model in train mode; robench reset it to eval (see `robench report` flags)")
    out.print(f"results appended to {ws.results_csv}")


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
    loaded = import_model(
        name, model, dataset=dataset, weights=weights, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
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
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RobenchError(f"{option} expects comma-separated numbers like 0.4914,0.4822,0.4465, got {text!r}") from None


@app.command(epilog=(
    "[bold]Examples[/]\n\n"
    "  robench report\n\n"
    "  robench report --dataset digits --attack pgd --format markdown --output docs/digits.md\n\n"
    "  robench report --checkpoint base --checkpoint td-0.8 --format json"
))
@user_errors
def report(
    format: str = typer.Option("table", "--format", "-f", help="table, csv, markdown or json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of the screen."),
    dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="Only this dataset (repeatable)."),
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", "-c", help="Only this checkpoint (repeatable)."),
    attack: Optional[list[str]] = typer.Option(None, "--attack", help="Only this attack (repeatable)."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Compare checkpoints: rows attack x eps, one column per checkpoint, best value in bold."""
    from robench.report import FORMATS, Filters, load_results, pivot, render_text, rich_tables, write_output

    if format not in FORMATS:
        raise RobenchError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    from robench.flags import compute_flags, format_flags

    rows = load_results(_workspace(workspace), Filters(dataset, checkpoint, attack))
    tables = pivot(rows)
    flags = format_flags(compute_flags(rows))
    if format == "table" and output is None:
        for table in rich_tables(tables):
            out.print(table)
        if flags:
            out.print(f"[bold yellow]sanity flags[/] (see docs/flags.md)\n{escape(flags)}", soft_wrap=True)
        return
    text = render_text(tables, "markdown" if format == "table" else format)
    if flags and format in ("table", "markdown"):
        text += "\n#### Sanity flags (see docs/flags.md)\n\n```\n" + flags.rstrip() + "\n```\n"
    if output is None:
        sys.stdout.write(text)
    else:
        write_output(text, output)
        out.print(f"wrote {output}")


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
        table = Table(title=f"{result.name}: per layer (FLOPs = multiply-accumulates per image)", title_justify="left")
        for column in ("layer", "shape", "rank", "FLOPs", "after", "ratio", "lin. err", "ReLU err", "iters", "s"):
            table.add_column(column, justify="left" if column in ("layer", "shape") else "right")
        for row in result.layers:
            table.add_row(
                row["layer"], f"{row['in_channels']}->{row['out_channels']} {row['kernel']}", str(row["rank"]),
                _si(row["flops_before"]), _si(row["flops_after"]), f"{row['flops_ratio']:.2f}",
                f"{row['linear_error']:.3f}", f"{row['nonlinear_error']:.3f}", str(row["iterations"] or "-"), f"{row['seconds']:.1f}",
            )
        out.print(table)
    s = result.summary
    table = Table(title=f"{s['source']} -> {result.name} ({s['method']}, rank {s['rank']})", title_justify="left")
    for column in ("model", "params", "FLOPs", "clean %", "ms b1", "speedup", "img/s b128", "speedup "):
        table.add_column(column, justify="left" if column == "model" else "right")
    timed = "speedup" in s
    cell = lambda key, fmt: (fmt.format(s[key]) if key in s else "-")  # noqa: E731
    table.add_row("original", _si(s["params_before"]), _si(s["flops_before"]), f"{100 * s['clean_acc_before']:.2f}",
                  cell("latency_ms_original", "{:.2f}"), "1.00x" if timed else "-", cell("throughput_original", "{:.0f}"), "1.00x" if timed else "-")
    table.add_row("decomposed", _si(s["params_after"]), f"{_si(s['flops_after'])} ({s['flops_ratio']:.2f})", f"{100 * s['clean_acc_after']:.2f}",
                  cell("latency_ms_decomposed", "{:.2f}"), cell("speedup", "{:.2f}x"), cell("throughput_decomposed", "{:.0f}"), cell("throughput_speedup", "{:.2f}x"))
    out.print(table)
    if timed:
        out.print(f"CPU timings: {s.get('threads')} thread(s), median of alternating rounds, accuracy on {s.get('test_size')} test images")
    out.print(f"checkpoint: {ws.checkpoint_dir(result.name)}; fine-tune it with `robench train --init {result.name} --arch {s['arch']} --dataset {s['dataset']}`")


def _si(value: float) -> str:
    """1234567 -> 1.23M: FLOP and parameter counts that fit a narrow terminal."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:g}"


@app.command("list", epilog=(
    "[bold]Examples[/]\n\n  robench list\n\n  robench list defenses --verbose\n\n  robench list attacks"
))
@user_errors
def list_(
    what: str = typer.Argument("all", help="defenses, attacks, datasets, architectures or all."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show each defense's parameters and paper, and each attack's options."),
) -> None:
    """List what robench knows: defenses (plugins), attacks, datasets, architectures."""
    from robench.attacks import ATTACKS
    from robench.data import DATASETS
    from robench.errors import unknown_name
    from robench.models import ARCHITECTURES, EXTERNAL_PREFIXES
    from robench.registry import defenses

    kinds = ("defenses", "attacks", "datasets", "architectures")
    if what not in kinds + ("all",):
        raise unknown_name("list", what, kinds + ("all",))
    for kind in kinds if what == "all" else (what,):
        table = Table(title=kind, title_justify="left")
        table.add_column("name", style="cyan")
        table.add_column("description")
        if kind == "defenses":
            for name, cls in sorted(defenses().items()):
                text = cls.summary
                if verbose:
                    details = [f"  {p.option} (default {p.default}): {p.help}" for p in cls.params]
                    if cls.paper:
                        details.append(f"  source: {cls.paper}")
                    text = "\n".join([text, *details])
                table.add_row(name, text)
        elif kind == "attacks":
            for name, spec in ATTACKS.items():
                text = f"{spec.summary} [{'/'.join(spec.norms)}{', targeted' if spec.targetable else ''}]"
                if verbose and spec.options:
                    text += "\n  options: " + ", ".join(f"{name}.{k}={'paper rule' if v is None else v}" for k, v in spec.options.items())
                table.add_row(name, text)
        else:
            for name, summary in (DATASETS if kind == "datasets" else {**ARCHITECTURES, **EXTERNAL_PREFIXES}).items():
                table.add_row(name, summary)
        out.print(table)


@bench_app.command("run", epilog=(
    "[bold]Examples[/]\n\n  robench bench run quick\n\n  ROBENCH_DATA=../shared/data robench bench run ci\n\n  robench bench run paper-cifar10 --device cuda --data-dir /datasets"
))
@user_errors
def bench_run(
    name: str = typer.Argument(..., help="Suite name in benchmarks.toml."),
    file: Path = typer.Option(Path("benchmarks.toml"), "--file", help="The suites file."),
    retrain: bool = typer.Option(False, "--retrain", help="Retrain checkpoints whose settings changed instead of stopping (unchanged ones are reused)."),
    workspace: Optional[Path] = WorkspaceOpt,
    data_dir: Optional[Path] = DataDirOpt,
    download: bool = DownloadOpt,
    device: str = DeviceOpt,
) -> None:
    """Train what is missing, attack, print the table and check the expected bounds (exit 1 on a regression)."""
    from robench.bench import resolve_suite, run_suite
    from robench.report import Filters, load_results, pivot, rich_tables

    suite = resolve_suite(file, name)
    ws = _workspace(workspace)
    err.print(f"suite [bold]{suite.name}[/]: {suite.description} ({len(suite.runs)} runs)")
    _, failures = run_suite(suite, ws, data_dir=_data_dir(data_dir), download=download, device=device, console=err, retrain=retrain)
    names = [run.name for run in suite.runs]
    for table in rich_tables(pivot(load_results(ws, Filters(checkpoint=names)))):
        out.print(table)
    if failures:
        for failure in failures:
            out.print(f"[bold red]REGRESSION[/] {escape(failure)}", soft_wrap=True)
        raise typer.Exit(1)
    checked = sum(len(run.expect) for run in suite.runs)
    out.print(f"[bold green]ok[/]: {checked} expected bounds hold")


@bench_app.command("list")
@user_errors
def bench_list(file: Path = typer.Option(Path("benchmarks.toml"), "--file", help="The suites file.")) -> None:
    """List the suites of benchmarks.toml."""
    from robench.bench import load_suites, resolve_suite

    table = Table(title=str(file), title_justify="left")
    table.add_column("suite", style="cyan")
    table.add_column("runs", justify="right")
    table.add_column("description")
    for name in load_suites(file):
        suite = resolve_suite(file, name)
        table.add_row(name, str(len(suite.runs)), suite.description)
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
