"""Planning the imagine stage: span occurrences to prompts and audio ids, shards of the work left,
and the disk the plan's audio needs. Plain functions over tables; the stage driver reads and writes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from ith_core.config import RunConfig
from ith_core.imagination.generators import GenerationSettings, audio_id, prompt_for
from storage import run_files
from storage.audio_store import free_bytes, shard_name

logger = logging.getLogger(__name__)


class DiskSpaceError(RuntimeError):
    """The run root cannot hold the audio the plan expects to write."""


def build_mapping(occurrences: Sequence[dict], cfg: RunConfig, settings: GenerationSettings) -> pa.Table:
    ids: dict[str, str] = {}
    rows = []
    for occ in occurrences:
        prompt, clap_text = prompt_for(occ["span_text"], cfg.imagine)
        if prompt not in ids:
            ids[prompt] = audio_id(prompt, settings)
        rows.append({**occ, "prompt": prompt, "clap_text": clap_text, "audio_id": ids[prompt]})
    rows.sort(key=lambda r: (r["task"], r["split"], r["example_id"], r["span_index"]))
    return pa.Table.from_pylist(rows, schema=run_files.MAPPING_SCHEMA)


def _work_key(audio_id_: str, stop: float | None, keep: list[float] | None) -> str:
    # All candidates with all audio kept is the plain id (the shard names of recipe v1).
    return audio_id_ if stop is None and keep is None else json.dumps([audio_id_, stop, keep])


def rows_by_id(candidates: pa.Table) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for row in candidates.to_pylist():
        out.setdefault(row["audio_id"], {})[int(row["candidate"])] = row
    return out


def cut_shards(unique: dict[str, tuple], todo: set[str], shard_size: int) -> pa.Table:
    """Ids with work left, sorted, cut into shards named by their work (ids and sampling spec)."""
    rows = []
    ordered = sorted(todo)
    for index, start in enumerate(range(0, len(ordered), shard_size)):
        chunk = ordered[start : start + shard_size]
        name = shard_name([_work_key(a, unique[a][2], unique[a][3]) for a in chunk])
        rows.extend(
            {
                "shard": name,
                "shard_index": index,
                "audio_id": a,
                "prompt": unique[a][0],
                "clap_text": unique[a][1],
                "stop_threshold": unique[a][2],
                "keep_thresholds": unique[a][3],
            }
            for a in chunk
        )
    return pa.Table.from_pylist(rows, schema=run_files.PLAN_SCHEMA)


def disk_estimate(cfg: RunConfig, plan_rows: pa.Table, k: int, bytes_per_clip: int) -> dict:
    """Audio the plan writes: an upper bound, and an expectation for lazy sampling at 50 % acceptance.

    keep_audio=selected stores at most one clip per distinct threshold of a prompt; otherwise
    every generated candidate is stored: k per prompt at most, and with lazy sampling
    E[n] = sum_c 0.5^c (1.94 of 5) expected when each candidate passes with probability 0.5.
    Clips are counted at their WAV size (FLAC is smaller by an amount that depends on the audio).
    """
    lazy_expected = (1 - 0.5**k) / 0.5
    most, expected = 0, 0.0
    for keep, stop in zip(plan_rows["keep_thresholds"].to_pylist(), plan_rows["stop_threshold"].to_pylist()):
        clips = len(keep) if keep is not None else k
        most += clips
        expected += clips if keep is not None or stop is None else lazy_expected
    return {
        "clips_at_most": most,
        "bytes_at_most": most * bytes_per_clip,
        "clips_expected": round(expected, 1),
        "bytes_expected": int(expected * bytes_per_clip),
        "bytes_per_clip": bytes_per_clip,
        "format": cfg.imagine.audio_format,
    }


def check_disk(cfg: RunConfig, estimate: dict) -> dict:
    """Logs the expected disk use; refuses (DiskSpaceError) when the run root cannot hold the upper bound."""
    free = free_bytes(cfg.run_root)
    gib = 2**30
    estimate = {**estimate, "free_bytes": free}
    logger.info(
        "imagine: audio to write %.2f GiB at most (%d clips, %s), %.2f GiB expected; free on the run root: %s",
        estimate["bytes_at_most"] / gib,
        estimate["clips_at_most"],
        estimate["format"],
        estimate["bytes_expected"] / gib,
        "unknown" if free is None else f"{free / gib:.2f} GiB",
    )
    if cfg.imagine.disk_check and free is not None and estimate["bytes_at_most"] > free:
        raise DiskSpaceError(
            f"run root {cfg.run_root} has {free / gib:.2f} GiB free, imagination may write "
            f"{estimate['bytes_at_most'] / gib:.2f} GiB of audio ({estimate['clips_at_most']} clips of "
            f"{estimate['bytes_per_clip'] / 2**20:.2f} MiB; {estimate['bytes_expected'] / gib:.2f} GiB expected). "
            "Free space, use another --run-root, keep only the chosen candidates' audio "
            '(--set imagine.keep_audio="selected"), store FLAC (--set imagine.audio_format="flac"), '
            "or accept the risk with --set imagine.disk_check=false"
        )
    return estimate


def generator_audio_format(folder: str) -> tuple[int, int]:
    """(sample rate, channels) from the generator's configs, without loading weights.

    AudioLDM2: its vocoder's rate (16 kHz for cvssp/audioldm2), mono. Stable Audio: its VAE's rate
    and channels.
    """
    vocoder = Path(folder) / "vocoder" / "config.json"
    if vocoder.is_file():
        return int(json.loads(vocoder.read_text()).get("sampling_rate", 16000)), 1
    config = Path(folder) / "vae" / "config.json"
    if config.is_file():
        vae = json.loads(config.read_text())
        return int(vae.get("sampling_rate", 44100)), int(vae.get("audio_channels", 2))
    return 44100, 2
