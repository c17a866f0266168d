"""The `ith-fusion` flow: stages 4-5 for every system of the table, one (system, seed) at a time.

    prepare-examples -> encode-audio (ITH)  /  retrieve + encode (AudioBERT)
                     -> train <system> seed <s>  (one task per trained system and seed)
                     -> evaluate <system> seed <s>  (zero-shot systems: one evaluation)
                     -> summarise-results -> artifacts

`run_fusion(config, model_paths)` runs it alone or as a subflow of `ith`. Trainings run one
after another: each `accelerate launch` already uses every process it is given. Every step has
its own stage marker, so a failed seed reruns alone, a retried task resumes from its saved
state, and adding a system or a seed to a finished run trains and scores only what is new.
Artifacts: `ith-fusion-<run id>` (the table: systems x task x split, mean ± sd over seeds with
intervals, published numbers, paired comparisons) and `ith-fusion-curves-<run id>`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from flows.artifacts import artifact_key
from flows.lineage import after, untraced
from flows.naming import named_by_run, tag_flow_run
from ith_core.config import RunConfig
from ith_core.fusion.run_systems import run_systems, seeds_of
from ith_core.report import summaries
from ith_core.stages import fusion as fusion_stage
from tasks import audiobert as audiobert_tasks
from tasks import fusion as t


@flow(
    name="ith-fusion",
    log_prints=True,
    flow_run_name=named_by_run("fusion", lambda p: RunConfig.from_dict(p["config"]).effective_run_id),
)
def ith_fusion(config: dict, model_paths: dict[str, str]) -> dict:
    """Prepares each system's inputs, trains every (system, seed), scores them, and writes the table."""
    cfg = RunConfig.from_dict(config)
    logger = get_run_logger()
    tag_flow_run(cfg)
    reason = fusion_stage.skip_reason(cfg)
    if reason:
        logger.warning("fusion skipped: %s", reason)
        return {"skipped": reason}
    systems = run_systems(cfg)
    # Settings go in quoted; `after` names the task runs each step reads, the graph's edges (flows/lineage.py).
    settings, models = quote(config), quote(model_paths)
    prepared = {"examples": t.prepare_examples(settings)}
    inputs = {None: prepared["examples"]}
    if any(s.audio == "imagined" for s in systems):
        prepared["features"] = inputs["imagined"] = t.encode_audio(
            settings, models, wait_for=after(prepared["examples"])
        )
    if any(s.audio == "retrieved" for s in systems):
        retrieval = audiobert_tasks.retrieve_clips(settings, models, wait_for=after(prepared["examples"]))
        prepared["audiobert_retrieval"] = retrieval
        prepared["audiobert_features"] = inputs["retrieved"] = audiobert_tasks.encode_clips(
            settings, models, wait_for=after(retrieval)
        )
    train_reports, eval_reports = [], []
    for system in systems:
        for seed in seeds_of(cfg, system):
            trained = None
            if system.trained:
                trained = t.train_system(
                    settings, models, system.name, seed, wait_for=after(prepared["examples"], inputs[system.audio])
                )
                train_reports.append(trained)
            read = after(prepared["examples"], trained or inputs[system.audio])
            eval_reports.append(t.evaluate_system(settings, models, system.name, seed, wait_for=read))
    results = t.summarise_results(settings, wait_for=after(*eval_reports))
    run_id = cfg.effective_run_id
    create_markdown_artifact(
        summaries.fusion_results_markdown(run_id, results, cfg.profile),
        key=artifact_key("fusion", run_id),
        description=f"accuracy of every system of run {run_id} (profile {cfg.profile})",
    )
    create_markdown_artifact(
        summaries.fusion_curves_markdown(run_id, train_reports, summaries.profile_label(cfg), cfg.benchmark),
        key=artifact_key("fusion-curves", run_id),
        description=f"dev accuracy per epoch of run {run_id}",
    )
    return fusion_stage.fusion_summary(prepared, train_reports, eval_reports, results)


def run_fusion(config: dict, model_paths: dict[str, str], wait_for: list | None = None) -> dict:
    """Runs `ith-fusion` (a subflow when called inside a flow); returns the summary.json section.

    `wait_for`: the parent flow's task runs whose results it reads (`flows.lineage.after`), its edges in the graph.
    """
    # Copies, not quotes: a flow run stores a quoted parameter as a list, and the UI shows it so.
    return ith_fusion(untraced(config), untraced(model_paths), wait_for=wait_for)
