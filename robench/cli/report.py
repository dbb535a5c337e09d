"""`robench report`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from robench.cli.common import WorkspaceOpt, _workspace, app, out, user_errors, warn
from robench.errors import RobenchError


@app.command(epilog=(
    "[bold]Examples[/]\n\n"
    "  robench report\n\n"
    "  robench report --dataset digits --attack pgd --format markdown --output docs/digits.md\n\n"
    "  robench report --checkpoint base --checkpoint td-0.8 --format json\n\n"
    "  robench report --format csv --output rows.csv\n\n"
    "  robench report --format html --output report.html"
))
@user_errors
def report(
    format: str = typer.Option("table", "--format", "-f", help="table, markdown, json (wide tables), csv (tidy rows, the results CSV's columns) or html (one offline page)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of the screen."),
    dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="Only this dataset (repeatable)."),
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", "-c", help="Only this checkpoint (repeatable)."),
    attack: Optional[list[str]] = typer.Option(None, "--attack", help="Only this attack (repeatable)."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Compare checkpoints: rows attack x eps, one column per checkpoint, best value in bold."""
    from robench.report import (
        FORMATS,
        Filters,
        check_output,
        load_results,
        pivot,
        render_text,
        rich_tables,
        table_notes,
        tidy_csv,
        write_output,
    )

    if format not in FORMATS:
        raise RobenchError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if output is not None:
        check_output(output)
    from robench.flags import compute_flags, format_flags

    ws = _workspace(workspace, write=False)
    filters = Filters(dataset, checkpoint, attack)
    rows = load_results(ws, filters, warn=warn)
    if format == "csv":
        text = tidy_csv(rows)
    elif format == "html":
        from robench.html_report import render_html

        text = render_html(rows, ws, filters)
    else:
        tables, notes = pivot(rows), table_notes(rows)
        flags = format_flags(compute_flags(rows))
        if format == "table" and output is None:
            for table in rich_tables(tables, notes):
                out.print(table)
            if flags:
                out.print(f"[bold yellow]sanity flags[/] (see docs/flags.md)\n{escape(flags)}", soft_wrap=True)
            return
        text = render_text(tables, "markdown" if format == "table" else format, notes if format != "json" else None)
        if flags and format in ("table", "markdown"):
            text += "\n#### Sanity flags (see docs/flags.md)\n\n```\n" + flags.rstrip() + "\n```\n"
    if output is None:
        sys.stdout.write(text)
    else:
        write_output(text, output)
        out.print(f"wrote {output}")
