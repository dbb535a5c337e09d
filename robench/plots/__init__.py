"""Figures from robench's models and results, as the papers draw them (`robench plot ...`).

Library first: every function takes a model or a result frame and returns what it drew, so a
script, a test or a report can use the numbers as well as the picture.

- `curves`: robust accuracy vs eps per attack (Defensive Tensorization, Fig. 1);
  `curves_png_bytes(frame)` gives the encoded image for a page that inlines it.
- `landscape`: the loss on a 2-D mesh around an image (Defensive Tensorization, appendix A).
- `samples`: clean / adversarial / perturbation / purified images (Zhao's thesis, Figs. 3.7-4.8).
- `decompose`: per-layer FLOPs and error ratios (thesis, Figs. 2.4-2.8) and the accuracy /
  speedup trade-off of decomposed checkpoints.

`style` holds what all share: the Agg canvas, the Okabe-Ito palette, saving by extension.
Submodules are imported on use: matplotlib loads only when something is drawn.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "curve_points": "curves", "curves_figure": "curves", "plot_curves": "curves", "curves_png_bytes": "curves",
    "Landscape": "landscape", "loss_landscape": "landscape", "landscape_directions": "landscape", "landscape_figure": "landscape",
    "plot_landscape": "landscape", "checkpoint_landscape": "landscape",
    "SampleGrid": "samples", "sample_grid": "samples", "samples_figure": "samples", "plot_samples": "samples", "checkpoint_samples": "samples",
    "decompose_layers": "decompose", "decompose_figure": "decompose", "plot_decompose": "decompose",
    "tradeoff_points": "decompose", "tradeoff_figure": "decompose", "plot_tradeoff": "decompose",
    "figure_bytes": "style", "save": "style", "default_path": "style",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'robench.plots' has no attribute {name!r}")
    return getattr(import_module(f"robench.plots.{_EXPORTS[name]}"), name)
