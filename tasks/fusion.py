"""Prefect tasks of stages 4-5: each wraps one driver of `ith_core.fusion_stage`.

JSON-friendly in and out (the resolved config, model paths, reports). Stage markers and the
trainer's saved states make a retry resume instead of redo, so Prefect's cache is not used.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core import fusion_stage
from ith_core.config import RunConfig
from tasks.retry import retry_transient


@task(name="encode-audio", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def encode_audio(config: dict, model_paths: dict[str, str]) -> dict:
    return fusion_stage.precompute_stage(RunConfig.from_dict(config), model_paths)


@task(name="train-fusion-lm", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def train_fusion_lm(config: dict, model_paths: dict[str, str], variant: str) -> dict:
    return fusion_stage.train_stage(RunConfig.from_dict(config), model_paths, variant)


@task(name="evaluate-fusion", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def evaluate(config: dict, model_paths: dict[str, str]) -> dict:
    return fusion_stage.evaluate_stage(RunConfig.from_dict(config), model_paths)
