"""Stage drivers of stages 2-3 (imagination and CLAP rejection sampling); no Prefect here.

    plan_imagine(cfg, model_paths)            spans -> mapping table, unique prompts, shards to run
    generate_candidates(cfg, model_paths, shard)      generate + score one shard into the shared audio store
    shard_statuses(cfg)                     which planned shards are finished (their manifest exists)
    select_candidates(cfg)                      candidates -> selection per threshold; marks the stage done

The rules they apply are in `ith_core.imagination`: planning (mapping, shards, disk), sampling
(lazy rejection sampling), devices (device pool, model caches, batch sizes), selection. The
drivers of `ith verify` and `ith repair-audio` (verify_run, repair_audio, recollect) are in
`ith_core.stages.audio_repair`.

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
finished candidate is never generated again, whatever the run id. The plan is written once per
run and reused, so a rerun executes exactly the planned shards that lack a manifest.

Lazy rejection sampling (`imagine.sampling=lazy`, the default): the method keeps the first
candidate, in index order, whose CLAP score reaches the threshold, and each candidate has its
own seed, so a shard generates candidate 0 of all its prompts (batched across prompts), scores
them, then candidate 1 of the prompts still without a pass, and so on. An audio id shared by
tasks stops at the highest of their thresholds, so every task selects what generating all
candidates would select. The selection is identical; what lazy sampling does not know is the
acceptance at thresholds above a prompt's stop (`acceptance.parquet` counts those occurrences
as `undetermined`; `sampling=all` generates everything for the threshold study), and a later
run with a higher threshold generates only the candidates still missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ith_core.config import TASKS, ConfigError, RunConfig
from ith_core.imagination.devices import batch_sizes, load_models, local_devices, planning_device, worker_identity
from ith_core.imagination.generators import (
    GenerationSettings,
    audio_id,
    candidate_seeds,
    check_generated,
    generator_identity,
)
from ith_core.imagination.planning import (
    build_mapping,
    check_disk,
    cut_shards,
    disk_estimate,
    generator_audio_format,
    rows_by_id,
)
from ith_core.imagination.sampling import Prompt, needs_work, work_spec
from ith_core.imagination.selection import acceptance, no_audio_message, select
from ith_core.stages.skeleton import layout_for, stage_key
from storage import run_files
from storage.audio_store import AudioStore, AudioStoreError, audio_bytes_per_clip, pcm16, pcm16_to_float
from storage.layout import RunLayout

logger = logging.getLogger(__name__)

STAGE = run_files.IMAGINE
# Bump when this module changes what the stage writes for the same inputs.
# 3: the plan and selection keys follow the one scheme of stages/skeleton.py ([stage, version, *parts]).
IMAGINE_VERSION = 3
# A score this close to a threshold may pass on one machine and fail on another (renderings
# differ in the last bits): such candidates are counted in the stage report.
NEAR_THRESHOLD = 1e-4


class ShardsMissingError(RuntimeError):
    """Planned shards have no manifest yet; `ith rerun-failed <run>` generates exactly those."""


class NoAudioError(RuntimeError):
    """No span occurrence got a candidate at its task's threshold, so ITH has nothing to hear."""


def no_audio_error(cfg: RunConfig) -> NoAudioError:
    """The `NoAudioError` of a run whose imagine stage finished without accepting any span occurrence."""
    layout = layout_for(cfg)
    selection = layout.read_table(*run_files.SELECTION)
    candidates = layout.read_table(*run_files.CANDIDATES)
    return NoAudioError(no_audio_message(selection, candidates, cfg.imagine.num_candidates))


# ---------------------------------------------------------------------------------------------
# Planning


