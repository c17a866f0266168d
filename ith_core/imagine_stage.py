"""Stage drivers of stages 2-3 (imagination and CLAP rejection sampling); no Prefect here.

    plan_stage(cfg, model_paths)            spans -> mapping table, unique prompts, shards to run
    run_shard(cfg, model_paths, shard)      generate + score one shard into the shared audio store
    shard_statuses(cfg)                     which planned shards are finished (their manifest exists)
    collect_stage(cfg)                      candidates -> selection per threshold; marks the stage done

Files in the run folder (`<run_root>/<run_id>/imagine/`):

    mapping.parquet     (example, span occurrence) -> prompt, CLAP text, audio id
    plan.json           generation settings, the stage key and the ordered shard list
    plan.parquet        shard -> audio ids (with prompt and CLAP text) it generates
    shards.json         status of every shard after the last flow run (done / skipped / failed)
    candidates.parquet  every candidate of the run's audio ids with its CLAP score
    selection.parquet   per span occurrence: chosen candidate at the run's threshold, or none
    acceptance.parquet  per task and threshold of the grid: accepted occurrences
    _DONE.json          written last

Audio lives in the store shared by all runs over the run root (`storage.audio_store`), so a
finished audio id is never generated again, whatever the run id. The plan is written once per
run and reused, so a rerun executes exactly the planned shards that lack a manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ith_core.clap_scoring import NO_CANDIDATE, ClapScorer, select_first_passing
from ith_core.config import TASKS, ConfigError, RunConfig
from ith_core.imagine import (GenerationSettings, StableAudioGenerator, audio_id, candidate_seeds,
                              generator_identity, prompt_for)
from storage.audio_store import AudioStore, pcm16, shard_name
from storage.layout import RunLayout

logger = logging.getLogger(__name__)

STAGE = "imagine"
# Bump when this module changes what the stage writes for the same inputs.
IMAGINE_VERSION = 1
# Test hook: a shard whose plan index (or name) is listed here (comma-separated, or "@<file>"
# naming a file that lists them) fails after writing its first batch of WAVs, before its
# manifest: the state a crash leaves behind.
FAULT_ENV = "ITH_FAULT_IMAGINE_SHARD"

MAPPING_SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("span_index", pa.int32()),  # -1: the example had no span and uses the fallback prompt
    ("span_text", pa.string()),
    ("prompt", pa.string()),
    ("clap_text", pa.string()),
    ("audio_id", pa.string()),
])

PLAN_SCHEMA = pa.schema([
    ("shard", pa.string()),
    ("shard_index", pa.int32()),
    ("audio_id", pa.string()),
    ("prompt", pa.string()),
    ("clap_text", pa.string()),
])

SELECTION_SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("span_index", pa.int32()),
    ("span_text", pa.string()),
    ("audio_id", pa.string()),
    ("threshold", pa.float32()),
    ("candidate", pa.int32()),  # -1: no candidate passed; the LM gets no fusion for this span
    ("clap_score", pa.float32()),
    ("audio_path", pa.string()),
    ("accepted", pa.bool_()),
])


class ShardsMissingError(RuntimeError):
    """Planned shards have no manifest yet; `ith rerun-failed <run>` generates exactly those."""


class InjectedFault(RuntimeError):
    """Raised by the FAULT_ENV test hook."""


def layout_for(cfg: RunConfig) -> RunLayout:
    return RunLayout(cfg.run_root, cfg.effective_run_id)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def planning_device(cfg: RunConfig) -> str:
    """The device kind shard workers will use; it decides the "auto" dtype, hence the audio ids."""
    if cfg.device != "auto":
        return cfg.device
    if cfg.imagine.task_runner == "ray":
        # Ray places each shard on a GPU of some node, which this process may not have.
        return "cuda" if (cfg.imagine.gpus is None or cfg.imagine.gpus > 0) and _cuda_available() else "cpu"
    return "cuda" if _cuda_available() and cfg.imagine.gpus != 0 else "cpu"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------
# Planning


def span_occurrences(layout: RunLayout, cfg: RunConfig) -> list[dict]:
    """Every span occurrence of the run's sampled examples, plus one row per example without a span."""
    rows: list[dict] = []
    for task in cfg.data.tasks:
        for split in cfg.data.splits:
            spans = layout.read_table("spans", f"{task}-{split}.parquet").to_pylist()
            examples = layout.read_table("spans", f"{task}-{split}.examples.parquet").to_pylist()
            for span in spans:
                rows.append({"example_id": span["example_id"], "task": task, "split": split,
                             "span_index": int(span["span_index"]), "span_text": span["span_text"]})
            for example in examples:
                if example["n_spans"] == 0:
                    rows.append({"example_id": example["example_id"], "task": task, "split": split,
                                 "span_index": -1, "span_text": None})
    return rows


