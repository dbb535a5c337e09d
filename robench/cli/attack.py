"""`robench attack`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from robench.cli.common import DataDirOpt, DeviceOpt, DownloadOpt, WorkspaceOpt, _data_dir, _workspace, app, err, out, user_errors
from robench.cli.render import attack_table
from robench.errors import RobenchError

# Budgets for a dataset without papers of its own (npz:, an imported model's dataset).
FALLBACK_EPS = "2/255,8/255"


def _default_eps_help() -> str:
    from robench.data import DEFAULT_EPS

    return "; ".join(f"{name} {budgets}" for name, budgets in DEFAULT_EPS.items()) + f"; otherwise {FALLBACK_EPS}"


def _default_eps(ws, checkpoint: str) -> str:
    """The budgets of the checkpoint's dataset (its meta.json says which)."""
    from robench.data import DEFAULT_EPS

    dataset = str(ws.read_meta(checkpoint).get("dataset", ""))
    key = dataset.lower().replace("_", "-")
    # `fsdd:SPEAKER` is FSDD with another split: the same units and budgets.
    return DEFAULT_EPS.get(key) or DEFAULT_EPS.get(key.partition(":")[0], FALLBACK_EPS)


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
    eps: Optional[str] = typer.Option(None, "--eps", help=f"Comma-separated budgets: fractions like 8/255 or decimals [default: the dataset's papers': {_default_eps_help()}].", show_default=False),
    threat: str = typer.Option("white-box", "--threat", help="white-box, gray-box, black-box (with --source) or omniscient."),
    source: Optional[str] = typer.Option(None, "--source", help="Substitute checkpoint that crafts the examples (black-box)."),
    eot: Optional[int] = typer.Option(None, "--eot", help="Gradient samples per step for a stochastic defense [default: 10; 1 = the papers' non-adaptive attack].", show_default=False),
    bpda: Optional[bool] = typer.Option(None, "--bpda/--no-bpda", help="BPDA through non-differentiable preprocessing [default: on where needed].", show_default=False),
    restarts: int = typer.Option(1, "--restarts", help="Random restarts; each example keeps its strongest candidate."),
    targeted: Optional[str] = typer.Option(None, "--targeted", help="random or least-likely target class (attacks that support it)."),
    norm: Optional[str] = typer.Option(None, "--norm", help="Linf or L2 (any case), for attacks that support both [default: each attack's own].", show_default=False),
    ste: Optional[str] = typer.Option(None, "--ste", help="Gradient of sgn in binary (XNOR) layers for the attacker: id (clipped identity), tanh or tanh0.75 [default: the one the model trained with].", show_default=False),
    attack_opt: Optional[list[str]] = typer.Option(None, "--attack-opt", help="ATTACK.OPTION=VALUE, e.g. pgd.steps=500 (repeatable; see `robench list attacks -v`)."),
    n: Optional[int] = typer.Option(1000, "--n", help="Number of test examples (a seeded, class-stratified subset)."),
    runs: int = typer.Option(10, "--runs", help="Evaluations of each example for a stochastic defense (mean, std and majority vote)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Iterations of iterative attacks [default: BIM/PGD floor(min(eps+4, 1.25 eps)), eps in 0..255].", show_default=False),
    step_size: Optional[str] = typer.Option(None, "--step-size", help="Step of BIM/PGD [default: 1/255].", show_default=False),
    seed: int = typer.Option(0, "--seed", help="Seed for the example subset and the attacks."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Must match the checkpoint's dataset [default: the checkpoint's].", show_default=False),
    batch_size: int = typer.Option(256, "--batch-size", help="Examples per block: the unit each random draw is seeded by, and that is saved and resumed."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/K: compute only shard I of K of the blocks (run all K, in any order or place; the last one writes the rows).", show_default=False),
    merge: bool = typer.Option(False, "--merge", help="Compute nothing: write the rows from the finished shards (same arguments as the shards)."),
    force_bpda: bool = typer.Option(False, "--force-bpda", help="BPDA through every defense's preprocess, even one declared differentiable (a declaration is not trusted)."),
    verdict: bool = typer.Option(True, "--verdict/--no-verdict", help="Add a reliable attack (APGD-CE + APGD-T, aa-rand for a random model, Square when gradients are masked) when the suite has none, for robench's verdict row per eps; --no-verdict marks a verdict without one weak."),
    convergence_check: bool = typer.Option(True, "--convergence-check/--no-convergence-check", help="Re-run BIM/PGD/MI-FGSM/EOT-PGD with 5x the steps and 5 restarts on min(n, 100) examples; flag rows whose accuracy still drops (not-converged)."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard this checkpoint's saved blocks and start over."),
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
    from robench.evaluation import AttackRun, attack_checkpoint, parse_shard
    from robench.parsing import parse_norm

    specs = parse_suite(suite)
    if norm is not None:
        try:
            norm = parse_norm(norm)
        except ValueError:
            raise RobenchError(f"--norm must be Linf or L2, got {norm!r}") from None
    ws = _workspace(workspace)
    if eps is None:
        eps = _default_eps(ws, checkpoint)
    plan = AttackRun(
        suite=specs, eps=parse_eps_list(eps), n=n, seed=seed, runs=runs, steps=steps,
        step_size=parse_eps(step_size, "--step-size") if step_size else None, batch_size=batch_size, threat=threat,
        eot=eot, bpda=bpda, restarts=restarts, targeted=targeted, norm=norm, source=source,
        options=parse_attack_options(attack_opt or [], specs), ste=ste, shard=parse_shard(shard, merge),
        verdict=verdict, convergence_check=convergence_check, force_bpda=force_bpda,
    )
    rows = attack_checkpoint(ws, checkpoint, plan, data_dir=_data_dir(data_dir), download=download, dataset=dataset, device=device, console=err, fresh=fresh)
    if rows is None:
        if merge:
            raise RobenchError("--merge: some shards are unfinished; run every --shard I/K with the same arguments first")
        out.print(f"shard {shard} finished; the rows are written when all shards are (or run the same command with --merge)")
        return
    out.print(attack_table(checkpoint, rows))
    if any(row["train_mode_left"] for row in rows):
        out.print("[yellow]warning:[/] an attack left the model in train mode; robench reset it to eval (see `robench report` flags)")
    out.print(f"results appended to {ws.results_csv}")
