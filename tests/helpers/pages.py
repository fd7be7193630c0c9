"""Reading a token-view page's embedded data."""

from __future__ import annotations

import json
import re
from pathlib import Path


def page_data(path: Path) -> dict:
    """The DATA object a page embeds (a JS expression: JSON, with Infinity, which json.loads reads)."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r"const DATA = (.*?);\n", text)
    assert match, "page has no DATA"
    return json.loads(match.group(1))
