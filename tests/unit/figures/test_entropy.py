"""The entropy figures (figures.entropy) on synthetic tokens frames and parquet tables (histogram
counts in DuckDB equal numpy's), and saving them (figures.style)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.figure import Figure

from tokenscope.duckdb_tables import connect
from tokenscope.figures.entropy import (
    entropy_histograms_of_files,
    files_by_model,
    plot_entropy_hist,
    plot_entropy_histograms,
    plot_entropy_per_step,
)
from tokenscope.figures.style import save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def prompt_tokens(
    models: tuple[str, ...] = ("alpha-1b", "beta-7b"), samples: int = 2, steps: int = 12, seed: int = 0
) -> pd.DataFrame:
    """Tokens of one prompt: every model scores `samples` generations of `steps` tokens."""
    rng = np.random.default_rng(seed)
    frames = [
        pd.DataFrame(
            {
                "model": model,
                "source": model,
                "prompt_set": "set",
                "prompt_id": "p7",
                "sample": sample,
                "step": np.arange(steps),
                "entropy": rng.gamma(2.0, 1.0, steps).astype("float32"),
            }
        )
        for model in models
        for sample in range(samples)
    ]
    # shuffled: the plots must sort by step themselves
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=1)


def test_entropy_per_step_one_panel_per_model_with_shared_x():
    tokens = prompt_tokens()
    fig = plot_entropy_per_step(tokens, "Entropy per step, prompt p7")
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 2
    assert axes[0].get_shared_x_axes().joined(axes[0], axes[1])
    # without `models`, panels follow the models' order of appearance in the frame
    assert [ax.get_title() for ax in axes] == list(dict.fromkeys(tokens["model"]))
    beta = [ax.get_title() for ax in axes].index("beta-7b")
    assert fig.get_suptitle() == "Entropy per step, prompt p7"
    assert axes[-1].get_xlabel() == "Generation step (token index)"
    assert axes[0].get_xlabel() == ""
    assert all(ax.get_ylabel() == "Entropy (nats)" for ax in axes)
    # one '-o' line per sample, its points in step order with the frame's values
    lines = axes[beta].get_lines()
    assert len(lines) == 2
    assert lines[0].get_linestyle() == "-" and lines[0].get_marker() == "o"
    expected = tokens[(tokens["model"] == "beta-7b") & (tokens["sample"] == 0)].sort_values("step")
    np.testing.assert_array_equal(lines[0].get_xdata(), np.arange(12))
    np.testing.assert_allclose(lines[0].get_ydata(), expected["entropy"])


def test_entropy_per_step_height_scales_and_models_fix_panels():
    tokens = prompt_tokens(models=("a",))
    one = plot_entropy_per_step(tokens, "t")
    three = plot_entropy_per_step(tokens, "t", models=["c", "a", "b"])
    assert len(one.axes) == 1 and len(three.axes) == 3
    assert three.get_figheight() > one.get_figheight()
    assert [ax.get_title() for ax in three.axes] == ["c", "a", "b"]
    assert len(three.axes[1].get_lines()) == 2 and len(three.axes[0].get_lines()) == 0
    assert "no tokens from c" in three.axes[0].texts[0].get_text()


def test_entropy_per_step_many_samples_get_thin_lines_and_distinct_colours():
    tokens = prompt_tokens(models=("a",), samples=12)
    ax = plot_entropy_per_step(tokens, "t").axes[0]
    lines = ax.get_lines()
    assert len(lines) == 12
    assert max(line.get_linewidth() for line in lines) < 1.0
    assert len({tuple(line.get_color()) for line in lines}) == 12
    assert ax.get_legend() is None


def test_entropy_hist_overlays_models_with_shared_edges_and_log_density():
    tokens = prompt_tokens(steps=200)
    fig = plot_entropy_hist(tokens, "Entropy distribution, prompt p7", bins=30)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "Entropy distribution, prompt p7"
    assert ax.get_xlabel() == "Entropy (nats)" and ax.get_ylabel() == "Density (log scale)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["alpha-1b (n=400)", "beta-7b (n=400)"]
    # 30 bars per model on the same edges; each model's density integrates to 1
    edges = np.histogram_bin_edges(tokens["entropy"].astype("float64"), bins=30)
    for container in ax.containers:
        lefts = np.array([patch.get_x() for patch in container])
        widths = np.array([patch.get_width() for patch in container])
        heights = np.array([patch.get_height() for patch in container])
        assert len(container) == 30
        np.testing.assert_allclose(lefts, edges[:-1])
        assert (heights * widths).sum() == pytest.approx(1.0)
        assert container.patches[0].get_alpha() == pytest.approx(0.7)
    assert len(ax.containers) == 2


def test_entropy_hist_constant_values_and_other_hue():
    tokens = prompt_tokens(models=("a", "b")).assign(entropy=1.5)
    fig = plot_entropy_hist(tokens, "t", bins=10, hue="source")
    ax = fig.axes[0]
    assert ax.get_legend().get_title().get_text() == "source"
    assert len(ax.containers) == 2


def test_save_figure_writes_png_and_vector(tmp_path):
    fig = plot_entropy_hist(prompt_tokens(), "t")
    paths = save_figure(fig, tmp_path / "figs" / "hist.png")
    assert paths == [tmp_path / "figs" / "hist.png", tmp_path / "figs" / "hist.svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert svg.stat().st_size > 0 and b"<svg" in svg.read_bytes()[:2000]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["hist.png", "hist.svg"]  # no temp files left


def test_save_figure_pdf_and_bad_paths(tmp_path):
    paths = save_figure(plot_entropy_per_step(prompt_tokens(), "t"), tmp_path / "steps.png", "pdf")
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match=".png"):
        save_figure(plot_entropy_hist(prompt_tokens(), "t"), tmp_path / "hist.svg")
    assert not (tmp_path / "hist.svg").exists()


def bars(fig) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    return [
        (
            label,
            np.array([p.get_x() for p in container]),
            np.array([p.get_width() for p in container]),
            np.array([p.get_height() for p in container]),
        )
        for label, container in zip(labels, ax.containers, strict=True)
    ]


def test_histograms_counted_in_duckdb_equal_numpy_and_draw_the_same_figure(tmp_path):
    tokens = prompt_tokens(models=("alpha-1b", "beta-7b", "gamma"), steps=3000)
    # values on bin edges and non-finite values: numpy's rules must hold exactly
    values = tokens["entropy"].to_numpy().copy()
    edges = np.histogram_bin_edges(values, bins=50)
    values[:60] = np.repeat(edges[::10].astype("float32"), 10)
    values[60:63] = [np.nan, np.inf, -np.inf]
    tokens = tokens.assign(entropy=values)
    paths = []
    for model in ("alpha-1b", "beta-7b", "gamma"):
        rows = tokens[tokens["model"] == model]
        path = tmp_path / f"{model}.parquet"
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=1000)
        paths.append(path)
    empty = tmp_path / "empty" / "delta.parquet"
    empty.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(tokens.iloc[:0], preserve_index=False), empty)
    con = connect()
    files = files_by_model(con, [*paths, empty])
    assert list(files) == ["alpha-1b", "beta-7b", "gamma", "empty"]
    histograms = entropy_histograms_of_files(con, files, bins=50)
    finite = tokens[np.isfinite(tokens["entropy"].astype("float64"))]
    expected_edges = np.histogram_bin_edges(finite["entropy"].astype("float64"), bins=50)
    np.testing.assert_array_equal(histograms.edges, expected_edges)
    for model in ("alpha-1b", "beta-7b", "gamma"):
        x = finite.loc[finite["model"] == model, "entropy"].astype("float64")
        np.testing.assert_array_equal(histograms.counts[model], np.histogram(x, bins=expected_edges)[0])
    assert histograms.counts["empty"].sum() == 0
    # drawn from the counts, the figure has the bars plot_entropy_hist draws from the values
    from_counts = bars(plot_entropy_histograms(histograms, "t"))
    from_values = bars(plot_entropy_hist(tokens.sort_values("model", kind="stable"), "t", bins=50))
    assert len(from_counts) == len(from_values) == 3
    for (label, x, width, height), (label_v, x_v, width_v, height_v) in zip(from_counts, from_values, strict=True):
        assert label == label_v
        np.testing.assert_allclose(x, x_v, rtol=1e-12)
        np.testing.assert_allclose(width, width_v, rtol=1e-12)
        np.testing.assert_allclose(height, height_v, rtol=1e-12)


def test_histograms_of_files_without_finite_values(tmp_path):
    tokens = prompt_tokens(models=("a",)).assign(entropy=np.nan)
    pq.write_table(pa.Table.from_pandas(tokens, preserve_index=False), tmp_path / "a.parquet")
    histograms = entropy_histograms_of_files(connect(), {"a": tmp_path / "a.parquet"})
    assert histograms.edges.size == 0
    assert "no finite entropy values" in plot_entropy_histograms(histograms, "t").axes[0].texts[0].get_text()