def build_mapping(occurrences: Sequence[dict], cfg: RunConfig, settings: GenerationSettings) -> pa.Table:
    ids: dict[str, str] = {}
    rows = []
    for occ in occurrences:
        prompt, clap_text = prompt_for(occ["span_text"], cfg.imagine)
        if prompt not in ids:
            ids[prompt] = audio_id(prompt, settings)
        rows.append({**occ, "prompt": prompt, "clap_text": clap_text, "audio_id": ids[prompt]})
    rows.sort(key=lambda r: (r["task"], r["split"], r["example_id"], r["span_index"]))
    return pa.Table.from_pylist(rows, schema=MAPPING_SCHEMA)


def cut_shards(unique: dict[str, tuple[str, str]], finished: set[str], shard_size: int) -> pa.Table:
    """Ids not finished anywhere in the store, sorted, cut into shards named by their ids."""
    todo = sorted(set(unique) - finished)
    rows = []
    for index, start in enumerate(range(0, len(todo), shard_size)):
        chunk = todo[start:start + shard_size]
        name = shard_name(chunk)
        rows.extend({"shard": name, "shard_index": index, "audio_id": a, "prompt": unique[a][0],
                     "clap_text": unique[a][1]} for a in chunk)
    return pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)


def plan_stage(cfg: RunConfig, model_paths: dict[str, str], existing_only: bool = False) -> dict:
    """Writes mapping and plan (once per run and settings) and returns the plan's summary.

    `existing_only`: return the run's recorded plan as it is (rerunning failed shards must run
    exactly the shards planned before, nothing else), or fail if there is none.
    """
    layout = layout_for(cfg)
    if cfg.imagine.clap_backend != "transformers":
        raise ConfigError(f"imagine.clap_backend must be 'transformers' (laion-clap is not shipped: it needs "
                          f"numpy<2 and torchvision), got {cfg.imagine.clap_backend!r}")
    if existing_only:
        return {**_read_plan(layout), "reused": True}
    device = planning_device(cfg)
    settings = GenerationSettings.from_config(cfg.imagine, generator_identity(model_paths["generator"]), device)
    clap_id = generator_identity(model_paths["clap"])
    key = _hash(["imagine-plan", IMAGINE_VERSION, layout.finished_key("spans"), cfg.data.tasks, cfg.data.splits,
                 cfg.imagine.prompt_template, cfg.imagine.fallback_prompt, settings.key(), clap_id,
                 cfg.imagine.shard_size])
    if layout.exists(STAGE, "plan.json"):
        plan = layout.read_json(STAGE, "plan.json")
        if plan["key"] == key:
            return {**plan, "reused": True}
    started = time.perf_counter()
    mapping = build_mapping(span_occurrences(layout, cfg), cfg, settings)
    unique = {}
    for a, prompt, text in zip(*(mapping[c].to_pylist() for c in ("audio_id", "prompt", "clap_text"))):
        unique[a] = (prompt, text)
    store = AudioStore(cfg.run_root)
    finished = store.finished_ids() & set(unique)
    shards = cut_shards(unique, finished, cfg.imagine.shard_size)
    names = list(dict.fromkeys(shards["shard"].to_pylist()))
    plan = {
        "key": key,
        "settings": settings.key(),
        "clap_id": clap_id,
        "occurrences": mapping.num_rows,
        "unique_prompts": len(unique),
        "dedup_ratio": round(mapping.num_rows / max(1, len(unique)), 4),
        "already_in_store": len(finished),
        "to_generate": len(unique) - len(finished),
        "shards": names,
        "model_paths": dict(model_paths),
        "seconds": round(time.perf_counter() - started, 3),
    }
    layout.write_table(mapping, STAGE, "mapping.parquet")
    layout.write_table(shards, STAGE, "plan.parquet")
    # plan.json last: a plan is only reused once both tables exist.
    layout.write_json(plan, STAGE, "plan.json")
    logger.info("imagine plan: %d occurrences, %d unique prompts (%.2fx), %d in store, %d shards",
                plan["occurrences"], plan["unique_prompts"], plan["dedup_ratio"], len(finished), len(names))
    return {**plan, "reused": False}


