"""Prefect tasks: each wraps one stage driver of `ith_core.stages`.

Tasks take and return JSON-friendly values (the resolved config as a dict, paths, reports),
never tensors or tables: Prefect may persist task results. The stage markers in the run folder
are what makes a rerun skip finished work, so Prefect's own cache is not needed here.
The flows name the task runs each one reads with `wait_for` (flows/lineage.py): the UI graph's
edges, and only those.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core import stages
from ith_core.config import RunConfig
from tasks.retry import retry_transient


@task(name="ingest-auditorybench", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def ingest(config: dict) -> dict:
    return stages.ingest_stage(RunConfig.from_dict(config))


@task(name="prepare-models", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def prepare_models(config: dict) -> dict[str, str]:
    return stages.prepare_models(RunConfig.from_dict(config))


@task(name="train-span-detector", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def train_span_detector(config: dict, model_paths: dict[str, str]) -> dict:
    return stages.span_detector_stage(RunConfig.from_dict(config), model_paths)


@task(name="detect-spans", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def detect_spans(config: dict, model_paths: dict[str, str]) -> dict:
    return stages.spans_stage(RunConfig.from_dict(config), model_paths)


@task(name="write-summary", cache_policy=NO_CACHE)
def write_summary(config: dict, reports: dict[str, dict], seconds: float) -> str:
    return stages.write_summary(RunConfig.from_dict(config), reports, seconds)


@task(name="write-report", cache_policy=NO_CACHE)
def write_report(config: dict) -> dict:
    from ith_core.report import write_report as write

    cfg = RunConfig.from_dict(config)
    return write(cfg.run_root, cfg.effective_run_id)
