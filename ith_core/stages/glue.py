"""Stage drivers `train-glue` and `summarise-glue` of `--benchmark glue`: fine-tuning on each GLUE
task with (ITH) and without (BERT) imagined audio, and GLUE's metrics on the dev sets.

What comes before is the pipeline's own: ingestion writes GLUE's rows as examples (a pair joined
by "\\n", the label as the answer) and AuditoryBench's rows for the span detector; the detector,
imagination, CLAP selection and the audio encoding run unchanged over GLUE's tasks. One job per
(task, system, seed), in its own stage folder (`glue_train/<task>-<system>-seed<seed>`), so a rerun
trains only what is missing; `summarise-glue` scores every job's dev predictions together:
GLUE's metric(s) per task with bootstrap intervals over the dev rows, and ITH minus BERT per
task and metric on the same rows (paired bootstrap).
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from ith_core.config import RunConfig
from ith_core.data import glue as glue_data
from ith_core.evaluation import glue_metrics
from ith_core.fusion.glue_training import GlueJob, train_and_evaluate
from ith_core.models.profiles import model_identity
from ith_core.stages.fusion import FEATURES, generator_record, imagined_inputs
from ith_core.stages.imagine import no_audio_error
from ith_core.stages.skeleton import layout_for, reuse_or_clear, stage_key
from ith_core.stages.system_inputs import resolve_device
from storage import run_files
from storage.layout import RunLayout

logger = logging.getLogger(__name__)

GLUE_VERSION = 1  # bump when a GLUE stage writes something else for the same inputs

# The fusion settings a GLUE model takes (the learning rates and epochs are GLUE's own).
FUSION_SETTINGS = (
    "train_audio_encoder",
    "audio_tokens",
    "standardize_audio",
    "fusion_layer",
    "num_heads",
    "ffn_dim",
    "dropout",
)


def glue_jobs(cfg: RunConfig) -> list[tuple[str, str, int]]:
    """(task, system, seed) of every fine-tuning of the run, in the order they run."""
    return [(task, system, seed) for task in cfg.data.tasks for system in cfg.systems for seed in cfg.glue.seeds]


def _settings(cfg: RunConfig) -> dict:
    glue = cfg.glue.model_dump(mode="json")
    for key in ("seeds", "eval_batch_size", "bootstrap"):
        glue.pop(key)
    fusion = cfg.fusion.model_dump(mode="json")
    return {"glue": glue, "fusion": {k: fusion[k] for k in FUSION_SETTINGS}}


def _job_key(layout: RunLayout, cfg: RunConfig, model_paths: dict[str, str], job: GlueJob) -> str:
    inputs = [run_files.INGEST, run_files.SPANS] + ([FEATURES] if job.hears_audio else [])
    return stage_key(
        run_files.glue_stage(job.task, job.system, job.seed),
        GLUE_VERSION,
        {s: layout.finished_key(s) for s in inputs},
        _settings(cfg),
        model_identity(model_paths["lm"]),
        model_identity(model_paths["audio_encoder"]) if job.hears_audio else None,
        job.task,
        job.system,
        job.seed,
    )


def sampled_rows(layout: RunLayout, task: str, split: str) -> list[dict]:
    """GLUE's rows of (task, split) that the spans stage sampled, in example-id order."""
    ids = layout.read_table(*run_files.sampled_examples(task, split))["example_id"]
    table = layout.read_table(*run_files.GLUE_ROWS)
    table = table.filter(pc.is_in(table["example_id"], value_set=ids))
    return table.sort_by("example_id").to_pylist()


