"""The side-by-side view of two checkpoints (report.side_by_side): pages built from a real pair table
of two tiny models (with both models' top-k alternatives), their colour values and hover data
checked against the table, the choice of pages and the index, text safety; and the page driven in
headless Chromium: switch the colouring, hover a token, read both models' alternatives.

Where Chromium or selenium is missing the browser tests skip and say so; with
TOKENSCOPE_REQUIRE_BROWSER=1 they fail instead (tests/helpers/browser.py)."""

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

from tokenscope.duckdb_tables import connect, parquet_sql
from tokenscope.inputs.prompts import Prompt, load_prompt_set
from tokenscope.inputs.sequences import reference_sequences
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.report.options import SideBySideOptions
from tokenscope.report.pages import ViewInputs
from tokenscope.report.side_by_side import (
    ALTERNATIVE_COLUMNS,
    PAGE_COLUMNS,
    PairContext,
    PairRows,
    PairViewTables,
    build_side_by_side,
    choose_pages,
    pair_summaries,
    render_index,
    render_page,
    write_pages,
)
from tokenscope.report.token_view import page_file_name
from tokenscope.scoring.cross_scoring import score_pair
from tokenscope.scoring.options import ScoringOptions

from helpers.pages import page_data
from helpers.paths import TEST_DATA as DATA

K = 4
CONTEXT = PairContext(model_a="a", model_b="b", prompt_set="tiny_a", source="reference")


def generations_table(model: str, texts: dict[tuple[str, int], str], facts: bool) -> pa.Table:
    keys = sorted(texts)
    columns = {
        "model": [model] * len(keys),
        "prompt_set": ["tiny_a"] * len(keys),
        "prompt_id": [k[0] for k in keys],
        "sample": pa.array([k[1] for k in keys], pa.int32()),
        "text": [texts[k] for k in keys],
        "finish_reason": ["eos"] * len(keys),
        "n_tokens": pa.array([len(texts[k]) for k in keys], pa.int32()),
    }
    if facts:  # the answer columns of the generations table (schema version 3), where present
        columns["extracted_answer"] = ["42" if k[0] == "add" else None for k in keys]
        columns["correct"] = [True if k[0] == "add" else None for k in keys]
    return pa.table(columns)


@pytest.fixture(scope="module")
def scored(tiny_loaded, tmp_path_factory):
    """Model 'a' (a tiny Llama) and 'b' (its copy with a perturbed output layer) on the reference
    answers of tests/data/tiny_a.jsonl: the pair table with 4 alternatives per model, both models'
    generations tables, and the side-by-side pages of every sequence."""
    model_a, tokenizer = tiny_loaded("llama")
    model_b = copy.deepcopy(model_a)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head = model_b.get_output_embeddings().weight
        head.add_(0.5 * torch.randn(head.shape, generator=generator))
    prompts = load_prompt_set(DATA / "tiny_a.jsonl")
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
        options=ScoringOptions(n_alternatives=K),
        show_progress=False,
    )
    out = tmp_path_factory.mktemp("side-by-side")
    pq.write_table(pairs, out / "pairs.parquet", row_group_size=5)
    texts_a = {("add", 0): "A says 42", ("add", 1): "A says 41", ("fox", 0): "A: jumps", ("area", 0): "A: 8/3"}
    texts_b = {("add", 0): "B says <b>42</b>", ("fox", 0): "B: leaps"}
    pq.write_table(generations_table("a", texts_a, facts=False), out / "gen_a.parquet")
    pq.write_table(generations_table("b", texts_b, facts=True), out / "gen_b.parquet")
    vocabulary = VocabularyStrings.from_tokenizer(tokenizer)
    view = build_side_by_side(
        PairViewTables(out / "pairs.parquet", out / "gen_a.parquet", out / "gen_b.parquet"),
        out / "pages",
        out / "index.html",
        CONTEXT,
        ViewInputs(vocabulary, {p.id: p for p in prompts}),
        SideBySideOptions(max_pages=10, metric="kl_a_b"),
    )
    return {
        "pairs": pairs.to_pandas(),
        "view": view,
        "out": out,
        "tokenizer": tokenizer,
        "vocabulary": vocabulary,
        "prompts": prompts,
    }


