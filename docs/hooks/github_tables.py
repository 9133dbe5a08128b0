"""MkDocs hook: `\\|` inside a code span of a table row, as GitHub needs it, becomes a plain `|` on the site.

GitHub's tables need a pipe inside a code span escaped (`--grouping scan\\|near-duplicate`); Python-Markdown
already ignores pipes inside code spans and would print the backslash. The pages stay written for GitHub.
"""

from __future__ import annotations

import re
from typing import Any

CODE_SPAN = re.compile(r"`[^`]*`")


def _unescape(match: re.Match[str]) -> str:
    return match.group(0).replace("\\|", "|")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    lines = markdown.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|") and "\\|" in line:
            lines[i] = CODE_SPAN.sub(_unescape, line)
    return "\n".join(lines)
