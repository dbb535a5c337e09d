"""`robench list`."""

from __future__ import annotations

import typer

from robench.cli.common import app, out, user_errors
from robench.cli.render import attack_description, defense_description, names_table


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
        if kind == "defenses":
            entries = [(name, defense_description(cls, verbose)) for name, cls in sorted(defenses().items())]
        elif kind == "attacks":
            entries = [(name, attack_description(name, spec, verbose)) for name, spec in ATTACKS.items()]
        else:
            entries = list((DATASETS.summaries() if kind == "datasets" else {**ARCHITECTURES.summaries(), **EXTERNAL_PREFIXES.summaries()}).items())
        out.print(names_table(kind, entries))
