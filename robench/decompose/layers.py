"""Old home of the decomposed layers, kept so existing imports keep working.

They live in `robench.layers.decomposed`: checkpoint loading rebuilds them, and importing
anything under `robench.decompose` runs this package's __init__, which imports robench.checkpoint.
"""

from robench.layers.decomposed import (
    DECOMPOSED,
    TYPES,
    CPConv2d,
    LowRankConv2d,
    Tucker2Conv2d,
    apply_structure,
    build_decomposed,
    conv_layers,
    decomposed_modules,
    replace_module,
    structure_entry,
)

__all__ = [
    "DECOMPOSED", "TYPES", "CPConv2d", "LowRankConv2d", "Tucker2Conv2d", "apply_structure", "build_decomposed",
    "conv_layers", "decomposed_modules", "replace_module", "structure_entry",
]
