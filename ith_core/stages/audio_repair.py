"""The drivers of `ith verify` and `ith repair-audio` for a run's stored audio; no Prefect here.

    verify_run(cfg)                         hash every stored file the run's tables name
    repair_audio(cfg, model_paths, ids)     regenerate damaged stored audio, then collect again
    recollect(cfg)                          collect a run's selection again from the store as it is now
    runs_using(run_root, paths)             the runs whose collected tables name some store paths

The imagine stage's own drivers (plan, shards, collection) are in `ith_core.stages.imagine`;
its collection checks a finished stage's selected files and notices files a repair replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ith_core.config import ConfigError, RunConfig
from ith_core.imagination.devices import load_models, local_devices
from ith_core.imagination.generators import audio_id, check_generated
from ith_core.stages.imagine import STAGE, read_plan, select_candidates
from ith_core.stages.skeleton import layout_for, load_run_config
from storage import run_files
from storage.audio_store import AudioStore, pcm16, pcm16_to_float
from storage.layout import RunLayout, StageNotFinishedError, run_ids
from storage.run_lock import RunLockedError, hold_run_lock

logger = logging.getLogger(__name__)


class UnknownAudioIdError(ValueError):
    """`ith repair-audio` was given audio ids that the run root's audio store does not hold."""


def verify_run(cfg: RunConfig) -> dict:
    """Hashes every stored file the run's imagine tables name (its candidates, hence its selection)
    against the recorded checksum. Returns the files checked and one entry per bad file."""
    layout = layout_for(cfg)
    store = AudioStore(cfg.run_root)
    if layout.exists(*run_files.CANDIDATES):
        table = layout.read_table(*run_files.CANDIDATES)
    elif layout.exists(*run_files.MAPPING):
        table = store.read_candidates(set(layout.read_table(*run_files.MAPPING)["audio_id"].to_pylist()))
    else:
        raise StageNotFinishedError(
            f"run {cfg.effective_run_id} has no imagine tables under {layout.url(STAGE)}: "
            "nothing to verify yet (`ith run` plans and generates them)"
        )
    checked, bad = store.check_files(table)
    problems = [
        {
            "audio_id": r["audio_id"],
            "candidate": r["candidate"],
            "path": store.url(r["audio_path"]),
            "problem": why,
            "repair": f"ith repair-audio {cfg.effective_run_id} {r['audio_id']} --run-root {cfg.run_root}",
        }
        for r, why in bad
    ]
    return {"run_id": cfg.effective_run_id, "files_checked": checked, "damaged": problems}


def _render_again(generator, store: AudioStore, rows: Sequence[dict]) -> dict[tuple[str, int], np.ndarray]:
    """(audio id, candidate) -> its (channels, samples) int16, rendered as its shard rendered it.

    Floating-point results depend on the batch (kernels vary with its size), so a clip rendered
    alone differs from its stored rendering in the last bits. Each row is rendered in the very
    generation call its manifest records (`batch`: the same prompts and seeds in the same order,
    the same decode slices); a row from a manifest without that record is rendered alone.
    """
    out: dict[tuple[str, int], np.ndarray] = {}
    calls: dict[tuple[str, int], list[dict]] = {}
    manifests: dict[str, list[dict]] = {}
    for row in rows:
        if row["batch"] is None:
            calls[(f"alone:{row['audio_id']}:{row['candidate']}", -1)] = [row]
            continue
        if row["shard"] not in manifests:
            manifests[row["shard"]] = store.read_manifest(row["shard"]).to_pylist()
        calls[(row["shard"], row["batch"])] = [r for r in manifests[row["shard"]] if r["batch"] == row["batch"]]
    wanted = {(r["audio_id"], r["candidate"]) for r in rows}
    for call in calls.values():
        generator.decode_batch_size = call[0]["decode_batch_size"]
        waves = generator.generate([r["prompt"] for r in call], [[r["seed"]] for r in call]).cpu().numpy()
        check_generated(
            waves.reshape(-1, *waves.shape[-2:]),
            [(r["audio_id"], r["candidate"], r["prompt"]) for r in call],
            generator.settings,
        )
        samples = pcm16(waves)
        for i, r in enumerate(call):
            if (r["audio_id"], r["candidate"]) in wanted:
                out[(r["audio_id"], r["candidate"])] = samples[i, 0]
    return out


def runs_using(run_root: str, paths: set[str]) -> list[str]:
    """Run ids under the run root whose collected imagine tables name any of these store paths."""
    found = []
    for run_id in run_ids(run_root):
        layout = RunLayout(run_root, run_id)
        if layout.exists(*run_files.CANDIDATES):
            used = set(layout.read_table(*run_files.CANDIDATES)["audio_path"].to_pylist())
            if used & paths:
                found.append(run_id)
    return found


