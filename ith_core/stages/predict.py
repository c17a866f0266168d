"""`ith predict`: answer the [MASK] of new sentences with a trained run, with and without imagined audio.

    results = predict_sentences("runs", "tiny-0123abcd", ["Rattle is the sound a [MASK] makes."])

Per sentence, with the run's own models and settings (its `config.json`):

1. spans: the run's span detector (`<run>/span_detector/model`), with character offsets;
2. prompts and audio ids exactly as the imagine stage builds them (`prompt_for`, `audio_id`
   with the `GenerationSettings` recorded in the run's imagine plan), so a prompt the run (or
   any run over the same run root) already generated is read from the shared audio store
   (`<run_root>/_imagine`) and never generated again. Unseen prompts are generated and
   CLAP-scored by the imagine stage's own `generate_candidates`, which writes their WAVs and then their
   shard manifest into the store (completion marked last), so a second call reuses them;
3. selection with the run's threshold for the task (first candidate scoring >= threshold); the
   chosen waveform's id is `<audio_id>-c<candidate>` as in the fusion stage's adapter;
4. the chosen audio is encoded by `precompute_audio_features`, the training path itself (same
   16 kHz mono preparation, AST, token pooling, fp16), and the input statistics the ITH model
   standardises it with are the trained projector's buffers, loaded with its weights;
5. the dev-best ITH and text-only models of the task (`load_best`; with several seeds, the seed
   with the best dev accuracy) score the mask.

Sentences without a span get no audio (the imagine stage's fallback prompt "sound" is never
fused, so it is not generated here); spans whose candidates all fail CLAP are not fused either.
Both are reported per span.

The answers (the pitch and animal heads), the task inferred when none is given, the checks
of the sentences and their printed form are in `ith_core.fusion.answering`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ith_core.config import TASKS, ConfigError, RunConfig
from ith_core.fusion.answering import PredictInputError, answer, check_sentences, infer_task
from ith_core.fusion.audio_features import precompute_audio_features
from ith_core.fusion.training import load_best
from ith_core.imagination.clap_scoring import NO_CANDIDATE, first_passing
from ith_core.imagination.generators import GENERATION_VERSION, GenerationSettings, audio_id, prompt_for
from ith_core.imagination.planning import rows_by_id
from ith_core.imagination.sampling import needs_work, work_spec
from ith_core.models import profiles
from ith_core.models.profiles import load_audio_encoder
from ith_core.models.span_detector import detect_spans, resolve_device
from ith_core.stages import imagine as imagine_stage
from ith_core.stages.fusion import FEATURES, trained_jobs
from ith_core.stages.imagine import STAGE as IMAGINE
from ith_core.stages.ingest import tiny_corpus
from ith_core.stages.skeleton import load_run_config
from storage import run_files
from storage.audio_store import AudioStore, shard_name
from storage.layout import DONE_MARKER, RunLayout

logger = logging.getLogger(__name__)

# Scratch run folders (under the run root) that hold the one-shard plan `generate_candidates` reads; removed
# after the shard is written. The leading underscore keeps them apart from run ids, like `_imagine`.
SCRATCH_PREFIX = "_predict-"


class RunNotReadyError(RuntimeError):
    """The run lacks a stage that prediction needs; the message names the stage and how to make it."""


# ---------------------------------------------------------------------------------------------
# The run


def _require_stage(layout: RunLayout, stage: str, what: str) -> dict:
    if not layout.exists(stage, DONE_MARKER):
        raise RunNotReadyError(
            f"run {layout.url()} has no finished stage '{stage}' ({what}); finish the run with "
            "`ith run` (same settings) before predicting with it"
        )
    return layout.read_json(stage, DONE_MARKER)["report"]


def resolve_model_paths(cfg: RunConfig, plan: dict) -> dict[str, str]:
    """The run's model folders: those its imagine plan recorded when they still exist, else the profile's."""
    recorded = plan.get("model_paths") or {}
    if recorded and all(Path(recorded.get(role, "")).is_dir() for role in profiles.ROLES):
        return {role: str(recorded[role]) for role in profiles.ROLES}
    if cfg.profile == "tiny":
        paths = profiles.resolve_models("tiny", cfg.model_dir, corpus=tiny_corpus(cfg))
    else:
        paths = profiles.resolve_models(cfg.profile, cfg.model_dir, rehearsal=cfg.rehearsal)
    return {role: str(p) for role, p in paths.items()}


@dataclass
class _Job:
    variant: str
    task: str
    seed: int
    name: str
    best_dev: float | None
    dir: Path


# `ith predict` answers with ITH and with its text-only twin (the same LM fine-tuned without audio).
PREDICT_SYSTEMS = {"ith": "ith", "text": "bert-text"}


def best_job(layout: RunLayout, variant: str, task: str) -> _Job:
    """The dev-best model of (variant, task): among its seeds, the one with the best dev accuracy."""
    system = PREDICT_SYSTEMS[variant]
    cfg = load_run_config(layout.run_root, layout.run_id)
    found = trained_jobs(layout, system, cfg.fusion.seeds)
    if not found:
        raise RunNotReadyError(
            f"run {layout.url()} has no trained {system} model yet (fusion_train/{system}-seed*); "
            "run it with `ith run` first, with the system in --systems"
        )
    jobs = [(j, d) for j, d in found if j["task"] == task]
    if not jobs:
        raise RunNotReadyError(
            f"run {layout.url()} trained no {system} model for task {task!r} (trained: "
            f"{sorted({j['task'] for j, _ in found})}); pass --task with one of those"
        )
    job, folder = max(
        jobs, key=lambda jd: (jd[0].get("best_dev") is not None, jd[0].get("best_dev") or 0.0, -int(jd[0]["seed"]))
    )
    return _Job(variant, task, int(job["seed"]), job["job"], job.get("best_dev"), folder)


# ---------------------------------------------------------------------------------------------
# Imagination: reuse the store, generate the rest through the imagine stage's shard code


def _generation_settings(plan: dict):
    recorded = dict(plan["settings"])
    version = recorded.pop("version", None)
    if version != GENERATION_VERSION:
        logger.warning(
            "the run's audio was generated by generation version %s, this code is version %s: its "
            "stored audio is not reused",
            version,
            GENERATION_VERSION,
        )
    return GenerationSettings(**recorded)


def _stored_candidates(store, specs: dict[str, tuple], num_candidates: int) -> dict[str, list[dict]]:
    """audio id -> its candidate rows (sorted), for ids whose stored candidates satisfy their sampling spec."""
    by_id = rows_by_id(store.read_candidates(set(specs))) if specs else {}
    return {
        a: [rows[c] for c in sorted(rows)]
        for a, rows in by_id.items()
        if not needs_work(rows, num_candidates, *specs[a])
    }


def generate_missing(
    cfg: RunConfig, model_paths: dict[str, str], plan: dict, prompts: dict[str, tuple], device: str
) -> dict:
    """Generates and scores `prompts` (audio id -> (prompt, CLAP text, stop threshold, keep thresholds))
    into the shared store as one shard.

    `imagine_stage.generate_candidates` does the work (generation, WAVs written if absent, CLAP on the stored
    samples, the manifest last); it reads its shard from a run's imagine plan, so a one-shard plan
    is written to a scratch run folder `_predict-<random>` under the run root (one per call, so
    concurrent calls never share one) and removed afterwards.
    """
    ids = sorted(prompts)
    shard = shard_name(ids)
    scratch = cfg.model_copy(update={"run_id": f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:16]}"})
    layout = RunLayout(cfg.run_root, scratch.effective_run_id)
    try:
        rows = [
            {
                "shard": shard,
                "shard_index": 0,
                "audio_id": a,
                "prompt": prompts[a][0],
                "clap_text": prompts[a][1],
                "stop_threshold": prompts[a][2],
                "keep_thresholds": prompts[a][3],
            }
            for a in ids
        ]
        layout.write_table(pa.Table.from_pylist(rows, schema=run_files.PLAN_SCHEMA), *run_files.PLAN_SHARDS)
        layout.write_json(
            {
                "key": f"predict:{shard}",
                "settings": plan["settings"],
                "clap_id": plan["clap_id"],
                "audio_format": plan.get("audio_format", "wav"),
                "shards": [shard],
                "model_paths": dict(model_paths),
                "source_run": cfg.effective_run_id,
            },
            *run_files.PLAN,
        )
        return imagine_stage.generate_candidates(scratch, model_paths, shard, device)
    finally:
        layout.fs.rm(layout.path(), recursive=True)


def imagine_spans(cfg: RunConfig, model_paths: dict[str, str], plan: dict, spans: list[dict], device: str) -> dict:
    """Adds prompt, audio id, source (reused / generated) and candidate rows to every span; returns counts."""
    settings = _generation_settings(plan)
    store = AudioStore(cfg.run_root)
    thresholds: dict[str, set] = {}
    for span in spans:
        span["prompt"], span["clap_text"] = prompt_for(span["text"], cfg.imagine)
        span["audio_id"] = audio_id(span["prompt"], settings)
        thresholds.setdefault(span["audio_id"], set()).add(float(cfg.imagine.thresholds[span["task"]]))
    # Sampled as the run sampled (lazy or all, audio kept), at the thresholds of the spans' tasks.
    specs = {a: work_spec(t, plan.get("sampling", "all"), plan.get("keep_audio", "all")) for a, t in thresholds.items()}
    wanted = set(specs)
    stored = _stored_candidates(store, specs, settings.num_candidates)
    missing = {
        s["audio_id"]: (s["prompt"], s["clap_text"], *specs[s["audio_id"]])
        for s in spans
        if s["audio_id"] not in stored
    }
    shard = None
    if missing:
        if settings.dtype == "float16" and not str(device).startswith("cuda"):
            raise ConfigError(
                f"the run generated its audio in float16 on a GPU, and audio ids include the dtype; "
                f"{len(missing)} prompt(s) are not in the store and cannot be generated on {device} "
                "in float16: predict with --device cuda"
            )
        started = time.perf_counter()
        shard = generate_missing(cfg, model_paths, plan, missing, device)
        logger.info(
            "generated %d prompt(s) in %.1f s (shard %s)", len(missing), time.perf_counter() - started, shard["shard"]
        )
        stored.update(_stored_candidates(store, {a: specs[a] for a in missing}, settings.num_candidates))
    other_clap = {r["clap_id"] for rows in stored.values() for r in rows} - {plan["clap_id"]}
    if other_clap:
        raise ConfigError(
            f"stored scores come from CLAP {sorted(other_clap)}, this run uses {plan['clap_id']}; "
            "rescoring stored audio with another CLAP model is not supported"
        )
    for span in spans:
        span["source"] = "generated" if span["audio_id"] in missing else "reused"
        span["candidates"] = stored[span["audio_id"]]
        for row in span["candidates"]:
            row["url"] = store.url(row["audio_path"]) if row["audio_path"] else None
    return {
        "prompts": len(wanted),
        "reused": len(wanted) - len(missing),
        "generated": len(missing),
        "shard": shard["shard"] if shard else None,
    }


def select_audio(spans: list[dict], thresholds: dict[str, float]) -> None:
    """The method's rule per span: the first candidate whose CLAP score >= the task's threshold."""
    for span in spans:
        threshold = float(thresholds[span["task"]])
        scores = [float(r["clap_score"]) for r in span["candidates"]]
        # The rows are the id's stored candidates in index order, a prefix that decides the rule.
        k, _ = first_passing(dict(enumerate(scores)), threshold, len(scores))
        chosen = span["candidates"][k] if k != NO_CANDIDATE else None
        span.update(
            threshold=threshold,
            candidate=k,
            clap_scores=scores,
            clap_score=float(chosen["clap_score"]) if chosen else None,
            audio_path=chosen["url"] if chosen else None,
            sample_rate=int(chosen["sample_rate"]) if chosen else None,
            # The fusion stage's adapter names the chosen waveform, not the prompt.
            fused_audio_id=f"{span['audio_id']}-c{k}" if chosen else None,
        )


class _MemoryFeatures:
    """The two methods of `storage.features.FeatureStore` that `precompute_audio_features` writes
    through, kept in memory; `get` serves the collator."""

    def __init__(self) -> None:
        self.tensors: dict = {}

    def shard_done(self, shard: int, expected_ids: list[str]) -> bool:
        return False

    def write_shard(self, shard: int, tensors: dict) -> None:
        self.tensors.update(tensors)

    def get(self, audio_id: str):
        return self.tensors[audio_id]


def encode_audio(
    cfg: RunConfig, layout: RunLayout, model_paths: dict[str, str], spans: list[dict], device: str
) -> _MemoryFeatures:
    """AST features of every chosen waveform, by the training path (`precompute_audio_features`)."""
    features = _MemoryFeatures()
    rows = [
        {"audio_id": s["fused_audio_id"], "audio_path": s["audio_path"], "sample_rate": s["sample_rate"]}
        for s in spans
        if s["fused_audio_id"]
    ]
    if not rows:
        return features
    manifest = (
        layout.read_json(*run_files.features_manifest(FEATURES))
        if layout.exists(*run_files.features_manifest(FEATURES))
        else {}
    )
    encoder_path = manifest.get("encoder") or model_paths["audio_encoder"]
    if not Path(encoder_path).is_dir():
        encoder_path = model_paths["audio_encoder"]
    encoder, extractor = load_audio_encoder(encoder_path)
    precompute_audio_features(
        rows,
        encoder,
        extractor,
        features,
        trainable_encoder=cfg.fusion.train_audio_encoder,
        audio_tokens=cfg.fusion.audio_tokens,
        device=device,
    )
    return features


# ---------------------------------------------------------------------------------------------
# The language models


def known_animals(layout: RunLayout) -> list[str]:
    """Distinct animal names of the run's ingested train split (case-folded), the candidates of the animal ranking."""
    table = layout.read_table(*run_files.EXAMPLES)
    table = table.filter(pc.and_(pc.equal(table["task"], "animal"), pc.equal(table["split"], "train")))
    names = {" ".join(str(a).split()).casefold() for a in table["answer"].to_pylist() if a and str(a).strip()}
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# The whole prediction


