"""The token view (report.token_view): pages built from real per-token and pair tables of tiny
models, their embedded data checked against the tables, and the page driven in headless Chromium
(Debian's chromium and chromium-driver, installed by .ci/run): hover a token, read the tooltip,
switch the metric.

Where Chromium or selenium is missing the browser tests skip and say so; with
TOKENSCOPE_REQUIRE_BROWSER=1 (set by .ci/run once the packages are in) they fail instead (the
`browser` fixture, tests/conftest.py, and tests/helpers/browser.py).
"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.inputs.sequences import reference_sequences
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.report.options import TokenViewOptions
from tokenscope.report.pages import ViewInputs
from tokenscope.report.selection import sequence_summaries
from tokenscope.report.token_view import (
    PageContext,
    PairScores,
    TokenRows,
    TokenViewTables,
    build_token_view,
    page_file_name,
    render_index,
    write_token_views,
)
from tokenscope.scoring.cross_scoring import score_pair
from tokenscope.scoring.options import ScoringOptions
from tokenscope.scoring.teacher_forcing import run_teacher_forcing

from helpers.pages import page_data
from helpers.paths import TEST_DATA as DATA


@pytest.fixture(scope="module")
def scored(tiny_loaded, tmp_path_factory):
    """Model 'a' (a tiny Llama) and 'b' (its copy with a perturbed output layer) on the reference
    answers of tests/data/tiny_a.jsonl: b's per-token table, the (a, b) pair table, and b's pages."""
    model_a, tokenizer = tiny_loaded("llama")
    model_b = copy.deepcopy(model_a)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head = model_b.get_output_embeddings().weight
        head.add_(0.5 * torch.randn(head.shape, generator=generator))
    prompts = load_prompt_set(DATA / "tiny_a.jsonl")
    tokens = run_teacher_forcing(
        model_b,
        tokenizer,
        prompts,
        model_name="b",
        prompt_set="tiny_a",
        options=ScoringOptions(n_alternatives=4),
        show_progress=False,
    )
    pairs = score_pair(
        model_a,
        tokenizer,
        model_b,
        tokenizer,
        reference_sequences(tokenizer, prompts),
        model_a_name="a",
        model_b_name="b",
        source="reference",
        prompt_set="tiny_a",
        options=ScoringOptions(n_alternatives=0),
        show_progress=False,
    )
    frame = tokens.drop(["topk_ids", "topk_pieces", "topk_probs"]).to_pandas()
    out = tmp_path_factory.mktemp("token-view")
    rows = TokenRows(
        frame,
        tokens.column("topk_ids").combine_chunks(),
        tokens.column("topk_probs").combine_chunks(),
        pair_scores=[PairScores.of(pairs.to_pandas(), "b")],
    )
    paths = write_token_views(
        rows,
        out,
        PageContext(model="b", prompt_set="tiny_a", source="reference"),
        ViewInputs(VocabularyStrings.from_tokenizer(tokenizer), {p.id: p for p in prompts}),
    )
    pq.write_table(tokens, out / "tokens.parquet", row_group_size=5)
    pq.write_table(pairs, out / "pairs.parquet", row_group_size=5)
    return {
        "tokens": tokens.to_pandas(),
        "pairs": pairs.to_pandas(),
        "paths": paths,
        "out": out,
        "tokenizer": tokenizer,
        "prompts": prompts,
    }


def test_one_page_per_sequence_with_the_tables_values(scored):
    tokens, pairs = scored["tokens"], scored["pairs"]
    sequences = tokens[["prompt_id", "sample"]].drop_duplicates()
    assert sorted(p.name for p in scored["paths"]) == sorted(
        page_file_name(r.prompt_id, r.sample) for r in sequences.itertuples()
    )
    for row in sequences.itertuples():
        data = page_data(scored["out"] / page_file_name(row.prompt_id, row.sample))
        rows = tokens[(tokens.prompt_id == row.prompt_id) & (tokens["sample"] == row.sample)].sort_values("step")
        assert data["tokens"] == rows["token"].tolist() and data["rank"] == rows["rank"].tolist()
        np.testing.assert_allclose(data["prob"], rows["prob"], rtol=1e-5)
        metrics = {m["key"]: m for m in data["metrics"]}
        assert list(metrics) == ["entropy", "surprisal", "varentropy", "margin", "kl:a"]
        assert data["initial_metric"] == "entropy"
        np.testing.assert_allclose(metrics["entropy"]["values"], rows["entropy"], rtol=1e-5)
        np.testing.assert_allclose(metrics["surprisal"]["values"], -rows["logprob"], rtol=1e-5)
        np.testing.assert_allclose(metrics["varentropy"]["values"], rows["varentropy"], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(metrics["margin"]["values"], rows["margin"], rtol=1e-5, atol=1e-9)
        assert {k: m["unit"] for k, m in metrics.items()} == {
            "entropy": "nats",
            "surprisal": "nats",
            "varentropy": "nats²",
            "margin": "nats",
            "kl:a": "nats",
        }
        # The page's model is b, the pair's second model: its KL is KL(b || a).
        kl = rows.merge(pairs, on=["prompt_id", "sample", "position"])["kl_b_a"]
        np.testing.assert_allclose(metrics["kl:a"]["values"], kl, rtol=1e-5, atol=1e-9)
        assert metrics["kl:a"]["label"] == "KL(b ‖ a)"
        offsets = data["alternative_offsets"]
        assert len(offsets) == len(rows) + 1 and all(e - s == 4 for s, e in zip(offsets[:-1], offsets[1:], strict=True))
        np.testing.assert_allclose(data["alternative_probs"], np.concatenate(rows["topk_probs"].tolist()), rtol=1e-5)
        first = scored["tokenizer"].decode([int(rows["topk_ids"].iat[0][0])])
        assert data["alternatives"][0] == first


def test_pages_are_self_contained(scored):
    for path in scored["paths"]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)\s*=|https?://|@import|url\(", text), path


def synthetic_tokens(texts: list[str]) -> tuple[pd.DataFrame, pa.ListArray, pa.ListArray]:
    n = len(texts)
    frame = pd.DataFrame(
        {
            "prompt_id": "p",
            "sample": 0,
            "step": np.arange(n),
            "position": np.arange(n) + 10,
            "token": texts,
            "token_id": np.arange(n) + 1,
            "entropy": np.linspace(0.5, 2.0, n),
            "varentropy": np.linspace(0.1, 3.0, n),
            "margin": np.linspace(0.0, 2.0, n),
            "logprob": -np.linspace(0.1, 1.0, n),
            "prob": np.exp(-np.linspace(0.1, 1.0, n)),
            "rank": 1,
        }
    )
    ids = pa.array([[i + 1, 0] for i in range(n)], type=pa.list_(pa.int32()))
    probs = pa.array([[0.5, 0.25]] * n, type=pa.list_(pa.float32()))
    return frame, ids, probs


def test_token_text_cannot_break_out_of_the_page(scored, tmp_path):
    texts = ["</script><script>window.broken = 1</script>", " <b>bold</b>", "\n", "&amp;"]
    frame, ids, probs = synthetic_tokens(texts)
    pairs = frame[["prompt_id", "sample", "position"]].assign(
        model_a="other", model_b="m", kl_a_b=0.0, kl_b_a=[0.1, np.inf, 0.2, 0.0]
    )
    [path] = write_token_views(
        TokenRows(frame, ids, probs, [PairScores.of(pairs, "m")]),
        tmp_path,
        PageContext("m", "set", "m"),
        ViewInputs(VocabularyStrings.from_tokenizer(scored["tokenizer"])),
        initial_metric="kl",
    )
    text = path.read_text(encoding="utf-8")
    assert text.count("</script>") == 1 and "<b>" not in text
    data = page_data(path)
    assert data["tokens"] == texts and data["initial_metric"] == "kl:other"
    kl = next(m for m in data["metrics"] if m["key"] == "kl:other")
    assert kl["values"][1] == float("inf")


@pytest.fixture(scope="module")
def chosen(scored, tmp_path_factory):
    """b's token view built from the parquet tables: one page (the median of 2: the lower mean
    entropy), plus the sequences of the listed prompt with the higher one."""
    out = tmp_path_factory.mktemp("chosen")
    tokens = scored["tokens"].assign(entropy=lambda f: f["entropy"].astype("float64"))
    highest = tokens.groupby("prompt_id")["entropy"].mean().idxmax()
    view = build_token_view(
        TokenViewTables(scored["out"] / "tokens.parquet", pairs=[scored["out"] / "pairs.parquet"]),
        out / "b",
        out / "b.html",
        PageContext(model="b", prompt_set="tiny_a", source="reference"),
        ViewInputs(VocabularyStrings.from_tokenizer(scored["tokenizer"]), {p.id: p for p in scored["prompts"]}),
        # area has no reference answer: no sequence, no page
        TokenViewOptions(max_pages=1, prompt_ids=(highest, "area")),
    )
    return view


def test_chosen_pages_equal_the_pages_of_every_sequence(scored, chosen):
    tokens = scored["tokens"].assign(entropy=lambda f: f["entropy"].astype("float64"))
    means = tokens.groupby(["prompt_id", "sample"])["entropy"].mean().sort_values()
    lowest, highest = means.index[0], means.index[-1]
    expected = sorted([page_file_name(*lowest), page_file_name(*highest)])
    assert sorted(p.name for p in chosen.pages) == expected and chosen.n_sequences == 2
    for name in expected:
        # the same data as the page written from the whole in-memory table, colour scales included
        built, full = page_data(chosen.pages[0].parent / name), page_data(scored["out"] / name)
        for b, f in zip(built.pop("metrics"), full.pop("metrics"), strict=True):
            assert b.pop("scale_max") == pytest.approx(f.pop("scale_max"), rel=1e-12)
            assert b == f
        assert built == full


def index_rows(path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    rows = re.findall(r"<tr(?: class=paged)?>(.*?)</tr>", text.split("<tbody>", 1)[1])
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]


def test_the_index_lists_every_sequence_and_links_the_pages(scored, chosen):
    summaries = sequence_summaries(duckdb_connection(), scored["out"] / "tokens.parquet").to_pandas()
    rows = index_rows(chosen.index)
    assert [(r[0], int(r[1]), int(r[2])) for r in rows] == list(
        summaries[["prompt_id", "sample", "n_tokens"]].itertuples(index=False, name=None)
    )
    np.testing.assert_allclose([float(r[3]) for r in rows], summaries["mean_entropy"], atol=5e-5)
    np.testing.assert_allclose([float(r[6]) for r in rows], summaries["max_surprisal"], atol=5e-5)
    links = {re.search(r'href="([^"]+)"', r[-1]).group(1) for r in rows if r[-1]}
    assert links == {f"b/{p.name}" for p in chosen.pages}
    for link in links:
        assert (chosen.index.parent / link).is_file()
    text = chosen.index.read_text(encoding="utf-8")
    assert not re.search(r"src\s*=|https?://|@import|url\(", text) and "finish" not in text  # reference answers


def test_max_pages_zero_writes_only_the_index(scored, tmp_path):
    view = build_token_view(
        TokenViewTables(scored["out"] / "tokens.parquet"),
        tmp_path / "b",
        tmp_path / "b.html",
        PageContext(model="b", prompt_set="tiny_a", source="reference"),
        ViewInputs(VocabularyStrings.from_tokenizer(scored["tokenizer"])),
        TokenViewOptions(max_pages=0),
    )
    assert view.pages == [] and list((tmp_path / "b").iterdir()) == []
    rows = index_rows(view.index)
    assert len(rows) == 2 and all(r[-1] == "" for r in rows)


def duckdb_connection():
    from tokenscope.duckdb_tables import connect

    return connect()


def test_the_index_shows_finish_reasons_of_generations(tmp_path):
    summaries = pa.table(
        {
            "prompt_id": ["a<b>", "x"],
            "sample": pa.array([0, 1], pa.int32()),
            "n_tokens": [3, 4],
            "mean_entropy": [1.0, float("nan")],
            "max_entropy": [2.0, None],
            "mean_surprisal": [0.5, 0.25],
            "max_surprisal": [1.5, 0.75],
        }
    )
    text = render_index(PageContext("m", "set", "m"), summaries, {("x", 1): "length"}, {"x-1.html"}, "m")
    rows = index_rows_of(text)
    assert rows[0][:2] == ["a&lt;b&gt;", "0"] and rows[0][3] == "1.0000" and rows[1][3] == ""
    assert rows[1][7] == "length" and rows[1][8] == '<a href="m/x-1.html">page</a>' and rows[0][8] == ""


def index_rows_of(text: str) -> list[list[str]]:
    rows = re.findall(r"<tr(?: class=paged)?>(.*?)</tr>", text.split("<tbody>", 1)[1])
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]


# --- In a real browser ----------------------------------------------------------------------------


def _number(text: str, field: str) -> float:
    match = re.search(rf"^{re.escape(field)} (\S+)$", text, re.MULTILINE)
    assert match, f"no {field!r} line in:\n{text}"
    return float(match.group(1).replace("∞", "inf"))


def test_hovering_a_token_shows_its_numbers_and_alternatives(scored, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    tokens = scored["tokens"]
    row = tokens[tokens.prompt_id == "add"].sort_values("step").iloc[3]
    browser.get((scored["out"] / page_file_name("add", 0)).as_uri())
    spans = browser.find_elements(By.CSS_SELECTOR, "#text .tok")
    texts = tokens[tokens.prompt_id == "add"].sort_values("step")["token"].str.replace("\n", "↵\n")
    assert [s.get_attribute("textContent") for s in spans] == texts.tolist()
    tooltip = browser.find_element(By.ID, "tooltip")
    assert not tooltip.is_displayed()
    ActionChains(browser).move_to_element(spans[3]).perform()
    assert tooltip.is_displayed()
    shown = tooltip.text
    assert f"token {json.dumps(row['token'], ensure_ascii=False)} (id {row['token_id']})" in shown
    assert f"step 3 (position {row['position']})" in shown
    assert _number(shown, "prob") == pytest.approx(row["prob"], rel=1e-3, abs=1e-4)
    assert _number(shown, "logprob") == pytest.approx(row["logprob"], rel=1e-3, abs=1e-4)
    assert _number(shown, "rank") == row["rank"]
    assert _number(shown, "entropy") == pytest.approx(row["entropy"], rel=1e-3, abs=1e-4)
    pair = scored["pairs"].set_index(["prompt_id", "sample", "position"]).loc[("add", 0, row["position"])]
    assert _number(shown, "KL(b ‖ a)") == pytest.approx(pair["kl_b_a"], rel=1e-3, abs=1e-4)
    # The top-k alternatives, most probable first, with their probabilities.
    lines = shown.split("top 4\n", 1)[1].splitlines()
    decode = scored["tokenizer"].decode
    for line, token_id, prob in zip(lines, row["topk_ids"], row["topk_probs"], strict=True):
        text, value = line.rsplit(" ", 1)
        assert json.loads(text) in (decode([int(token_id)]), scored["tokenizer"].convert_ids_to_tokens(int(token_id)))
        assert float(value) == pytest.approx(prob, rel=1e-3, abs=1e-4)
    ActionChains(browser).move_by_offset(0, 400).perform()
    assert not tooltip.is_displayed()


def _alpha(span) -> float:
    colour = span.value_of_css_property("background-color")
    parts = re.findall(r"[\d.]+", colour)
    return float(parts[3]) if len(parts) == 4 else (1.0 if parts and colour.startswith("rgb(") else 0.0)


def test_the_metric_toggle_recolours_the_tokens(scored, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((scored["out"] / page_file_name("add", 0)).as_uri())
    spans = browser.find_elements(By.CSS_SELECTOR, "#text .tok")
    text = browser.find_element(By.ID, "text")
    data = page_data(scored["out"] / page_file_name("add", 0))
    select = Select(browser.find_element(By.ID, "metric"))
    assert [o.text for o in select.options] == ["entropy", "surprisal", "varentropy", "margin", "KL(b ‖ a)"]
    for key in ("entropy", "kl:a", "varentropy", "margin", "surprisal"):
        select.select_by_value(key)
        assert text.get_attribute("data-metric") == key
        metric = next(m for m in data["metrics"] if m["key"] == key)
        expected = np.minimum(np.asarray(metric["values"]) / metric["scale_max"], 1.0) * 0.85
        shown = np.array([_alpha(s) for s in spans])
        # Chromium keeps alpha in 8 bits and prints it with 2 decimals where that round-trips.
        np.testing.assert_allclose(shown, expected, atol=0.006)
        legend = browser.find_element(By.ID, "legend-max").text
        assert legend.endswith(metric["unit"]) and metric["unit"] in ("nats", "nats²")


def test_the_index_sorts_ten_thousand_sequences_and_opens_a_page(scored, chosen, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # 10^4 sequences: the table loads and sorts by a click on a header (one handler, no per-row script)
    rng = np.random.default_rng(0)
    n = 10_000
    means = rng.gamma(2.0, 1.0, n)
    summaries = pa.table(
        {
            "prompt_id": [f"p{i:05d}" for i in range(n)],
            "sample": pa.array(np.zeros(n, np.int32)),
            "n_tokens": rng.integers(1, 4096, n),
            "mean_entropy": means,
            "max_entropy": means * 2,
            "mean_surprisal": means / 2,
            "max_surprisal": means,
        }
    )
    big = tmp_path / "big.html"
    big.write_text(render_index(PageContext("m", "set", "m"), summaries, None, set(), "m"), encoding="utf-8")
    browser.get(big.as_uri())
    rows = lambda: len(browser.find_elements(By.CSS_SELECTOR, "#sequences tbody tr"))  # noqa: E731
    # a loaded machine may hand the page back before its 10^4 rows are in the table
    WebDriverWait(browser, 120).until(lambda _: rows() == n)
    assert rows() == n
    header = browser.find_elements(By.CSS_SELECTOR, "#sequences th")[3]
    assert header.text.startswith("mean entropy")
    first = lambda: browser.execute_script(  # noqa: E731
        "return Array.from(document.querySelectorAll('#sequences tbody tr')).slice(0, 3)"
        ".map((r) => r.cells[0].textContent)"
    )
    header.click()
    assert first() == [f"p{i:05d}" for i in np.argsort(means)[:3]]
    header.click()
    assert first() == [f"p{i:05d}" for i in np.argsort(-means)[:3]]
    # The real index: a page's link opens it.
    browser.get(chosen.index.as_uri())
    link = browser.find_element(By.CSS_SELECTOR, "#sequences a")
    link.click()
    assert browser.find_elements(By.CSS_SELECTOR, "#text .tok")
    assert browser.current_url.endswith(".html") and "/b/" in browser.current_url
