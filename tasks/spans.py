"""Prefect tasks of the spans stage driver (`ith_core.stages.spans`); conventions as in tasks/ingest.py."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core.config import RunConfig
from ith_core.stages import spans as spans_stage
from tasks.runtime import retry_transient


@task(name="train-span-detector", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def train_span_detector(config: dict, model_paths: dict[str, str]) -> dict:
    return spans_stage.train_span_detector(RunConfig.from_dict(config), model_paths)


@task(name="detect-spans", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def detect_spans(config: dict, model_paths: dict[str, str]) -> dict:
    return spans_stage.detect_spans(RunConfig.from_dict(config), model_paths)