def _read_plan(layout: RunLayout) -> dict:
    if not layout.exists(STAGE, "plan.json"):
        raise ShardsMissingError(f"no imagine plan in {layout.url(STAGE)}; run the imagine stage first")
    return layout.read_json(STAGE, "plan.json")


# ---------------------------------------------------------------------------------------------
# Devices and per-process model caches


class DevicePool:
    """Hands each concurrently running shard its own device (one worker per GPU, pinned)."""

    def __init__(self, devices: Sequence[str]) -> None:
        self.devices = tuple(devices)
        self._free: queue.Queue[str] = queue.Queue()
        for device in self.devices:
            self._free.put(device)

    @contextlib.contextmanager
    def acquire(self):
        device = self._free.get()
        try:
            yield device
        finally:
            self._free.put(device)


_POOLS: dict[tuple[str, ...], DevicePool] = {}
_POOLS_LOCK = threading.Lock()


def device_pool(devices: Sequence[str]) -> DevicePool:
    with _POOLS_LOCK:
        return _POOLS.setdefault(tuple(devices), DevicePool(devices))


def local_devices(cfg: RunConfig) -> list[str]:
    """cuda:0..N-1 for the visible GPUs (capped by imagine.gpus), the explicit device, or cpu."""
    if cfg.device != "auto":
        return [cfg.device]
    count = 0
    if _cuda_available():
        import torch

        count = torch.cuda.device_count()
    if cfg.imagine.gpus is not None:
        count = min(count, cfg.imagine.gpus)
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def _cached_model(key: tuple, build):
    # Workers run many shards; loading the generator once per process and device, not per shard.
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = build()
        return _MODELS[key]


def load_models(cfg: RunConfig, model_paths: dict[str, str], plan: dict, device: str):
    from ith_core.profiles import load_generator

    import torch

    settings = GenerationSettings(**{k: v for k, v in plan["settings"].items() if k != "version"})
    if generator_identity(model_paths["generator"]) != settings.generator_id:
        raise ConfigError(f"generator {model_paths['generator']} is not the one this run was planned with "
                          f"({settings.generator_id}); plan a new run instead of resuming this one")
    if cfg.imagine.generator == "tone":
        from ith_core.tone_generator import ToneGenerator

        generator = ToneGenerator.from_folder(model_paths["generator"], settings)
    else:
        pipe = _cached_model(("generator", model_paths["generator"], settings.dtype, device),
                             lambda: load_generator(model_paths["generator"],
                                                    torch_dtype=getattr(torch, settings.dtype)).to(device))
        generator = StableAudioGenerator(pipe, settings, device)
    scorer = _cached_model(("clap", model_paths["clap"], device, cfg.imagine.clap_batch_size),
                           lambda: ClapScorer.from_folder(model_paths["clap"], device, cfg.imagine.clap_batch_size))
    return generator, scorer


# ---------------------------------------------------------------------------------------------
# One shard


def _fault_requested(name: str, index: int) -> bool:
    value = os.environ.get(FAULT_ENV, "")
    if value.startswith("@"):
        # "@<file>": the shards to break are read from that file at run time, so a long-running
        # worker can be told to fail a shard, then to stop failing it, without a restart.
        path = Path(value[1:])
        value = path.read_text().replace("\n", ",") if path.is_file() else ""
    wanted = {w.strip() for w in value.split(",") if w.strip()}
    return name in wanted or str(index) in wanted


