"""Name -> implementation lookups, all of one shape: `Registry`. Attacks, architectures, datasets and
decomposition methods fill theirs where they are defined; defenses come from the
`robench.defenses` entry-point group, loaded on first use (`defenses()`).

This module imports nothing of robench at load time but `robench.errors`, so that any module can
define a registry without an import cycle.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache, partial
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from robench.errors import RobenchError, unknown_name

if TYPE_CHECKING:
    from robench.defenses.base import Defense, DefenseStack

__all__ = ["GROUP", "Registry", "defense_stack", "defenses"]

GROUP = "robench.defenses"
T = TypeVar("T")
_RAISE: Any = object()


class Registry(Generic[T]):
    """Names -> items, each with a one-line summary.

    `get(name)` is the lookup for names users type: stripped and normalized (`normalize`, e.g.
    lower case), and an unknown name raises a one-line `RobenchError` with close matches. An entry
    added with `prefix=True` is named `PREFIX:PLACEHOLDER` (`npz:PATH`) and matches any
    `PREFIX:ARGUMENT`; its item must be a callable, and `get` returns it with the argument bound
    first. Otherwise it reads like a dict of name -> item (`in`, `[]`, iteration, `len`, `items()`),
    in the order the entries were added, and `names(pattern)` filters the names with fnmatch.
    """

    def __init__(self, kind: str, normalize: Callable[[str], str] | None = None) -> None:
        self.kind = kind
        self._normalize = normalize or (lambda name: name)
        self._items: dict[str, T] = {}
        self._summaries: dict[str, str] = {}
        self._prefixes: dict[str, str] = {}

    def add(self, name: str, item: T, summary: str, *, prefix: bool = False) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if prefix:
            head, colon, _ = name.partition(":")
            if not colon:
                raise ValueError(f"prefix entry {name!r} must look like PREFIX:PLACEHOLDER")
            self._prefixes[self._normalize(head)] = name
        self._items[name] = item
        self._summaries[name] = summary
        return item

    def get(self, name: str, default: Any = _RAISE) -> T:
        """The item `name` resolves to; `default` (when given) instead of the unknown-name error."""
        text = name.strip()
        head, colon, argument = text.partition(":")
        if colon and self._normalize(head) in self._prefixes:
            return partial(self._items[self._prefixes[self._normalize(head)]], argument)  # type: ignore[return-value]
        key = self._normalize(text)
        if key in self._items:
            return self._items[key]
        if default is not _RAISE:
            return default
        raise unknown_name(self.kind, name, self._items)

    def names(self, pattern: str = "*") -> list[str]:
        return fnmatch.filter(list(self._items), pattern)

    def summary(self, name: str) -> str:
        return self._summaries[name]

    def summaries(self) -> dict[str, str]:
        return dict(self._summaries)

    # The dict protocol: exact names, as registered.
    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __setitem__(self, name: str, item: T) -> None:
        self._items[name] = item
        self._summaries.setdefault(name, str(getattr(item, "summary", "")))

    def __delitem__(self, name: str) -> None:
        del self._items[name]
        del self._summaries[name]
        self._prefixes = {k: v for k, v in self._prefixes.items() if v != name}

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self):
        return self._items.keys()

    def values(self):
        return self._items.values()

    def items(self):
        return self._items.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"


@lru_cache(maxsize=1)
def defenses() -> Registry[type[Defense]]:
    """The installed defenses (robench's own and plugins), by name, loaded on the first call."""
    from robench.defenses.base import Defense

    classes: dict[str, type[Defense]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the CLI down
            raise RobenchError(f"defense plugin {ep.name!r} ({ep.value}) failed to import: {exc}; reinstall or uninstall that package") from exc
        if not (isinstance(cls, type) and issubclass(cls, Defense)):
            raise RobenchError(f"defense plugin {ep.name!r} ({ep.value}) is not a robench Defense subclass")
        if cls.name != ep.name:
            raise RobenchError(f"defense plugin {ep.value} is registered as {ep.name!r} but names itself {cls.name!r}")
        classes[ep.name] = cls
    found: Registry[type[Defense]] = Registry("defense")
    for name in sorted(classes):
        found.add(name, classes[name], classes[name].summary)
    if not found:
        raise RobenchError("no defenses are registered: robench is not installed as a package; run `pip install -e .`")
    return found


def defense_stack(spec: str, values: dict[str, Any] | None = None) -> DefenseStack:
    from robench.defenses.base import make_stack

    return make_stack(spec, dict(values or {}), defenses())
