"""`robench bench run` and `robench bench list`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from robench.cli.common import DataDirOpt, DeviceOpt, DownloadOpt, WorkspaceOpt, _data_dir, _workspace, bench_app, err, out, user_errors
from robench.cli.render import suites_table
from robench.errors import RobenchError


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
    executor: str = typer.Option("local", "--executor", help="local (a process pool on this machine), ray (tasks on a Ray cluster) or slurm (jobs through submitit)."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", help="Jobs at a time [default: local: the GPUs, else the cores (1 runs here, in this process); ray: the cluster's CPUs; slurm: 64].", show_default=False),
    gpus_per_job: float = typer.Option(0, "--gpus-per-job", help="GPUs each job asks for (ray, slurm)."),
    cpus_per_job: Optional[int] = typer.Option(None, "--cpus-per-job", help="CPUs (torch threads) each job takes [default: local and a local Ray cluster: cores / --max-parallel; a joined Ray cluster, slurm: 1].", show_default=False),
    address: Optional[str] = typer.Option(None, "--address", help="ray: join this cluster (HOST:PORT or auto) instead of starting a local one."),
    partition: Optional[str] = typer.Option(None, "--partition", help="slurm: the partition."),
    account: Optional[str] = typer.Option(None, "--account", help="slurm: the account to charge."),
    time_limit: int = typer.Option(24 * 60, "--time", help="slurm: each job's time limit in minutes (a job that hits it is requeued and resumes)."),
) -> None:
    """Train what is missing, attack, print the table and check the expected bounds (exit 1 on a regression).

    The suite runs as jobs (train, decompose, attack shards) on a process pool, Ray or SLURM; the
    workspace must be on a file system every worker sees (docs/scale.md).
    """
    from robench.bench import resolve_suite, run_suite
    from robench.executors import EngineOptions
    from robench.report import pivot, results_frame, rich_tables, table_notes

    from robench.distributed import launched

    if launched():
        raise RobenchError("bench run spreads its jobs with --executor; start it without torchrun (torchrun is for one train or attack)")
    options = EngineOptions(executor, max_parallel, gpus_per_job, cpus_per_job, address, partition, account, time_limit)
    suite = resolve_suite(file, name)
    ws = _workspace(workspace)
    for run in suite.runs:
        ws.checkpoint_dir(run.name)  # a name the file system refuses stops here, before anything runs
    err.print(f"suite [bold]{suite.name}[/]: {suite.description} ({len(suite.runs)} runs)")
    rows, failures = run_suite(suite, ws, data_dir=_data_dir(data_dir), download=download, device=device, console=err, retrain=retrain,
                               engine_options=options)
    # This run's rows only: the workspace may hold older rows of the same checkpoints at another
    # --n or eps, which would mix test subsets and settings the bounds below were not checked on.
    if rows:
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


def _suite_jobs(file: Path, name: str, shards: Optional[int]):
    """The suite and its jobs, each attack in as many shards as `bench run` makes by default."""
    from robench.bench import resolve_suite
    from robench.executors import local_workers
    from robench.jobs import plan_jobs

    suite = resolve_suite(file, name)
    return suite, plan_jobs(suite, shards or local_workers())


@bench_app.command("status")
@user_errors
def bench_status(
    name: str = typer.Argument(..., help="Suite name in benchmarks.toml."),
    file: Path = typer.Option(Path("benchmarks.toml"), "--file", help="The suites file."),
    shards: Optional[int] = typer.Option(None, "--shards", help="Shards per attack, as the run used (its --max-parallel) [default: bench run's: the GPUs, else the cores].", show_default=False),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Each job of the suite: done, running, failed or pending, read from the workspace (checkpoints, cell store, job records)."""
    from robench.cli.render import jobs_table
    from robench.jobs import job_state

    suite, jobs = _suite_jobs(file, name, shards)
    ws = _workspace(workspace)
    states = [(job, *job_state(ws, suite.name, job)) for job in jobs]
    out.print(jobs_table(suite.name, [(job.id, ", ".join(job.after), state, detail) for job, state, detail in states]))


@bench_app.command("plan")
@user_errors
def bench_plan(
    name: str = typer.Argument(..., help="Suite name in benchmarks.toml."),
    file: Path = typer.Option(Path("benchmarks.toml"), "--file", help="The suites file."),
    shards: Optional[int] = typer.Option(None, "--shards", help="Shards per attack [default: bench run's: the GPUs, else the cores].", show_default=False),
    data_dir: Optional[Path] = DataDirOpt,
    device: str = DeviceOpt,
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """The suite's jobs and their estimated cost, from a training step and an attack pass timed on the device (or epochs already measured in the workspace)."""
    from robench.cli.render import plan_table
    from robench.cost import estimate

    suite, jobs = _suite_jobs(file, name, shards)
    costs, where = estimate(jobs, _workspace(workspace), _data_dir(data_dir), device, console=err)
    out.print(plan_table(suite.name, where, [(job.id, ", ".join(job.after), seconds, basis) for job, (seconds, basis) in zip(jobs, costs)]))