def rows_of(pairs: pd.DataFrame, prompt_id: str, sample: int = 0) -> pd.DataFrame:
    return pairs[(pairs.prompt_id == prompt_id) & (pairs["sample"] == sample)].sort_values("step")


def test_colour_values_are_the_pair_tables_logprob_difference_and_kl(scored):
    pairs = scored["pairs"]
    assert sorted(p.name for p in scored["view"].pages) == ["add-0.html", "fox-0.html"]
    for prompt_id in ("add", "fox"):
        data = page_data(scored["out"] / "pages" / page_file_name(prompt_id, 0))
        rows = rows_of(pairs, prompt_id)
        metrics = {m["key"]: m for m in data["metrics"]}
        assert list(metrics) == ["logprob_diff", "kl_a_b", "kl_b_a"] and data["initial_metric"] == "kl_a_b"
        # B - A: the difference of the two models' log-probabilities of the token.
        diff = (rows["logprob_b"].astype(np.float64) - rows["logprob_a"].astype(np.float64)).to_numpy()
        np.testing.assert_allclose(metrics["logprob_diff"]["values"], diff, rtol=1e-5, atol=1e-6)
        assert np.sign(metrics["logprob_diff"]["values"]).tolist() == np.sign(rows["logprob_diff"]).tolist()
        np.testing.assert_allclose(metrics["kl_a_b"]["values"], rows["kl_a_b"], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(metrics["kl_b_a"]["values"], rows["kl_b_a"], rtol=1e-5, atol=1e-9)
        assert metrics["logprob_diff"]["diverging"] and not metrics["kl_a_b"]["diverging"]
        assert metrics["logprob_diff"]["label"] == "log p(b) − log p(a)" and metrics["kl_b_a"]["label"] == "KL(b ‖ a)"
        np.testing.assert_allclose(data["logprob_a"], rows["logprob_a"], rtol=1e-5)
        np.testing.assert_allclose(data["entropy_b"], rows["entropy_b"], rtol=1e-5)
        assert data["token_ids"] == rows["token_id"].tolist() and data["positions"] == rows["position"].tolist()
        # The shared text's tokens, as the tokenizer writes them.
        assert "".join(data["tokens"]) == scored["tokenizer"].decode(rows["token_id"].tolist())


def test_colour_scales_are_the_whole_tables_99th_percentiles(scored):
    pairs = scored["pairs"]
    data = page_data(scored["out"] / "pages" / "add-0.html")
    scales = {m["key"]: m["scale_max"] for m in data["metrics"]}
    assert scales["logprob_diff"] == pytest.approx(np.quantile(np.abs(pairs["logprob_diff"].astype(np.float64)), 0.99))
    assert scales["kl_a_b"] == pytest.approx(np.quantile(pairs["kl_a_b"].astype(np.float64), 0.99))
    assert scales["kl_b_a"] == pytest.approx(np.quantile(pairs["kl_b_a"].astype(np.float64), 0.99))


def test_hover_data_holds_both_models_alternatives(scored):
    pairs, tokenizer = scored["pairs"], scored["tokenizer"]
    data = page_data(scored["out"] / "pages" / "add-0.html")
    rows = rows_of(pairs, "add")
    for side in ("a", "b"):
        found = data["alternatives"][side]
        offsets = found["offsets"]
        assert len(offsets) == len(rows) + 1 and all(e - s == K for s, e in zip(offsets[:-1], offsets[1:], strict=True))
        assert found["ids"] == np.concatenate(rows[f"topk_ids_{side}"].tolist()).tolist()
        np.testing.assert_allclose(found["probs"], np.concatenate(rows[f"topk_probs_{side}"].tolist()), rtol=1e-5)
        for text, token_id in zip(found["texts"], found["ids"], strict=True):
            assert text in (tokenizer.decode([token_id]), tokenizer.convert_ids_to_tokens(token_id))
    # The models differ: their alternatives are not the same lists.
    assert data["alternatives"]["a"]["ids"] != data["alternatives"]["b"]["ids"]


def test_pages_show_both_models_generations_and_the_prompt(scored):
    data = page_data(scored["out"] / "pages" / "add-0.html")
    assert data["generations"]["a"] == [
        {"sample": 0, "text": "A says 42", "finish_reason": "eos", "n_tokens": 9},
        {"sample": 1, "text": "A says 41", "finish_reason": "eos", "n_tokens": 9},
    ]
    assert data["generations"]["b"] == [
        {
            "sample": 0,
            "text": "B says <b>42</b>",
            "finish_reason": "eos",
            "n_tokens": 16,
            "extracted_answer": "42",
            "correct": True,
        }
    ]
    add = next(p for p in scored["prompts"] if p.id == "add")
    assert data["messages"] == list(add.messages) and data["shared_text"] == "the reference answer"


def test_pages_are_self_contained(scored):
    for path in [*scored["view"].pages, scored["view"].index]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"src\s*=|https?://|@import|url\(", text), path
        assert not re.search(r"href\s*=", text) or path == scored["view"].index


