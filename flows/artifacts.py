"""Stable Prefect artifact keys, so the UI shows one history per kind and run; the report's artifact."""

from __future__ import annotations

import re
from pathlib import Path


def artifact_key(kind: str, run_id: str) -> str:
    """`ith-<kind>-<run id>`; Prefect artifact keys take lowercase letters, digits and dashes only."""
    return f"ith-{kind}-" + re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")


def report_location(location: str) -> str:
    """Where a report file is, as a reader copies it: a local path made absolute, a URL (s3://, https://) as it is."""
    return location if "://" in location else str(Path(location).resolve())


def report_markdown(run_id: str, report: dict) -> str:
    """The report artifact's body: where the HTML and Markdown reports are, as copyable text, then the
    headline. Browsers refuse file:// links from a page served over http, so a local report is given
    as a path to paste into the address bar (or open from a shell); an http(s) report is also a link."""
    html, markdown = report_location(report["html"]), report_location(report["markdown"])
    lines = [f"### Report of run {run_id}", "",
             f"HTML report (paste the path into the browser's address bar on the machine that holds it): `{html}`", "",
             f"Markdown report: `{markdown}`"]
    if html.startswith(("http://", "https://")):
        lines += ["", f"[report of run {run_id} (HTML)]({html})"]
    if report.get("headline"):
        lines += ["", report["headline"]]
    return "\n".join(lines) + "\n"


# A Markdown report larger than this is shown cut, with a line saying so (a tiny run's is ~20 kB).
REPORT_PAGE_MAX_CHARS = 1_000_000


def report_page(markdown: str, location: str) -> str:
    """The whole Markdown report as the UI renders it, cut at REPORT_PAGE_MAX_CHARS with a note."""
    note = (f"*The whole report of this run, as `{location}` holds it. Its audio players and charts are in "
            "the HTML report; the relative audio links below do not open from the UI.*\n\n")
    if len(markdown) > REPORT_PAGE_MAX_CHARS:
        markdown = (markdown[:REPORT_PAGE_MAX_CHARS] + f"\n\n*(cut at {REPORT_PAGE_MAX_CHARS} characters of "
                    f"{len(markdown)}: read the file for the rest)*\n")
    return note + markdown


def publish_report(run_id: str, report: dict) -> None:
    """`ith-report-<run id>`: a markdown artifact with the report's location as copyable text, then the
    profile statement and the headline numbers (`ith_core.report.build.headline_markdown`);
    `ith-report-page-<run id>`: the whole Markdown report, so the report is readable from the UI."""
    import fsspec
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(report_markdown(run_id, report), key=artifact_key("report", run_id),
                             description=f"where the report of run {run_id} is, and its headline numbers")
    location = report_location(report["markdown"])
    try:
        with fsspec.open(location, "r", encoding="utf-8") as handle:
            markdown = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        get_run_logger().warning("the report page artifact is left out: %s cannot be read (%s)", location, error)
        return
    create_markdown_artifact(report_page(markdown, location), key=artifact_key("report-page", run_id),
                             description=f"the whole report of run {run_id} (Markdown; audio and charts: the HTML)")
