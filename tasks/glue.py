"""Prefect tasks of the GLUE drivers (`ith_core.stages.glue`); conventions as in tasks/fusion.py."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core.config import RunConfig
from ith_core.stages import glue as glue_stage
from tasks.runtime import retry_transient


@task(
    name="train-glue",
    task_run_name="train {system} on {task} seed {seed}",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def train_glue(config: dict, model_paths: dict[str, str], task: str, system: str, seed: int) -> dict:
    return glue_stage.train_glue(RunConfig.from_dict(config), model_paths, task, system, seed)


@task(name="summarise-glue", cache_policy=NO_CACHE)
def summarise_glue(config: dict) -> dict:
    return glue_stage.summarise_glue(RunConfig.from_dict(config))
