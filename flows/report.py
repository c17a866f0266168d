"""The `ith-report` flow: evaluation and the report for an existing run (deployment `ith-report/for-run`).

Evaluates the run's systems (each (system, seed) whose training has finished) when that has not
been done yet (each evaluation's marker makes it a no-op otherwise), writes the table, then writes the HTML and Markdown report
and publishes where it is as the artifact `ith-report-<run id>`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import artifact_key
from ith_core import fusion_stage
from ith_core.stages import layout_for, load_run_config
from storage.layout import DONE_MARKER
from tasks import fusion as fusion_tasks
from tasks import stages as stage_tasks


@flow(name="ith-report", log_prints=True)
def report_for_run(run_id: str, run_root: str = "runs") -> dict:
    cfg = load_run_config(run_root, run_id)
    config = cfg.resolved()
    logger = get_run_logger()
    layout = layout_for(cfg)
    pending = [f"{s.name} seed {seed}" for s in fusion_stage.run_systems(cfg) for seed in fusion_stage.seeds_of(cfg, s)
               if s.trained and not layout.exists(fusion_stage.train_stage_name(s.name, seed), DONE_MARKER)]
    evaluation = None
    if not layout.exists(fusion_stage.EXAMPLES, DONE_MARKER) or pending:
        logger.warning("run %s has untrained systems (%s): the report shows the stages it has", run_id,
                       ", ".join(pending) or "no fusion examples yet")
    else:
        model_paths = stage_tasks.prepare_models(config)
        evaluated = [fusion_tasks.evaluate_system(config, model_paths, s.name, seed)
                     for s in fusion_stage.run_systems(cfg) for seed in fusion_stage.seeds_of(cfg, s)]
        evaluation = fusion_tasks.summarise_results(config, evaluated)
    report = stage_tasks.write_report(config)
    create_markdown_artifact(f"# Report of run {run_id}\n\n- HTML: `{report['html']}`\n- Markdown: "
                             f"`{report['markdown']}`\n", key=artifact_key("report", run_id),
                             description=f"where the report of run {run_id} is")
    logger.info("report: %s", report["html"])
    return {"run_id": run_id, "report": report["html"], "markdown": report["markdown"],
            "evaluated": evaluation is not None}