def test_pair_table_without_alternatives_gives_pages_without_them(scored, tmp_path):
    plain = pq.read_table(scored["out"] / "pairs.parquet").drop_columns(ALTERNATIVE_COLUMNS)
    pq.write_table(plain, tmp_path / "pairs.parquet")
    view = build_side_by_side(
        PairViewTables(tmp_path / "pairs.parquet"),
        tmp_path / "pages",
        tmp_path / "index.html",
        CONTEXT,
        ViewInputs(scored["vocabulary"]),
    )
    data = page_data(view.pages[0])
    assert data["alternatives"] is None and data["generations"] == {"a": [], "b": []}
    assert data["initial_metric"] == "logprob_diff"


def synthetic_pairs(n_sequences: int) -> pd.DataFrame:
    """n sequences of 3 tokens; sequence i has mean KL(a || b) = i (prompt ids in reverse order)."""
    frames = []
    for i in range(n_sequences):
        frames.append(
            pd.DataFrame(
                {
                    "prompt_id": f"p{n_sequences - i:03d}",
                    "sample": 0,
                    "step": [0, 1, 2],
                    "position": [5, 6, 7],
                    "token_id": [1, 2, 3],
                    "logprob_a": -1.0,
                    "logprob_b": -1.5,
                    "logprob_diff": -0.5,
                    "entropy_a": 1.0,
                    "entropy_b": 1.1,
                    "kl_a_b": [i - 0.5, i, i + 0.5],
                    "kl_b_a": 0.1,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_pages_are_chosen_by_mean_kl_plus_the_listed_prompts(tmp_path):
    frame = synthetic_pairs(9)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "pairs.parquet")
    summaries = pair_summaries(connect(), parquet_sql(tmp_path / "pairs.parquet"))
    assert summaries.column("prompt_id").to_pylist() == [f"p{i:03d}" for i in range(1, 10)]
    np.testing.assert_allclose(summaries.column("mean_kl_a_b").to_numpy(), np.arange(9)[::-1])
    chosen = [summaries.column("prompt_id")[int(i)].as_py() for i in choose_pages(summaries, 3, ["p005"])]
    # mean KL 0 (p009), the median 4 (p005) and 8 (p001): the lowest, median and highest; p005 listed too
    assert chosen == ["p001", "p005", "p009"]
    chosen = [summaries.column("prompt_id")[int(i)].as_py() for i in choose_pages(summaries, 0, ["p002"])]
    assert chosen == ["p002"]
    assert len(choose_pages(summaries, 100)) == 9


def index_rows(text: str) -> list[list[str]]:
    rows = re.findall(r"<tr(?: class=paged)?>(.*?)</tr>", text.split("<tbody>", 1)[1])
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]


def test_the_index_lists_every_sequence_and_links_the_pages(scored, tmp_path):
    frame = synthetic_pairs(5)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "pairs.parquet")
    view = build_side_by_side(
        PairViewTables(tmp_path / "pairs.parquet"),
        tmp_path / "pages",
        tmp_path / "pair.html",
        CONTEXT,
        ViewInputs(scored["vocabulary"]),
        SideBySideOptions(max_pages=1),
    )
    assert [p.name for p in view.pages] == ["p003-0.html"] and view.n_sequences == 5
    rows = index_rows(view.index.read_text(encoding="utf-8"))
    assert [r[0] for r in rows] == [f"p{i:03d}" for i in range(1, 6)]
    assert [float(r[4]) for r in rows] == [4.0, 3.0, 2.0, 1.0, 0.0]  # mean KL(a || b)
    assert [r[-1] for r in rows].count('<a href="pages/p003-0.html">page</a>') == 1
    assert sum(r[-1] != "" for r in rows) == 1


