"""Prefect tasks that write the run's summary and its report; conventions as in tasks/ingest.py."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core.config import RunConfig
from ith_core.report.rendering import write_report as write
from ith_core.stages import skeleton


@task(name="write-summary", cache_policy=NO_CACHE)
def write_summary(config: dict, reports: dict[str, dict], seconds: float) -> str:
    return skeleton.write_summary(RunConfig.from_dict(config), reports, seconds)


@task(name="write-report", cache_policy=NO_CACHE)
def write_report(config: dict) -> dict:
    cfg = RunConfig.from_dict(config)
    return write(cfg.run_root, cfg.effective_run_id)