def span_occurrences(layout: RunLayout, cfg: RunConfig) -> list[dict]:
    """Every span occurrence of the run's sampled examples, plus one row per example without a span."""
    rows: list[dict] = []
    for task in cfg.data.tasks:
        for split in cfg.data.splits:
            spans = layout.read_table(*run_files.spans_table(task, split)).to_pylist()
            examples = layout.read_table(*run_files.sampled_examples(task, split)).to_pylist()
            for span in spans:
                rows.append(
                    {
                        "example_id": span["example_id"],
                        "task": task,
                        "split": split,
                        "span_index": int(span["span_index"]),
                        "span_text": span["span_text"],
                    }
                )
            for example in examples:
                if example["n_spans"] == 0:
                    rows.append(
                        {
                            "example_id": example["example_id"],
                            "task": task,
                            "split": split,
                            "span_index": -1,
                            "span_text": None,
                        }
                    )
    return rows


def plan_imagine(cfg: RunConfig, model_paths: dict[str, str], existing_only: bool = False) -> dict:
    """Writes mapping and plan (once per run and settings) and returns the plan's summary.

    `existing_only`: return the run's recorded plan as it is (rerunning failed shards must run
    exactly the shards planned before, nothing else), or fail if there is none.
    """
    layout = layout_for(cfg)
    if cfg.imagine.clap_backend != "transformers":
        raise ConfigError(
            f"imagine.clap_backend must be 'transformers' (laion-clap is not shipped: it needs "
            f"numpy<2 and torchvision), got {cfg.imagine.clap_backend!r}"
        )
    if existing_only:
        return {**read_plan(layout), "reused": True}
    device = planning_device(cfg)
    settings = GenerationSettings.from_config(cfg.imagine, generator_identity(model_paths["generator"]), device)
    clap_id = generator_identity(model_paths["clap"])
    for task in cfg.data.tasks:
        if task not in cfg.imagine.thresholds:
            raise ConfigError(
                f"imagine.thresholds must have a threshold for task {task!r}, got "
                f"{cfg.imagine.thresholds}; add e.g. imagine.thresholds.{task}=0.3"
            )
    sampling = {
        "sampling": cfg.imagine.sampling,
        "keep_audio": cfg.imagine.keep_audio,
        "audio_format": cfg.imagine.audio_format,
        "thresholds": {t: cfg.imagine.thresholds[t] for t in cfg.data.tasks},
    }
    key = stage_key(
        "imagine-plan",
        IMAGINE_VERSION,
        layout.finished_key(run_files.SPANS),
        cfg.data.tasks,
        cfg.data.splits,
        cfg.imagine.prompt_template,
        cfg.imagine.fallback_prompt,
        settings.key(),
        clap_id,
        cfg.imagine.shard_size,
        sampling,
    )
    if layout.exists(*run_files.PLAN):
        plan = layout.read_json(*run_files.PLAN)
        if plan["key"] == key:
            return {**plan, "reused": True, "in_store_now": _in_store_now(layout, plan)}
    started = time.perf_counter()
    mapping = build_mapping(span_occurrences(layout, cfg), cfg, settings)
    tasks_of: dict[str, set] = {}
    prompts = {}
    for a, prompt, text, task in zip(*(mapping[c].to_pylist() for c in ("audio_id", "prompt", "clap_text", "task"))):
        prompts[a] = (prompt, text)
        tasks_of.setdefault(a, set()).add(task)
    unique = {
        a: (
            *prompts[a],
            *work_spec([cfg.imagine.thresholds[t] for t in tasks_of[a]], cfg.imagine.sampling, cfg.imagine.keep_audio),
        )
        for a in prompts
    }
    store = AudioStore(cfg.run_root)
    stored = rows_by_id(store.read_candidates(set(unique)))
    k = settings.num_candidates
    todo = {a for a, spec in unique.items() if needs_work(stored.get(a, {}), k, spec[2], spec[3])}
    shards = cut_shards(unique, todo, cfg.imagine.shard_size)
    names = list(dict.fromkeys(shards["shard"].to_pylist()))
    # Upper bound of the audio written: WAV-sized clips (the generator's rate and channels are
    # not known before loading it; the pipeline's configs are read without loading weights).
    rate, channels = generator_audio_format(model_paths["generator"])
    disk = check_disk(cfg, disk_estimate(cfg, shards, k, audio_bytes_per_clip(settings.duration_s, rate, channels)))
    plan = {
        "key": key,
        "settings": settings.key(),
        **sampling,
        "clap_id": clap_id,
        "occurrences": mapping.num_rows,
        "unique_prompts": len(unique),
        "dedup_ratio": round(mapping.num_rows / max(1, len(unique)), 4),
        "already_in_store": len(unique) - len(todo),
        "to_generate": len(todo),
        "disk": disk,
        "shards": names,
        "model_paths": dict(model_paths),
        "seconds": round(time.perf_counter() - started, 3),
    }
    layout.write_table(mapping, *run_files.MAPPING)
    layout.write_table(shards, *run_files.PLAN_SHARDS)
    # plan.json last: a plan is only reused once both tables exist.
    layout.write_json(plan, *run_files.PLAN)
    logger.info(
        "imagine plan: %d occurrences, %d unique prompts (%.2fx), %d in store, %d shards (%s sampling)",
        plan["occurrences"],
        plan["unique_prompts"],
        plan["dedup_ratio"],
        plan["already_in_store"],
        len(names),
        cfg.imagine.sampling,
    )
    return {**plan, "reused": False, "in_store_now": plan["already_in_store"]}