def run_shard(cfg: RunConfig, model_paths: dict[str, str], shard: str, device: str | None = None) -> dict:
    """Generates, scores and stores one planned shard; a shard with a manifest is skipped."""
    layout = layout_for(cfg)
    store = AudioStore(cfg.run_root)
    if store.has_shard(shard):
        return {"shard": shard, "status": "skipped"}
    started = time.perf_counter()
    plan = _read_plan(layout)
    table = layout.read_table(STAGE, "plan.parquet")
    rows = table.filter(pc.equal(table["shard"], shard)).to_pylist()
    if not rows:
        raise ValueError(f"shard {shard} is not in the plan of {layout.url(STAGE)}; "
                         f"planned shards: {len(plan['shards'])}")
    index = rows[0]["shard_index"]
    device = device or local_devices(cfg)[0]
    generator, scorer = load_models(cfg, model_paths, plan, device)
    loaded = time.perf_counter()
    k = generator.settings.num_candidates
    timings = {"generate": 0.0, "score": 0.0, "write": 0.0}
    manifest_rows: list[dict] = []
    for start in range(0, len(rows), cfg.imagine.batch_size):
        batch = rows[start:start + cfg.imagine.batch_size]
        for row in batch:
            # The plan was made from the same settings; a mismatch here would write audio under a wrong id.
            if audio_id(row["prompt"], generator.settings) != row["audio_id"]:
                raise ConfigError(f"audio id of prompt {row['prompt']!r} does not match the plan; "
                                  "the generation settings changed since planning: plan a new run")
        seeds = [candidate_seeds(generator.settings.seed, row["audio_id"], k) for row in batch]
        t0 = time.perf_counter()
        waveforms = generator.generate([row["prompt"] for row in batch], seeds)
        t1 = time.perf_counter()
        samples = pcm16(waveforms.cpu().numpy())
        stored = [[store.put_wav(row["audio_id"], c, samples[i, c], generator.sample_rate) for c in range(k)]
                  for i, row in enumerate(batch)]
        for i, row in enumerate(batch):
            for c in range(k):
                if not stored[i][c].created:
                    # Another writer's file (a crashed or concurrent run) stays; score what is stored.
                    existing = store.read_samples(stored[i][c].path)
                    if existing.shape != samples[i, c].shape:
                        raise RuntimeError(f"{store.url(stored[i][c].path)} holds shape {existing.shape}, this "
                                           f"shard generates {samples[i, c].shape}; delete the file and rerun")
                    samples[i, c] = existing
        t2 = time.perf_counter()
        # Scores are computed on the 16-bit samples the WAV files hold, so they describe the stored audio.
        scores = scorer.score(samples.astype(np.float32) / 32767.0, generator.sample_rate,
                              [row["clap_text"] for row in batch])
        t3 = time.perf_counter()
        for i, row in enumerate(batch):
            for c in range(k):
                manifest_rows.append({
                    "audio_id": row["audio_id"], "candidate": c, "prompt": row["prompt"],
                    "clap_text": row["clap_text"], "seed": seeds[i][c], "clap_score": float(scores[i, c]),
                    "clap_id": plan["clap_id"], "audio_path": stored[i][c].path,
                    "duration_s": samples.shape[-1] / generator.sample_rate, "sample_rate": generator.sample_rate,
                    "channels": samples.shape[-2], "checksum": stored[i][c].checksum, "shard": shard,
                })
        timings["generate"] += t1 - t0
        timings["write"] += t2 - t1
        timings["score"] += t3 - t2
        if _fault_requested(shard, index):
            raise InjectedFault(f"injected failure in shard {index} ({shard}) via ${FAULT_ENV}")
    if len(manifest_rows) != len(rows) * k:
        raise RuntimeError(f"shard {shard}: {len(manifest_rows)} candidate rows, expected {len(rows) * k}")
    # Written last: the manifest's existence means every WAV it lists is whole.
    store.write_manifest(shard, manifest_rows)
    total = time.perf_counter() - started
    return {"shard": shard, "status": "done", "device": device, "prompts": len(rows), "candidates": len(manifest_rows),
            "seconds": round(total, 3), "seconds_load": round(loaded - started, 3),
            **{f"seconds_{name}": round(v, 3) for name, v in timings.items()}}


def shard_statuses(cfg: RunConfig) -> dict[str, bool]:
    """Planned shard -> finished (manifest present)."""
    plan = _read_plan(layout_for(cfg))
    store = AudioStore(cfg.run_root)
    return {name: store.has_shard(name) for name in plan["shards"]}


def write_shard_status(cfg: RunConfig, results: Sequence[dict]) -> dict:
    """Records what the last flow run did to each shard (done / skipped / failed with its error)."""
    layout = layout_for(cfg)
    by_status: dict[str, list] = {"done": [], "skipped": [], "failed": []}
    for result in results:
        by_status.setdefault(result["status"], []).append(result)
    status = {"shards": list(results), "counts": {k: len(v) for k, v in by_status.items()}}
    layout.write_json(status, STAGE, "shards.json")
    return status


# ---------------------------------------------------------------------------------------------
# Selection


