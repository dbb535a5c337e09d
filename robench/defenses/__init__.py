"""Defense plugins. Each defense is one module named after it, registered by entry point."""

from robench.defenses.base import Defense, DefenseStack, Param

__all__ = ["Defense", "DefenseStack", "Param"]
