"""The figures' shared style, labels and atomic saving (PNG plus a vector format).

Figures are built as `matplotlib.figure.Figure` objects (not through pyplot's figure registry),
so a workflow job can draw hundreds of them without pyplot keeping them alive.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

from tokenscope.errors import ConfigError
from tokenscope.io import atomic_path

ENTROPY_LABEL = "Entropy (nats)"


@contextmanager
def figure_style() -> Iterator[None]:
    """Seaborn styling for the figures drawn inside, without changing global rcParams."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def save_figure(fig: Figure, path: str | Path, vector_format: str = "svg") -> list[Path]:
    """Save `fig` as PNG (dpi 150) at `path` and as `vector_format` beside it; close it.

    Each file is written to a temporary file in the same folder and moved into place, so an
    interrupted job never leaves a partial figure. Returns [png path, vector path].
    """
    png = Path(path)
    if png.suffix.lower() != ".png":
        raise ValueError(f"figure path must end in .png: {png}")
    vector_format = vector_format.lower().lstrip(".")
    if vector_format == "png":
        raise ConfigError("vector_format must differ from png (it would overwrite the PNG)")
    vector = png.with_suffix(f".{vector_format}")
    # no timestamps and fixed SVG ids: the same data gives the same bytes on a rerun
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(vector_format)
    try:
        with matplotlib.rc_context({"svg.hashsalt": "tokenscope"}):
            with atomic_path(png) as tmp:
                fig.savefig(tmp, format="png", dpi=150)
            with atomic_path(vector) as tmp:
                fig.savefig(tmp, format=vector_format, metadata=metadata)
    finally:
        plt.close(fig)
    return [png, vector]
