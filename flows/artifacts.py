"""Stable Prefect artifact keys, so the UI shows one history per kind and run."""

from __future__ import annotations

import re


def artifact_key(kind: str, run_id: str) -> str:
    """`ith-<kind>-<run id>`; Prefect artifact keys take lowercase letters, digits and dashes only."""
    return f"ith-{kind}-" + re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
