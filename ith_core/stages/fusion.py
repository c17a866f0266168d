"""Stage drivers of stages 4-5 (audio encoding, fusion LM training, evaluation); no Prefect here.

    encode_audio(cfg, model_paths)            selection -> AST features once per selected audio
    train_stage(cfg, model_paths, variant)        `accelerate launch -m ith_core.fusion.training` for
                                                  every task x seed of one variant ("ith" | "text")
    evaluate_stage(cfg, model_paths)              dev-best models -> predictions, accuracy with 95 %
                                                  bootstrap intervals, ours vs paper

Files in the run folder (`<run_root>/<run_id>/`):

    fusion_features/   examples.parquet   the run's sampled examples (ingest columns the LM reads)
                       selection.parquet  the imagine selection adapted to `read_selection`'s contract
                       part-*.safetensors/.parquet, features.json   (storage.features)
    fusion_train_ith/  spec.json, train.log, <job>/best/, <job>/DONE.json   (ith_core.fusion.training)
    fusion_train_text/ the same for the text-only baseline
    fusion/            results.parquet, predictions.parquet, results.json
    <stage>/_DONE.json written last (storage.layout)

Which examples: the examples the spans stage sampled (`data.sample_limit` per task and split).
Training uses the sampled train split, the dev-best epoch is picked on the sampled dev split,
and dev/test/wiki (those in `data.splits`) are scored. Examples without an accepted audio, or
without any detected span, are trained and scored too, just without fusion. Fusion needs
`train` and `dev` in `data.splits`; otherwise `skip_reason` says why and the flow skips it.

The library does the rest: `ith_core.fusion.run_systems` (the run's systems and seeds),
`ith_core.fusion.launch` (the `accelerate launch` command, its streamed output) and
`ith_core.evaluation.model_scoring` (one model's predictions on one task's splits).

Unlike the earlier stages, a fusion stage without its marker is NOT cleared before it runs:
feature shards and training states are the resume points (a crashed or retried task picks up
from the last whole shard / last saved epoch). The stage key is written first (`_KEY.json`); a
leftover folder with another key is cleared, so a resume never mixes settings.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch

from ith_core.config import ConfigError, RunConfig
from ith_core.evaluation.model_scoring import score_model
from ith_core.evaluation.scoring import (
    INTERVALS,
    UNIT_NAMES,
    accuracy_table,
    bootstrap_units,
    majority_baseline,
    paired_comparisons,
    results_dict,
    seed_mean_table,
)
from ith_core.fusion.audio_features import read_selection
from ith_core.fusion.launch import launch_command, run_streaming
from ith_core.fusion.lm_inputs import spans_from_selection
from ith_core.fusion.model import FusionLM
from ith_core.fusion.run_systems import needs_imagination, run_systems, seeds_of
from ith_core.fusion.systems import (  # noqa: F401
    EVAL_SPLITS,
    SYSTEMS,
    ZERO_SHOT_SEED,
    System,
    eval_stage_name,
    run_label,
    train_stage_name,
)
from ith_core.fusion.training import TrainJob, TrainSpec, load_best, resolve_mixed_precision
from ith_core.models.profiles import load_lm, model_identity
from ith_core.stages import audiobert as audiobert_stage
from ith_core.stages.imagine import no_audio_error
from ith_core.stages.skeleton import KEY_FILE, layout_for, reuse_or_resume, stage_key
from ith_core.stages.system_inputs import (
    adapt_selection,
    encode_selection,
    resolve_device,
    sampled_examples,
    spans_table,
    tasks_with_train_rows,
)
from storage import run_files
from storage.features import FeatureStore
from storage.layout import DONE_MARKER, RunLayout

FEATURES = run_files.FUSION_FEATURES
EXAMPLES = run_files.FUSION_EXAMPLES
EVALUATE = run_files.FUSION
# Bump when this module changes what a stage writes for the same inputs.
# 2: sentences longer than max_length are windowed; 3: the paper recipe; 4: systems x seeds;
# 5: models enter keys by their identity (profiles.model_identity), not their folder;
# 6: keys follow the one scheme of stages/skeleton.py ([stage, version, *parts]).
FUSION_VERSION = 6


def skip_reason(cfg: RunConfig) -> str | None:
    """Why the fusion stages cannot run on this run's splits (None: they can)."""
    missing = [s for s in ("train", "dev") if s not in cfg.data.splits]
    if missing:
        return (
            f"fusion needs the train and dev splits (train to learn, dev to pick the best epoch); "
            f"data.splits is {list(cfg.data.splits)}, missing {missing}"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Stage 4: audio features


def _features_key(layout: RunLayout, cfg: RunConfig, model_paths: dict[str, str]) -> str:
    f = cfg.fusion
    return stage_key(
        FEATURES,
        FUSION_VERSION,
        {s: layout.finished_key(s) for s in (run_files.INGEST, run_files.SPANS, run_files.IMAGINE)},
        cfg.data.tasks,
        cfg.data.splits,
        model_identity(model_paths["audio_encoder"]),
        f.train_audio_encoder,
        f.audio_tokens,
    )


def encode_audio(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Adapts the selection, then encodes every distinct chosen waveform once into feature shards.

    Features live in the run folder, not in a store shared by runs: `storage.features` names
    shards by position in the run's sorted id list, so two runs with different selections would
    write different content under the same shard name. Within a run each waveform is encoded
    once however many examples (or tasks) use it, and finished shards are skipped on a rerun.
    """
    layout = layout_for(cfg)
    key = _features_key(layout, cfg, model_paths)
    if (report := reuse_or_resume(layout, FEATURES, key)) is not None:
        return report
    started = time.perf_counter()
    imagined = layout.read_table(*run_files.SELECTION)
    # Only this run's tasks and splits (the imagine stage covers exactly those; a copied folder may not).
    imagined = imagined.filter(
        pc.and_(
            pc.is_in(imagined["task"], value_set=pa.array(list(cfg.data.tasks))),
            pc.is_in(imagined["split"], value_set=pa.array(list(cfg.data.splits))),
        )
    )
    selection, counts = adapt_selection(imagined, spans_table(layout, cfg), layout.read_table(*run_files.CANDIDATES))
    report = encode_selection(
        cfg,
        model_paths,
        FEATURES,
        sampled_examples(layout, cfg),
        selection,
        trainable_encoder=cfg.fusion.train_audio_encoder,
        audio_tokens=cfg.fusion.audio_tokens,
    )
    report = {**report, "span_rows": counts, "seconds": round(time.perf_counter() - started, 3)}
    layout.mark_done(FEATURES, key, report)
    return {**report, "cached": False}


# ---------------------------------------------------------------------------------------------
# The examples every system trains and is scored on


def prepare_examples(cfg: RunConfig) -> dict:
    """`fusion_examples/examples.parquet`: the sampled examples with the columns the LM and the scorer read."""
    layout = layout_for(cfg)
    key = stage_key(
        EXAMPLES,
        FUSION_VERSION,
        {s: layout.finished_key(s) for s in (run_files.INGEST, run_files.SPANS)},
        cfg.data.tasks,
        cfg.data.splits,
    )
    if (report := reuse_or_resume(layout, EXAMPLES, key)) is not None:
        return report
    examples = sampled_examples(layout, cfg)
    layout.write_table(examples, *run_files.inputs_examples(EXAMPLES))
    counts = Counter(f"{t}/{s}" for t, s in zip(examples["task"].to_pylist(), examples["split"].to_pylist()))
    report = {
        "examples": examples.num_rows,
        "per_split": dict(sorted(counts.items())),
        "outputs": {"examples": layout.url(*run_files.inputs_examples(EXAMPLES))},
    }
    layout.mark_done(EXAMPLES, key, report)
    return {**report, "cached": False}


# ---------------------------------------------------------------------------------------------
# Stage 5: training, one (system, seed) at a time


def _training_settings(cfg: RunConfig) -> dict:
    # Everything in FusionConfig changes the trained weights except how many processes share the
    # global batch, how many bootstrap samples the scorer draws and which seeds the run has (the
    # seed of a job is part of its own key).
    settings = cfg.fusion.model_dump(mode="json")
    for name in ("num_processes", "bootstrap_samples", "seeds"):
        settings.pop(name)
    return settings


def _system_inputs(layout: RunLayout, system: System) -> tuple[str, str]:
    """(stage holding the system's examples/selection/features, that stage's key)."""
    stage = {"imagined": FEATURES, "retrieved": run_files.AUDIOBERT_FEATURES}.get(system.audio, EXAMPLES)
    return stage, layout.finished_key(stage)


def _train_key(layout: RunLayout, cfg: RunConfig, model_paths: dict[str, str], system: System, seed: int) -> str:
    stage, inputs_key = _system_inputs(layout, system)
    extra = cfg.audiobert.model_dump(mode="json") if system.audio == "retrieved" else None
    return stage_key(
        "train",
        FUSION_VERSION,
        system.name,
        seed,
        inputs_key,
        model_identity(model_paths[system.lm_role]),
        _training_settings(cfg),
        extra,
    )


def _local_work_dir(layout: RunLayout, stage: str, key: str) -> Path:
    """Where the trainer writes: the stage folder itself on local disk, else a local working folder
    (per run root and run id, see `RunLayout.work_dir`) that is reused only for the same stage key."""
    out = layout.work_dir(stage)
    if not layout.is_local:
        marker = out / KEY_FILE
        if out.exists() and (not marker.is_file() or json.loads(marker.read_text()).get("key") != key):
            shutil.rmtree(out)  # left by other settings: its states must not be resumed from
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"key": key}))
    return out


def _train_spec(cfg: RunConfig, model_paths: dict[str, str], system: System, seed: int, inputs: Path, out: Path):
    """The TrainSpec of one (system, seed): one job per task with train and dev rows."""
    if system.audio == "retrieved":
        return audiobert_stage.train_spec(cfg, model_paths, seed, out)
    train_tasks = tasks_with_train_rows(inputs / run_files.EXAMPLES_FILE, cfg)
    if not train_tasks:
        raise RuntimeError(
            f"no sampled train and dev examples for tasks {list(cfg.data.tasks)}; sample more "
            "examples or add the train and dev splits"
        )
    imagined = system.audio == "imagined"
    if imagined and not any(inputs.glob("part-*.parquet")):
        raise no_audio_error(cfg)
    return TrainSpec(
        lm_path=str(model_paths[system.lm_role]),
        examples_path=str(inputs / run_files.EXAMPLES_FILE),
        output_dir=str(out),
        selection_path=str(inputs / run_files.SELECTION_FILE) if imagined else None,
        features_dir=str(inputs) if imagined else None,
        audio_encoder_path=str(model_paths["audio_encoder"]) if imagined and cfg.fusion.train_audio_encoder else None,
        fusion=cfg.fusion.model_dump(mode="json"),
        jobs=tuple(TrainJob(task, "ith" if imagined else "text", seed) for task in train_tasks),
    )


def train_system(cfg: RunConfig, model_paths: dict[str, str], system_name: str, seed: int) -> dict:
    """Trains one system with one seed, every task, in one `accelerate launch` (jobs one after another).

    Its own stage (`fusion_train/<system>-seed<seed>/`), so a failed seed reruns alone and adding
    a seed or a system to a finished run trains only what is new. Resumable: the entry point
    skips finished jobs (DONE.json) and resumes an interrupted one from its last saved state.
    """
    system = SYSTEMS[system_name]
    if not system.trained:
        raise ConfigError(f"system {system_name} is zero-shot: it has nothing to train")
    layout = layout_for(cfg)
    stage = train_stage_name(system.name, seed)
    key = _train_key(layout, cfg, model_paths, system, seed)
    if (report := reuse_or_resume(layout, stage, key)) is not None:
        return report
    started = time.perf_counter()
    inputs = layout.local_dir(_system_inputs(layout, system)[0])
    out = _local_work_dir(layout, stage, key)
    out.mkdir(parents=True, exist_ok=True)
    spec = _train_spec(cfg, model_paths, system, seed, inputs, out)
    spec_path = out / run_files.TRAIN_SPEC
    spec_path.write_text(json.dumps(spec.to_json(), indent=2))
    cuda = torch.cuda.is_available() and resolve_device(cfg) != "cpu"
    precision = resolve_mixed_precision(spec.fusion_config.mixed_precision)
    cmd = launch_command(str(spec_path), cfg.fusion.num_processes, precision, cuda)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
    }
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    rc, tail = run_streaming(cmd, out / run_files.TRAIN_LOG, env)
    what = f"training {system.name} seed {seed}"
    if rc < 0:  # killed by a signal (e.g. for memory): not the inputs' fault, so a retry may succeed
        raise ChildProcessError(
            f"{what} was killed by signal {-rc}; the next attempt resumes from the last saved "
            "epoch. Last output:\n" + "\n".join(tail[-15:])
        )
    if rc != 0:
        raise RuntimeError(
            f"{what} exited with status {rc}; the next attempt resumes from the last saved epoch. "
            "Last output:\n" + "\n".join(tail[-15:])
        )
    jobs = []
    for job in spec.jobs:
        done = out / job.name / "DONE.json"
        if not done.is_file():
            raise RuntimeError(f"{what} ended without {done}; see {out / run_files.TRAIN_LOG}")
        jobs.append(json.loads(done.read_text()))
        # The resume states (optimizer included) are only needed until the job is done.
        shutil.rmtree(out / job.name / "states", ignore_errors=True)
    if not layout.is_local:
        layout.put_dir(out, stage)
        layout.write_json({"key": key}, stage, KEY_FILE)
    report = {
        "system": system.name,
        "seed": seed,
        "launch": " ".join(cmd),
        "num_processes": cfg.fusion.num_processes,
        "device": "cuda" if cuda else "cpu",
        "jobs": [
            {
                k: j.get(k)
                for k in (
                    "job",
                    "task",
                    "seed",
                    "steps",
                    "best_dev",
                    "best_epoch",
                    "history",
                    "resumed_from",
                    "seconds",
                    "train_samples_per_s",
                    "world_size",
                    "data",
                    # Where the time went (ith rehearse's unit costs); absent in a job trained before.
                    "examples_seen",
                    "seconds_steps",
                    "seconds_dev",
                    "seconds_saving",
                )
                if k in j or k not in ("examples_seen", "seconds_steps", "seconds_dev", "seconds_saving")
            }
            for j in jobs
        ],
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {"models": layout.url(stage), "log": layout.url(stage, run_files.TRAIN_LOG)},
    }
    layout.mark_done(stage, key, report)
    return {**report, "cached": False}


def trained_jobs(layout: RunLayout, system: str, seeds) -> list[tuple[dict, Path]]:
    """(job report, job folder) of every finished job of `system` over `seeds`."""
    out = []
    for seed in seeds:
        stage = train_stage_name(system, seed)
        if layout.exists(stage, DONE_MARKER):
            folder = layout.local_dir(stage)
            out += [(job, folder / job["job"]) for job in layout.read_json(stage, DONE_MARKER)["report"]["jobs"]]
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation, one (system, seed) at a time, then the table


def _eval_key(layout: RunLayout, cfg: RunConfig, model_paths: dict[str, str], system: System, seed: int) -> str:
    upstream = (
        layout.finished_key(train_stage_name(system.name, seed))
        if system.trained
        else [layout.finished_key(EXAMPLES), model_identity(model_paths[system.lm_role])]
    )
    return stage_key("eval", FUSION_VERSION, system.name, seed, upstream, cfg.fusion.max_length, cfg.data.splits)


def evaluate_system(cfg: RunConfig, model_paths: dict[str, str], system_name: str, seed: int) -> dict:
    """Scores one (system, seed) on the run's sampled dev/test/wiki examples of every task.

    Trained systems: the dev-best checkpoint of each task's job. Zero-shot systems: the masked
    LM of their role as it is, with the task heads (one [MASK] per wordpiece of the gold animal,
    argmax over the vocabulary; argmax over lower/higher), no training. Writes
    `fusion_eval/<system>[-seed<seed>]/predictions.parquet`. Every row of an evaluated split is
    scored (a sentence longer than `max_length` is windowed around its mask) or counted in
    `scoring` with its reason: rows = scored + unscored, checked here.
    """
    system = SYSTEMS[system_name]
    layout = layout_for(cfg)
    stage = eval_stage_name(system.name, seed)
    key = _eval_key(layout, cfg, model_paths, system, seed)
    if (report := reuse_or_resume(layout, stage, key)) is not None:
        return report
    started = time.perf_counter()
    examples = layout.read_table(*run_files.inputs_examples(EXAMPLES)).to_pylist()
    splits = [s for s in EVAL_SPLITS if s in cfg.data.splits]
    device = resolve_device(cfg)
    spans, features = {}, None
    if system.audio == "imagined":
        spans, features = imagined_inputs(layout)
    elif system.audio == "retrieved":
        spans, features = audiobert_stage.eval_inputs(cfg)
    predictions: list[dict] = []
    scoring: dict[str, dict] = {}
    if system.trained:
        for job, folder in trained_jobs(layout, system.name, [seed]):
            model, tokenizer, _ = load_best(folder, device)
            predictions += score_model(
                model,
                tokenizer,
                job["task"],
                examples,
                splits,
                spans,
                features,
                cfg.fusion.max_length,
                device,
                system.name,
                seed,
                scoring,
                zero_shot=False,
            )
            del model
    else:
        mlm, tokenizer = load_lm(model_paths[system.lm_role])
        model = FusionLM(mlm, audio_dim=None, num_heads=1, ffn_dim=1, dropout=0.0, fusion=False).to(device).eval()
        for task in cfg.data.tasks:
            predictions += score_model(
                model,
                tokenizer,
                task,
                examples,
                splits,
                spans,
                None,
                cfg.fusion.max_length,
                device,
                system.name,
                seed,
                scoring,
                zero_shot=True,
            )
    layout.write_table(
        pa.Table.from_pylist(predictions, schema=run_files.PREDICTION_SCHEMA), *run_files.predictions(stage)
    )
    report = {
        "system": system.name,
        "seed": seed,
        "splits": splits,
        "predictions": len(predictions),
        "scoring": scoring,
        "unscored_rows": sum(sum(a["unscored"].values()) for a in scoring.values()),
        "examples_with_audio": sum(1 for p in predictions if p["audio_ids"]),
        "device": device,
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {"predictions": layout.url(*run_files.predictions(stage))},
    }
    layout.mark_done(stage, key, report)
    return {**report, "cached": False}


def imagined_inputs(layout: RunLayout):
    """(spans by example id, FeatureReader) of the imagined audio the encode-audio stage wrote: the spans of
    its selection.parquet (each with its chosen clip) and the stored features, for scoring or fine-tuning."""
    spans = spans_from_selection(read_selection(str(layout.local_dir(FEATURES) / run_files.SELECTION_FILE)))
    return spans, FeatureStore(layout, FEATURES).reader()


def generator_record(cfg: RunConfig, layout: RunLayout) -> dict:
    """Which generator imagined the audio the run's systems heard: `imagine.generator`, and the
    identity the imagine stage planned with (plan.json's settings; it enters every audio id), so
    runs with different generators can be told apart. `imagined` false: no system of the run heard
    imagined audio, so the stage did not run and there is no identity."""
    imagined = needs_imagination(cfg)
    plan = layout.read_json(*run_files.PLAN) if imagined and layout.exists(*run_files.PLAN) else {}
    return {"name": cfg.imagine.generator, "id": (plan.get("settings") or {}).get("generator_id"), "imagined": imagined}


def summarise_results(cfg: RunConfig) -> dict:
    """The table over the run's systems and seeds: `fusion/predictions.parquet` (every system's
    rows), `fusion/results.parquet` (accuracy per system, seed, task, split and metric with 95 %
    intervals), `fusion/results.json` (mean and sd over seeds with intervals, published numbers,
    paired comparisons, constant-answer levels). Recomputed whenever the set of evaluations changes.
    """
    layout = layout_for(cfg)
    stages = [eval_stage_name(s.name, seed) for s in run_systems(cfg) for seed in seeds_of(cfg, s)]
    key = stage_key(
        EVALUATE, FUSION_VERSION, {st: layout.finished_key(st) for st in stages}, cfg.fusion.bootstrap_samples
    )
    # Derived from the evaluations it lists, so a marker of another set of them is simply redone.
    if layout.exists(EVALUATE, DONE_MARKER):
        marker = layout.read_json(EVALUATE, DONE_MARKER)
        if marker.get("key") == key:
            return {**marker["report"], "cached": True}
        layout.fs.rm(layout.path(EVALUATE), recursive=True)
    started = time.perf_counter()
    examples = layout.read_table(*run_files.inputs_examples(EXAMPLES)).to_pylist()
    predictions = [p for st in stages for p in layout.read_table(*run_files.predictions(st)).to_pylist()]
    splits = [s for s in EVAL_SPLITS if s in cfg.data.splits]
    clusters = bootstrap_units(examples, cfg.benchmark)
    table = accuracy_table(predictions, n_boot=cfg.fusion.bootstrap_samples, clusters=clusters)
    results = results_dict(table, cfg.benchmark, {s.name: s.published for s in SYSTEMS.values()})
    results["systems"] = [
        {
            "name": s.name,
            "label": s.label,
            "family": s.family,
            "trained": s.trained,
            "audio": s.audio,
            "published": s.published,
            "seeds": list(seeds_of(cfg, s)),
        }
        for s in run_systems(cfg)
    ]
    results["over_seeds"] = seed_mean_table(predictions, n_boot=cfg.fusion.bootstrap_samples, clusters=clusters)
    results["paired"] = paired_comparisons(
        predictions,
        [("ith", "audiobert"), ("ith", "bert-text")],
        n_boot=cfg.fusion.bootstrap_samples,
        clusters=clusters,
    )
    results["benchmark"] = cfg.benchmark
    results["generator"] = generator_record(cfg, layout)
    results["bootstrap_unit"] = UNIT_NAMES[cfg.benchmark]
    results["intervals"] = INTERVALS
    results["majority"] = majority_baseline(examples, splits)
    layout.write_table(
        pa.Table.from_pylist(predictions, schema=run_files.PREDICTION_SCHEMA), *run_files.ALL_PREDICTIONS
    )
    layout.write_table(pa.Table.from_pylist(table), *run_files.RESULTS_TABLE)
    layout.write_json(results, *run_files.RESULTS)
    report = {
        "splits": splits,
        "systems": results["systems"],
        "predictions": dict(Counter(p["model"] for p in predictions)),
        "ours_vs_paper": results["ours_vs_paper"],
        "over_seeds": results["over_seeds"],
        "paired": results["paired"],
        "per_seed": results["per_seed"],
        "benchmark": cfg.benchmark,
        "generator": results["generator"],
        "bootstrap_unit": results["bootstrap_unit"],
        "majority": results["majority"],
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {
            parts[-1]: layout.url(*parts)
            for parts in (run_files.RESULTS_TABLE, run_files.ALL_PREDICTIONS, run_files.RESULTS)
        },
    }
    layout.mark_done(EVALUATE, key, report)
    return {**report, "cached": False}


# ---------------------------------------------------------------------------------------------
# Markdown summaries (the flow publishes them as Prefect artifacts)


def fusion_summary(
    prepared: dict[str, dict], train_reports: list[dict], eval_reports: list[dict], results: dict
) -> dict:
    """The compact fusion section of summary.json: per stage seconds and reuse, per system seconds, the table."""
    seconds_by_system: Counter = Counter()
    for r in (*train_reports, *eval_reports):
        seconds_by_system[r["system"]] += r.get("seconds", 0.0) if not r.get("cached") else 0.0
    scoring = next((r["scoring"] for r in eval_reports if r.get("scoring")), None)
    return {
        "prepared": {
            name: {
                k: r.get(k)
                for k in (
                    "seconds",
                    "cached",
                    "examples",
                    "distinct_audios",
                    "audios_encoded",
                    "examples_with_audio",
                    "span_rows",
                )
            }
            for name, r in prepared.items()
        },
        "train": [
            {
                "system": r["system"],
                "seed": r["seed"],
                "seconds": r.get("seconds"),
                "cached": r.get("cached"),
                "best_dev": {j["job"]: j["best_dev"] for j in r.get("jobs", [])},
            }
            for r in train_reports
        ],
        "evaluate": [
            {"system": r["system"], "seed": r["seed"], "seconds": r.get("seconds"), "cached": r.get("cached")}
            for r in eval_reports
        ],
        "summarise": {"seconds": results.get("seconds"), "cached": results.get("cached")},
        "seconds_by_system": {k: round(v, 3) for k, v in seconds_by_system.items()},
        "systems": results.get("systems"),
        "ours_vs_paper": results.get("ours_vs_paper"),
        "over_seeds": results.get("over_seeds"),
        "paired": results.get("paired"),
        "benchmark": results.get("benchmark"),
        "generator": results.get("generator"),
        "bootstrap_unit": results.get("bootstrap_unit"),
        "majority": results.get("majority"),
        "scoring": scoring,
        "unscored_rows": sum(r.get("unscored_rows", 0) for r in eval_reports),
        "outputs": results.get("outputs"),
        "seconds": round(
            sum(
                r.get("seconds", 0)
                for r in (*prepared.values(), *train_reports, *eval_reports, results)
                if not r.get("cached")
            ),
            3,
        ),
    }