def train_glue(cfg: RunConfig, model_paths: dict[str, str], task: str, system: str, seed: int) -> dict:
    """Fine-tunes one (task, system, seed) on the sampled train rows; writes its dev predictions."""
    layout = layout_for(cfg)
    job = GlueJob(task, system, seed, glue_data.TASKS[task].num_labels)
    stage = run_files.glue_stage(task, system, seed)
    key = _job_key(layout, cfg, model_paths, job)
    if (report := reuse_or_clear(layout, stage, key)) is not None:
        return report
    spans, features = imagined_inputs(layout) if job.hears_audio else ({}, None)
    if job.hears_audio and not len(features):
        raise no_audio_error(cfg)
    report, rows = train_and_evaluate(
        job,
        cfg.glue,
        cfg.fusion,
        model_paths["lm"],
        sampled_rows(layout, task, "train"),
        sampled_rows(layout, task, "dev"),
        spans,
        features,
        model_paths["audio_encoder"] if job.hears_audio and cfg.fusion.train_audio_encoder else None,
        resolve_device(cfg),
    )
    layout.write_table(
        pa.Table.from_pylist(rows, schema=run_files.GLUE_PREDICTION_SCHEMA), *run_files.predictions(stage)
    )
    report = {**report, "outputs": {"predictions": layout.url(*run_files.predictions(stage))}}
    layout.mark_done(stage, key, report)
    return {**report, "cached": False}


def summarise_glue(cfg: RunConfig) -> dict:
    """Every job's dev predictions scored together: `glue/results.json` and `glue/predictions.parquet`."""
    layout = layout_for(cfg)
    jobs = glue_jobs(cfg)
    stages = [run_files.glue_stage(*j) for j in jobs]
    key = stage_key(run_files.GLUE, GLUE_VERSION, {s: layout.finished_key(s) for s in stages}, cfg.glue.bootstrap)
    if (report := reuse_or_clear(layout, run_files.GLUE, key)) is not None:
        return report
    started = time.perf_counter()
    table = pa.concat_tables([layout.read_table(*run_files.predictions(s)) for s in stages])
    layout.write_table(table, *run_files.GLUE_PREDICTIONS)
    rows = table.to_pylist()
    tasks: dict[str, dict] = {}
    for task in cfg.data.tasks:
        task_rows = [r for r in rows if r["task"] == task]
        entry: dict = {"metrics": list(glue_metrics.METRICS[task]), "systems": {}, "paired": {}}
        aligned = {}
        for system in cfg.systems:
            ids, predictions, labels = glue_metrics.aligned([r for r in task_rows if r["system"] == system])
            aligned[system] = (ids, predictions, labels)
            entry["systems"][system] = {
                "rows": len(ids),
                "seeds": predictions.shape[0],
                "spans_fused_rows": sum(1 for r in task_rows if r["system"] == system and r["spans_fused"] > 0),
                **glue_metrics.bootstrap_metrics(
                    task, predictions, labels, n_boot=cfg.glue.bootstrap, seed=cfg.data.sample_seed
                ),
            }
        if {"bert", "ith"} <= set(aligned):
            common = sorted(set(aligned["bert"][0]) & set(aligned["ith"][0]))
            _, pred_bert, labels = glue_metrics.aligned([r for r in task_rows if r["system"] == "bert"], common)
            _, pred_ith, _ = glue_metrics.aligned([r for r in task_rows if r["system"] == "ith"], common)
            entry["paired"] = {
                "rows": len(common),
                "comparison": "ith minus bert",
                **glue_metrics.paired_bootstrap(
                    task, pred_bert, pred_ith, labels, n_boot=cfg.glue.bootstrap, seed=cfg.data.sample_seed
                ),
            }
        tasks[task] = entry
    results = {
        "benchmark": "glue",
        "split": "dev",
        "systems": list(cfg.systems),
        "seeds": list(cfg.glue.seeds),
        "bootstrap": cfg.glue.bootstrap,
        "generator": generator_record(cfg, layout),
        "tasks": tasks,
    }
    layout.write_json(results, *run_files.GLUE_RESULTS)
    report = {
        "results": results,
        "rows": table.num_rows,
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {
            "results": layout.url(*run_files.GLUE_RESULTS),
            "predictions": layout.url(*run_files.GLUE_PREDICTIONS),
        },
    }
    layout.mark_done(run_files.GLUE, key, report)
    return {**report, "cached": False}
