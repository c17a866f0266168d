"""Prefect tasks of the ingest stage driver (`ith_core.stages.ingest`).

Tasks take and return JSON-friendly values (the resolved config as a dict, paths, reports),
never tensors or tables: Prefect may persist task results. The stage markers in the run folder
are what makes a rerun skip finished work, so Prefect's own cache is not needed here.
The flows name the task runs each one reads with `wait_for` (flows/lineage.py): the UI graph's
edges, and only those.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core.config import RunConfig
from ith_core.stages import ingest as ingest_stage
from tasks.runtime import retry_transient


@task(
    name="ingest-auditorybench",
    retries=2,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def ingest_auditorybench(config: dict) -> dict:
    return ingest_stage.ingest_auditorybench(RunConfig.from_dict(config))


@task(name="prepare-models", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def prepare_models(config: dict) -> dict[str, str]:
    return ingest_stage.prepare_models(RunConfig.from_dict(config))
