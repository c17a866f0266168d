"""Stage drivers of the AudioBERT (retrieval) backend; no Prefect here.

    retrieve_clips(cfg, model_paths)       pool (built or located), CLAP index (reused), top-k
                                            clips for every span occurrence of the run
    encode_clips(cfg, model_paths)        AST input features of the retrieved top-1 clips
    train_spec(cfg, model_paths, seed, output_dir)   the TrainSpec that `accelerate launch -m
                                            ith_core.fusion.training --config spec.json` trains
    eval_inputs(cfg)                        (spans by example id, FeatureReader) for scoring a
                                            dev-best model (fusion_stage.evaluate_system)
    check_pool(cfg)                         before any stage: a run that needs a pool has one

Files in the run folder (`<run_root>/<run_id>/`):

    audiobert_retrieval/  retrieval.parquet   per span occurrence: query, top-k clip ids and scores,
                                              clips the policy allowed
                          selection.parquet   read_selection's contract: the top-1 clip as
                                              audio_id/audio_path/sample_rate (null: no clip allowed)
                          pool.json           pool, policy, query mode, index identity, counts
                          pool_manifest.parquet, pool_rejects.parquet   the pool as retrieved from
    audiobert_features/   examples.parquet, selection.parquet, part-*.safetensors/.parquet,
                          features.json       (fusion_stage.encode_selection, storage.features)
    <stage>/_DONE.json    written last

Which pool (`audiobert.pool`, null = the default of the profile and benchmark):
- a folder or URL: read by `ith_core.retrieval.pool.load_pool` (formats in its docstring);
- synthetic benchmark: `ith_core.retrieval.synthetic_pool`, clips of every source name;
- tiny profile on AuditoryBench: a stand-in, the clips the run's imagine stage stored for its
  train-split span occurrences (the first stored candidate of each train prompt, captioned with
  its span): a pool independent of the dev/test rows, built from what the run already has;
- paper profile on AuditoryBench: an error naming the published pool and how to point at one.

Spans are those of the spans stage (detected, or gold with `span.source=gold`), one query per
span occurrence; an example without a span gets no retrieval and is trained and scored as
text (counted). Every span occurrence gets its policy's top-k; one whose policy leaves no clip
gets none (counted) and is not injected.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from ith_core.config import ConfigError, RunConfig
from ith_core.fusion.audio_features import read_selection
from ith_core.fusion.lm_inputs import spans_from_selection
from ith_core.fusion.training import TrainJob, TrainSpec
from ith_core.imagination.clap_scoring import ClapScorer
from ith_core.models.profiles import model_identity
from ith_core.retrieval import pool as retrieval
from ith_core.retrieval.clip_index import clap_identity, ensure_index
from ith_core.retrieval.queries import Query, clap_scores, normalize_span, retrieve, text_scores
from ith_core.retrieval.synthetic_pool import synthetic_pool
from ith_core.stages.skeleton import layout_for, reuse_or_resume, stage_key
from ith_core.stages.system_inputs import (
    encode_selection,
    resolve_device,
    sampled_examples,
    spans_table,
    tasks_with_train_rows,
)
from storage import run_files
from storage.audio_store import AudioStore
from storage.features import FeatureStore
from storage.layout import DONE_MARKER, RunLayout

logger = logging.getLogger(__name__)

RETRIEVAL = run_files.AUDIOBERT_RETRIEVAL
FEATURES = run_files.AUDIOBERT_FEATURES
# Bump when this module changes what a stage writes for the same inputs.
AUDIOBERT_VERSION = 3  # 2: the audio encoder enters keys by its identity, not its folder; 3: one key scheme

PUBLISHED_POOL = (
    "the Freesound part of LAION-Audio-630K (Hugging Face dataset `Meranti/CLAP_freesound`: 48 kHz "
    "FLAC clips, each with a JSON caption `text`)"
)


class PoolNotAvailableError(ConfigError):
    """No clip pool is configured and the run has no default one; the message says how to get one."""


# ---------------------------------------------------------------------------------------------
# Pools


def audio_store_pool(cfg: RunConfig) -> retrieval.Pool:
    """The tiny AuditoryBench stand-in: the run's imagined clips of its train-split span occurrences.

    One clip per train prompt (its first candidate whose audio was kept), captioned with the span
    the prompt was made from; `source` is that span too, `split` is train.
    """
    layout = layout_for(cfg)
    if not layout.exists(run_files.IMAGINE, DONE_MARKER):
        raise PoolNotAvailableError(
            f"the tiny profile's default AudioBERT pool is the clips the imagine stage of run {layout.url()} stored "
            "for its train split, and that stage has not finished; run the imagine stage first, or set "
            "audiobert.pool to a folder of captioned clips"
        )
    mapping = layout.read_table(*run_files.MAPPING).to_pylist()
    wanted = {r["audio_id"]: r["clap_text"] for r in mapping if r["split"] == "train" and r["span_index"] >= 0}
    candidates = layout.read_table(*run_files.CANDIDATES).to_pylist()
    store = AudioStore(cfg.run_root)
    chosen: dict[str, dict] = {}
    for c in sorted(candidates, key=lambda c: (c["audio_id"], c["candidate"])):
        if c["audio_id"] in wanted and c["audio_path"] is not None and c["audio_id"] not in chosen:
            chosen[c["audio_id"]] = c
    rows = [
        {
            "clip_id": retrieval.clip_id_for(c["audio_path"], c["checksum"]),
            "path": store.url(c["audio_path"]),
            "caption": wanted[a],
            "source": wanted[a],
            "split": "train",
            "sample_rate": int(c["sample_rate"]),
            "duration_s": float(c["duration_s"]),
            "sha256": c["checksum"],
        }
        for a, c in chosen.items()
    ]
    if not rows:
        raise PoolNotAvailableError(
            f"run {layout.url()}: the imagine stage stored no train-split clip to build the "
            "tiny profile's stand-in pool from; set audiobert.pool to a folder of clips"
        )
    return retrieval.Pool(
        f"audio store {store.url('')}: train-split clips of run {cfg.effective_run_id}",
        "audio_store",
        retrieval.manifest_table(rows),
        report={"train_prompts": len(wanted), "prompts_without_kept_audio": len(wanted) - len(rows)},
    )


def resolve_pool(cfg: RunConfig) -> retrieval.Pool:
    """The run's clip pool: `audiobert.pool`, else the default of its benchmark and profile."""
    configured = cfg.audiobert.pool
    if configured:
        return retrieval.load_pool(configured)
    if cfg.benchmark == "synthetic":
        return retrieval.load_pool(synthetic_pool(cfg))
    if cfg.profile == "tiny":
        return audio_store_pool(cfg)
    raise PoolNotAvailableError(_no_pool_message(cfg))


