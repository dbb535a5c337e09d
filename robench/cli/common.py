"""What the `robench` commands share: the typer apps, the consoles, the common options and helpers."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

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