def select(mapping: pa.Table, candidates: pa.Table, thresholds: dict[str, float], store_url) -> pa.Table:
    """Per span occurrence: the first candidate at or above its task's threshold (rule of the method)."""
    by_id: dict[str, list[tuple[int, float, str]]] = {}
    for a, c, s, p in zip(*(candidates[n].to_pylist() for n in ("audio_id", "candidate", "clap_score", "audio_path"))):
        by_id.setdefault(a, []).append((c, s, p))
    for rows in by_id.values():
        rows.sort()
    out = []
    for row in mapping.to_pylist():
        threshold = thresholds[row["task"]]
        cands = by_id[row["audio_id"]]
        k = select_first_passing([s for _, s, _ in cands], threshold)
        chosen = cands[k] if k != NO_CANDIDATE else None
        out.append({
            "example_id": row["example_id"], "task": row["task"], "split": row["split"],
            "span_index": row["span_index"], "span_text": row["span_text"], "audio_id": row["audio_id"],
            "threshold": threshold, "candidate": k, "clap_score": chosen[1] if chosen else None,
            "audio_path": store_url(chosen[2]) if chosen else None, "accepted": chosen is not None,
        })
    return pa.Table.from_pylist(out, schema=SELECTION_SCHEMA)


def acceptance(mapping: pa.Table, candidates: pa.Table, grid: Sequence[float]) -> pa.Table:
    """Accepted span occurrences per task at every threshold of the grid (no regeneration needed)."""
    best: dict[str, float] = {}
    for a, s in zip(candidates["audio_id"].to_pylist(), candidates["clap_score"].to_pylist()):
        best[a] = max(best.get(a, -2.0), s)
    rows = []
    tasks = sorted(set(mapping["task"].to_pylist()))
    for threshold in grid:
        for task in tasks:
            ids = [a for a, t in zip(mapping["audio_id"].to_pylist(), mapping["task"].to_pylist()) if t == task]
            # A candidate passes the first-passing rule exactly when the best score passes.
            accepted = sum(1 for a in ids if best[a] >= threshold)
            rows.append({"task": task, "threshold": float(threshold), "occurrences": len(ids), "accepted": accepted,
                         "rate": accepted / len(ids) if ids else 0.0})
    return pa.Table.from_pylist(rows)


def collect_stage(cfg: RunConfig) -> dict:
    """Joins the run's spans to chosen audio once every planned shard is finished; marks the stage done."""
    layout = layout_for(cfg)
    plan = _read_plan(layout)
    for task in cfg.data.tasks:
        if task not in cfg.imagine.thresholds:
            raise ConfigError(f"imagine.thresholds must have a threshold for task {task!r}, got "
                              f"{cfg.imagine.thresholds}; add e.g. imagine.thresholds.{task}=0.3")
    key = _hash(["imagine", plan["key"], cfg.imagine.thresholds, cfg.imagine.threshold_grid])
    if (report := layout.stage_done(STAGE, key)) is not None:
        return {**report, "cached": True}
    store = AudioStore(cfg.run_root)
    missing = [name for name in plan["shards"] if not store.has_shard(name)]
    if missing:
        raise ShardsMissingError(f"{len(missing)} of {len(plan['shards'])} shards of run {cfg.effective_run_id} "
                                 f"have no manifest ({', '.join(missing[:5])}); run `ith rerun-failed` on the run")
    started = time.perf_counter()
    mapping = layout.read_table(STAGE, "mapping.parquet")
    needed = set(mapping["audio_id"].to_pylist())
    candidates = store.read_candidates(needed)
    # Manifests are trusted for which rows exist, not for bytes: a writer that raced another past
    # the store's write-if-absent check recorded the checksum of a file that lost the rename.
    # Such rows get the stored file's checksum (their scores, from the other rendering, differ by
    # about 1e-6) and are counted; a missing or damaged file raises AudioStoreError.
    candidates, mismatches = store.verify_checksums(candidates)
    if mismatches:
        logger.warning("imagine collect: %d of %d candidate rows named a checksum other than the stored "
                       "file's (concurrent writers); recorded the stored files' checksums",
                       mismatches, candidates.num_rows)
    k = plan["settings"]["num_candidates"]
    counts = pc.value_counts(candidates["audio_id"]).to_pylist() if candidates.num_rows else []
    incomplete = [c["values"] for c in counts if c["counts"] != k]
    absent = needed - set(candidates["audio_id"].to_pylist())
    if absent or incomplete:
        raise RuntimeError(f"audio store {store.url('')} lacks candidates of {len(absent)} audio ids and holds an "
                           f"incomplete set for {len(incomplete)}; expected {k} per id")
    other_clap = set(candidates["clap_id"].to_pylist()) - {plan["clap_id"]}
    if other_clap:
        raise ConfigError(f"stored scores come from CLAP {sorted(other_clap)}, this run uses {plan['clap_id']}; "
                          "rescoring stored audio with another CLAP model is not supported: use another run_root")
    selection = select(mapping, candidates, cfg.imagine.thresholds, store.url)
    grid = acceptance(mapping, candidates, cfg.imagine.threshold_grid)
    layout.write_table(candidates, STAGE, "candidates.parquet")
    layout.write_table(selection, STAGE, "selection.parquet")
    layout.write_table(grid, STAGE, "acceptance.parquet")
    scores = np.asarray(candidates["clap_score"].to_pylist(), dtype=np.float64)
    quantiles = {f"q{int(q * 100):02d}": round(float(np.quantile(scores, q)), 4)
                 for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)}
    accepted = selection["accepted"].to_pylist()
    report = {
        "occurrences": plan["occurrences"],
        "unique_prompts": plan["unique_prompts"],
        "dedup_ratio": plan["dedup_ratio"],
        "candidates": candidates.num_rows,
        "checksum_mismatches": mismatches,
        "shards": len(plan["shards"]),
        "thresholds": dict(cfg.imagine.thresholds),
        "accepted": int(sum(accepted)),
        "rejected": len(accepted) - int(sum(accepted)),
        "acceptance_by_threshold": grid.to_pylist(),
        "clap_score_quantiles": quantiles,
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {name: layout.url(STAGE, f"{name}.parquet")
                    for name in ("mapping", "candidates", "selection", "acceptance")},
    }
    layout.mark_done(STAGE, key, report)
    return {**report, "cached": False}


