"""Stable Prefect artifact keys, so the UI shows one history per kind and run; the report's artifacts
(their Markdown is built in ith_core.report.summaries)."""

from __future__ import annotations

import re

import fsspec
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from ith_core.report.summaries import report_artifact_markdown, report_location, report_page


def artifact_key(kind: str, run_id: str) -> str:
    """`ith-<kind>-<run id>`; Prefect artifact keys take lowercase letters, digits and dashes only."""
    return f"ith-{kind}-" + re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")


def publish_report(run_id: str, report: dict) -> None:
    """`ith-report-<run id>`: a markdown artifact with the report's location as copyable text, then the
    profile statement and the headline numbers (`ith_core.report.summaries.headline_markdown`);
    `ith-report-page-<run id>`: the whole Markdown report, so the report is readable from the UI."""
    create_markdown_artifact(
        report_artifact_markdown(run_id, report),
        key=artifact_key("report", run_id),
        description=f"where the report of run {run_id} is, and its headline numbers",
    )
    location = report_location(report["markdown"])
    try:
        with fsspec.open(location, "r", encoding="utf-8") as handle:
            markdown = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        get_run_logger().warning("the report page artifact is left out: %s cannot be read (%s)", location, error)
        return
    create_markdown_artifact(
        report_page(markdown, location),
        key=artifact_key("report-page", run_id),
        description=f"the whole report of run {run_id} (Markdown; audio and charts: the HTML)",
    )