def _in_store_now(layout: RunLayout, plan: dict) -> int:
    """Prompts of a recorded plan whose work is in the store now: those found when planning, plus those
    of the planned shards finished since (an earlier flow run made their manifests)."""
    store = AudioStore(layout.run_root)
    finished = {name for name in plan["shards"] if store.has_shard(name)}
    if not finished:
        return plan["already_in_store"]
    table = layout.read_table(*run_files.PLAN_SHARDS)
    return plan["already_in_store"] + sum(1 for name in table["shard"].to_pylist() if name in finished)


def read_plan(layout: RunLayout) -> dict:
    if not layout.exists(*run_files.PLAN):
        raise ShardsMissingError(f"no imagine plan in {layout.url(STAGE)}; run the imagine stage first")
    return layout.read_json(*run_files.PLAN)


# ---------------------------------------------------------------------------------------------
# One shard


def generate_candidates(cfg: RunConfig, model_paths: dict[str, str], shard: str, device: str | None = None) -> dict:
    """Generates, scores and stores one planned shard; a shard with a manifest is skipped.

    Candidates are generated round by round (candidate 0 of every prompt, then candidate 1 of
    the prompts still sampling, ...), each round in calls of `batch_size` clips; with
    `sampling=all` no prompt stops early. Candidates the store already holds (an earlier run,
    a lower threshold) are reused, not generated. CLAP scores the 16-bit samples that the audio
    files hold, so scores describe the stored audio. A call returning NaN, infinite or silent audio
    raises `GeneratedAudioError` before any of it is scored or stored; the shard gets no manifest.

    The report splits `seconds_generate` where the generator measures it (Stable Audio's
    `timings`): `seconds_denoise`, `seconds_decode`, `denoise_clip_steps` (clips x steps) and
    `decoded_clips`, a rehearsal's unit costs. A generator without them (the tone generator) has
    no such keys, rather than zeros that would read as free work.
    """
    layout = layout_for(cfg)
    store = AudioStore(cfg.run_root)
    if store.has_shard(shard):
        return {"shard": shard, "status": "skipped"}
    started = time.perf_counter()
    plan = read_plan(layout)
    table = layout.read_table(*run_files.PLAN_SHARDS)
    rows = table.filter(pc.equal(table["shard"], shard)).to_pylist()
    if not rows:
        raise ValueError(
            f"shard {shard} is not in the plan of {layout.url(STAGE)}; planned shards: {len(plan['shards'])}"
        )
    device = device or local_devices(cfg)[0]
    generator, scorer = load_models(cfg, model_paths, plan, device)
    batch, generator.decode_batch_size = batch_sizes(cfg, generator)
    loaded = time.perf_counter()
    k = generator.settings.num_candidates
    fmt = plan.get("audio_format", "wav")
    for row in rows:
        # The plan was made from the same settings; a mismatch here would write audio under a wrong id.
        if audio_id(row["prompt"], generator.settings) != row["audio_id"]:
            raise ConfigError(
                f"audio id of prompt {row['prompt']!r} does not match the plan; "
                "the generation settings changed since planning: plan a new run"
            )
    stored = rows_by_id(store.read_candidates({r["audio_id"] for r in rows}))
    stored = {a: {c: r for c, r in by_c.items() if r["clap_id"] == plan["clap_id"]} for a, by_c in stored.items()}
    prompts = [
        Prompt(row, candidate_seeds(generator.settings.seed, row["audio_id"], k), stored.get(row["audio_id"], {}), k)
        for row in rows
    ]
    timings = {"generate": 0.0, "score": 0.0, "write": 0.0}
    # The generator's own split of `generate` (denoise / decode and their work), where it measures one.
    inner_before = dict(getattr(generator, "timings", {}))
    manifest_rows: list[dict] = []
    counts = {"generated": 0, "reused": 0, "collisions": 0, "audio_written": 0}
    calls = 0  # generation calls so far: a row's `batch`, so a repair can render its call again
    for c in range(k):
        todo = []
        for p in [p for p in prompts if p.open]:
            if p.reusable(c):
                p.take(c, float(p.stored[c]["clap_score"]))
                counts["reused"] += 1
            else:
                todo.append(p)
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            t0 = time.perf_counter()
            waveforms = generator.generate([p.row["prompt"] for p in chunk], [[p.seeds[c]] for p in chunk])
            t1 = time.perf_counter()
            waves = waveforms.cpu().numpy()
            # NaN, inf or silence is never scored or stored: raised before anything of the call is.
            check_generated(
                waves.reshape(-1, *waves.shape[-2:]),
                [(p.row["audio_id"], c, p.row["prompt"]) for p in chunk],
                generator.settings,
            )
            samples = pcm16(waves)
            scores = scorer.score(pcm16_to_float(samples), generator.sample_rate, [p.row["clap_text"] for p in chunk])
            t2 = time.perf_counter()
            for i, p in enumerate(chunk):
                score = float(scores[i, 0])
                put = None
                if p.audio_needed(c, score):
                    put = store.put_audio(p.row["audio_id"], c, samples[i, 0], generator.sample_rate, fmt)
                    counts["audio_written"] += put.created
                    counts["collisions"] += not put.created
                manifest_rows.append(
                    {
                        "audio_id": p.row["audio_id"],
                        "candidate": c,
                        "prompt": p.row["prompt"],
                        "clap_text": p.row["clap_text"],
                        "seed": p.seeds[c],
                        "clap_score": score,
                        "clap_id": plan["clap_id"],
                        "audio_path": put.path if put else None,
                        "duration_s": samples.shape[-1] / generator.sample_rate,
                        "sample_rate": generator.sample_rate,
                        "channels": samples.shape[-2],
                        "checksum": put.checksum if put else None,
                        "shard": shard,
                        "batch": calls,
                        "decode_batch_size": generator.decode_batch_size,
                    }
                )
                p.take(c, score)
            calls += 1
            counts["generated"] += len(chunk)
            timings["generate"] += t1 - t0
            timings["score"] += t2 - t1
            timings["write"] += time.perf_counter() - t2
        if todo:
            logger.info(
                "%s: candidate %d of %d generated for %d prompts (%d of %d prompts still sampling)",
                shard,
                c + 1,
                k,
                len(todo),
                sum(p.open for p in prompts),
                len(prompts),
            )
    # Written last: the manifest's existence means every file it lists is whole.
    store.write_manifest(shard, manifest_rows)
    total = time.perf_counter() - started
    inner = {name: v - inner_before[name] for name, v in getattr(generator, "timings", {}).items()}
    return {
        "shard": shard,
        "status": "done",
        "device": device,
        "worker": worker_identity(),
        "prompts": len(rows),
        "candidates": counts["generated"],
        "candidates_reused": counts["reused"],
        "candidates_per_prompt": round((counts["generated"] + counts["reused"]) / len(rows), 3),
        "audio_written": counts["audio_written"],
        "collisions": counts["collisions"],
        "batch_size": batch,
        "decode_batch_size": generator.decode_batch_size,
        "seconds": round(total, 3),
        "seconds_load": round(loaded - started, 3),
        **{f"seconds_{name}": round(v, 3) for name, v in timings.items()},
        **{name: round(v, 3) if isinstance(v, float) else v for name, v in inner.items()},
    }