def check_pool(cfg: RunConfig) -> None:
    """Fails before any stage runs when the run's AudioBERT row has no pool to retrieve from.

    Cheap: a configured pool must be a folder (its rows are checked when it is read); without
    one, only the synthetic benchmark and the tiny profile have a default.
    """
    if "audiobert" not in cfg.systems:
        return
    if cfg.audiobert.pool:
        fs, root = fsspec.core.url_to_fs(cfg.audiobert.pool)
        if not fs.isdir(root):
            raise PoolNotAvailableError(
                f"audiobert.pool {cfg.audiobert.pool!r} is not a folder (or does not exist); "
                "set it to a folder or fsspec URL of .wav/.flac clips with a captions table"
            )
        return
    if cfg.benchmark == "synthetic" or cfg.profile == "tiny":
        return
    raise PoolNotAvailableError(_no_pool_message(cfg))


def _no_pool_message(cfg: RunConfig) -> str:
    return (
        f"AudioBERT needs a clip pool and none is set (audiobert.pool is null). The published system retrieved "
        f"from {PUBLISHED_POOL}; it is not downloadable here and nothing is fetched automatically. Looked for: "
        f"audiobert.pool (not set); no default pool exists for profile {cfg.profile!r} on {cfg.benchmark!r}. To get "
        "it: while online, `hf download Meranti/CLAP_freesound --repo-type dataset --local-dir DIR` and unpack its "
        "tar shards so each clip's .flac sits beside its .json; or use any folder of .wav/.flac clips with a "
        "captions.csv (columns path, caption[, source, split]) or a caption JSON beside each clip. Then run with "
        "--set audiobert.pool='\"DIR\"' (a folder or fsspec URL); the manifest and CLAP index are built once under "
        f"{retrieval.retrieval_home()} and reused. Or leave audiobert out of --systems."
    )


# ---------------------------------------------------------------------------------------------
# Stage: retrieval


def _queries(layout: RunLayout, cfg: RunConfig) -> tuple[list[dict], dict]:
    """Span occurrences of the run with their query, and counts (examples without a span)."""
    examples = sampled_examples(layout, cfg).select(["example_id", "spans"]).to_pylist()
    gold = {r["example_id"]: r["spans"] or [] for r in examples}
    spans = spans_table(layout, cfg).to_pylist()
    with_span = {s["example_id"] for s in spans}
    rows = []
    for s in sorted(spans, key=lambda s: (s["task"], s["split"], s["example_id"], s["span_index"])):
        rows.append(
            {
                **{k: s[k] for k in ("example_id", "task", "split", "span_text")},
                "span_index": int(s["span_index"]),
                "char_start": int(s["char_start"]),
                "char_end": int(s["char_end"]),
                "query": cfg.audiobert.query_template.format(span=normalize_span(s["span_text"])),
                "sources": frozenset([s["example_id"], *gold.get(s["example_id"], [])]),
            }
        )
    return rows, {
        "examples": len(gold),
        "examples_without_span": len(set(gold) - with_span),
        "span_occurrences": len(rows),
    }


