"""Name -> implementation lookups. Defenses come from the `robench.defenses` entry-point group."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from robench.defenses.base import Defense, DefenseStack, make_stack
from robench.errors import RobenchError

GROUP = "robench.defenses"


@lru_cache(maxsize=1)
def defenses() -> dict[str, type[Defense]]:
    found: dict[str, type[Defense]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the CLI down
            raise RobenchError(f"defense plugin {ep.name!r} ({ep.value}) failed to import: {exc}; reinstall or uninstall that package") from exc
        if not (isinstance(cls, type) and issubclass(cls, Defense)):
            raise RobenchError(f"defense plugin {ep.name!r} ({ep.value}) is not a robench Defense subclass")
        if cls.name != ep.name:
            raise RobenchError(f"defense plugin {ep.value} is registered as {ep.name!r} but names itself {cls.name!r}")
        found[ep.name] = cls
    if not found:
        raise RobenchError("no defenses are registered: robench is not installed as a package; run `pip install -e .`")
    return found


def defense_stack(spec: str, values: dict[str, Any] | None = None) -> DefenseStack:
    return make_stack(spec, dict(values or {}), defenses())
