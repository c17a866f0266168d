"""Prefect tasks of stages 2-3: each wraps one driver of `ith_core.imagine_stage`.

They take and return JSON-friendly values (the resolved config, model paths, shard names,
reports). The shard manifests in the audio store make finished shards skip on any rerun, so
Prefect's cache is not needed.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ith_core import imagine_stage
from ith_core.config import RunConfig
from tasks.retry import retry_transient


@task(name="plan-imagine", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def plan_imagine(config: dict, model_paths: dict[str, str], existing_only: bool = False) -> dict:
    return imagine_stage.plan_stage(RunConfig.from_dict(config), model_paths, existing_only)


@task(name="generate-candidates", cache_policy=NO_CACHE, retry_delay_seconds=2,
      retry_condition_fn=retry_transient)
def generate_candidates(config: dict, model_paths: dict[str, str], shard: str, devices: list[str] | None) -> dict:
    """One shard; `devices`: the local worker pool to take a device from, None: this worker's own."""
    cfg = RunConfig.from_dict(config)
    if devices is None:
        return imagine_stage.run_shard(cfg, model_paths, shard, imagine_stage.local_devices(cfg)[0])
    with imagine_stage.device_pool(devices).acquire() as device:
        return imagine_stage.run_shard(cfg, model_paths, shard, device)


@task(name="record-shard-status", cache_policy=NO_CACHE)
def record_shard_status(config: dict, results: list[dict]) -> dict:
    return imagine_stage.write_shard_status(RunConfig.from_dict(config), results)


@task(name="select-candidates", retries=1, cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def select_candidates(config: dict) -> dict:
    return imagine_stage.collect_stage(RunConfig.from_dict(config))
