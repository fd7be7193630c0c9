"""The figures' shared style, labels, model text and atomic saving (PNG plus a vector format).

Figures are built as `matplotlib.figure.Figure` objects (not through pyplot's figure registry),
so a workflow job can draw hundreds of them without pyplot keeping them alive.

Model text (tokens, prompt ids, markers, model names) goes through `literal`: matplotlib would
otherwise read a text with two `$` as mathtext (a token `$$\\` raised ParseException when the
figure was drawn; `$x$` showed as an italic x), and draw characters its font lacks (CJK, Thai,
Telugu, emoji) as boxes. The figure font is DejaVu Sans, with the fallback fonts of
`FALLBACK_FONTS` that are installed, glyph by glyph.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import matplotlib
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib import font_manager
from matplotlib.axis import Tick
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text

from tokenscope.errors import ConfigError
from tokenscope.io import atomic_path

ENTROPY_LABEL = "Entropy (nats)"

FIGURE_FONT = "DejaVu Sans"  # matplotlib's own font: Latin, Greek, Cyrillic, math symbols
# Fonts for the characters FIGURE_FONT lacks, family -> file name, tried in this order: Droid Sans
# Fallback for CJK (Debian's fonts-droid-fallback), then GNU Unifont for the rest of the Basic
# Multilingual Plane (Thai, Telugu, Hangul, ...) and Unifont Upper beyond it (emoji) (fonts-unifont).
# .ci/run installs both packages; where they are missing, figures still draw, with boxes for
# those characters.
FALLBACK_FONTS = {
    "Droid Sans Fallback": "DroidSansFallbackFull.ttf",
    "Unifont": "unifont.otf",
    "Unifont Upper": "unifont_upper.otf",
}

Shown = TypeVar("Shown")


def find_font_families() -> tuple[str, ...]:
    """FIGURE_FONT and the installed FALLBACK_FONTS, in order.

    matplotlib lists the system fonts once and caches the list (~/.cache/matplotlib); a fallback
    font installed after that is looked up by its file name among the system fonts and added.
    """
    manager = font_manager.fontManager
    known = {entry.name for entry in manager.ttflist}
    missing = {FALLBACK_FONTS[family] for family in FALLBACK_FONTS if family not in known}
    if missing:
        for path in font_manager.findSystemFonts():
            if Path(path).name in missing:
                manager.addfont(path)
        known = {entry.name for entry in manager.ttflist}
    return (FIGURE_FONT, *[family for family in FALLBACK_FONTS if family in known])


@lru_cache(maxsize=1)
def font_families() -> tuple[str, ...]:
    """The figures' font family list (`find_font_families`, once per process)."""
    return find_font_families()


def literal(shown: Shown) -> Shown:
    """Show model text literally and with the fallback fonts; returns its argument.

    `shown` is a Text, a Tick (its labels), a Legend (its texts and title), or an iterable of
    these (what `Axes.set_xticks(ticks, labels)` returns). Math parsing and usetex are turned off
    on each, so `$`, `\\` and `_` are drawn as they are, and the font family is `font_families()`.
    """
    items: list[Text]
    if isinstance(shown, Text):
        items = [shown]
    elif isinstance(shown, Tick):
        items = [shown.label1, shown.label2]
    elif isinstance(shown, Legend):
        items = [*shown.get_texts(), shown.get_title()]
    elif isinstance(shown, Iterable) and not isinstance(shown, str):
        for item in shown:
            literal(item)
        return shown
    else:
        raise TypeError(f"literal() takes Text, Tick, Legend or an iterable of them, not {type(shown).__name__}")
    for text in items:
        text.set_parse_math(False)
        text.set_usetex(False)
        text.set_fontfamily(list(font_families()))
    return shown


@contextmanager
def figure_style() -> Iterator[None]:
    """Seaborn styling for the figures drawn inside, in the figure font with its fallback fonts,
    without changing global rcParams."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        with matplotlib.rc_context({"font.family": list(font_families())}):
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
        # texts matplotlib creates while drawing (tick labels) in the same fonts as the others
        with matplotlib.rc_context({"svg.hashsalt": "tokenscope", "font.family": list(font_families())}):
            with atomic_path(png) as tmp:
                fig.savefig(tmp, format="png", dpi=150)
            with atomic_path(vector) as tmp:
                fig.savefig(tmp, format=vector_format, metadata=metadata)
    finally:
        plt.close(fig)
    return [png, vector]
