"""The report's tables: `Table` holds plain values and renders them escaped as HTML or Markdown
(`Raw` cells are already markup), `md_escape` makes text from data inert Markdown, and `Section`
is one section of the page, shared by the HTML and the Markdown output. The builders of the
sections themselves are in `sections`.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# Tables: plain strings in, rendered escaped as HTML or Markdown


class Raw(str):
    """A table cell already in the output's markup (built from escaped pieces)."""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns
    caption: str = ""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _html_cell(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(_fmt(value))


def _html_table(table: Table, css: str = "") -> str:
    head = "".join(
        f"<th{' class=num' if i in table.numeric else ''}>{html.escape(h)}</th>" for i, h in enumerate(table.headers)
    )
    body = []
    for row in table.rows:
        cells = "".join(
            f"<td{' class=num' if i in table.numeric else ''}>{_html_cell(v)}</td>" for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    thead = f"<thead><tr>{head}</tr></thead>" if any(table.headers) else ""  # key-value tables have none
    css = f"{css} keyvalue" if not any(table.headers) else css
    return f'<table class="{css}">{caption}{thead}<tbody>{"".join(body)}</tbody></table>'


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: Any) -> str:
    """Text from data as inert Markdown: no markup, no raw HTML, no broken table cells."""
    value = _fmt(text)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", " ".join(value.split()))


def _md_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines += [f"*{md_escape(table.caption)}*", ""]
    lines.append("| " + " | ".join(md_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---:" if i in table.numeric else "---" for i in range(len(table.headers))) + "|")
    lines += ["| " + " | ".join(v if isinstance(v, Raw) else md_escape(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Sections (shared by the HTML and the Markdown output)


@dataclass
class Section:
    anchor: str
    title: str
    intro: list[str] = field(default_factory=list)  # paragraphs of plain text
    tables: list[tuple[str, Table]] = field(default_factory=list)  # (id, table)
    charts: list[tuple[str, str, str | None]] = field(default_factory=list)  # (id, caption, svg or None)
    notes: list[str] = field(default_factory=list)
    raw_html: str = ""  # case studies: built from escaped pieces
