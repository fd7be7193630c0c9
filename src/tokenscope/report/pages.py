"""What the token view (report.token_view) and the side-by-side view (report.side_by_side) share:
their HTML templates (package data) and how they are filled, the JSON a page carries, splitting a
sorted table into one page per sequence and writing the pages, the sortable index of every
sequence, and what a view shows beside its tables (ViewInputs: token strings and prompts).

Templates are filled in one pass over their placeholders (`__NAME__`), so a title or data that
contains a placeholder's name stays text. Every text reaches a page escaped: HTML text through
html.escape, data as JSON read by the page's script into text nodes.

The two sequence page templates (token_view.html, side_by_side.html) take the token text's CSS and
script they share (token_text.css, token_text.js: the prompt, the metric selector, the token spans
and the tooltip's placement) from one copy, pasted in by `sequence_page_template`.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa

from tokenscope.inputs.prompts import Prompt, load_prompt_set
from tokenscope.io import safe_file_name, write_text
from tokenscope.model.loading import load_prepared_tokenizer
from tokenscope.model.token_text import VocabularyStrings

PAGE_KEYS = ["prompt_id", "sample"]
# The index template's placeholders (report/token_view_index.html, both views' index)
INDEX_PLACEHOLDER = re.compile("__TITLE__|__SUMMARY__|__ROWS__")
# A sequence page template's placeholders: where the shared token-text fragments go, and a page's own
TOKEN_TEXT_PLACEHOLDER = re.compile("__TOKEN_TEXT_STYLE__|__TOKEN_TEXT_SCRIPT__")
PAGE_PLACEHOLDER = re.compile("__TITLE__|__DATA__")


@cache
def template(name: str) -> str:
    """A page template's HTML, CSS and script (package data: report/<name>)."""
    return resources.files("tokenscope.report").joinpath(name).read_text(encoding="utf-8")


def fill(template_text: str, placeholder: re.Pattern[str], values: Mapping[str, str]) -> str:
    """`template_text` with each match of `placeholder` replaced by its value, in one pass."""
    return placeholder.sub(lambda match: values[match.group(0)], template_text)


def sequence_page_template(name: str) -> str:
    """A sequence page's template (package data: report/<name>) with the token-text CSS and script
    that the token view and the side-by-side view share pasted in."""
    fragments = {"__TOKEN_TEXT_STYLE__": template("token_text.css"), "__TOKEN_TEXT_SCRIPT__": template("token_text.js")}
    return fill(template(name), TOKEN_TEXT_PLACEHOLDER, fragments)


def render_sequence_page(template_text: str, title: str, data: Mapping[str, Any]) -> str:
    """A self-contained page of one sequence: the template's title and data placeholders filled in
    one pass, so a title or data that contains a placeholder's name stays text."""
    return fill(template_text, PAGE_PLACEHOLDER, {"__TITLE__": html.escape(title), "__DATA__": script_json(data)})


def script_json(obj: Any) -> str:
    """JSON as a JS expression inside <script>: Infinity/NaN stay literals, '<' cannot end the tag."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=True).replace("<", "\\u003c")


def page_file_name(prompt_id: str, sample: int) -> str:
    return f"{safe_file_name(prompt_id)}-{sample}.html"


def sequences(frame: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, list[int], list[int]]:
    """The rows of `frame` sorted by prompt id, sample and step: (the order taken, the sorted rows,
    and the first and past-the-last row of each sequence (prompt_id, sample))."""
    order = np.lexsort((frame["step"].to_numpy(), frame["sample"].to_numpy(), frame["prompt_id"].to_numpy()))
    rows = frame.iloc[order].reset_index(drop=True)
    keys = rows[PAGE_KEYS]
    starts = np.flatnonzero((keys != keys.shift()).any(axis=1).to_numpy())
    ends = np.append(starts[1:], len(rows))
    return order, rows, starts.tolist(), ends.tolist()


def write_pages(
    rows: pd.DataFrame,
    starts: Sequence[int],
    ends: Sequence[int],
    out_dir: str | Path,
    page: Callable[[int, int, str, int], str],
) -> list[Path]:
    """One page per sequence [start, end) of the sorted `rows` in `out_dir`: `page(start, end,
    prompt_id, sample)` renders it. Returns the pages' paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for start, end in zip(starts, ends, strict=True):  # one iteration per page
        prompt_id, sample = str(rows["prompt_id"].iat[start]), int(rows["sample"].iat[start])
        path = out / page_file_name(prompt_id, sample)
        write_text(page(start, end, prompt_id, sample), path)
        written.append(path)
    return written


