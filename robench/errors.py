"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import difflib
from typing import Iterable


class RobenchError(Exception):
    """A mistake in the user's input or environment, explained in one line."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> RobenchError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return RobenchError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known)}.")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept and how to resume, in one line."""
