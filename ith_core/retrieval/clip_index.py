"""The CLAP index of a clip pool (query mode `clap`) for the AudioBERT backend; no Prefect here.

Index (query mode `clap`): the CLAP audio embedding of every clip, L2-normalised float32, in
`$ITH_HOME/retrieval/index/<hash of (manifest content, CLAP identity, preprocessing)>/`
(`index.parquet`: clip_id, embedding; `index.json`: CLAP identity, preprocessing, counts),
built once in resumable shards and published by one rename, then reused by every run.
Preprocessing fixes the release's CLAP bugs: each clip is mixed to mono and resampled to the
CLAP extractor's 48 kHz with soxr, and the extractor gets the whole clip (its default 10 s
`fusion` input), not `max_length=64` samples.

    index = ensure_index(pool, "/models/clap")
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from transformers import AutoFeatureExtractor

from ith_core.audio import read_wav, resample, to_mono
from ith_core.imagination.clap_scoring import ClapScorer
from ith_core.imagination.generators import generator_identity
from ith_core.retrieval.pool import Pool, _sha256, retrieval_home
from storage.layout import write_atomic

logger = logging.getLogger(__name__)

# Bump when the index's embeddings change for the same clips and CLAP model.
INDEX_VERSION = 1
# Clips per CLAP call and per index shard. Fixed (not settings): the extractor crops clips
# longer than 10 s with numpy's RNG reseeded per call, so the batches must be the same on
# every build for the same embeddings.
INDEX_BATCH_SIZE = 32
INDEX_SHARD_CLIPS = 1024


@dataclass
class ClipIndex:
    """CLAP audio embeddings of a pool, one unit row per clip in manifest order."""

    embeddings: np.ndarray  # (clips, dim) float32
    meta: dict
    folder: Path
    cached: bool


def clap_preprocessing(feature_extractor) -> dict:
    """What the index's audio went through before CLAP (recorded in index.json and in its key)."""
    return {
        "channels": "mean to mono",
        "resampler": "soxr HQ",
        "sample_rate": int(feature_extractor.sampling_rate),
        "max_length_s": float(feature_extractor.nb_max_samples / feature_extractor.sampling_rate),
        "truncation": getattr(feature_extractor, "truncation", None),
        "padding": getattr(feature_extractor, "padding", None),
        "is_longer": "from each clip's length",
        "batch_size": INDEX_BATCH_SIZE,
        "crops": "numpy RNG seeded 0 per batch, batches of sorted clip ids",
        "normalised": "L2, float32",
        "version": INDEX_VERSION,
    }


def clap_identity(folder: str | os.PathLike) -> str:
    # The same rule that names generators: tiny folder name, hub repo@commit, or a hash of the files.
    return generator_identity(folder)


def ensure_index(
    pool: Pool,
    clap_folder: str | os.PathLike,
    device: str = "cpu",
    scorer=None,
    cache_root: str | os.PathLike | None = None,
) -> ClipIndex:
    """The pool's CLAP index: read from the cache, or built once (resumable shards, one final rename)."""
    identity = clap_identity(clap_folder)
    extractor = (
        scorer.processor.feature_extractor
        if scorer is not None
        else AutoFeatureExtractor.from_pretrained(clap_folder, local_files_only=True, trust_remote_code=False)
    )
    preprocessing = clap_preprocessing(extractor)
    key = _sha256(json.dumps([pool.manifest_hash, identity, preprocessing], sort_keys=True).encode())[:16]
    base = Path(cache_root) if cache_root else retrieval_home() / "index"
    final = base / key
    if (final / "index.json").is_file():
        return _read_index(pool, final, cached=True)
    if scorer is None:
        scorer = ClapScorer.from_folder(clap_folder, device=device, batch_size=INDEX_BATCH_SIZE)
    scorer.batch_size = INDEX_BATCH_SIZE
    building = base / f".building-{key}"
    (building / "parts").mkdir(parents=True, exist_ok=True)
    local = fsspec.filesystem("file")
    ids = pool.manifest["clip_id"].to_pylist()
    paths = pool.manifest["path"].to_pylist()
    started = time.perf_counter()
    embedded = 0
    shards = range(0, len(ids), INDEX_SHARD_CLIPS)
    for shard, start in enumerate(shards):
        part = building / "parts" / f"part-{shard:05d}.parquet"
        chunk = ids[start : start + INDEX_SHARD_CLIPS]
        if part.is_file() and pq.read_table(part, columns=["clip_id"])["clip_id"].to_pylist() == chunk:
            continue  # finished by an earlier, interrupted build
        vectors = []
        for b in range(start, start + len(chunk), INDEX_BATCH_SIZE):
            end = min(b + INDEX_BATCH_SIZE, start + len(chunk))
            waves = [_clap_input(p, scorer.sample_rate) for p in paths[b:end]]
            vectors.append(scorer.audio_embeddings(waves).cpu().numpy().astype(np.float32))
        matrix = np.concatenate(vectors)
        table = pa.table(
            {
                "clip_id": pa.array(chunk, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1]),
            }
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        write_atomic(local, str(part), sink.getvalue())
        embedded += len(chunk)
        logger.info(
            "CLAP index %s: %d of %d clips embedded (%.0f s)",
            key,
            start + len(chunk),
            len(ids),
            time.perf_counter() - started,
        )
    parts = sorted((building / "parts").glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    if table["clip_id"].to_pylist() != ids:
        raise RuntimeError(
            f"CLAP index {building}: its shards do not cover the pool's clips in order; delete the folder and rerun"
        )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    write_atomic(local, str(building / "index.parquet"), sink.getvalue())
    shutil.rmtree(building / "parts")
    meta = {
        "clap_identity": identity,
        "clap_folder": str(clap_folder),
        "preprocessing": preprocessing,
        "pool": pool.name,
        "manifest_sha256": pool.manifest_hash,
        "clips": len(ids),
        "dim": int(table["embedding"].type.list_size),
        "build_seconds": round(time.perf_counter() - started, 3),
        "clips_embedded_by_this_build": embedded,
    }
    (building / "index.json").write_text(json.dumps(meta, indent=2))
    try:
        building.rename(final)
    except OSError:
        if not (final / "index.json").is_file():
            raise
        shutil.rmtree(building, ignore_errors=True)  # a concurrent build published the same index first
    return _read_index(pool, final, cached=False)


def _clap_input(path: str, rate: int) -> np.ndarray:
    samples, native = read_wav(path)
    return resample(to_mono(samples), native, rate)


def _read_index(pool: Pool, folder: Path, cached: bool) -> ClipIndex:
    table = pq.read_table(folder / "index.parquet")
    if table["clip_id"].to_pylist() != pool.manifest["clip_id"].to_pylist():
        raise RuntimeError(f"CLAP index {folder} does not hold the pool's clips in manifest order; delete it and rerun")
    column = table["embedding"].combine_chunks()
    matrix = column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return ClipIndex(
        np.ascontiguousarray(matrix, dtype=np.float32), json.loads((folder / "index.json").read_text()), folder, cached
    )
