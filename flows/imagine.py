"""The `ith-imagine` flow: stages 2-3 (generation and CLAP rejection sampling), shard by shard.

    plan -> generate-candidates (one task per shard, retried) -> select-candidates -> artifact

`run_imagine(config, model_paths)` picks the task runner from `imagine.task_runner` and runs the
flow, alone or as a subflow of `ith`. Shards whose manifest exists are skipped, so rerunning the
flow, retrying a failed flow run in Prefect, or `ith rerun-failed <run>` (cli/imagine_commands.py)
executes exactly the shards without a manifest. A failed shard does not stop the others; the flow
fails at the end, naming it, after the shard status and the markdown artifact are written.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.artifacts import artifact_key
from flows.lineage import after, untraced
from flows.naming import named_by_run, tag_flow_run
from ith_core.config import RunConfig
from ith_core.imagination.devices import local_devices, release_models
from ith_core.report.summaries import imagine_markdown, profile_label, profile_statement
from ith_core.stages import imagine as imagine_stage
from ith_core.stages.skeleton import load_run_config
from storage.run_lock import hold_run_lock
from tasks import imagine as t


class ShardsFailedError(RuntimeError):
    """Some shards failed after their retries; `ith rerun-failed <run>` reruns exactly those."""


def task_runner_for(cfg: RunConfig):
    """local: one thread per device (each shard pinned to a free one); ray: prefect-ray, any nodes."""
    if cfg.imagine.task_runner == "ray":
        from prefect_ray import RayTaskRunner  # noqa: PLC0415 (an optional extra: pip install .[ray])

        if cfg.imagine.ray_address:
            return RayTaskRunner(address=cfg.imagine.ray_address)
        init: dict[str, Any] = {}
        if cfg.imagine.gpus is not None:
            init["num_gpus"] = cfg.imagine.gpus
        return RayTaskRunner(init_kwargs=init)
    return ThreadPoolTaskRunner(max_workers=len(local_devices(cfg)))


@flow(
    name="ith-imagine",
    log_prints=True,
    flow_run_name=named_by_run("imagine", lambda p: RunConfig.from_dict(p["config"]).effective_run_id),
)
def ith_imagine(config: dict, model_paths: dict[str, str], rerun_failed: bool = False) -> dict:
    """Generates and scores every planned shard, then selects audio per span occurrence.

    Args:
        config: the run's resolved settings (config.json's form).
        model_paths: role -> local model folder, as prepared by the pipeline.
        rerun_failed: run exactly the recorded plan's shards without a manifest, planning nothing new.
    """
    started = time.perf_counter()
    cfg = RunConfig.from_dict(config)
    logger = get_run_logger()
    tag_flow_run(cfg)
    # Settings go in quoted, edges are named with `after` (flows/lineage.py): plan -> shards -> status -> selection.
    settings, models = quote(config), quote(model_paths)
    plan = t.plan_imagine(settings, models, existing_only=rerun_failed)
    # A new plan logs itself, with the disk it may fill (ith_core.stages.imagine).
    logger.info(
        "%s plan: %d occurrences -> %d unique prompts (%.2fx); %d shards; %d of %d prompts in the store now",
        "recorded" if plan.get("reused") else "new",
        plan["occurrences"],
        plan["unique_prompts"],
        plan["dedup_ratio"],
        len(plan["shards"]),
        plan.get("in_store_now", plan["already_in_store"]),
        plan["unique_prompts"],
    )
    ray = cfg.imagine.task_runner == "ray"
    devices = None if ray else local_devices(cfg)
    shard_task = t.generate_candidates.with_options(retries=cfg.imagine.retries)
    if ray:
        from prefect_ray.context import remote_options  # noqa: PLC0415 (an optional extra)

        # Ray hands a quoted argument to the task as a plain tuple: each shard gets its own copy of
        # the settings instead, which no task returned (devices is None here).
        with remote_options(num_gpus=0 if cfg.imagine.gpus == 0 else 1):
            futures = [
                shard_task.submit(untraced(config), untraced(model_paths), name, None, wait_for=after(plan))
                for name in plan["shards"]
            ]
    else:
        futures = [
            shard_task.submit(settings, models, name, quote(devices), wait_for=after(plan)) for name in plan["shards"]
        ]

    by_shard: dict[str, dict] = {}
    names = {future: name for name, future in zip(plan["shards"], futures)}
    # Progress in the UI and the run log as shards finish, in whatever order they finish.
    progress = create_progress_artifact(
        0.0 if futures else 100.0,
        key=artifact_key("imagine-progress", cfg.effective_run_id),
        description=f"{profile_statement(profile_label(cfg), cfg.benchmark)} Imagine "
        f"shards of run {cfg.effective_run_id} done (%).",
    )
    for done, future in enumerate(as_completed(futures), start=1):
        name = names[future]
        try:
            by_shard[name] = future.result()
        except Exception as error:  # one shard's failure must not hide the others' results
            by_shard[name] = {"shard": name, "status": "failed", "error": f"{type(error).__name__}: {error}"}
        update_progress_artifact(progress, 100.0 * done / len(futures))
        result = by_shard[name]
        detail = (
            f" ({result['prompts']} prompts, {result['candidates']} candidates generated, {result['seconds']} s "
            f"on {result['device']})"
            if result["status"] == "done"
            else " (its manifest exists)"
            if result["status"] == "skipped"
            else f": {result.get('error')}"
        )
        logger.info("shards done: %d of %d; %s %s%s", done, len(futures), name, result["status"], detail)
    if not ray:
        # The shards ran in this process: their generator and CLAP must not stay loaded through the
        # next stage (4 GiB of DiT at paper size beside the fusion stage's models).
        release_models()
    results = [by_shard[name] for name in plan["shards"]]
    # Edges from the shards that finished (a failed one would hold the task back as "not ready").
    status = t.record_shard_status(settings, quote(results), wait_for=[f for f in futures if f.state.is_completed()])
    failed = [r for r in results if r["status"] == "failed"]
    report = (
        None
        if failed
        else t.select_candidates(settings, round(time.perf_counter() - started, 3), wait_for=after(status))
    )
    create_markdown_artifact(
        imagine_markdown(cfg, plan, status, report),
        key=artifact_key("imagine", cfg.effective_run_id),
        description=f"ith-imagine summary of run {cfg.effective_run_id}",
    )
    if failed:
        raise ShardsFailedError(
            f"{len(failed)} of {len(results)} shards failed "
            f"({', '.join(r['shard'] for r in failed)}); first error: {failed[0]['error']}; "
            f"rerun them with `ith rerun-failed {cfg.effective_run_id} --run-root {cfg.run_root}`"
        )
    # `seconds` is the selection step's own time; `seconds_total` the stage's, plan and shards
    # included, as recorded by the flow run that finished it (a rerun keeps it, as every stage does).
    return {**report, "shards": status["counts"], "dedup_ratio": plan["dedup_ratio"]}


def run_imagine(
    config: dict, model_paths: dict[str, str], rerun_failed: bool = False, wait_for: list | None = None
) -> dict:
    """Runs `ith-imagine` with the task runner its settings choose (a subflow when called in a flow).

    `wait_for`: the parent flow's task runs whose results it reads (`flows.lineage.after`), its edges in the graph.
    """
    runner = task_runner_for(RunConfig.from_dict(config))
    # Copies, not quotes: a flow run stores a quoted parameter as a list, and the UI shows it so.
    return ith_imagine.with_options(task_runner=runner)(
        untraced(config), untraced(model_paths), rerun_failed, wait_for=wait_for
    )


@flow(name="ith-generate", log_prints=True, flow_run_name=named_by_run("generate", lambda p: p["run_id"]))
def generate_for_run(run_id: str, run_root: str = "runs", rerun_failed: bool = True) -> dict:
    """Generation only, for an existing run (deployment `ith-generate/rerun-failed`).

    Args:
        run_id: the run folder's name under run_root (as `ith run` printed it).
        run_root: folder or fsspec URL holding the run; a relative path resolves against the
            worker's working directory (the checkout, for the deployments of prefect.yaml).
        rerun_failed: true (the default): execute exactly the run's planned shards that have no
            manifest and nothing else, then write the run's selection tables.
    """
    cfg = load_run_config(run_root, run_id)
    tag_flow_run(cfg)
    with hold_run_lock(imagine_stage.layout_for(cfg), f"flow run {flow_run.name} (ith-generate)"):
        plan = imagine_stage.plan_imagine(cfg, {}, existing_only=True)
        return run_imagine(cfg.resolved(), plan["model_paths"], rerun_failed=rerun_failed)
