"""Every relative link in README.md and docs/*.md points at a file that exists and, when it names
an anchor in a Markdown file, at one of that file's headings (GitHub's heading ids)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text without code blocks and inline code, where a `[x](y)` is not a link."""
    return CODE.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's ids of a Markdown file's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated id numbered -1, -2, ..."""
    found: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def broken_links(path: Path) -> list[str]:
    """`file: link (why)` for every relative link of `path` that points at nothing."""
    out = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto:: not checked here
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}: {target}"
        if not dest.exists():
            out.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{where} (no heading #{anchor} in {dest.relative_to(REPO)})")
    return out


def test_every_relative_link_points_at_something():
    assert (REPO / "docs").is_dir()
    checked = [p for p in documents() if LINK.search(_prose(p.read_text()))]
    assert len(checked) >= 2, checked  # the README and the docs pages link to each other
    broken = [b for p in documents() for b in broken_links(p)]
    assert broken == [], "\n".join(broken)


def test_a_broken_link_or_anchor_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Where it is: found\n\n## Where it is: found\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#where-it-is-found) [ok](docs/a.md#where-it-is-found-1) "
        "[ok](https://example.org/x) [self](#top)\n\n# Top\n\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#nowhere)\n\n"
        "`[not a link](nowhere.md)`\n\n```\n[nor this](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "README.md: docs/missing.md (no such file)",
        "README.md: docs/a.md#nowhere (no heading #nowhere in docs/a.md)",
    ]
