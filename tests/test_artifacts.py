"""The report's artifacts: its location as copyable text (never a file:// link) and the whole
Markdown report as a page the Prefect UI renders."""

from __future__ import annotations

from ith_core.report.summaries import REPORT_PAGE_MAX_CHARS, report_artifact_markdown, report_page


def test_report_location_is_copyable_text_and_the_page_is_the_whole_report(tmp_path):
    html, md = tmp_path / "run" / "report" / "report.html", tmp_path / "run" / "report" / "report.md"
    body = report_artifact_markdown("tiny-1", {"html": str(html), "markdown": str(md), "headline": "**Profile tiny**"})
    assert (
        f"`{html}`" in body
        and f"`{md}`" in body
        and "file://" not in body
        and body.rstrip().endswith("**Profile tiny**")
    )
    remote = report_artifact_markdown(
        "tiny-1", {"html": "https://host/r/report.html", "markdown": "s3://b/r/report.md"}
    )
    assert "[report of run tiny-1 (HTML)](https://host/r/report.html)" in remote
    text = "# Imagine to Hear: run tiny-1\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    page = report_page(text, str(md))
    assert page.endswith(text) and str(md) in page.split("\n\n")[0]
    long = report_page("x" * (REPORT_PAGE_MAX_CHARS + 10), str(md))
    assert f"cut at {REPORT_PAGE_MAX_CHARS} characters of {REPORT_PAGE_MAX_CHARS + 10}" in long
