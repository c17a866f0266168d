"""The `ith-report` flow: evaluation and the report for an existing run (deployment `ith-report/for-run`).

Evaluates the run's systems (each (system, seed) whose training has finished) when that has not
been done yet (each evaluation's marker makes it a no-op otherwise), writes the table, then writes the HTML and Markdown report
and publishes where it is (copyable text), with the run's profile statement and headline numbers, as
the artifact `ith-report-<run id>`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from flows.artifacts import publish_report
from flows.lineage import after
from flows.naming import named_by_run, tag_flow_run
from ith_core.fusion.run_systems import run_systems, seeds_of
from ith_core.stages import fusion as fusion_stage
from ith_core.stages.skeleton import layout_for, load_run_config
from storage.layout import DONE_MARKER
from tasks import fusion as fusion_tasks
from tasks import ingest as ingest_tasks
from tasks import report as report_tasks


@flow(name="ith-report", log_prints=True, flow_run_name=named_by_run("report", lambda p: p["run_id"]))
def report_for_run(run_id: str, run_root: str = "runs") -> dict:
    """Evaluation if not done yet, then the report of an existing run.

    Args:
        run_id: the run folder's name under run_root (as `ith run` printed it).
        run_root: folder or fsspec URL holding the run; a relative path resolves against the
            worker's working directory (the checkout, for the deployments of prefect.yaml).
    """
    cfg = load_run_config(run_root, run_id)
    tag_flow_run(cfg)
    config = cfg.resolved()
    logger = get_run_logger()
    layout = layout_for(cfg)
    pending = [
        f"{s.name} seed {seed}"
        for s in run_systems(cfg)
        for seed in seeds_of(cfg, s)
        if s.trained and not layout.exists(fusion_stage.train_stage_name(s.name, seed), DONE_MARKER)
    ]
    evaluation = None
    if cfg.benchmark == "glue":
        # GLUE runs are scored by the ith-glue subflow (glue/results.json); the report reads them.
        logger.info("run %s is a GLUE run: the report shows its GLUE table as summarise-glue wrote it", run_id)
    elif not layout.exists(fusion_stage.EXAMPLES, DONE_MARKER) or pending:
        logger.warning(
            "run %s has untrained systems (%s): the report shows the stages it has",
            run_id,
            ", ".join(pending) or "no fusion examples yet",
        )
    else:
        # Settings quoted, edges named with `after` (flows/lineage.py).
        model_paths = ingest_tasks.prepare_models(quote(config))
        evaluated = [
            fusion_tasks.evaluate_system(quote(config), quote(model_paths), s.name, seed, wait_for=after(model_paths))
            for s in run_systems(cfg)
            for seed in seeds_of(cfg, s)
        ]
        evaluation = fusion_tasks.summarise_results(quote(config), wait_for=after(*evaluated))
    report = report_tasks.write_report(quote(config), wait_for=after(evaluation))
    publish_report(run_id, report)
    logger.info("report: %s", report["html"])
    return {
        "run_id": run_id,
        "report": report["html"],
        "markdown": report["markdown"],
        "evaluated": evaluation is not None,
    }
