"""Prefect tasks of stages 2-3: each wraps one driver of `ith_core.stages.imagine`.

They take and return JSON-friendly values (the resolved config, model paths, shard names,
reports). The shard manifests in the audio store make finished shards skip on any rerun, so
Prefect's cache is not needed.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from ith_core.config import RunConfig
from ith_core.imagination.devices import device_pool, local_devices
from ith_core.stages import imagine as imagine_stage
from tasks.runtime import retry_transient


@task(name="plan-imagine", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def plan_imagine(config: dict, model_paths: dict[str, str], existing_only: bool = False) -> dict:
    return imagine_stage.plan_imagine(RunConfig.from_dict(config), model_paths, existing_only)


@task(
    name="generate-candidates",
    task_run_name="generate {shard}",
    cache_policy=NO_CACHE,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def generate_candidates(config: dict, model_paths: dict[str, str], shard: str, devices: list[str] | None):
    """One shard; `devices`: the local worker pool to take a device from, None: this worker's own.

    A shard whose manifest exists ends in the state `Skipped` (a Completed state) rather than
    plain Completed, so the UI shows it did nothing; its result is the same dict either way.
    """
    cfg = RunConfig.from_dict(config)
    if devices is None:
        result = imagine_stage.generate_candidates(cfg, model_paths, shard, local_devices(cfg)[0])
    else:
        with device_pool(devices).acquire() as device:
            result = imagine_stage.generate_candidates(cfg, model_paths, shard, device)
    if result["status"] == "skipped":
        return Completed(
            name="Skipped", message=f"{shard}: its manifest exists (an earlier flow run generated it)", data=result
        )
    return result


@task(name="record-shard-status", cache_policy=NO_CACHE)
def record_shard_status(config: dict, results: list[dict]) -> dict:
    return imagine_stage.record_shard_status(RunConfig.from_dict(config), results)


@task(name="select-candidates", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def select_candidates(config: dict, seconds_before: float | None = None) -> dict:
    return imagine_stage.select_candidates(RunConfig.from_dict(config), seconds_before)
