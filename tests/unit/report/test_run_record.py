"""The run record (report.run_record) says per model whether its tokenizer has a chat template, read
from the prepared tokenizer files, and the report's front page (report/workflow.rst) shows it."""

from __future__ import annotations

import json
from pathlib import Path

from tokenscope.report.run_record import build_run_record

from helpers.paths import REPO
from helpers.tiny_models import build_tokenizer


def prepared_folder(root: Path, name: str, chat_template: bool) -> Path:
    """A prepared model folder as far as the run record reads it: manifest and tokenizer files."""
    folder = root / name
    tokenizer = build_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    manifest = {
        "model": name,
        "source": {"kind": "path", "location": f"/data/{name}"},
        "resolved_revision": None,
        "weights": {"model.safetensors": name.encode().hex().ljust(64, "0")},  # distinct weights
        "tokenizer_sha256": "1" * 64,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def test_the_record_says_which_models_have_a_chat_template(tmp_path):
    manifests = [prepared_folder(tmp_path, "chat", True), prepared_folder(tmp_path, "base", False)]
    record = build_run_record(manifests, ["config/config.yaml"], {"device": "cpu", "dtype": "float32"})
    assert {m["name"]: m["chat_template"] for m in record["models"]} == {"chat": True, "base": False}


def render_front_page(record: dict) -> str:
    """report/workflow.rst rendered as Snakemake's report renders it (jinja2, then docutils to HTML)."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    class Snakemake:
        config = {"_run_record": record, "prompt_sets": {"math24": "config/prompts/math24.jsonl"}}

    text = (REPO / "report" / "workflow.rst").read_text()
    rst = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(snakemake=Snakemake)
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2})["html_body"]


def test_the_front_page_names_models_without_a_chat_template(tmp_path):
    manifests = [prepared_folder(tmp_path, "chat", True), prepared_folder(tmp_path, "base", False)]
    record = build_run_record(manifests, ["config/config.yaml"], {"device": "cpu", "dtype": "float32"})
    page = render_front_page(record)
    chat, base = page.index("<strong>chat</strong>"), page.index("<strong>base</strong>")
    assert "chat template: yes" in page[chat:base]
    assert "no chat template" in page[base:]
    # a record written before this field existed still renders, without the line
    for model in record["models"]:
        del model["chat_template"]
    page = render_front_page(record)
    assert "chat template" not in page