def shard_statuses(cfg: RunConfig) -> dict[str, bool]:
    """Planned shard -> finished (manifest present)."""
    plan = read_plan(layout_for(cfg))
    store = AudioStore(cfg.run_root)
    return {name: store.has_shard(name) for name in plan["shards"]}


def record_shard_status(cfg: RunConfig, results: Sequence[dict]) -> dict:
    """Records what the last flow run did to each shard (done / skipped / failed with its error)."""
    layout = layout_for(cfg)
    by_status: dict[str, list] = {"done": [], "skipped": [], "failed": []}
    for result in results:
        by_status.setdefault(result["status"], []).append(result)
    status = {"shards": list(results), "counts": {k: len(v) for k, v in by_status.items()}}
    layout.write_json(status, *run_files.SHARD_STATUS)
    return status


# ---------------------------------------------------------------------------------------------
# Collection, and the checks of stored files it makes (`ith repair-audio` is in stages/audio_repair.py)


def _specs(mapping: pa.Table, cfg: RunConfig, plan: dict) -> dict[str, tuple[float | None, list[float] | None]]:
    tasks_of: dict[str, set] = {}
    for a, task in zip(mapping["audio_id"].to_pylist(), mapping["task"].to_pylist()):
        tasks_of.setdefault(a, set()).add(task)
    return {
        a: work_spec(
            [cfg.imagine.thresholds[t] for t in tasks], plan.get("sampling", "all"), plan.get("keep_audio", "all")
        )
        for a, tasks in tasks_of.items()
    }


