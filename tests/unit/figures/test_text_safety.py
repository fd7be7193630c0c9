"""Model text in figures (tokens, prompt ids, markers, model names) is shown literally and in a font
that has its glyphs: a token such as `$$\\` must not reach matplotlib's mathtext parser (which raised
ParseException and lost the convergence and logit-lens figures of a math run), and CJK, Thai or
Telugu tokens must not render as boxes (figures.style.literal, figures.style.font_families)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.text import Text

from tokenscope.figures import style
from tokenscope.figures.comparison import plot_trends
from tokenscope.figures.entropy import plot_entropy_hist, plot_entropy_per_step
from tokenscope.figures.internals import (
    plot_attention_positions,
    plot_convergence,
    plot_logit_lens,
    plot_marker_attention,
)
from tokenscope.figures.style import FALLBACK_FONTS, FIGURE_FONT, font_families, literal, save_figure

# Tokens a math or code run produces: mathtext would parse each of them (or fail on it).
MATH_TOKENS = ["$$\\", "$x$", "\\frac", "_", "a_b^c", "$", "\\\\[", "}$$"]
# Scripts DejaVu Sans has no glyphs for, and an emoji outside the Basic Multilingual Plane.
WORLD_TOKENS = ["中文", "テスト", "한국어", "ไทย", "తెలుగు", "🙂"]


def entropy_tokens(prompt_id: str, tokens: list[str]) -> pd.DataFrame:
    n = len(tokens)
    return pd.DataFrame(
        {
            "model": "m",
            "source": "m",
            "prompt_set": "set",
            "prompt_id": prompt_id,
            "sample": 0,
            "step": np.arange(n),
            "token": tokens,
            "entropy": np.linspace(0.5, 2.0, n),
        }
    )


def marker_frame(models: tuple[str, ...] = ("m1", "m2"), shares: tuple[float, ...] = (0.3, 0.2)) -> pd.DataFrame:
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "model": model,
                    "prompt_id": "p",
                    "sample": 0,
                    "step": np.arange(6),
                    "entropy": np.linspace(0.5, 1.5, 6),
                    "marker_share": share,
                    "n_marker_tokens": 2 if share > 0 else 0,
                }
            )
            for model, share in zip(models, shares, strict=True)
        ],
        ignore_index=True,
    )


def attention_frames(tokens: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(tokens)
    with_filler = pd.DataFrame(
        {
            "prompt_id": "p",
            "layer": 1,
            "head": 2,
            "position": np.arange(n + 3),
            "in_span": [False, False, True, True, True] + [False] * (n - 2),
            "token": [*tokens[:2], "...", "...", "...", *tokens[2:]],
            "attention_received": np.linspace(0.1, 0.9, n + 3),
        }
    )
    without = pd.DataFrame(
        {
            "prompt_id": "p",
            "layer": 1,
            "head": 2,
            "position": np.arange(n),
            "in_span": False,
            "token": tokens,
            "attention_received": np.linspace(0.2, 0.8, n),
        }
    )
    return with_filler, without


def convergence_frame(tokens: list[str], depth: int = 4) -> pd.DataFrame:
    n = len(tokens)
    return pd.DataFrame(
        {
            "depth_kind": "layer",
            "depth": np.repeat(np.arange(depth + 1), n),
            "position": np.tile(np.arange(n), depth + 1),
            "token": np.tile(np.asarray(tokens, dtype=object), depth + 1),
            "in_span": False,
            "distance": np.repeat(np.arange(depth + 1)[::-1], n) + 0.5 * np.tile(np.arange(n), depth + 1) + 0.1,
        }
    )


def lens_frame(tokens: list[str], layers: int = 3, span: tuple[int, int] | None = None) -> pd.DataFrame:
    n = len(tokens)
    position = np.tile(np.arange(n), layers)
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(layers), n),
            "position": position,
            "token": np.tile(np.asarray(tokens, dtype=object), layers),
            "in_span": (position >= span[0]) & (position < span[1]) if span else False,
            "entropy": np.linspace(0.1, 3.0, n * layers),
            # the top-1 token of each cell: the tokens again, shifted per layer
            "top_token": [tokens[(p + layer) % n] for layer in range(layers) for p in range(n)],
        }
    )


def trends_frame() -> pd.DataFrame:
    rows = [
        {
            "measure": measure,
            "tokens": source,
            "checkpoint": checkpoint,
            "estimate": 1.0 + 0.1 * checkpoint,
            "ci_low": 0.9,
            "ci_high": 1.4,
        }
        for measure in ("mean_entropy", "p90_entropy")
        for source in ("a", "reference")
        for checkpoint in range(3)
    ]
    return pd.DataFrame(rows)


def figures_with(tokens: list[str]) -> dict[str, Callable[[], Figure]]:
    """Every figure family, with `tokens` wherever model text appears: prompt ids in titles, token
    and top-1 texts in ticks and cells, markers in a panel title."""
    prompt_id = "".join(tokens)
    with_filler, without = attention_frames(tokens)
    title = f"prompt {prompt_id}"
    return {
        "entropy_steps": lambda: plot_entropy_per_step(entropy_tokens(prompt_id, tokens), f"Entropy per step, {title}"),
        "entropy_hist": lambda: plot_entropy_hist(entropy_tokens(prompt_id, tokens), f"Entropy distribution, {title}"),
        "marker_attention": lambda: plot_marker_attention(marker_frame(), tokens[:2], title, condition="model"),
        "attention_positions": lambda: plot_attention_positions(with_filler, without, title),
        "convergence": lambda: plot_convergence(convergence_frame(tokens), title, chunk_tokens=1),
        "logit_lens": lambda: plot_logit_lens(lens_frame(tokens, span=(1, 3)), title),
        "trends": lambda: plot_trends(trends_frame(), title),
    }


def texts_with(fig: Figure, tokens: list[str]) -> list[Text]:
    return [t for t in fig.findobj(Text) if any(token in t.get_text() for token in tokens)]


def draw(fig: Figure, path: Path) -> None:
    """Render the figure as save_figure does (PNG and SVG): mathtext runs at draw time."""
    save_figure(fig, path)


@pytest.mark.parametrize("family", list(figures_with(MATH_TOKENS)))
def test_math_tokens_are_drawn_literally_in_every_figure(family, tmp_path):
    fig = figures_with(MATH_TOKENS)[family]()
    shown = texts_with(fig, MATH_TOKENS)
    assert shown, f"{family}: no text carries the tokens"
    for text in shown:
        assert text.get_parse_math() is False, f"{family}: {text.get_text()!r} would be parsed as mathtext"
        assert text.get_usetex() is False
    draw(fig, tmp_path / f"{family}.png")  # raised ParseException (Expected end of text) on '$$\'
    assert (tmp_path / f"{family}.png").stat().st_size > 0


def test_the_cells_ticks_and_titles_carry_the_text_unchanged():
    tokens = ["$$\\", "$x$", "\\frac", "_"]
    lens = plot_logit_lens(lens_frame(tokens), "Logit lens, prompt $x$")
    ax = lens.axes[0]
    assert ax.get_title() == "Logit lens, prompt $x$"
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    assert {t.get_text() for t in ax.texts} == set(tokens)
    convergence = plot_convergence(convergence_frame(tokens), "t", chunk_tokens=1)
    assert [t.get_text() for t in convergence.axes[0].get_yticklabels()] == tokens


def test_literal_accepts_texts_ticks_legends_and_lists():
    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], label="$x$")
    legend = ax.legend(title="$y$")
    ticks = ax.set_xticks([0, 1], ["$a$", "\\frac"])
    title = ax.set_title("$$\\")
    assert literal(title) is title
    literal(legend)
    literal(ticks)
    for text in [title, *legend.get_texts(), legend.get_title(), *ax.get_xticklabels()]:
        assert text.get_parse_math() is False
        assert list(text.get_fontfamily()) == list(font_families())


def test_model_text_is_set_in_the_figure_font_with_the_fallback_fonts():
    """The mechanism, whether or not a fallback font is installed here: DejaVu Sans first, then only
    fonts matplotlib can find (a missing family would log 'findfont: Font family not found')."""
    families = font_families()
    assert families[0] == FIGURE_FONT == "DejaVu Sans"
    known = {entry.name for entry in font_manager.fontManager.ttflist}
    assert set(families[1:]) <= set(FALLBACK_FONTS) and set(families) <= known
    fig = figures_with(WORLD_TOKENS)["logit_lens"]()
    for text in texts_with(fig, WORLD_TOKENS):
        assert list(text.get_fontfamily()) == list(families)


# --- With the fallback fonts installed (.ci/run installs them) ------------------------------------------


def require_fallback_fonts() -> None:
    """Skip where the fallback fonts are not installed, or fail where TOKENSCOPE_REQUIRE_FONTS=1."""
    missing = sorted(set(FALLBACK_FONTS) - set(font_families()))
    if not missing:
        return
    reason = (
        f"fallback font(s) {', '.join(missing)} not installed "
        "(apt-get install fonts-droid-fallback fonts-unifont; .ci/run does)"
    )
    if os.environ.get("TOKENSCOPE_REQUIRE_FONTS") == "1":
        pytest.fail(f"TOKENSCOPE_REQUIRE_FONTS=1 but {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize("family", ["entropy_steps", "convergence", "logit_lens", "marker_attention"])
def test_cjk_thai_telugu_and_emoji_tokens_have_glyphs(family, tmp_path):
    require_fallback_fonts()
    fig = figures_with(WORLD_TOKENS)[family]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draw(fig, tmp_path / f"{family}.png")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert missing == [], missing[:3]


def test_fonts_installed_after_matplotlibs_font_cache_are_registered(monkeypatch):
    """matplotlib lists the system fonts once, in a cache under ~/.cache/matplotlib: fonts installed
    later (as .ci/run does on a machine that has run matplotlib before) are found by file name."""
    require_fallback_fonts()
    manager = font_manager.fontManager
    monkeypatch.setattr(manager, "ttflist", [e for e in manager.ttflist if e.name not in FALLBACK_FONTS])
    assert style.find_font_families() == font_families()


def test_the_inserted_span_is_named_inserted_tokens_in_the_legends():
    with_filler, without = attention_frames(["a", "b", "c", "d"])
    positions = plot_attention_positions(with_filler, without, "t")
    labels = [t.get_text() for t in positions.axes[0].get_legend().get_texts()]
    assert labels == ["w/o inserted tokens", "w/ inserted tokens", "inserted tokens"]
    lens = plot_logit_lens(lens_frame(["a", "b", "c", "d"], span=(1, 3)), "t")
    assert [t.get_text() for t in lens.axes[0].get_legend().get_texts()] == ["inserted tokens"]
