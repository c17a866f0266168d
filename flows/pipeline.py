"""The `ith` flow: the pipeline's DAG, stage by stage.

    ingest -> prepare models -> train span detector -> detect spans
           -> imagine (subflow `ith-imagine`: plan, one task per shard, select)
           -> fusion (subflow `ith-fusion`: encode audio, train ITH and text-only, evaluate)
           -> summary -> report (HTML + Markdown)

Artifacts with stable keys per run: `ith-ingest-<run>`, `ith-spans-<run>`, `ith-imagine-<run>`,
`ith-fusion-<run>`, `ith-fusion-curves-<run>` and `ith-report-<run>` (where the report is, as
copyable text, and its headline numbers). Flow runs are named `ith-<run id>` and tagged run:, profile:, benchmark:.

Run it with `ith run` (locally, no server needed) or as the Prefect deployment
`ith/full-pipeline` (see prefect.yaml). Parameters stay JSON-friendly.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, Optional, Union

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import Field
from transformers.utils import logging as hf_logging

from flows.artifacts import artifact_key, publish_report
from flows.fusion import run_fusion
from flows.glue import run_glue
from flows.imagine import run_imagine
from flows.lineage import after
from flows.naming import named_by_run, tag_flow_run
from ith_core.config import ConfigError, RunConfig, overrides_dict, overrides_model
from ith_core.fusion.run_systems import needs_imagination
from ith_core.report import summaries
from ith_core.stages import audiobert as audiobert_stage
from ith_core.stages import ingest as ingest_stage
from ith_core.stages import skeleton
from storage.run_lock import hold_run_lock
from tasks import ingest as ingest_tasks
from tasks import report as report_tasks
from tasks import spans as spans_tasks

SpanSettings = overrides_model("span")
ImagineSettings = overrides_model("imagine")
FusionSettings = overrides_model("fusion")
SyntheticSettings = overrides_model("synthetic")
GlueSettings = overrides_model("glue")
AudioBertSettings = overrides_model("audiobert")
# auto, cpu, cuda, or one GPU by number: choices in the deployment form, cuda:N typed in.
Device = Union[Literal["auto", "cpu", "cuda"], Annotated[str, Field(pattern=r"^cuda:[0-9]+$")]]
# `--seeds N` trains with the first N seeds of 42, 43, 44, ... (42: the method's seed).
FIRST_SEED = 42


def build_config(
    profile: str = "tiny",
    run_root: str = "runs",
    run_id: str | None = None,
    data_dir: str | None = None,
    tasks: list[str] | None = None,
    splits: list[str] | None = None,
    sample_limit: int | str | None = None,
    model_dir: str | None = None,
    device: str = "auto",
    span: Any = None,
    imagine: Any = None,
    fusion: Any = None,
    benchmark: str = "auditorybench",
    synthetic: Any = None,
    systems: list[str] | None = None,
    seeds: int | list[int] | None = None,
    audiobert: Any = None,
    rehearsal: bool = False,
    glue: Any = None,
) -> RunConfig:
    """Flow parameters -> a validated RunConfig (profile defaults, then these overrides).

    `sample_limit`: None takes the profile's default, "all" every row, N that many per split.
    `span`, `imagine`, `fusion`, `synthetic`, `audiobert`, `glue`: typed section overrides (or mappings);
    unset fields keep the profile's (and benchmark's) default. `systems`: the table's systems
    (None: the profile's). `seeds`: a list of training seeds, or N for the first N of 42, 43, ...
    (None: fusion.seeds).
    """
    overrides: dict[str, Any] = {
        "run_root": run_root,
        "run_id": run_id,
        "model_dir": model_dir,
        "device": device,
        "benchmark": benchmark,
    }
    if rehearsal:
        overrides["rehearsal"] = True
    if systems:
        overrides["systems"] = systems
    data: dict[str, Any] = {"data_dir": data_dir}
    if tasks:
        data["tasks"] = tasks
    if splits:
        data["splits"] = splits
    if sample_limit == "all":
        data["sample_limit"] = None
    elif sample_limit is not None:
        data["sample_limit"] = sample_limit
    overrides["data"] = data
    overrides.update(
        overrides_dict(span=span, imagine=imagine, fusion=fusion, synthetic=synthetic, audiobert=audiobert, glue=glue)
    )
    if seeds is not None:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise ConfigError(f"seeds must be >= 1 (a count) or a list of seeds, got {seeds}")
            seeds = [FIRST_SEED + i for i in range(seeds)]
        overrides.setdefault("glue" if benchmark == "glue" else "fusion", {})["seeds"] = seeds
    return ingest_stage.resolve_data(RunConfig.for_profile(profile, **overrides))


@flow(name="ith", log_prints=True, flow_run_name=named_by_run("ith", lambda p: build_config(**p).effective_run_id))
def ith_pipeline(
    profile: Literal["tiny", "paper"] = "tiny",
    benchmark: Literal["auditorybench", "synthetic", "glue"] = "auditorybench",
    systems: Optional[list[Literal["bert", "roberta", "audiobert", "ith"]]] = None,
    seeds: Union[Annotated[int, Field(ge=1)], list[int], None] = None,
    run_root: str = "runs",
    run_id: Optional[str] = None,
    data_dir: Optional[str] = None,
    tasks: Optional[list[Literal["animal", "pitch", "sst2", "qnli", "qqp", "mnli", "mrpc", "stsb", "cola"]]] = None,
    splits: Optional[list[Literal["train", "dev", "test", "wiki"]]] = None,
    sample_limit: Union[Annotated[int, Field(ge=1)], Literal["all"], None] = None,
    model_dir: Optional[str] = None,
    device: Device = "auto",
    span: Optional[SpanSettings] = None,
    imagine: Optional[ImagineSettings] = None,
    fusion: Optional[FusionSettings] = None,
    synthetic: Optional[SyntheticSettings] = None,
    audiobert: Optional[AudioBertSettings] = None,
    glue: Optional[GlueSettings] = None,
    rehearsal: bool = False,
) -> dict:
    """Runs every stage and returns the run's summary.

    Args:
        profile: tiny: small random-weight models built offline (its accuracies show that the
            machinery works, nothing about the method); paper: the method's checkpoints.
        benchmark: auditorybench: the real benchmark; synthetic: the planted-signal check, whose
            answers only the audio can give; glue: GLUE's dev sets fine-tuned with and without
            imagined audio (data_dir: a GLUE folder, or the GLUE home filled by `ith data fetch --glue`).
        systems: rows of the table to train and evaluate: bert and roberta (zero-shot and
            fine-tuned text-only), audiobert (retrieved audio), ith (imagined audio); empty: the
            profile's.
        seeds: N (the first N of 42, 43, ...) or a list of seeds; empty: fusion.seeds. Adding
            systems or seeds to a finished run trains only what is new.
        run_root: folder or fsspec URL (s3://, gs://) that holds runs; a relative path resolves
            against the worker's working directory (the checkout, for the deployments of
            prefect.yaml, whose default shows the resolved folder).
        run_id: name of the run folder; empty: the profile, then a hash of the settings and of
            what the data is (e.g. tiny-4cd384b7ac5f), so an identical run reuses every finished
            stage. (No angle brackets here: the deployment form drops them as HTML.)
        data_dir: AuditoryBench folder or URL; empty: $ITH_AUDITORYBENCH_DIR on the worker, else
            its verified home $ITH_HOME/data/auditorybench (`ith data fetch`), else a verified
            download into the home. Where the files are does not change the run id.
        tasks: tasks to run (empty: animal and pitch; GLUE: sst2, qnli, qqp, mnli, mrpc, stsb).
        splits: splits that spans are detected on and fusion scores (empty: all four;
            ingestion always reads all four).
        sample_limit: examples per task and split for span detection; empty: the profile's
            default (64 for tiny), "all": every row.
        model_dir: where models are built or looked for; empty: $ITH_HOME/models on the worker.
        device: auto (a GPU when the worker has one), cpu, cuda or cuda:N (one GPU by number).
        span: span detector settings (stage 1); each empty field keeps the profile's default.
        imagine: generation and CLAP selection settings (stages 2-3); each empty field keeps the
            profile's default.
        fusion: fusion LM settings (stages 4-5); each empty field keeps the profile's default.
        synthetic: sizes and seed of the synthetic benchmark (used only with it).
        audiobert: AudioBERT settings (used only with the audiobert system); each empty field
            keeps the profile's default.
        glue: GLUE fine-tuning settings (used only with benchmark glue; the release's recipe by default).
        rehearsal: set by `ith rehearse` only: the paper profile on random-weight checkpoints at
            paper size (docs/rehearsal.md); its numbers mean nothing about the method.
    """
    started = time.perf_counter()
    # Weight-loading bars of transformers flood worker logs; the stages log their own progress.
    hf_logging.disable_progress_bar()
    cfg = build_config(
        profile,
        run_root,
        run_id,
        data_dir,
        tasks,
        splits,
        sample_limit,
        model_dir,
        device,
        span,
        imagine,
        fusion,
        benchmark,
        synthetic,
        systems,
        seeds,
        audiobert,
        rehearsal,
        glue,
    )
    audiobert_stage.check_pool(cfg)  # a missing clip pool fails here, before any stage runs
    tag_flow_run(cfg)
    # One writer per run: a second flow run (or `ith run`) of this run id refuses, naming the holder.
    # Under `ith run` this process holds the lock already and this is a no-op.
    with hold_run_lock(skeleton.layout_for(cfg), f"flow run {flow_run.name} (ith/{flow_run.flow_name})"):
        return _run_stages(cfg, started)


def _run_stages(cfg: RunConfig, started: float) -> dict:
    config = cfg.resolved()
    logger = get_run_logger()

    reports: dict[str, dict] = {}
    run_id = cfg.effective_run_id
    # Settings and data go in quoted; `wait_for=after(...)` names the task runs a step reads, which are
    # the UI graph's edges (flows/lineage.py).
    settings = quote(config)
    # Ingestion first: a run folder is only created once its benchmark files were found.
    reports["ingest"] = ingest_tasks.ingest_auditorybench(settings)
    logger.info(
        "run %s (profile %s, benchmark %s) in %s", run_id, cfg.profile, cfg.benchmark, skeleton.write_config(cfg)
    )
    create_markdown_artifact(
        summaries.ingest_markdown(run_id, reports["ingest"], summaries.profile_label(cfg), cfg.benchmark),
        key=artifact_key("ingest", run_id),
        description=f"rows, rejects and flags of run {run_id}",
    )
    model_paths = ingest_tasks.prepare_models(settings)
    models = quote(model_paths)
    reports["span_detector"] = spans_tasks.train_span_detector(
        settings, models, wait_for=after(reports["ingest"], model_paths)
    )
    reports["spans"] = spans_tasks.detect_spans(
        settings, models, wait_for=after(reports["ingest"], model_paths, reports["span_detector"])
    )
    create_markdown_artifact(
        summaries.spans_markdown(
            run_id, reports["span_detector"], reports["spans"], summaries.profile_label(cfg), cfg.benchmark
        ),
        key=artifact_key("spans", run_id),
        description=f"span detection of run {run_id}",
    )
    # Imagination is ITH's (and the tiny AudioBERT stand-in pool's) input; text-only systems skip it.
    if needs_imagination(cfg):
        reports["imagine"] = run_imagine(config, model_paths, wait_for=after(model_paths, reports["spans"]))
    else:
        reports["imagine"] = {"skipped": f"no system of {list(cfg.systems)} hears imagined audio"}
    # Fusion reads the spans and the imagine stage's selection; a subflow's result is not traced (flows/lineage.py).
    if cfg.benchmark == "glue":
        reports["glue"] = run_glue(config, model_paths, wait_for=after(model_paths, reports["spans"]))
    else:
        reports["fusion"] = run_fusion(config, model_paths, wait_for=after(model_paths, reports["spans"]))
    summary_url = report_tasks.write_summary(
        settings,
        quote(reports),
        time.perf_counter() - started,
        wait_for=after(reports["ingest"], reports["span_detector"], reports["spans"]),
    )
    report = report_tasks.write_report(settings, wait_for=after(summary_url))
    publish_report(run_id, report)
    logger.info("summary: %s; report: %s", summary_url, report["html"])
    return {
        "run_id": run_id,
        "run_dir": skeleton.layout_for(cfg).url(),
        "summary": summary_url,
        "report": report["html"],
        "flow_run_id": flow_run.id,
        "stages": reports,
    }
