"""Checkpoint comparison end to end (tests/configs/compare.yaml): a finetune series of a tiny
Llama, cross-scoring, statistics over prompts; adding a checkpoint reruns only what includes it."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.pages import page_data
from helpers.paths import REPO
from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, planned_jobs, snakemake

pytestmark = pytest.mark.slow
CHECKPOINTS = ["checkpoint-1-of-2", "checkpoint-2-of-2"]


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("compare-workflow")
    save_tiny_checkpoint(workdir / "checkpoints" / "base", seed=0)
    save_tiny_checkpoint(workdir / "checkpoints" / "step1", seed=1)
    copy_prompts(workdir, "tiny_a.jsonl")
    snakemake(workdir, "compare.yaml", "--cores", "2")
    return workdir


def test_finetune_series_and_pair_tables(compare_run):
    results = compare_run / "results"
    for name in CHECKPOINTS:
        assert (results / "finetune" / "base" / name / "model.safetensors").exists()
        assert (results / "models" / name / "manifest.json").exists()
    models = ["base", "step1", *CHECKPOINTS]
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            for source in (a, b, "reference"):
                pairs = pd.read_parquet(results / "pairs" / "tiny_a" / a / b / f"{source}.parquet")
                assert (pairs["kl_a_b"] >= 0).all() and (pairs["kl_b_a"] >= 0).all()
                assert set(pairs["model_a"]) == {a} and set(pairs["model_b"]) == {b}
    # Pair tables on a model's own generations hold its own per-token logprobs.
    own = pd.read_parquet(results / "tokens" / "tiny_a" / "base" / "base.parquet")
    pairs = pd.read_parquet(results / "pairs" / "tiny_a" / "base" / "step1" / "base.parquet")
    merged = own.merge(pairs, on=["prompt_id", "sample", "position"])
    assert len(merged) == len(own)
    assert (merged["logprob"] - merged["logprob_a"]).abs().max() < 1e-4


def test_comparison_tables_and_figure(compare_run):
    out = compare_run / "results" / "comparison" / "tiny_a" / "all"
    trends = pd.read_csv(out / "tables" / "trends.csv")
    assert list(dict.fromkeys(trends["model"])) == ["base", "step1", *CHECKPOINTS]
    on_base = trends[trends["tokens"] == "base's generations"]
    assert {"mean_entropy", "p99_entropy", "share_above_base_p80", "high_entropy_overlap", "mean_kl_base_model"} <= set(
        on_base["measure"]
    )
    assert (trends["ci_low"] <= trends["estimate"] + 1e-9).all() and (
        trends["estimate"] <= trends["ci_high"] + 1e-9
    ).all()
    tests = pd.read_csv(out / "tables" / "paired_tests.csv")
    assert set(tests["model"]) == {"step1", *CHECKPOINTS} and tests["p_wilcoxon_adj"].between(0, 1).all()
    for name in CHECKPOINTS:
        changed = pd.read_csv(out / "tables" / f"changed_{name}_by_context_token.csv")
        assert {"context_token", "token", "count", "mean_change", "ci_low", "ci_high", "metric"} <= set(changed.columns)
    assert (out / "trends.png").read_bytes()[:4] == b"\x89PNG"


def test_added_checkpoint_plans_only_its_jobs(compare_run, tmp_path):
    assert planned_jobs(compare_run, "compare.yaml") == []
    save_tiny_checkpoint(compare_run / "checkpoints" / "step2", seed=2)
    config = yaml.safe_load((REPO / "tests" / "configs" / "compare.yaml").read_text())
    config["models"]["step2"] = {"path": "checkpoints/step2"}
    edited = tmp_path / "added.yaml"
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(compare_run, str(edited))
    rules = {rule for rule, _ in jobs}
    assert "finetune" not in rules and {"prepare_model", "generate_shard", "cross_score", "compare_group"} <= rules
    for rule, wildcards in jobs:
        models = {wildcards.get(k) for k in ("model", "model_a", "model_b")} - {None}
        if rule == "token_view":  # checked below
            continue
        if models:  # every per-model job is step2's; the others are the group's aggregates
            assert "step2" in models, (rule, wildcards)
        else:
            assert rule in {
                "check_tokenizers",
                "compare_group",
                "plot_trends",
                "summarize_group",
                "plot_prompt_figures",
                "plot_entropy_hist",
                "run_record",
                "all",
            }, (rule, wildcards)
    # Every model's pages gain a KL against step2 (comparison.pairs: all scores each model's
    # generations and the reference answers with step2), so every token view is rebuilt.
    views = {(w["model"], w["source"]) for rule, w in jobs if rule == "token_view"}
    models = ["base", "step1", *CHECKPOINTS, "step2"]
    assert views == {(m, source) for m in models for source in (m, "reference")}


def test_token_view_pages_carry_each_pair_kl(compare_run):
    results = compare_run / "results"
    models = ["base", "step1", *CHECKPOINTS]
    for model in models:
        for source in (model, "reference"):
            tokens = pd.read_parquet(results / "tokens" / "tiny_a" / model / f"{source}.parquet")
            pages = sorted((results / "token_view" / "tiny_a" / model / source).glob("*.html"))
            expected = tokens[["prompt_id", "sample"]].drop_duplicates()
            assert len(pages) == len(expected), (model, source)
    # base's own generations were scored by every pair (base, other): one KL metric per other model.
    data = page_data(results / "token_view" / "tiny_a" / "base" / "base" / "add-1.html")
    assert [m["key"] for m in data["metrics"]] == [
        "entropy",
        "surprisal",
        "varentropy",
        "margin",
        *(f"kl:{m}" for m in models[1:]),
    ]
    pairs = pd.read_parquet(results / "pairs" / "tiny_a" / "base" / "step1" / "base.parquet")
    pairs = pairs[(pairs.prompt_id == "add") & (pairs["sample"] == 1)].sort_values("step")
    kl = next(m for m in data["metrics"] if m["key"] == "kl:step1")
    assert kl["values"] == pytest.approx(pairs["kl_a_b"].tolist(), rel=1e-5, abs=1e-9)


def report_contents(path: Path) -> tuple[dict, str]:
    """The categories (category -> subcategory -> result paths) and front page of an HTML report."""
    page = path.read_text(encoding="utf-8")
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", page).group(1))
    front_page = json.loads(re.search(r"var workflow_desc = (\".*?\");\n", page).group(1))
    return categories, front_page


@pytest.fixture(scope="module")
def report(compare_run) -> Path:
    snakemake(compare_run, "compare.yaml", "--report", "report.html")
    return compare_run / "report.html"


def test_report_registers_every_output_and_names_the_run(compare_run, report):
    categories, front_page = report_contents(report)
    entries = {path: category for category, subs in categories.items() for paths in subs.values() for path in paths}
    results = compare_run / "results"
    # Every figure and table the run made is in the report, under the category of its analysis.
    expected = {
        "Token view": results.glob("token_view/**/*.html"),
        "Token analysis": results.glob("analysis/**/*.csv"),
        "Entropy statistics": results.glob("summary/**/*.csv"),
        "Entropy distribution": results.glob("figures/*/*/*/entropy_hist_all.png"),
        "Per-prompt entropy": results.glob("figures/*/*/*/per_prompt/*.png"),
        "Checkpoint comparison": [*results.glob("comparison/**/*.csv"), *results.glob("comparison/**/*.png")],
    }
    for category, paths in expected.items():
        paths = [str(p.relative_to(compare_run)) for p in paths]
        assert paths, category
        assert {entries.get(p) for p in paths} == {category}, category
    made = {str(p.relative_to(compare_run)) for p in results.rglob("*") if p.suffix in {".png", ".csv", ".html"}}
    assert made <= set(entries)
    # The front page names the config, each model with its manifest hashes, and the package versions.
    record = json.loads((results / "run" / "record.json").read_text())
    assert "compare.yaml" in front_page
    for name in ["base", "step1", *CHECKPOINTS]:
        manifest = json.loads((results / "models" / name / "manifest.json").read_text())
        assert f"<strong>{name}</strong>" in front_page
        assert manifest["tokenizer_sha256"] in front_page
        for sha in manifest["weights"].values():
            assert sha in front_page
    assert record["packages"]["torch"] == metadata.version("torch")  # the jobs ran in this environment
    for package in ("torch", "transformers", "snakemake", "tokenscope"):
        assert f"{package}</tt> {record['packages'][package]}" in front_page


def test_token_view_works_inside_the_report(compare_run, report, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(report.as_uri())
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_elements(By.XPATH, "//a[contains(., 'Token view')]"))[0].click()
    # The entry of base's own generation for prompt "add", sample 1: its row of labels, then its view button.
    row = wait.until(
        lambda d: [
            r
            for r in d.find_elements(By.CSS_SELECTOR, "tr")
            if [c.text for c in r.find_elements(By.TAG_NAME, "td")][:4] == ["base", "base", "add", "1"]
        ]
    )
    row[0].find_element(By.TAG_NAME, "a").click()
    browser.switch_to.frame(wait.until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0])
    try:
        data = page_data(compare_run / "results" / "token_view" / "tiny_a" / "base" / "base" / "add-1.html")
        spans = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#text .tok"))
        assert len(spans) == len(data["tokens"])
        i = next(i for i, token in enumerate(data["tokens"]) if token.strip())
        ActionChains(browser).move_to_element(spans[i]).perform()
        shown = browser.find_element(By.ID, "tooltip").text
        assert f"token {json.dumps(data['tokens'][i], ensure_ascii=False)} (id {data['token_ids'][i]})" in shown
        assert f"rank {data['rank'][i]}" in shown and "KL(base ‖ step1)" in shown
    finally:
        browser.switch_to.default_content()
