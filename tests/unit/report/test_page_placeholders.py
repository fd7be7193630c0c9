"""A token-view page's placeholders are filled in one pass (report.token_view.render_page): a prompt id
or a message that contains a placeholder's name stays text, and the page's data is pasted once."""

from __future__ import annotations

import html
import re

import pytest

from tokenscope.report.token_view import page_template, render_page


def page(prompt_id: str, message: str = "hi") -> dict:
    return {
        "model": "m",
        "prompt_set": "set",
        "source": "m",
        "prompt_id": prompt_id,
        "sample": 0,
        "messages": [{"role": "user", "content": message}],
        "tokens": ["a"],
    }


def page_json(text: str) -> str:
    match = re.search(r"const DATA = (.*?);\n", text)
    assert match
    return match.group(1)


@pytest.mark.parametrize("prompt_id", ["__DATA__", "x__DATA__y", "__TITLE__", "__TITLE____DATA__"])
def test_placeholder_names_in_the_title_stay_text(prompt_id):
    text = render_page(page(prompt_id, message="__TITLE__ and __DATA__"))
    title = f"m on set, prompt {prompt_id}, sample 0 (m's generation)"
    assert re.search(r"<title>(.*?)</title>", text).group(1) == html.escape(title)
    assert re.search(r'<h1 id="title">(.*?)</h1>', text).group(1) == html.escape(title)
    assert text.count("const DATA = ") == 1
    assert '"content": "__TITLE__ and __DATA__"' in page_json(text)
    # nothing else of the template changed: the page is the template with the two placeholders filled
    template = page_template()
    assert len(text) == (
        len(template)
        + template.count("__TITLE__") * (len(html.escape(title)) - len("__TITLE__"))
        + template.count("__DATA__") * (len(page_json(text)) - len("__DATA__"))
    )
