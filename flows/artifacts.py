"""Stable Prefect artifact keys, so the UI shows one history per kind and run; the report's artifact."""

from __future__ import annotations

import re
from pathlib import Path


def artifact_key(kind: str, run_id: str) -> str:
    """`ith-<kind>-<run id>`; Prefect artifact keys take lowercase letters, digits and dashes only."""
    return f"ith-{kind}-" + re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")


def report_link(location: str) -> str:
    """A link to a report file: a local path as a file:// URI, a URL (s3://, https://) as it is."""
    return location if "://" in location else Path(location).resolve().as_uri()


def publish_report(run_id: str, report: dict) -> None:
    """`ith-report-<run id>`: a link to the HTML report, with the profile statement and the headline
    numbers (`ith_core.report.headline_markdown`) as its description."""
    from prefect.artifacts import create_link_artifact

    create_link_artifact(link=report_link(report["html"]), link_text=f"report of run {run_id} (HTML)",
                         key=artifact_key("report", run_id),
                         description=report.get("headline") or f"report of run {run_id}")
