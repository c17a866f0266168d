"""Checks of a run's summary.json shared by the end-to-end tests."""

from __future__ import annotations


def assert_every_stage_cached(summary: dict) -> None:
    """Each stage of a rerun's summary.json says it reused its earlier result."""
    stages = summary["stages"]
    for stage in ("ingest", "span_detector", "spans", "imagine"):
        assert stages[stage]["cached"] is True, stage
    fusion = stages["fusion"]
    assert "skipped" not in fusion, fusion
    assert fusion["prepared"] and all(p["cached"] is True for p in fusion["prepared"].values()), fusion["prepared"]
    trained = {(t["system"], t["seed"]): t["cached"] for t in fusion["train"]}
    assert {"ith", "bert-text"} <= {system for system, _ in trained}, trained
    assert all(trained.values()), trained
    assert fusion["evaluate"] and all(e["cached"] is True for e in fusion["evaluate"]), fusion["evaluate"]
