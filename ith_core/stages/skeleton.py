"""The stage skeleton: every stage driver opens, reuses, resumes or clears its folder of the run here.

A stage's key is `stage_key(stage, version, *parts)`: a hash of the stage's name, its version (bumped
when the stage changes what it writes for the same inputs) and exactly the settings and upstream keys
that change its output, so an identical run reuses everything. `reuse_or_clear` returns the recorded
report of a stage finished with the same key (`cached: true`) and otherwise clears what an
interrupted attempt left; `reuse_or_resume` keeps an interrupted attempt's files when its key matches
(stages that resume from shards or training states). The done marker is written last
(`RunLayout.mark_done`): its existence means every other file of the stage is whole.

No Prefect here: `tasks/` wraps the drivers, and tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from ith_core.config import RunConfig
from storage import run_files
from storage.layout import RunLayout

logger = logging.getLogger(__name__)

KEY_FILE = run_files.KEY_FILE


def layout_for(cfg: RunConfig) -> RunLayout:
    """The run folder of `cfg`."""
    return RunLayout(cfg.run_root, cfg.effective_run_id)


def stage_key(stage: str, version: int, *parts: Any) -> str:
    """The one stage-key scheme: sha256 of `[stage, version, *parts]` as canonical JSON."""
    blob = json.dumps([stage, version, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _reused(layout: RunLayout, stage: str, key: str) -> dict | None:
    report = layout.stage_done(stage, key)
    if report is None:
        return None
    logger.info("stage %s: finished earlier in %s, reusing it", stage, layout.url(stage))
    return {**report, "cached": True}


def reuse_or_clear(layout: RunLayout, stage: str, key: str) -> dict | None:
    """The recorded report if `stage` finished with `key`; else clears what an interrupted attempt left."""
    report = _reused(layout, stage, key)
    if report is None:
        layout.clear_stage(stage)
    return report


def reuse_or_resume(layout: RunLayout, stage: str, key: str) -> dict | None:
    """The recorded report if `stage` finished with `key`; else prepares the folder for (re)work.

    A folder left by an interrupted attempt with the same key is kept (its shards / training
    states are resumed from); one with another key, or without a key, is cleared.
    """
    report = _reused(layout, stage, key)
    if report is not None:
        return report
    if layout.exists(stage):
        previous = layout.read_json(stage, KEY_FILE).get("key") if layout.exists(stage, KEY_FILE) else None
        if previous != key:
            layout.fs.rm(layout.path(stage), recursive=True)
    layout.write_json({"key": key}, stage, KEY_FILE)
    return None


def load_run_config(run_root: str, run_id: str, device: str | None = None) -> RunConfig:
    """A finished or started run's resolved config, pointed at `run_root` (the run may have moved)."""
    layout = RunLayout(run_root, run_id)
    if not layout.exists(*run_files.CONFIG):
        raise FileNotFoundError(f"no run {run_id!r} under {run_root} (missing {layout.url(*run_files.CONFIG)})")
    raw = layout.read_json(*run_files.CONFIG)
    raw.pop("fingerprint", None)
    raw.update(run_root=run_root, run_id=run_id)
    if device is not None:
        raw["device"] = device
    return RunConfig.from_dict(raw)


def write_config(cfg: RunConfig) -> str:
    layout = layout_for(cfg)
    layout.write_json(
        {**cfg.resolved(), "run_id": cfg.effective_run_id, "fingerprint": cfg.fingerprint()}, *run_files.CONFIG
    )
    return layout.url()


def write_summary(cfg: RunConfig, reports: dict[str, dict], seconds: float) -> str:
    layout = layout_for(cfg)
    summary = {
        "run_id": cfg.effective_run_id,
        "profile": cfg.profile,
        "run_dir": layout.url(),
        "fingerprint": cfg.fingerprint(),
        "stages": reports,
        "seconds": round(seconds, 3),
    }
    layout.write_json(summary, *run_files.SUMMARY)
    return layout.url(*run_files.SUMMARY)
