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


def publish_report(run_id: str, report: dict) -> None:
    """`ith-report-<run id>`: a markdown artifact with the report's location as copyable text, then the
    profile statement and the headline numbers (`ith_core.report.headline_markdown`)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(report_markdown(run_id, report), key=artifact_key("report", run_id),
                             description=f"where the report of run {run_id} is, and its headline numbers")
