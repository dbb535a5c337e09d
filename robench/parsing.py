"""Reading and writing the values users type: switches, numbers and fractions, attack budgets.

The command line, `benchmarks.toml`, defense parameters and attack options all accept the same
spellings (`yes`, `8/255`) and results show budgets the same way, so these rules live here once.
The functions raise ValueError and leave the wording of the error to the caller, which knows the
option's name. This is the bottom layer: it may import no robench module other than `robench.errors`.
"""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(raw: Any) -> bool:
    """A bool as is; otherwise 1/true/yes/on or 0/false/no/off in any case, spaces around ignored.

    Raises ValueError for anything else.
    """
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(raw)


def parse_number(text: str) -> float:
    """A decimal (`0.03`, `1e-3`) or a fraction of two decimals (`8/255`, `1/4`) as a float.

    The fraction is computed as float(numerator) / float(denominator), which for integers is the
    correctly rounded value (the same as `fractions.Fraction`). Raises ValueError when the text
    is neither, or the denominator is zero.
    """
    if "/" not in text:
        return float(text)
    numerator, denominator = text.split("/", 1)
    try:
        return float(numerator) / float(denominator)
    except ZeroDivisionError:
        raise ValueError(f"{text!r} divides by zero") from None


NORMS = ("Linf", "L2")


def parse_norm(text: str) -> str:
    """`Linf` or `L2` from any case (`linf`, `LINF`, `l2`), spaces around ignored.

    Raises ValueError for anything else.
    """
    for norm in NORMS:
        if str(text).strip().lower() == norm.lower():
            return norm
    raise ValueError(text)


def eps_over_255(eps: float) -> str:
    """A budget on the 0..255 pixel scale, as the papers write it: `8/255`, `0.5/255`."""
    return f"{eps * 255:g}/255"


def format_eps(eps: float, norm: str) -> str:
    """A budget as results show it: Linf on the 0..255 scale (`8/255`), an L2 radius as a decimal."""
    return f"{eps:g}" if norm == "L2" else eps_over_255(eps)


def eps_pixels(eps: float) -> str:
    """A budget in 0..255 pixel levels without the `/255`, for compact labels: `8`, `76.5`, `0.33`.

    Two decimals at most, trailing zeros dropped.
    """
    return f"{eps * 255:.2f}".rstrip("0").rstrip(".")


def ellipsize(text: str, width: int = 24) -> str:
    """`text` cut to `width` characters, the last one an ellipsis when anything was cut: long
    checkpoint names would otherwise push a progress bar off an 80-column line."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"
