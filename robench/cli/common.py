"""What the `robench` commands share: the typer apps, the consoles, the common options and helpers."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer >= 0.22 vendors click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # pragma: no cover - older typer, on click
    from click.exceptions import NoSuchOption, UsageError

from robench.distributed import quiet_unless_main
from robench.errors import Interrupted, RobenchError

# What survives Ctrl-C, per command (attack says it itself, with the paths).
INTERRUPTED = {
    "train": "completed epochs are saved; re-run the same command to resume",
    "decompose": "nothing was written; re-run the same command to start it again",
    "run": "completed epochs and attack rows are saved; re-run the same command to resume",
}

def _error_line(message: str) -> None:
    """`error: MESSAGE` as exactly one line on stderr (whitespace, newlines included, squashed)."""
    err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """`warning: MESSAGE` as one line on stderr; the command goes on (e.g. a skipped torn CSV row)."""
    err.print(f"[yellow]warning:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def did_you_mean(word: str, known: list[str]) -> str:
    """`; did you mean --epochs?` for the closest of `known`, or nothing when none is close."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _usage_message(exc: UsageError) -> str:
    if isinstance(exc, NoSuchOption):
        # click lists every possibility, alphabetically; the closest one is the useful hint.
        best = f"; did you mean {exc.possibilities[0]}?" if exc.possibilities else ""
        return f"no such option {exc.option_name}{best}"
    return exc.format_message().rstrip(".")


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `robench` alone prints the help
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _error_line(_usage_message(exc) + hint)
        raise typer.Exit(exc.exit_code) from None


def _literal_brackets(command: Any) -> None:
    """Show `[default: ...]` and `[env: ...]` in option help as typed: under rich markup they
    would read as (unknown) style tags and vanish. Option help has no intended markup; command
    docstrings and epilogs do, and are left alone."""
    if getattr(command, "_robench_literal_help", False):
        return
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
    command._robench_literal_help = True


class OneLineErrors(TyperGroup):
    """Usage mistakes (`--epochs three`, a missing or unknown option) end like every other bad
    input: one `error:` line on stderr and exit code 2, instead of click's usage box; an unknown
    option or command names the closest real one."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _literal_brackets(command)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and not ctx.resilient_parsing and self.get_command(ctx, name) is None:
            raise UsageError(f"no such command {name!r}{did_you_mean(name, self.list_commands(ctx))}", ctx)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=OneLineErrors,
    name="robench",
    help="Train defended models, attack them with a standard suite, and compare the results.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from robench import __version__

        out.print(f"robench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print robench's version and exit."),
) -> None:
    pass


bench_app = typer.Typer(cls=OneLineErrors, help="Run named suites from benchmarks.toml and check their expected accuracy.", no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(bench_app, name="bench")

# Under torchrun, K processes run the same command: rank 0 alone prints tables and progress.
out = quiet_unless_main(Console())
err = quiet_unless_main(Console(stderr=True))

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace directory [env: ROBENCH_WORKSPACE; default: ./robench-workspace].", show_default=False)
DataDirOpt = typer.Option(None, "--data-dir", help="Where datasets live [env: ROBENCH_DATA; default: ./data].", show_default=False)
DownloadOpt = typer.Option(False, "--download", help="Download a missing torchvision dataset (needs internet).")
DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda or auto.")


def user_errors(command: Callable) -> Callable:
    """Turn RobenchError into one line on stderr and exit code 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RobenchError as exc:
            _error_line(str(exc))
            raise typer.Exit(2) from None
        except Interrupted as exc:
            err.print(f"[yellow]{escape(str(exc))}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            err.print(f"[yellow]interrupted[/]; {INTERRUPTED.get(command.__name__, 'nothing was written')}")
            raise typer.Exit(130) from None

    return wrapper


def _workspace(path: Optional[Path], write: bool = True):
    """The workspace of --workspace / ROBENCH_WORKSPACE, refused up front (before any training
    or attack work) when it is a file, or, for commands that write, not writable."""
    from robench.workspace import Workspace, default_workspace

    root = Path(path) if path else default_workspace()
    check_workspace(root, write)
    return Workspace(root)


def check_workspace(root: Path, write: bool = True) -> None:
    fix = "point --workspace (or ROBENCH_WORKSPACE) at a folder you can write to"
    if root.exists() and not root.is_dir():
        raise RobenchError(f"workspace {root} is not a directory; {fix}")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != root and not existing.is_dir():
        raise RobenchError(f"workspace {root} cannot be created: {existing} is a file; {fix}")
    if not write:
        return
    for folder in (existing, root / "checkpoints", root / "results"):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            where = "" if folder == root else f" ({folder} is read-only)" if folder.is_relative_to(root) else f" (cannot create it in the read-only {folder})"
            raise RobenchError(f"workspace {root} is not writable{where}; {fix}")


def _data_dir(path: Optional[Path]) -> Path:
    from robench.data import default_data_dir

    return Path(path) if path else default_data_dir()