def _repair_hint(cfg: RunConfig, audio_ids: Sequence[str]) -> str:
    return (
        f"regenerate them with `ith repair-audio {cfg.effective_run_id} {' '.join(audio_ids[:20])} "
        f"--run-root {cfg.run_root}`"
    )


def _replaced_since_collect(cfg: RunConfig, layout: RunLayout, store: AudioStore) -> bool:
    """Whether the run's collected tables name files no manifest names any more (`ith repair-audio`
    rendered other bytes for them and pointed the manifests at the new files)."""
    candidates = layout.read_table(*run_files.CANDIDATES).select(["audio_id", "audio_path"])
    used = set(candidates["audio_path"].to_pylist()) - {None}
    gone = used - store.listed_paths(set(candidates["audio_id"].to_pylist()))
    if gone:
        logger.warning(
            "run %s: %d audio file(s) its selection used were replaced by `ith repair-audio` (e.g. %s); "
            "collecting its selection again",
            cfg.effective_run_id,
            len(gone),
            sorted(gone)[0],
        )
    return bool(gone)


def _check_selected_files(cfg: RunConfig, layout: RunLayout, store: AudioStore) -> None:
    """A finished stage's selected audio files exist and have their size (no hashing: `ith verify`
    hashes them), so a rerun reports a lost or truncated file instead of training on it."""
    selection = layout.read_table(*run_files.SELECTION).select(["audio_id", "candidate", "accepted"])
    chosen = {
        (a, c) for a, c, ok in zip(*(selection[n].to_pylist() for n in ("audio_id", "candidate", "accepted"))) if ok
    }
    rows = [
        r
        for r in layout.read_table(*run_files.CANDIDATES).to_pylist()
        if (r["audio_id"], r["candidate"]) in chosen and r["audio_path"] is not None
    ]
    bad = [(r, why) for r in rows if (why := store.size_problem(r)) is not None]
    if bad:
        error = store.damage_error(bad, "missing or not the size of their audio")
        raise AudioStoreError(f"{error}\n{_repair_hint(cfg, error.audio_ids)}", error.audio_ids)


