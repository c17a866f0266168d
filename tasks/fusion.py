"""Prefect tasks of stages 4-5: each wraps one driver of `ith_core.stages.fusion` (or the AudioBERT stages).

JSON-friendly in and out (the resolved config, model paths, reports). Stage markers and the
trainer's saved states make a retry resume instead of redo, so Prefect's cache is not used.
Training and evaluation run per (system, seed): each is its own task run, named by what it does
(`train ith seed 42`), retried alone, and skipped by its marker once finished. The flows name
the task runs each one reads with `wait_for` (flows/lineage.py): the UI graph's edges.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from ith_core.config import RunConfig
from ith_core.stages import fusion as fusion_stage
from tasks.runtime import retry_transient


@task(name="prepare-examples", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def prepare_examples(config: dict) -> dict:
    return fusion_stage.prepare_examples(RunConfig.from_dict(config))


@task(name="encode-audio", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def encode_audio(config: dict, model_paths: dict[str, str]) -> dict:
    return fusion_stage.encode_audio(RunConfig.from_dict(config), model_paths)


@task(
    name="train-system",
    task_run_name="train {system} seed {seed}",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def train_system(config: dict, model_paths: dict[str, str], system: str, seed: int) -> dict:
    return fusion_stage.train_system(RunConfig.from_dict(config), model_paths, system, seed)


def _evaluate_run_name() -> str:
    return f"evaluate {fusion_stage.run_label(task_run.parameters['system'], task_run.parameters['seed'])}"


@task(
    name="evaluate-system",
    task_run_name=_evaluate_run_name,
    retries=1,
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def evaluate_system(config: dict, model_paths: dict[str, str], system: str, seed: int) -> dict:
    return fusion_stage.evaluate_system(RunConfig.from_dict(config), model_paths, system, seed)


@task(name="summarise-results", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def summarise_results(config: dict) -> dict:
    return fusion_stage.summarise_results(RunConfig.from_dict(config))
