"""Prefect tasks of the AudioBERT (retrieval) row: each wraps one driver of `ith_core.stages.audiobert`.

JSON-friendly in and out; stage markers make a retry resume instead of redo, so Prefect's cache
is not used. A built pool manifest and CLAP index live under $ITH_HOME and are reused by every run.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core.config import RunConfig
from ith_core.stages import audiobert as audiobert_stage
from tasks.runtime import retry_transient


@task(
    name="retrieve-clips",
    task_run_name="retrieve clips for audiobert",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def retrieve_clips(config: dict, model_paths: dict[str, str]) -> dict:
    return audiobert_stage.retrieve_clips(RunConfig.from_dict(config), model_paths)


@task(
    name="encode-clips",
    task_run_name="encode retrieved clips",
    retries=1,
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def encode_clips(config: dict, model_paths: dict[str, str]) -> dict:
    return audiobert_stage.encode_clips(RunConfig.from_dict(config), model_paths)