def select_candidates(cfg: RunConfig, seconds_before: float | None = None) -> dict:
    """Joins the run's spans to chosen audio once every planned shard is finished; marks the stage done.

    `seconds_before`: wall time the flow run spent on the stage before this step (plan and
    shards); the report's `seconds_total` adds this step's own time, so it is the stage's time
    in every table. Without it: the plan's and the last flow run's shards' seconds.
    """
    layout = layout_for(cfg)
    plan = read_plan(layout)
    for task in cfg.data.tasks:
        if task not in cfg.imagine.thresholds:
            raise ConfigError(
                f"imagine.thresholds must have a threshold for task {task!r}, got "
                f"{cfg.imagine.thresholds}; add e.g. imagine.thresholds.{task}=0.3"
            )
    key = stage_key(STAGE, IMAGINE_VERSION, plan["key"], cfg.imagine.thresholds, cfg.imagine.threshold_grid)
    store = AudioStore(cfg.run_root)
    if (report := layout.stage_done(STAGE, key)) is not None:
        if not _replaced_since_collect(cfg, layout, store):
            _check_selected_files(cfg, layout, store)
            return {**report, "cached": True}
        layout.fs.rm(layout.path(STAGE, run_files.DONE_MARKER))
    missing = [name for name in plan["shards"] if not store.has_shard(name)]
    if missing:
        raise ShardsMissingError(
            f"{len(missing)} of {len(plan['shards'])} shards of run {cfg.effective_run_id} "
            f"have no manifest ({', '.join(missing[:5])}); run `ith rerun-failed` on the run"
        )
    started = time.perf_counter()
    mapping = layout.read_table(*run_files.MAPPING)
    needed = set(mapping["audio_id"].to_pylist())
    candidates = store.read_candidates(needed)
    other_clap = set(candidates["clap_id"].to_pylist()) - {plan["clap_id"]}
    if other_clap:
        raise ConfigError(
            f"stored scores come from CLAP {sorted(other_clap)}, this run uses {plan['clap_id']}; "
            "rescoring stored audio with another CLAP model is not supported: use another run_root"
        )
    # Files are named by their content and never replaced: a file that no longer hashes to its
    # recorded checksum is damage, and the scores recorded for it describe other audio.
    try:
        verified = store.verify_checksums(candidates)
    except AudioStoreError as error:
        raise AudioStoreError(f"{error}\n{_repair_hint(cfg, error.audio_ids)}", error.audio_ids) from None
    k = plan["settings"]["num_candidates"]
    specs = _specs(mapping, cfg, plan)
    by_id = rows_by_id(candidates)
    incomplete = sorted(a for a in needed if needs_work(by_id.get(a, {}), k, *specs[a]))
    if incomplete:
        raise RuntimeError(
            f"audio store {store.url('')} lacks candidates (or their audio) of {len(incomplete)} audio "
            f"ids, e.g. {incomplete[0]}; run `ith rerun-failed {cfg.effective_run_id} --run-root "
            f"{cfg.run_root}`"
        )
    selection = select(mapping, candidates, cfg.imagine.thresholds, store.url, k)
    grid = acceptance(mapping, candidates, cfg.imagine.threshold_grid, k)
    layout.write_table(candidates, *run_files.CANDIDATES)
    layout.write_table(selection, *run_files.SELECTION)
    layout.write_table(grid, *run_files.ACCEPTANCE)
    scores = np.asarray(candidates["clap_score"].to_pylist(), dtype=np.float64)
    quantiles = {
        f"q{int(q * 100):02d}": round(float(np.quantile(scores, q)), 4) for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    }
    # Candidates this close to one of their prompt's thresholds could be decided otherwise by a
    # machine that renders the audio differently in the last bits.
    thresholds_of = {a: set(map(float, [cfg.imagine.thresholds[t] for t in cfg.data.tasks])) for a in needed}
    near = sum(
        1
        for a, s in zip(candidates["audio_id"].to_pylist(), scores)
        if any(abs(s - t) < NEAR_THRESHOLD for t in thresholds_of[a])
    )
    accepted = selection["accepted"].to_pylist()
    used = []
    for task in sorted(set(selection["task"].to_pylist())):
        flags = [a for a, t in zip(accepted, selection["task"].to_pylist()) if t == task]
        used.append(
            {
                "task": task,
                "threshold": float(cfg.imagine.thresholds[task]),
                "occurrences": len(flags),
                "accepted": int(sum(flags)),
                "rate": round(sum(flags) / len(flags), 6) if flags else 0.0,
            }
        )
    status = layout.read_json(*run_files.SHARD_STATUS) if layout.exists(*run_files.SHARD_STATUS) else {}
    generated = [r for r in status.get("shards", []) if r.get("status") == "done"]
    if seconds_before is None:
        seconds_before = float(plan.get("seconds") or 0) + sum(float(r.get("seconds") or 0) for r in generated)
    own = time.perf_counter() - started
    report = {
        "occurrences": plan["occurrences"],
        "unique_prompts": plan["unique_prompts"],
        "dedup_ratio": plan["dedup_ratio"],
        "sampling": plan.get("sampling", "all"),
        "candidates": candidates.num_rows,
        "candidates_per_prompt": round(candidates.num_rows / max(1, len(needed)), 4),
        "audio_files_verified": verified,
        "near_threshold": near,
        "shards": len(plan["shards"]),
        "thresholds": dict(cfg.imagine.thresholds),
        "accepted": int(sum(accepted)),
        "rejected": len(accepted) - int(sum(accepted)),
        "acceptance_at_threshold": used,
        "acceptance_by_threshold": grid.to_pylist(),
        "clap_score_quantiles": quantiles,
        "device": ", ".join(sorted({str(r["device"]) for r in generated if r.get("device")})) or None,
        "seconds": round(own, 3),
        "seconds_total": round(seconds_before + own, 3),
        "outputs": {
            parts[-1].removesuffix(".parquet"): layout.url(*parts)
            for parts in (run_files.MAPPING, run_files.CANDIDATES, run_files.SELECTION, run_files.ACCEPTANCE)
        },
    }
    layout.mark_done(STAGE, key, report)
    return {**report, "cached": False}


def reselect(cfg: RunConfig, thresholds: dict[str, float]) -> pa.Table:
    """The selection at other thresholds, from the stored scores of a finished run (no generation).

    Raises `UndeterminedSelectionError` where lazy sampling did not generate what a higher
    threshold needs.
    """
    layout = layout_for(cfg)
    for task, value in thresholds.items():
        if task not in TASKS or not -1.0 <= value <= 1.0:
            raise ConfigError(f"thresholds must map tasks {TASKS} to values in [-1, 1], got {task}={value}")
    store = AudioStore(cfg.run_root)
    k = read_plan(layout)["settings"]["num_candidates"]
    return select(
        layout.read_table(*run_files.MAPPING), layout.read_table(*run_files.CANDIDATES), thresholds, store.url, k
    )
