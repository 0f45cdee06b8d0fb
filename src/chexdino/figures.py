"""How every report figure is made: a Figure on the Agg canvas, saved as PNG.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas directly (no pyplot),
so plotting works headless on cluster nodes, leaves no global figure state behind and never
depends on the user's configured backend.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110
"""Resolution of report PNGs: sharp in the HTML report, small on disk."""


def new_figure(width: float, height: float) -> Figure:
    """A figure attached to the Agg canvas (headless, independent of pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_png: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG, creating the parent directory."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi, format="png")
    return out_png