def reselect(cfg: RunConfig, thresholds: dict[str, float]) -> pa.Table:
    """The selection at other thresholds, from the stored scores of a finished run (no generation)."""
    layout = layout_for(cfg)
    for task, value in thresholds.items():
        if task not in TASKS or not -1.0 <= value <= 1.0:
            raise ConfigError(f"thresholds must map tasks {TASKS} to values in [-1, 1], got {task}={value}")
    store = AudioStore(cfg.run_root)
    return select(layout.read_table(STAGE, "mapping.parquet"), layout.read_table(STAGE, "candidates.parquet"),
                  thresholds, store.url)


def summary_markdown(cfg: RunConfig, plan: dict, status: dict, report: dict | None) -> str:
    """The run's markdown summary: shards, dedup, acceptance per threshold, score distribution."""
    lines = [f"# ith-imagine: run `{cfg.effective_run_id}`", "",
             f"- span occurrences: {plan['occurrences']}, unique prompts: {plan['unique_prompts']} "
             f"(dedup ratio {plan['dedup_ratio']:.2f}x); already in the store when planned: {plan['already_in_store']}",
             f"- shards planned: {len(plan['shards'])}; this flow run: done {status['counts'].get('done', 0)}, "
             f"skipped {status['counts'].get('skipped', 0)}, failed {status['counts'].get('failed', 0)}", ""]
    failed = [s for s in status["shards"] if s["status"] == "failed"]
    if failed:
        lines += ["## Failed shards (rerun with `ith rerun-failed`)", "", "| shard | error |", "|---|---|"]
        lines += [f"| {s['shard']} | {str(s.get('error', '')).splitlines()[0][:200]} |" for s in failed]
        lines.append("")
    done = [s for s in status["shards"] if s["status"] == "done"]
    if done:
        lines += ["## Shards generated", "", "| shard | device | prompts | seconds | generate s |", "|---|---|---|---|---|"]
        lines += [f"| {s['shard']} | {s['device']} | {s['prompts']} | {s['seconds']} | {s['seconds_generate']} |"
                  for s in done]
        lines.append("")
    if report:
        lines += ["## Acceptance per threshold (span occurrences)", "", "| task | threshold | accepted | rate |",
                  "|---|---|---|---|"]
        lines += [f"| {r['task']} | {r['threshold']:.2f} | {r['accepted']}/{r['occurrences']} | {r['rate']:.1%} |"
                  for r in report["acceptance_by_threshold"]]
        lines += ["", "## CLAP score distribution (all candidates)", "",
                  "| " + " | ".join(report["clap_score_quantiles"]) + " |",
                  "|" + "---|" * len(report["clap_score_quantiles"]),
                  "| " + " | ".join(str(v) for v in report["clap_score_quantiles"].values()) + " |"]
    return "\n".join(lines) + "\n"
