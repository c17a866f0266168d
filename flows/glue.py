"""The `ith-glue` flow: GLUE fine-tuning with (ITH) and without (BERT) imagined audio, and GLUE's metrics.

    encode-audio (ITH) -> train <system> on <task> seed <s>  (one task run per job)
                       -> summarise-glue -> artifact `ith-glue-<run id>`

The subflow of `ith` for `--benchmark glue`, in place of `ith-fusion`: span detection, imagination
and CLAP selection ran before it, over GLUE's sentences. Jobs run one after another in the flow's
process (no `accelerate launch`: one small classifier per task); each has its own stage marker,
so a failed job reruns alone and a finished one is skipped.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from flows.artifacts import artifact_key
from flows.lineage import after, untraced
from flows.naming import named_by_run, tag_flow_run
from ith_core.config import RunConfig
from ith_core.report import glue as glue_report
from ith_core.report import summaries
from ith_core.stages import glue as glue_stage
from ith_core.stages.skeleton import layout_for
from storage import run_files
from tasks import fusion as fusion_tasks
from tasks import glue as t


@flow(
    name="ith-glue",
    log_prints=True,
    flow_run_name=named_by_run("glue", lambda p: RunConfig.from_dict(p["config"]).effective_run_id),
)
def ith_glue(config: dict, model_paths: dict[str, str]) -> dict:
    """Encodes the imagined audio, fine-tunes every (task, system, seed), and scores them on dev."""
    cfg = RunConfig.from_dict(config)
    tag_flow_run(cfg)
    settings, models = quote(config), quote(model_paths)
    prepared = {}
    if "ith" in cfg.systems:
        prepared["features"] = fusion_tasks.encode_audio(settings, models)
    jobs = [
        t.train_glue(settings, models, task, system, seed, wait_for=after(prepared.get("features")))
        for task, system, seed in glue_stage.glue_jobs(cfg)
    ]
    results = t.summarise_glue(settings, wait_for=after(*jobs))
    run_id = cfg.effective_run_id
    create_markdown_artifact(
        glue_report.results_markdown(
            layout_for(cfg).read_json(*run_files.GLUE_RESULTS),
            summaries.profile_statement(summaries.profile_label(cfg), cfg.benchmark),
        ),
        key=artifact_key("glue", run_id),
        description=f"GLUE dev metrics of every system of run {run_id} (profile {cfg.profile})",
    )
    return {**prepared, "jobs": jobs, "results": results}


def run_glue(config: dict, model_paths: dict[str, str], wait_for: list | None = None) -> dict:
    """Runs `ith-glue` (a subflow when called inside a flow); returns the summary.json section."""
    return ith_glue(untraced(config), untraced(model_paths), wait_for=wait_for)