def _retrieval_key(layout: RunLayout, cfg: RunConfig, pool: retrieval.Pool, clap: str | None) -> str:
    a = cfg.audiobert
    return stage_key(
        RETRIEVAL,
        AUDIOBERT_VERSION,
        {s: layout.finished_key(s) for s in (run_files.INGEST, run_files.SPANS)},
        cfg.data.tasks,
        cfg.data.splits,
        pool.manifest_hash,
        a.query_mode,
        a.query_template,
        a.top_k,
        a.policy,
        clap,
    )


def retrieve_clips(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Retrieves the top-k clips of every span occurrence; writes retrieval, selection and pool tables."""
    layout = layout_for(cfg)
    a = cfg.audiobert
    pool = resolve_pool(cfg)
    clap = clap_identity(model_paths["clap"]) if a.query_mode == "clap" else None
    key = _retrieval_key(layout, cfg, pool, clap)
    if (report := reuse_or_resume(layout, RETRIEVAL, key)) is not None:
        return report
    started = time.perf_counter()
    rows, counts = _queries(layout, cfg)
    index_meta = None
    if a.query_mode == "clap":
        scorer = ClapScorer.from_folder(model_paths["clap"], device=resolve_device(cfg))
        index = ensure_index(pool, model_paths["clap"], scorer=scorer)
        index_meta = {**index.meta, "folder": str(index.folder), "cached": index.cached}
        score_fn = clap_scores(scorer, index)
    else:
        score_fn = text_scores(pool)
    queries = [Query(r["query"], r["split"], r["sources"]) for r in rows]
    hits = retrieve(queries, pool, score_fn, a.policy, a.top_k)
    manifest = pool.manifest.to_pylist()
    out, selection = [], []
    for r, hit in zip(rows, hits):
        clips = [manifest[i] for i in hit["clip_index"]]
        out.append(
            {
                **{k: r[k] for k in run_files.RETRIEVAL_SCHEMA.names if k in r},
                "clip_ids": [c["clip_id"] for c in clips],
                "scores": hit["scores"],
                "allowed_clips": hit["allowed"],
            }
        )
        top = clips[0] if clips else None
        selection.append(
            {
                **{
                    k: r[k]
                    for k in ("example_id", "task", "split", "span_index", "span_text", "char_start", "char_end")
                },
                "audio_id": top["clip_id"] if top else None,
                "audio_path": top["path"] if top else None,
                "sample_rate": top["sample_rate"] if top else None,
            }
        )
    layout.write_table(pa.Table.from_pylist(out, schema=run_files.RETRIEVAL_SCHEMA), *run_files.RETRIEVAL)
    layout.write_table(
        pa.Table.from_pylist(selection, schema=run_files.FUSION_SELECTION_SCHEMA), *run_files.RETRIEVAL_SELECTION
    )
    layout.write_table(pool.manifest, *run_files.POOL_MANIFEST)
    layout.write_table(pool.rejects, *run_files.POOL_REJECTS)
    top_scores = [h["scores"][0] for h in hits if h["scores"]]
    info = {
        "pool": pool.describe(),
        "policy": a.policy,
        "query_mode": a.query_mode,
        "query_template": a.query_template,
        "top_k": a.top_k,
        "index": index_meta,
        "clap": clap,
    }
    layout.write_json(info, *run_files.POOL_INFO)
    report = {
        **counts,
        "pool": pool.name,
        "pool_kind": pool.kind,
        "pool_clips": pool.size,
        "pool_rejects": pool.rejects.num_rows,
        "policy": a.policy,
        "query_mode": a.query_mode,
        "distinct_queries": len({q.text for q in queries}),
        "spans_with_clip": sum(1 for h in hits if h["clip_index"]),
        "spans_without_clip": sum(1 for h in hits if not h["clip_index"]),
        # Text mode: the top-1 shares no word with the query (ties broken by clip id: an arbitrary clip).
        "spans_top1_score_zero": sum(1 for s in top_scores if s <= 0.0),
        "distinct_top1_clips": len({s["audio_id"] for s in selection if s["audio_id"]}),
        "index_cached": index_meta["cached"] if index_meta else None,
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {
            parts[-1]: layout.url(*parts)
            for parts in (run_files.RETRIEVAL, run_files.RETRIEVAL_SELECTION, run_files.POOL_INFO)
        },
    }
    layout.mark_done(RETRIEVAL, key, report)
    return {**report, "cached": False}


# ---------------------------------------------------------------------------------------------
# Stage: AST features of the retrieved clips


def _features_key(layout: RunLayout, cfg: RunConfig, model_paths: dict[str, str]) -> str:
    return stage_key(
        FEATURES,
        AUDIOBERT_VERSION,
        layout.finished_key(RETRIEVAL),
        model_identity(model_paths["audio_encoder"]),
        cfg.audiobert.train_audio_encoder,
    )


def encode_clips(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Stores the AST inputs (trained AST) or mean-pooled AST vectors (frozen) of every retrieved top-1 clip."""
    layout = layout_for(cfg)
    key = _features_key(layout, cfg, model_paths)
    if (report := reuse_or_resume(layout, FEATURES, key)) is not None:
        return report
    started = time.perf_counter()
    selection = layout.read_table(*run_files.RETRIEVAL_SELECTION)
    trainable = cfg.audiobert.train_audio_encoder
    # The frozen variant's one vector per clip: the mean over all AST tokens (pooling to 1 group).
    report = encode_selection(
        cfg,
        model_paths,
        FEATURES,
        sampled_examples(layout, cfg),
        selection,
        trainable_encoder=trainable,
        audio_tokens=None if trainable else 1,
    )
    with_clip = pc.sum(pc.is_valid(selection["audio_id"])).as_py() or 0
    report = {
        **report,
        "span_rows": {"span_with_audio": with_clip, "span_without_audio": selection.num_rows - with_clip},
        "seconds": round(time.perf_counter() - started, 3),
    }
    layout.mark_done(FEATURES, key, report)
    return {**report, "cached": False}


# ---------------------------------------------------------------------------------------------
# Training and evaluation inputs


def training_settings(cfg: RunConfig) -> dict:
    """The spec's `fusion` dict (FusionConfig-shaped) with AudioBERT's training settings."""
    a = cfg.audiobert
    return {
        **cfg.fusion.model_dump(mode="json"),
        **{
            name: getattr(a, name)
            for name in (
                "learning_rates",
                "epochs",
                "batch_size",
                "warmup_ratios",
                "weight_decay",
                "max_grad_norm",
                "mixed_precision",
                "train_audio_encoder",
            )
        },
        "audio_tokens": None if a.train_audio_encoder else 1,
    }


def train_spec(cfg: RunConfig, model_paths: dict[str, str], seed: int, output_dir: str | Path):
    """The TrainSpec of AudioBERT for one seed: a job per task with sampled train and dev rows.

    Run it as fusion_stage runs its specs: write `spec.to_json()` to `<output_dir>/spec.json`,
    then `ith_core.fusion.launch.launch_command(spec_path, cfg.audiobert.num_processes, mixed precision,
    cuda)`. Dev-best weights land in `<output_dir>/audiobert-<task>-seed<seed>/best/`.
    """
    layout = layout_for(cfg)
    if not layout.exists(FEATURES, DONE_MARKER):
        raise RuntimeError(f"stage '{FEATURES}' of run {layout.url()} has not finished; run encode_clips first")
    inputs = layout.local_dir(FEATURES)
    tasks = tasks_with_train_rows(inputs / run_files.EXAMPLES_FILE, cfg)
    if not tasks:
        raise RuntimeError(f"run {layout.url()}: no task has sampled train and dev examples; AudioBERT needs both")
    if not any(inputs.glob("part-*.parquet")):
        raise RuntimeError(
            f"run {layout.url()}: no span retrieved a clip (policy {cfg.audiobert.policy}), so "
            "AudioBERT has nothing to hear; see audiobert_retrieval/pool.json"
        )
    return TrainSpec(
        lm_path=str(model_paths["lm"]),
        examples_path=str(inputs / run_files.EXAMPLES_FILE),
        output_dir=str(output_dir),
        selection_path=str(inputs / run_files.SELECTION_FILE),
        features_dir=str(inputs),
        audio_encoder_path=str(model_paths["audio_encoder"]) if cfg.audiobert.train_audio_encoder else None,
        fusion=training_settings(cfg),
        audiobert=cfg.audiobert.model_dump(mode="json"),
        jobs=tuple(TrainJob(task, "audiobert", seed) for task in tasks),
    )


def eval_inputs(cfg: RunConfig):
    """(spans by example id, FeatureReader) for scoring AudioBERT models of this run.

    `fusion_stage.evaluate_system` scores a dev-best model with them as it scores ITH: the spans
    of `audiobert_features/selection.parquet` (each with its top-1 clip) and the stored features.
    """
    layout = layout_for(cfg)
    if not layout.exists(FEATURES, DONE_MARKER):
        raise RuntimeError(f"stage '{FEATURES}' of run {layout.url()} has not finished; run encode_clips first")
    spans = spans_from_selection(read_selection(str(layout.local_dir(FEATURES) / run_files.SELECTION_FILE)))
    return spans, FeatureStore(layout, FEATURES).reader()
