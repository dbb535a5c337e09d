"""robench: train defended models, attack them with a standard suite, compare results."""

__version__ = "0.1.0"