def predict_sentences(
    run_root: str,
    run_id: str,
    sentences: Sequence[str],
    task: str | None = None,
    top_k: int = 5,
    device: str = "auto",
    where: Sequence[str] | None = None,
) -> list[dict]:
    """Predicts the [MASK] of every sentence with the run's ITH and text-only models; one dict per sentence.

    `task`: "animal", "pitch" or None (inferred per sentence, see `infer_task`). `where`: one label
    per sentence for error messages (e.g. "file.txt:3"; default "sentence <i>"). Raises
    `PredictInputError` (before loading anything) when a sentence lacks exactly one [MASK].
    """
    sentences = [s.strip() for s in sentences]
    if where is not None and len(where) != len(sentences):
        raise ValueError(f"where must give one label per sentence: {len(where)} labels, {len(sentences)} sentences")
    if not sentences:
        raise PredictInputError("no sentence to predict")
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS} or None (inferred), got {task!r}")
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    check_sentences(sentences, where)
    started = time.perf_counter()
    cfg = load_run_config(run_root, run_id, device)
    if cfg.benchmark == "glue":
        raise ConfigError(
            f"run {run_id!r} is a GLUE run: its models classify sentence pairs and are not kept (its dev "
            "predictions are, in glue/predictions.parquet); `ith predict` answers the [MASK] of a sentence with "
            "the models of an AuditoryBench or synthetic run"
        )
    device = str(resolve_device(device))
    layout = RunLayout(run_root, run_id)
    _require_stage(layout, run_files.SPAN_DETECTOR, "the span detector")
    _require_stage(layout, IMAGINE, "the imagined audio and its generation settings")
    if not layout.exists(*run_files.PLAN):
        raise RunNotReadyError(f"run {layout.url()} has no imagine plan ({layout.url(*run_files.PLAN)})")
    plan = layout.read_json(*run_files.PLAN)
    tasks = [task or infer_task(s) for s in sentences]
    for t in sorted(set(tasks)):
        if t not in cfg.imagine.thresholds:
            raise ConfigError(f"run {run_id} has no CLAP threshold for task {t!r} ({cfg.imagine.thresholds})")
    jobs = {(variant, t): best_job(layout, variant, t) for t in sorted(set(tasks)) for variant in ("ith", "text")}
    model_paths = resolve_model_paths(cfg, plan)

    detector, detector_tokenizer = profiles.load_span_base(str(layout.local_dir(*run_files.SPAN_MODEL)))
    rows = [{"example_id": f"predict/{i:05d}", "sentence": s} for i, s in enumerate(sentences)]
    records = detect_spans(detector, detector_tokenizer, rows, cfg.span, device)
    del detector
    spans_of: dict[int, list[dict]] = {i: [] for i in range(len(sentences))}
    for rec in records:
        i = int(rec.example_id.split("/")[1])
        spans_of[i].append(
            {
                "task": tasks[i],
                "span_index": rec.span_index,
                "text": rec.span_text,
                "char_start": rec.char_start,
                "char_end": rec.char_end,
                "detector_score": rec.score,
            }
        )
    all_spans = [s for i in range(len(sentences)) for s in spans_of[i]]
    imagined = (
        imagine_spans(cfg, model_paths, plan, all_spans, device)
        if all_spans
        else {"prompts": 0, "reused": 0, "generated": 0, "shard": None}
    )
    select_audio(all_spans, cfg.imagine.thresholds)
    features = encode_audio(cfg, layout, model_paths, all_spans, device)

    animals = known_animals(layout) if "animal" in tasks else []
    results: list[dict] = [{} for _ in sentences]
    for (variant, t), job in jobs.items():
        model, tokenizer, _ = load_best(job.dir, device)
        for i, sentence in enumerate(sentences):
            if tasks[i] != t:
                continue
            out = answer(
                model,
                tokenizer,
                sentence,
                t,
                spans_of[i],
                features,
                variant == "ith",
                animals,
                top_k,
                cfg.fusion.max_length,
                device,
            )
            key = "with_audio" if variant == "ith" else "without_audio"
            results[i][key] = {"model": variant, "job": job.name, "seed": job.seed, "best_dev": job.best_dev, **out}
        del model
    output = []
    for i, sentence in enumerate(sentences):
        spans = [
            {k: v for k, v in s.items() if k not in ("candidates", "task")}
            | {"candidate_paths": [c["url"] for c in s["candidates"]], "fused": s["fused_audio_id"] is not None}
            for s in spans_of[i]
        ]
        output.append(
            {
                "sentence": sentence,
                "where": where[i] if where else None,
                "task": tasks[i],
                "task_inferred": task is None,
                "spans": spans,
                **results[i],
            }
        )
    logger.info(
        "predicted %d sentence(s) in %.1f s: %d prompt(s), %d reused, %d generated",
        len(sentences),
        time.perf_counter() - started,
        imagined["prompts"],
        imagined["reused"],
        imagined["generated"],
    )
    for item in output:
        item["imagine"] = imagined
    return output


__all__ = [
    "RunNotReadyError",
    "predict_sentences",
]
