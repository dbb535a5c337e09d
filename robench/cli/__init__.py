"""The `robench` command line: parse, call the library, render. No algorithm lives here.

`common` holds the typer app, the consoles and the shared options; each command lives in its own
module and registers itself on the app when imported; `render` builds the rich tables.
"""

from __future__ import annotations

from robench.cli.common import app, bench_app

# Imported for their side effect: each registers its command(s) on `app` / `bench_app`.
# The order is the order of `robench --help`.
from robench.cli import train, attack, import_, report, decompose, list_, bench, plot  # noqa: F401


def main() -> None:
    app()


__all__ = ["app", "bench_app", "main"]