def number_cell(value: float | None) -> str:
    """A number cell: 4 decimals shown, the exact value in data-v for sorting; empty when missing."""
    if value is None or not np.isfinite(value):
        return '<td data-v=""></td>'
    return f'<td data-v="{value:.9g}">{value:.4f}</td>'


@dataclass(frozen=True)
class PageLinks:
    """The pages an index links: the file names written, in `folder` (relative to the index)."""

    names: set[str]
    folder: str


def render_index(
    title: str,
    summary: str,
    header: Sequence[tuple[str, str]],
    summaries: pa.Table,
    number_columns: Sequence[str],
    links: PageLinks,
    extra_cells: Iterable[str] | None = None,
) -> str:
    """A self-contained index page (report/token_view_index.html) of a table sorted by `header`'s
    columns ((label, "text" or "number")): one row per sequence of `summaries` (prompt_id, sample,
    n_tokens and the `number_columns`), then its `extra_cells` (HTML, one per row) and a link to
    its page where one was written."""
    columns = {name: summaries.column(name).to_pylist() for name in summaries.column_names}
    page_names = links.names
    base = "/".join(quote(part) for part in Path(links.folder).parts)
    extras = iter(extra_cells) if extra_cells is not None else None
    rows = []
    for i, (prompt_id, sample) in enumerate(zip(columns["prompt_id"], columns["sample"], strict=True)):
        name = page_file_name(prompt_id, sample)
        page = (
            f'<td><a href="{html.escape(base + "/" + quote(name))}">page</a></td>'
            if name in page_names
            else "<td></td>"
        )
        rows.append(
            f"<tr{' class=paged' if name in page_names else ''}><td>{html.escape(str(prompt_id))}</td>"
            f'<td data-v="{sample}">{sample}</td><td data-v="{columns["n_tokens"][i]}">{columns["n_tokens"][i]}</td>'
            + "".join(number_cell(columns[c][i]) for c in number_columns)
            + (next(extras) if extras is not None else "")
            + page
            + "</tr>"
        )
    head = "".join(f'<th data-type="{kind}" title="click to sort">{html.escape(label)}</th>' for label, kind in header)
    values = {
        "__TITLE__": html.escape(title),
        "__SUMMARY__": html.escape(summary),
        "__ROWS__": f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>",
    }
    return fill(template("token_view_index.html"), INDEX_PLACEHOLDER, values)


def relative_dir(out_dir: str | Path, index_path: str | Path) -> str:
    """The pages' folder relative to the index's."""
    return os.path.relpath(Path(out_dir), Path(index_path).parent)


@dataclass(frozen=True)
class ViewInputs:
    """What a view's pages show beside its tables: the model's token strings and the prompt set by
    id (the prompt a page shows; none where empty)."""

    vocabulary: VocabularyStrings
    prompts: Mapping[str, Prompt] = field(default_factory=dict)

    @classmethod
    def load(cls, manifest: str | Path, prompts_path: str | Path, insertion: Any) -> ViewInputs:
        """What a view's rule script loads: the token strings of the model's prepared tokenizer
        (next to `manifest`) and the prompt set."""
        tokenizer = load_prepared_tokenizer(Path(manifest).parent)
        prompts = {p.id: p for p in load_prompt_set(prompts_path, insertion)}
        return cls(VocabularyStrings.from_tokenizer(tokenizer), prompts)