def test_text_cannot_break_out_of_the_page(scored, tmp_path):
    """Tokens, prompt ids, messages and generations reach the page as JSON read into text nodes."""
    tokenizer = scored["tokenizer"]
    nasty = "</script><script>window.broken = 1</script>"
    ids = tokenizer.encode(nasty + " <b>bold</b> &amp; __DATA__", add_special_tokens=False)
    n = len(ids)
    rows = pd.DataFrame(
        {
            "prompt_id": "x</script><b>",
            "sample": 0,
            "step": np.arange(n),
            "position": np.arange(n) + 3,
            "token_id": ids,
            "logprob_a": -1.0,
            "logprob_b": np.linspace(-2, 0, n),
            "logprob_diff": np.linspace(-1, 1, n),
            "entropy_a": 1.0,
            "entropy_b": 1.0,
            "kl_a_b": np.inf,
            "kl_b_a": 0.0,
        }
    )[PAGE_COLUMNS]
    prompt = Prompt(id="x</script><b>", messages=({"role": "user", "content": nasty},), answer="<b>42</b>")
    generations = {"a": {"x</script><b>": [{"sample": 0, "text": nasty}]}, "b": {}}
    [path] = write_pages(
        PairRows(rows, generations=generations),
        tmp_path,
        PairContext("a", "b", "set", "a"),
        ViewInputs(scored["vocabulary"], {prompt.id: prompt}),
        {"logprob_diff": 1.0, "kl_a_b": 1.0, "kl_b_a": 1.0},
    )
    text = path.read_text(encoding="utf-8")
    assert text.count("</script>") == 1 and "<b>" not in text and text.count("const DATA = ") == 1
    data = page_data(path)
    assert "".join(data["tokens"]) == tokenizer.decode(ids)
    assert data["prompt_id"] == "x</script><b>" and data["generations"]["a"][0]["text"] == nasty
    assert data["metrics"][1]["values"][0] == float("inf") and data["answer"] == "<b>42</b>"
    title = re.search(r"<title>(.*?)</title>", text).group(1)
    assert "&lt;/script&gt;&lt;b&gt;" in title
    index = render_index(
        PairContext("a", "b", "set", "a"),
        pa.Table.from_pandas(
            pd.DataFrame(
                {
                    "prompt_id": ["<i>"],
                    "sample": [0],
                    "n_tokens": [1],
                    "mean_logprob_diff": [0.0],
                    "mean_kl_a_b": [0.0],
                    "max_kl_a_b": [0.0],
                    "mean_kl_b_a": [np.nan],
                }
            )
        ),
        set(),
        "pages",
    )
    assert "<i>" not in index and "&lt;i&gt;" in index


def test_placeholder_names_in_the_data_stay_text():
    data = {
        "model_a": "a",
        "model_b": "b",
        "prompt_set": "set",
        "prompt_id": "__DATA__",
        "sample": 0,
        "shared_text": "__TITLE__",
    }
    text = render_page(data)
    assert text.count("const DATA = ") == 1 and "__DATA__" in re.search(r"<title>(.*?)</title>", text).group(1)


# --- In a real browser ----------------------------------------------------------------------------


def _rgba(span) -> tuple[float, float, float, float]:
    colour = span.value_of_css_property("background-color")
    parts = [float(p) for p in re.findall(r"[\d.]+", colour)]
    return (*parts[:3], parts[3]) if len(parts) == 4 else (*parts[:3], 1.0 if colour.startswith("rgb(") else 0.0)


