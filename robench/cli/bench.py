"""`robench bench run` and `robench bench list`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from robench.cli.common import DataDirOpt, DeviceOpt, DownloadOpt, WorkspaceOpt, _data_dir, _workspace, bench_app, err, out, user_errors
from robench.cli.render import suites_table


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
    from robench.report import pivot, results_frame, rich_tables, table_notes

    suite = resolve_suite(file, name)
    ws = _workspace(workspace)
    for run in suite.runs:
        ws.checkpoint_dir(run.name)  # a name the file system refuses stops here, before anything runs
    err.print(f"suite [bold]{suite.name}[/]: {suite.description} ({len(suite.runs)} runs)")
    rows, failures = run_suite(suite, ws, data_dir=_data_dir(data_dir), download=download, device=device, console=err, retrain=retrain)
    # This run's rows only: the workspace may hold older rows of the same checkpoints at another
    # --n or eps, which would mix test subsets and settings the bounds below were not checked on.
    frame = results_frame(rows, ws)
    for table in rich_tables(pivot(frame), table_notes(frame)):
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

    out.print(suites_table(str(file), [(name, resolve_suite(file, name)) for name in load_suites(file)]))
