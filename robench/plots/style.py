"""What every robench figure shares: the Agg canvas, the palette, legible sizes, saving by extension.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas and never through pyplot, so
drawing needs no display, touches no global backend and leaves the caller's pyplot state alone.
The palette is Okabe and Ito's (colour-blind safe); each series also gets its own marker and
line style, so lines stay apart on a grayscale print. Contours use viridis for the same reasons.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from pathlib import Path
from typing import Iterator

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robench.errors import RobenchError
from robench.workspace import Workspace, atomic_write_bytes

# Okabe & Ito (2008), black last: it is kept for reference lines (clean accuracy, originals).
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":", "-", "--", "-.", ":"]
CONTOUR_CMAP = "viridis"
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    # Text stays text in SVG/PDF, so a printed or zoomed figure is sharp and searchable.
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}


def series_style(index: int) -> dict[str, str]:
    """Colour, marker and line style of the index-th series (cycling after eight)."""
    return {"color": OKABE_ITO[index % 8], "marker": MARKERS[index % 8], "linestyle": LINESTYLES[index % 8]}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """rcParams are read when artists are created, so the figure must be built inside this."""
    with matplotlib.rc_context(_RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def output_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise RobenchError(f"--output {path} must end in .png, .svg or .pdf (the extension picks the format)")
    return FORMATS[suffix]


def figure_bytes(figure: Figure, fmt: str = "png") -> bytes:
    """The figure encoded as `fmt` (png, svg or pdf): for files, and for pages that inline images."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(buffer, format=fmt, metadata=_metadata(fmt))
    return buffer.getvalue()


def _metadata(fmt: str) -> dict[str, str | None]:
    # Without a creation date, the same data give byte-identical PDF/SVG files.
    return {"CreationDate": None} if fmt == "pdf" else {"Date": None} if fmt == "svg" else {}


def save(figure: Figure, path: Path) -> Path:
    """Write the figure atomically, in the format its extension names."""
    path = Path(path)
    if path.is_dir():
        raise RobenchError(f"--output {path} is a directory; give a file path such as {path / 'plot.png'}")
    atomic_write_bytes(path, figure_bytes(figure, output_format(path)))
    return path


def default_path(workspace: Workspace, *parts: object, ext: str = ".png") -> Path:
    """WORKSPACE/plots/KIND-PART-PART.png from the command's inputs, file-name safe; a long
    name keeps its start and gets a digest of the whole, so different inputs never collide."""
    words = [_safe(str(p)) for p in parts if p is not None and str(p) != ""]
    stem = "-".join(w for w in words if w) or "plot"
    if len(stem) > 120:
        stem = stem[:100].rstrip("-") + "-" + hashlib.sha256(stem.encode()).hexdigest()[:10]
    return workspace.inside(workspace.root / "plots" / f"{stem}{ext}")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+]+", "_", text).strip("._")


def eps_axis(norm: str) -> tuple[float, str]:
    """(factor, label) for an eps axis: Linf budgets on the 0..255 scale, L2 radii as they are."""
    if "L2" in norm and "Linf" not in norm:
        return 1.0, "eps (L2 radius, [0, 1] pixel units)"
    if "L2" in norm:
        return 1.0, "eps ([0, 1] pixel units; Linf and L2 mixed)"
    return 255.0, "eps (Linf, pixel levels on the 0..255 scale)"