def test_switching_the_colouring_recolours_the_shared_text(scored, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path = scored["out"] / "pages" / "add-0.html"
    browser.get(path.as_uri())
    data = page_data(path)
    spans = browser.find_elements(By.CSS_SELECTOR, "#text .tok")
    assert [s.get_attribute("textContent") for s in spans] == [t.replace("\n", "↵\n") for t in data["tokens"]]
    text = browser.find_element(By.ID, "text")
    assert text.get_attribute("data-metric") == "kl_a_b"  # side_by_side.metric of the page
    select = Select(browser.find_element(By.ID, "metric"))
    assert [o.text for o in select.options] == ["log p(b) − log p(a)", "KL(a ‖ b)", "KL(b ‖ a)"]
    for key in ("logprob_diff", "kl_b_a", "kl_a_b"):
        select.select_by_value(key)
        assert text.get_attribute("data-metric") == key
        metric = next(m for m in data["metrics"] if m["key"] == key)
        values = np.asarray(metric["values"])
        expected = np.minimum(np.abs(values) / metric["scale_max"], 1.0) * 0.85
        shown = [_rgba(s) for s in spans]
        # Chromium keeps alpha in 8 bits and prints it with 2 decimals where that round-trips.
        np.testing.assert_allclose([c[3] for c in shown], expected, atol=0.006)
        blue = np.array([c[:3] == (33.0, 102.0, 172.0) for c in shown])
        visible = expected > 0.01
        if key == "logprob_diff":  # B more probable: blue; less: red
            assert (blue[visible] == (values[visible] > 0)).all()
            assert any(values > 0) and any(values < 0)
        else:
            assert not any(blue)
    legend = browser.find_element(By.ID, "legend-max").text
    assert legend.endswith("nats")


def test_hovering_a_token_shows_both_models_numbers_and_alternatives(scored, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    path = scored["out"] / "pages" / "add-0.html"
    browser.get(path.as_uri())
    row = rows_of(scored["pairs"], "add").iloc[2]
    spans = browser.find_elements(By.CSS_SELECTOR, "#text .tok")
    tooltip = browser.find_element(By.ID, "tooltip")
    assert not tooltip.is_displayed()
    ActionChains(browser).move_to_element(spans[2]).perform()
    assert tooltip.is_displayed()
    shown = tooltip.text
    for field, column in [("logprob A", "logprob_a"), ("logprob B", "logprob_b"), ("KL(a ‖ b)", "kl_a_b")]:
        match = re.search(rf"^{re.escape(field)} (\S+)$", shown, re.MULTILINE)
        assert match and float(match.group(1)) == pytest.approx(row[column], rel=1e-3, abs=1e-4), field
    decode = scored["tokenizer"].decode
    for side in ("a", "b"):
        header = tooltip.find_element(By.XPATH, f".//th[contains(., 'of {side.upper()}')]").text
        assert header == f"top {K} of {side.upper()} ({side})"
        lines = tooltip.find_elements(By.CSS_SELECTOR, f".alts-{side} > div")
        assert len(lines) == K
        for line, token_id, prob in zip(lines, row[f"topk_ids_{side}"], row[f"topk_probs_{side}"], strict=True):
            text, value = line.text.rsplit(" ", 1)
            token = json.loads(text)
            assert token in (decode([int(token_id)]), scored["tokenizer"].convert_ids_to_tokens(int(token_id)))
            assert float(value) == pytest.approx(prob, rel=1e-3, abs=1e-4)
            assert ("hit" in line.get_attribute("class")) == (int(token_id) == row["token_id"])
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "title")).perform()
    assert not tooltip.is_displayed()


def test_the_generations_stand_side_by_side_with_a_sample_selector(scored, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((scored["out"] / "pages" / "add-0.html").as_uri())
    a = browser.find_element(By.ID, "generation-a")
    b = browser.find_element(By.ID, "generation-b")
    assert a.location["y"] == b.location["y"] and a.location["x"] < b.location["x"]  # next to each other
    assert a.find_element(By.CSS_SELECTOR, ".gen-text").text == "A says 42"
    assert b.find_element(By.CSS_SELECTOR, ".gen-text").text == "B says <b>42</b>"  # text, not markup
    assert "answer: 42" in b.find_element(By.CSS_SELECTOR, ".facts").text
    assert "correct" in b.find_element(By.CSS_SELECTOR, ".facts").text
    assert not b.find_element(By.CSS_SELECTOR, "select").is_displayed()  # one sample: no selector
    Select(a.find_element(By.CSS_SELECTOR, "select")).select_by_visible_text("1")
    assert a.find_element(By.CSS_SELECTOR, ".gen-text").text == "A says 41"
    assert browser.execute_script("return window.broken") is None