def recollect(cfg: RunConfig) -> dict:
    """Collects a run's selection again from the store as it is now (after a repair)."""
    layout = layout_for(cfg)
    if layout.exists(STAGE, run_files.DONE_MARKER):
        layout.fs.rm(layout.path(STAGE, run_files.DONE_MARKER))
    return select_candidates(cfg)


def repair_audio(
    cfg: RunConfig, model_paths: dict[str, str], audio_ids: Sequence[str], device: str | None = None
) -> dict:
    """Regenerates the damaged or missing stored files of `audio_ids`, then collects the run again.

    Each file is rendered again in its recorded generation call (`_render_again`), which on the
    machine and settings that made it gives the same bytes: the file is restored under its own
    name, its row (and recorded score) stays, and no table anywhere changes. Where the bytes
    differ (another machine or library), the new file gets its own name, is scored, and every
    manifest row naming the old file is pointed at it; the old file is never deleted (other runs'
    tables may name it). Every other run under the run root whose tables name a replaced file is
    collected again under its lock, or, when another process holds it, listed with the command
    that updates it (`runs_to_update`); their own next `ith run` or `rerun-failed` also collects
    again, finding files their tables name that no manifest names any more.
    """
    layout = layout_for(cfg)
    plan = read_plan(layout)
    store = AudioStore(cfg.run_root)
    stored = store.read_candidates(set(audio_ids))
    unknown = sorted(set(audio_ids) - set(stored["audio_id"].to_pylist()))
    if unknown:
        raise UnknownAudioIdError(
            f"audio ids {unknown} have no stored candidates under {store.url('')}, so there "
            f"is nothing to repair; give the ids the imagine stage named (check --run-root "
            f"and the run id {cfg.effective_run_id})"
        )
    if stored["clap_id"].to_pylist() and set(stored["clap_id"].to_pylist()) != {plan["clap_id"]}:
        raise ConfigError(
            "the stored candidates were scored by another CLAP than this run's; repair from the run that generated them"
        )
    _, bad = store.check_files(stored)
    damaged_keys = {(r["audio_id"], r["candidate"]) for r, _ in bad}
    rows = [r for r in stored.to_pylist() if (r["audio_id"], r["candidate"]) in damaged_keys]
    restored, replaced = [], {}
    if rows:
        device = device or local_devices(cfg)[0]
        generator, scorer = load_models(cfg, model_paths, plan, device)
        for row in rows:
            if audio_id(row["prompt"], generator.settings) != row["audio_id"]:
                raise ConfigError(
                    f"audio id {row['audio_id']} was not generated with this run's settings; repair "
                    "it from the run that generated it"
                )
        fmt = plan.get("audio_format", "wav")
        rendered = _render_again(generator, store, rows)
        for row in rows:
            samples = rendered[(row["audio_id"], row["candidate"])]
            put = store.put_audio(row["audio_id"], row["candidate"], samples, generator.sample_rate, fmt, restore=True)
            if put.checksum == row["checksum"]:
                restored.append(put.path)  # the same bytes: the recorded score describes them
                continue
            score = float(
                scorer.score(pcm16_to_float(samples[None, None]), generator.sample_rate, [row["clap_text"]])[0, 0]
            )
            replaced[row["audio_path"]] = {"audio_path": put.path, "checksum": put.checksum, "clap_score": score}
            logger.warning(
                "audio id %s candidate %d rendered other bytes than stored (%s -> %s); the manifests now "
                "name the new file, the old one stays",
                row["audio_id"],
                row["candidate"],
                row["audio_path"],
                put.path,
            )
    manifests = store.repoint_rows(replaced) if replaced else []
    # The run's selection was computed from the damaged rows (or not at all): collect again.
    report = recollect(cfg)
    updated, to_update = [], []
    for run_id in runs_using(cfg.run_root, set(replaced)):
        if run_id == cfg.effective_run_id:
            continue
        command = f"ith rerun-failed {run_id} --run-root {cfg.run_root}"
        try:
            other = load_run_config(cfg.run_root, run_id)
            with hold_run_lock(layout_for(other)):
                recollect(other)
            updated.append(run_id)
        except RunLockedError as error:
            logger.warning(
                "run %s names replaced audio but is being written (%s): `%s` collects it again", run_id, error, command
            )
            to_update.append({"run_id": run_id, "command": command})
    return {
        "audio_ids": sorted(set(audio_ids)),
        "candidates_regenerated": len(rows),
        "restored_identical": len(restored),
        "replaced": [{"old": k, **v} for k, v in replaced.items()],
        "manifests_rewritten": manifests,
        "runs_updated": updated,
        "runs_to_update": to_update,
        "collect": report,
    }
