"""Checks of a run's summary.json shared by the end-to-end tests."""

from __future__ import annotations


def assert_every_stage_cached(summary: dict) -> None:
    """Each stage of a rerun's summary.json says it reused its earlier result."""
    stages = summary["stages"]
    for stage in ("ingest", "span_detector", "spans", "imagine"):
        assert stages[stage]["cached"] is True, stage
    fusion = stages["fusion"]
    assert "skipped" not in fusion, fusion
    assert fusion["features"]["cached"] is True
    assert {v: t["cached"] for v, t in fusion["train"].items()} == {"ith": True, "text": True}
    assert fusion["evaluate"]["cached"] is True
