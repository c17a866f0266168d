"""Clip pools, their CLAP index and retrieval for the AudioBERT backend; no Prefect here.

A clip pool is a folder (or fsspec URL) of audio files with captions. It is read once into a
manifest (`MANIFEST_SCHEMA`: clip_id, path, caption, source, split, sample_rate, duration_s,
sha256), cached under `$ITH_HOME/retrieval/pools/<hash of the URL>/` and reused while the
folder's listing (names, sizes, modification stamps) is unchanged.

Captions, one of (the first found wins, in this order):

- a captions table at the pool's top level: `captions.csv`, `captions.tsv` (UTF-8, a header
  row), `captions.jsonl` (one JSON object per line) or `captions.parquet`, with columns `path`
  (the clip's path relative to the pool folder, `/`-separated) and `caption`, and optionally
  `source` (what the clip records, in the benchmark's terms: an example id such as
  `pitch/test/12` or a gold span text; `exclude_source` drops it for that row) and `split`
  (train, dev, test, wiki, or empty for a clip that belongs to every split). Other columns are
  ignored and listed in the pool report.
- otherwise a JSON file beside each clip (`<name>.json` next to `<name>.flac`), LAION-Audio-
  630K's layout (the published system's Freesound pool, HF `Meranti/CLAP_freesound`): `text` is
  the caption (a string, or a list whose first non-empty string is taken); `source` and
  `split` are read when present.

Clips are `.wav` or `.flac` files (any rate, mono or multichannel). Rows that cannot be used are
kept in the pool's rejects table with the row number, the path, the reason and the field:
`malformed_row`, `empty_path`, `path_outside_pool`, `not_audio`, `missing_file`,
`duplicate_path`, `empty_caption`, `invalid_split`, `unreadable_audio`, `empty_audio`, and
`no_caption` for an audio file no caption names. Captions rows = accepted + rejected rows
(checked). A clip's id is a hash of its relative path and its bytes' sha256: never of its
caption, and stable when the pool folder moves.

Index (query mode `clap`): the CLAP audio embedding of every clip, L2-normalised float32, in
`$ITH_HOME/retrieval/index/<hash of (manifest content, CLAP identity, preprocessing)>/`
(`index.parquet`: clip_id, embedding; `index.json`: CLAP identity, preprocessing, counts),
built once in resumable shards and published by one rename, then reused by every run.
Preprocessing fixes the release's CLAP bugs: each clip is mixed to mono and resampled to the
CLAP extractor's 48 kHz with soxr, and the extractor gets the whole clip (its default 10 s
`fusion` input), not `max_length=64` samples.

Queries: `query_template` (`"{span} sound"`) over the case-folded span. Mode `clap`: the CLAP
text embedding against the index, dot product (cosine). Mode `text` (for pools whose CLAP is
untrained: tiny profile, synthetic benchmark): TF-IDF cosine between the query's words and each
caption's words (words: runs of letters and digits after NFKC and case folding; idf =
ln((1 + N) / (1 + df)) + 1; raw term counts; vectors L2-normalised). Ties are broken by clip id,
so retrieval is deterministic. Pool policies: `all`; `split_own` (clips whose split is the
row's, plus clips without a split); `exclude_source` (all but the clips whose `source` is the
row's example id or one of its case-folded gold spans).

    pool = load_pool("/data/freesound_pool")
    index = ensure_index(pool, "/models/clap")
    hits = retrieve(queries, pool, clap_scores(pool, scorer, index), policy="all", top_k=50)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import posixpath
import re
import shutil
import time
import unicodedata
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ith_core.audio import read_wav, resample, to_mono
from ith_core.config import SPLITS
from storage.layout import ith_home, listing_stamp, write_atomic
from storage.wav import WavError, decode_audio

logger = logging.getLogger(__name__)

# Bump when reading a pool folder changes what its manifest holds.
MANIFEST_VERSION = 1
# Bump when the index's embeddings change for the same clips and CLAP model.
INDEX_VERSION = 1
# Clips per CLAP call and per index shard. Fixed (not settings): the extractor crops clips
# longer than 10 s with numpy's RNG reseeded per call, so the batches must be the same on
# every build for the same embeddings.
INDEX_BATCH_SIZE = 32
INDEX_SHARD_CLIPS = 1024
# Queries scored at once (a chunk x pool float32 matrix).
QUERY_CHUNK = 64

AUDIO_EXTENSIONS = (".wav", ".flac")
CAPTION_TABLES = ("captions.csv", "captions.tsv", "captions.jsonl", "captions.parquet")
POLICIES = ("all", "split_own", "exclude_source")

MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("path", pa.string()),  # a path or fsspec URL that ith_core.audio.read_wav opens
    ("caption", pa.string()),
    ("source", pa.string()),  # null: unknown
    ("split", pa.string()),  # null: the clip belongs to every split
    ("sample_rate", pa.int64()),
    ("duration_s", pa.float64()),
    ("sha256", pa.string()),  # of the file's bytes
])

REJECTS_SCHEMA = pa.schema([
    ("row", pa.int64()),  # 1-based data row of the captions table (JSON mode: of the sorted clips); null: no row
    ("path", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),  # the field and the rule it broke
])


class PoolError(ValueError):
    """A clip pool cannot be used as a whole; the message names the pool, the problem and the fix."""


def retrieval_home() -> Path:
    """`$ITH_HOME/retrieval`: cached pool manifests, CLAP indexes and generated pools."""
    return ith_home() / "retrieval"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clip_id_for(relative_path: str, content_sha256: str) -> str:
    """128-bit id of a clip: its path inside the pool and its bytes (never its caption)."""
    return _sha256(f"{relative_path}\0{content_sha256}".encode())[:32]


def normalize_words(text: str) -> list[str]:
    """Words of `text` for the `text` query mode: runs of letters and digits after NFKC and case folding."""
    return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).casefold())


def normalize_span(text: str) -> str:
    """Case-folded, whitespace-collapsed span (as ith_core.imagination.generators.normalize_span: one key for both backends)."""
    return re.sub(r"\s+", " ", text).strip().casefold()


# ---------------------------------------------------------------------------------------------
# Pools


@dataclass(frozen=True)
class Pool:
    """A clip pool: where it came from, its manifest (sorted by clip_id) and its rejects."""

    name: str
    kind: str  # "folder", or the stand-in that built it ("synthetic", "audio_store")
    manifest: pa.Table
    rejects: pa.Table = field(default_factory=REJECTS_SCHEMA.empty_table)
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.manifest.schema != MANIFEST_SCHEMA:
            raise PoolError(f"pool {self.name}: manifest schema {self.manifest.schema} is not {MANIFEST_SCHEMA}")
        ids = self.manifest["clip_id"].to_pylist()
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise PoolError(f"pool {self.name}: manifest clip ids must be distinct and sorted")

    @property
    def size(self) -> int:
        return self.manifest.num_rows

    @property
    def manifest_hash(self) -> str:
        """Hash of what the clips are (ids, captions, sources, splits, rates, lengths, bytes), not where they are."""
        digest = hashlib.sha256(f"manifest-v{MANIFEST_VERSION}".encode())
        columns = [c for c in MANIFEST_SCHEMA.names if c != "path"]
        for row in zip(*(self.manifest[c].to_pylist() for c in columns)):
            digest.update(json.dumps(row).encode())
            digest.update(b"\n")
        return digest.hexdigest()

    def describe(self) -> dict:
        splits = Counter(s if s is not None else "(all splits)" for s in self.manifest["split"].to_pylist())
        return {"name": self.name, "kind": self.kind, "clips": self.size, "rejects": self.rejects.num_rows,
                "rejects_by_reason": dict(Counter(self.rejects["reason"].to_pylist())),
                "clips_by_split": dict(sorted(splits.items())), "manifest_sha256": self.manifest_hash,
                **self.report}


def manifest_table(rows: Iterable[dict]) -> pa.Table:
    """Manifest rows -> the manifest table, sorted by clip_id; a clip id twice is an error."""
    rows = sorted(rows, key=lambda r: r["clip_id"])
    seen = Counter(r["clip_id"] for r in rows)
    twice = [c for c, n in seen.items() if n > 1]
    if twice:
        raise PoolError(f"clip id {twice[0]} occurs {seen[twice[0]]} times in the manifest; clip ids must be distinct")
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _split_value(raw) -> tuple[str | None, str | None]:
    """(split or None, problem or None) of a captions cell."""
    if raw is None:
        return None, None
    value = str(raw).strip().casefold()
    if not value:
        return None, None
    if value not in SPLITS:
        return None, f"split must be one of {', '.join(SPLITS)} or empty, got {raw!r}"
    return value, None


def _text_cell(raw) -> str:
    return "" if raw is None else str(raw).strip()


def _read_caption_rows(fs, root: str, table_name: str) -> tuple[list[dict], list[dict], list[str]]:
    """(rows {row, path, caption, source, split}, rejects, ignored columns) of a captions table."""
    full = posixpath.join(root, table_name)
    where = f"captions table {fs.unstrip_protocol(full)}"
    with fs.open(full, "rb") as handle:
        data = handle.read()
    rows: list[dict] = []
    rejects: list[dict] = []
    if table_name.endswith(".parquet"):
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowException, OSError) as error:
            raise PoolError(f"{where} is not a readable Parquet file ({error})") from None
        columns = table.column_names
        raw_rows = table.to_pylist()
    elif table_name.endswith(".jsonl"):
        raw_rows, columns = [], []
        try:
            lines = data.decode("utf-8-sig").splitlines()
        except UnicodeDecodeError as error:
            raise PoolError(f"{where} is not UTF-8 ({error})") from None
        number = 0
        for line in lines:
            if not line.strip():
                continue
            number += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                rejects.append({"row": number, "path": None, "reason": "malformed_row",
                                "detail": f"row {number}: not a JSON object ({error.msg})"})
                raw_rows.append(None)
                continue
            if not isinstance(obj, dict):
                rejects.append({"row": number, "path": None, "reason": "malformed_row",
                                "detail": f"row {number}: must be a JSON object, got {type(obj).__name__}"})
                raw_rows.append(None)
                continue
            raw_rows.append(obj)
            columns += [k for k in obj if k not in columns]
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise PoolError(f"{where} is not UTF-8 ({error})") from None
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if table_name.endswith(".tsv") else ",")
        lines = [line for line in reader if line]
        if not lines:
            raise PoolError(f"{where} is empty; it needs a header row with the columns path and caption")
        columns = [c.strip() for c in lines[0]]
        raw_rows = []
        for number, line in enumerate(lines[1:], start=1):
            if len(line) != len(columns):
                rejects.append({"row": number, "path": None, "reason": "malformed_row",
                                "detail": f"row {number}: {len(line)} fields, the header has {len(columns)}"})
                raw_rows.append(None)
                continue
            raw_rows.append(dict(zip(columns, line)))
    missing = [c for c in ("path", "caption") if c not in columns]
    if missing:
        raise PoolError(f"{where} lacks the column(s) {', '.join(missing)} (has {', '.join(columns) or 'none'}); "
                        "a captions table needs path and caption, and may have source and split")
    ignored = [c for c in columns if c not in ("path", "caption", "source", "split")]
    for number, raw in enumerate(raw_rows, start=1):
        if raw is None:
            continue  # already rejected as malformed
        rows.append({"row": number, "path": _text_cell(raw.get("path")), "caption": _text_cell(raw.get("caption")),
                     "source": _text_cell(raw.get("source")) or None, "split": raw.get("split")})
    return rows, rejects, ignored


def _sidecar_caption(fs, json_path: str) -> tuple[dict | None, str | None]:
    """({caption, source, split} or None, problem) from a LAION-style JSON beside a clip."""
    try:
        with fs.open(json_path, "rb") as handle:
            obj = json.loads(handle.read().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"caption JSON {posixpath.basename(json_path)} is not valid JSON ({error})"
    if not isinstance(obj, dict):
        return None, f"caption JSON {posixpath.basename(json_path)} must be an object, got {type(obj).__name__}"
    text = obj.get("text")
    if isinstance(text, list):
        text = next((t for t in text if isinstance(t, str) and t.strip()), "")
    if not isinstance(text, str):
        text = ""
    return {"caption": text.strip(), "source": _text_cell(obj.get("source")) or None, "split": obj.get("split")}, None


def _probe(fs, full: str) -> tuple[str, int, int]:
    """(sha256 of the bytes, sample rate, frames) of one clip; WavError when it cannot be decoded."""
    with fs.open(full, "rb") as handle:
        data = handle.read()
    samples, rate = decode_audio(data)
    return _sha256(data), rate, samples.shape[-1]


def read_pool_folder(url: str, workers: int = 8) -> Pool:
    """Reads a pool folder (see the module docstring) into a manifest and a rejects table."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/") or "/"
    if not fs.isdir(root):
        raise PoolError(f"clip pool {url} is not a folder (or does not exist); set audiobert.pool to a folder of "
                        ".wav/.flac clips with a captions table")
    files = sorted(posixpath.relpath(f, root) for f in fs.find(root))
    audio = [f for f in files if f.lower().endswith(AUDIO_EXTENSIONS)]
    present = set(files)
    tables = [t for t in CAPTION_TABLES if t in present]
    rejects: list[dict] = []
    ignored: list[str] = []
    if tables:
        fmt = tables[0]
        rows, rejects, ignored = _read_caption_rows(fs, root, fmt)
    else:
        if not audio:
            raise PoolError(f"clip pool {url} holds no .wav or .flac files and no captions table "
                            f"({', '.join(CAPTION_TABLES)})")
        fmt = "json beside each clip"
        rows = []
        for number, rel in enumerate(audio, start=1):
            sidecar = rel[:rel.rfind(".")] + ".json"
            if sidecar not in present:
                rejects.append({"row": number, "path": rel, "reason": "no_caption",
                                "detail": f"row {number}: no captions table and no {sidecar} beside the clip"})
                continue
            parsed, problem = _sidecar_caption(fs, posixpath.join(root, sidecar))
            if problem:
                rejects.append({"row": number, "path": rel, "reason": "malformed_row", "detail": f"row {number}: {problem}"})
                continue
            rows.append({"row": number, "path": rel, **parsed})
    rows_in = len(rows) + len(rejects)

    checked: list[dict] = []
    named: set[str] = set()
    accepted_paths: set[str] = set()
    audio_set = set(audio)
    for r in rows:
        number, rel = r["row"], r["path"]

        def reject(reason: str, detail: str) -> None:
            rejects.append({"row": number, "path": rel or None, "reason": reason, "detail": f"row {number}: {detail}"})

        if not rel:
            reject("empty_path", "path is empty")
            continue
        norm = posixpath.normpath(rel)
        if "://" in rel or "\\" in rel or rel.startswith("/") or norm == ".." or norm.startswith("../"):
            reject("path_outside_pool", f"path {rel!r} must be relative to the pool folder and stay inside it")
            continue
        named.add(norm)
        if not norm.lower().endswith(AUDIO_EXTENSIONS):
            reject("not_audio", f"path {rel!r} must name a {' or '.join(AUDIO_EXTENSIONS)} file")
            continue
        if norm not in audio_set:
            reject("missing_file", f"path {rel!r} does not exist in the pool folder")
            continue
        if norm in accepted_paths:
            reject("duplicate_path", f"path {rel!r} is captioned by an earlier row")
            continue
        if not r["caption"]:
            reject("empty_caption", "caption is empty")
            continue
        split, problem = _split_value(r.get("split"))
        if problem:
            reject("invalid_split", problem)
            continue
        checked.append({**r, "path": norm, "split": split})
        accepted_paths.add(norm)
    if tables:
        for rel in audio:
            if rel not in named:
                rejects.append({"row": None, "path": rel, "reason": "no_caption",
                                "detail": f"audio file {rel!r} is not named by {fmt}"})

    def probe(r: dict):
        try:
            return r, _probe(fs, posixpath.join(root, r["path"])), None
        except (WavError, OSError, ValueError) as error:
            return r, None, str(error)

    manifest_rows = []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (r, probed, problem) in enumerate(pool.map(probe, checked), start=1):
            if probed is None:
                rejects.append({"row": r["row"], "path": r["path"], "reason": "unreadable_audio",
                                "detail": f"row {r['row']}: {problem}"})
                continue
            sha, rate, frames = probed
            if frames == 0:
                rejects.append({"row": r["row"], "path": r["path"], "reason": "empty_audio",
                                "detail": f"row {r['row']}: the clip holds no samples"})
                continue
            manifest_rows.append({"clip_id": clip_id_for(r["path"], sha),
                                  "path": _url(fs, posixpath.join(root, r["path"])), "caption": r["caption"],
                                  "source": r["source"], "split": r["split"], "sample_rate": int(rate),
                                  "duration_s": frames / rate, "sha256": sha})
            if done % 5000 == 0:
                logger.info("pool %s: %d of %d clips read (%.0f s)", url, done, len(checked),
                            time.perf_counter() - started)
    row_rejects = sum(1 for r in rejects if r["row"] is not None)
    if len(manifest_rows) + row_rejects != rows_in:
        raise RuntimeError(f"pool {url}: {rows_in} caption rows but {len(manifest_rows)} clips and {row_rejects} "
                           "rejected rows")
    rejects.sort(key=lambda r: (r["row"] is None, r["row"] or 0, r["path"] or ""))
    reject_table = pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA)
    if not manifest_rows:
        reasons = Counter(r["reason"] for r in rejects)
        first = "; ".join(r["detail"] for r in rejects[:3])
        raise PoolError(f"clip pool {url} has no usable clip: {dict(reasons)} (e.g. {first})")
    if rejects:
        reasons = Counter(r["reason"] for r in rejects)
        logger.warning("pool %s: %d rows or files left out %s, e.g. %s", url, len(rejects), dict(reasons),
                       rejects[0]["detail"])
    report = {"captions": fmt, "caption_rows": rows_in, "ignored_columns": ignored}
    return Pool(url, "folder", manifest_table(manifest_rows), reject_table, report)


def _url(fs, path: str) -> str:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return path if ("file" in protocols or "local" in protocols) else fs.unstrip_protocol(path)


def load_pool(url: str, cache_root: str | os.PathLike | None = None) -> Pool:
    """The pool at `url`, its manifest read once and reused while the folder's listing is unchanged."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/") or "/"
    if not fs.isdir(root):
        raise PoolError(f"clip pool {url} is not a folder (or does not exist); set audiobert.pool to a folder of "
                        ".wav/.flac clips with a captions table")
    stamp = listing_stamp(fs, root)
    canonical = fs.unstrip_protocol(root)
    cache = Path(cache_root) if cache_root else retrieval_home() / "pools"
    folder = cache / _sha256(canonical.encode())[:16]
    info = folder / "pool.json"
    if info.is_file():
        saved = json.loads(info.read_text())
        if saved.get("stamp") == stamp and saved.get("version") == MANIFEST_VERSION:
            return Pool(url, "folder", pq.read_table(folder / "manifest.parquet"), pq.read_table(folder / "rejects.parquet"),
                        saved["report"])
    started = time.perf_counter()
    pool = read_pool_folder(url)
    report = {**pool.report, "read_seconds": round(time.perf_counter() - started, 3)}
    local = fsspec.filesystem("file")
    folder.mkdir(parents=True, exist_ok=True)
    info.unlink(missing_ok=True)  # no marker while the tables are replaced
    for name, table in (("manifest.parquet", pool.manifest), ("rejects.parquet", pool.rejects)):
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        write_atomic(local, str(folder / name), sink.getvalue())
    # Written last: its stamp says which listing the tables describe.
    write_atomic(local, str(info), json.dumps({"url": canonical, "stamp": stamp, "version": MANIFEST_VERSION,
                                               "report": report}, indent=2).encode())
    return Pool(url, "folder", pool.manifest, pool.rejects, report)


# ---------------------------------------------------------------------------------------------
# The CLAP index


@dataclass
class ClipIndex:
    """CLAP audio embeddings of a pool, one unit row per clip in manifest order."""

    embeddings: np.ndarray  # (clips, dim) float32
    meta: dict
    folder: Path
    cached: bool


def clap_preprocessing(feature_extractor) -> dict:
    """What the index's audio went through before CLAP (recorded in index.json and in its key)."""
    return {"channels": "mean to mono", "resampler": "soxr HQ", "sample_rate": int(feature_extractor.sampling_rate),
            "max_length_s": float(feature_extractor.nb_max_samples / feature_extractor.sampling_rate),
            "truncation": getattr(feature_extractor, "truncation", None),
            "padding": getattr(feature_extractor, "padding", None),
            "is_longer": "from each clip's length", "batch_size": INDEX_BATCH_SIZE,
            "crops": "numpy RNG seeded 0 per batch, batches of sorted clip ids",
            "normalised": "L2, float32", "version": INDEX_VERSION}


def clap_identity(folder: str | os.PathLike) -> str:
    # The same rule that names generators: tiny folder name, hub repo@commit, or a hash of the files.
    from ith_core.imagination.generators import generator_identity

    return generator_identity(folder)


def ensure_index(pool: Pool, clap_folder: str | os.PathLike, device: str = "cpu", scorer=None,
                 cache_root: str | os.PathLike | None = None) -> ClipIndex:
    """The pool's CLAP index: read from the cache, or built once (resumable shards, one final rename)."""
    from transformers import AutoFeatureExtractor

    identity = clap_identity(clap_folder)
    extractor = scorer.processor.feature_extractor if scorer is not None else AutoFeatureExtractor.from_pretrained(
        clap_folder, local_files_only=True, trust_remote_code=False)
    preprocessing = clap_preprocessing(extractor)
    key = _sha256(json.dumps([pool.manifest_hash, identity, preprocessing], sort_keys=True).encode())[:16]
    base = Path(cache_root) if cache_root else retrieval_home() / "index"
    final = base / key
    if (final / "index.json").is_file():
        return _read_index(pool, final, cached=True)
    if scorer is None:
        from ith_core.imagination.clap_scoring import ClapScorer

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
        chunk = ids[start:start + INDEX_SHARD_CLIPS]
        if part.is_file() and pq.read_table(part, columns=["clip_id"])["clip_id"].to_pylist() == chunk:
            continue  # finished by an earlier, interrupted build
        vectors = []
        for b in range(start, start + len(chunk), INDEX_BATCH_SIZE):
            end = min(b + INDEX_BATCH_SIZE, start + len(chunk))
            waves = [_clap_input(p, scorer.sample_rate) for p in paths[b:end]]
            vectors.append(scorer.audio_embeddings(waves).cpu().numpy().astype(np.float32))
        matrix = np.concatenate(vectors)
        table = pa.table({"clip_id": pa.array(chunk, pa.string()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        write_atomic(local, str(part), sink.getvalue())
        embedded += len(chunk)
        logger.info("CLAP index %s: %d of %d clips embedded (%.0f s)", key, start + len(chunk), len(ids),
                    time.perf_counter() - started)
    parts = sorted((building / "parts").glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    if table["clip_id"].to_pylist() != ids:
        raise RuntimeError(f"CLAP index {building}: its shards do not cover the pool's clips in order; delete the "
                           "folder and rerun")
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    write_atomic(local, str(building / "index.parquet"), sink.getvalue())
    shutil.rmtree(building / "parts")
    meta = {"clap_identity": identity, "clap_folder": str(clap_folder), "preprocessing": preprocessing,
            "pool": pool.name, "manifest_sha256": pool.manifest_hash, "clips": len(ids),
            "dim": int(table["embedding"].type.list_size), "build_seconds": round(time.perf_counter() - started, 3),
            "clips_embedded_by_this_build": embedded}
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
    return ClipIndex(np.ascontiguousarray(matrix, dtype=np.float32), json.loads((folder / "index.json").read_text()),
                     folder, cached)


# ---------------------------------------------------------------------------------------------
# Query modes: each turns query texts into a (queries, clips) score matrix


class CaptionMatcher:
    """The `text` query mode: TF-IDF cosine between a query's words and each caption's words."""

    def __init__(self, captions: Sequence[str]) -> None:
        self.size = len(captions)
        df: Counter = Counter()
        counted = []
        for caption in captions:
            counts = Counter(normalize_words(caption))
            counted.append(counts)
            df.update(counts.keys())
        self.idf = {w: math.log((1 + self.size) / (1 + n)) + 1.0 for w, n in df.items()}
        postings: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for clip, counts in enumerate(counted):
            weights = {w: c * self.idf[w] for w, c in counts.items()}
            norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
            for w, v in weights.items():
                postings[w][0].append(clip)
                postings[w][1].append(v / norm)
        self.postings = {w: (np.asarray(i, dtype=np.int64), np.asarray(v, dtype=np.float32))
                         for w, (i, v) in postings.items()}

    def query_vector(self, text: str) -> dict[str, float]:
        counts = Counter(w for w in normalize_words(text) if w in self.idf)
        weights = {w: c * self.idf[w] for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        return {w: v / norm for w, v in weights.items()}

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.size), dtype=np.float32)
        for q, text in enumerate(texts):
            for word, weight in self.query_vector(text).items():
                clips, values = self.postings[word]
                out[q, clips] += weight * values
        return out


def text_scores(pool: Pool) -> Callable[[Sequence[str]], np.ndarray]:
    return CaptionMatcher(pool.manifest["caption"].to_pylist()).scores


def clap_scores(scorer, index: ClipIndex) -> Callable[[Sequence[str]], np.ndarray]:
    """The `clap` query mode: CLAP text embeddings (unit vectors) dot the index's audio embeddings."""
    def scores(texts: Sequence[str]) -> np.ndarray:
        text = scorer.text_embeddings(list(texts)).cpu().numpy().astype(np.float32)
        return text @ index.embeddings.T
    return scores


# ---------------------------------------------------------------------------------------------
# Retrieval


@dataclass(frozen=True)
class Query:
    """One span occurrence to retrieve for: its query text, the row's split and its source keys."""

    text: str
    split: str
    sources: frozenset = frozenset()


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best finite scores, best first; equal scores in index (clip id) order."""
    finite = np.isfinite(scores)
    k = min(k, int(finite.sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-np.where(finite, scores, -np.inf), k - 1)[:k]
    cut = scores[part].min()
    above = np.flatnonzero(finite & (scores > cut))
    equal = np.flatnonzero(scores == cut)[:k - len(above)]
    chosen = np.concatenate([above, equal])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def retrieve(queries: Sequence[Query], pool: Pool, score_fn: Callable[[Sequence[str]], np.ndarray],
             policy: str, k: int) -> list[dict]:
    """Per query: {clip_index (list), scores (list), allowed (clips the policy left it)}, in query order.

    Each distinct query text is scored once against the whole pool; `split_own` masks the clips of
    other splits (clips without a split stay), `exclude_source` drops the clips whose `source`
    is one of the query's source keys.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    splits = pool.manifest["split"].to_pylist()
    shared = np.asarray([s is None for s in splits])
    by_split = {s: shared | np.asarray([x == s for x in splits]) for s in {q.split for q in queries}}
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(pool.manifest["source"].to_pylist()):
        if source is not None:
            by_source[normalize_span(source)].append(i)

    def excluded(query: Query) -> set[int]:
        if policy != "exclude_source":
            return set()
        return {i for key in query.sources for i in by_source.get(normalize_span(key), ())}

    groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for n, query in enumerate(queries):
        groups[(query.text, query.split if policy == "split_own" else None)].append(n)
    texts = sorted({q.text for q in queries})
    out: list[dict | None] = [None] * len(queries)
    for start in range(0, len(texts), QUERY_CHUNK):
        chunk = texts[start:start + QUERY_CHUNK]
        matrix = score_fn(chunk)
        for row, text in enumerate(chunk):
            for split in ([None] if policy != "split_own" else sorted({s for t, s in groups if t == text})):
                members = groups[(text, split)]
                scores = matrix[row] if split is None else np.where(by_split[split], matrix[row], -np.inf)
                allowed_base = pool.size if split is None else int(by_split[split].sum())
                drops = {n: excluded(queries[n]) for n in members}
                candidates = top_k(scores, k + max(len(d) for d in drops.values()))
                for n in members:
                    picked = [int(i) for i in candidates if int(i) not in drops[n]][:k]
                    dropped = sum(1 for i in drops[n] if split is None or by_split[split][i])
                    out[n] = {"clip_index": picked, "scores": [float(scores[i]) for i in picked],
                              "allowed": allowed_base - dropped}
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Pools the pipeline builds itself

# Bump when the synthetic pool's clips or captions change for the same settings.
SYNTHETIC_POOL_VERSION = 1
SYNTHETIC_CAPTIONS = ("a {name} call", "the sound of a {name}")


@dataclass(frozen=True)
class _RenderSettings:
    duration_s: float
    generator_id: str


def _synthetic_sources(bench: Path) -> list[tuple[str, str, str | None]]:
    """(name, source key, split) of every source of the synthetic benchmark, the anchor last (no split)."""
    from ith_core.data.synthetic import ANCHOR, TASK_DIRS

    out = []
    for split in SPLITS:
        with open(bench / TASK_DIRS["animal"] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        # The animal task's span is "<name> call": its source key is that span, as the rows spell it.
        for span in sorted({r.get("span") or r.get("description") for r in rows}):
            out.append((span.split()[0], normalize_span(span), split))
        with open(bench / TASK_DIRS["pitch"] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            names = sorted({r["span1"] for r in csv.DictReader(handle)})
        out += [(name, normalize_span(name), split) for name in names]
    return out + [(ANCHOR, ANCHOR, None)]


def synthetic_pool(cfg) -> str:
    """The clip pool of the synthetic benchmark (a folder; written once, reused): every source's clips.

    For every source name of both tasks, and the whistle anchor, `len(SYNTHETIC_CAPTIONS)` clips
    rendered by the tone generator (the source's hidden tone with fresh nuisance), captioned "a
    kelomit call" and "the sound of a kelomit"; `source` is the name's span as the benchmark
    writes it ("kelomit call" for an animal-like name, "kelomit" for a pitch-like one), `split`
    the name's split (none for the anchor, which every split shares). Clip seeds hash
    ("audiobert-pool", benchmark, name, k): independent of ITH's candidate seeds. Clips last
    `imagine.duration_s` (what the profile's AST window is sized for). File names are hashes
    of the bytes.
    """
    from ith_core.data import synthetic
    from ith_core.imagination.tone_generator import ToneGenerator
    from storage.audio_store import encode_audio, pcm16

    bench = synthetic.ensure_benchmark(cfg.synthetic)
    settings = {"version": SYNTHETIC_POOL_VERSION, "benchmark": synthetic.settings_hash(cfg.synthetic),
                "duration_s": float(cfg.imagine.duration_s), "captions": SYNTHETIC_CAPTIONS}
    key = _sha256(json.dumps(settings, sort_keys=True).encode())[:16]
    final = retrieval_home() / "synthetic" / key
    if (final / "captions.csv").is_file():
        return str(final)
    generator = ToneGenerator.from_folder(bench / "tone_generator", _RenderSettings(float(cfg.imagine.duration_s),
                                                                                    f"audiobert-pool-{key}"))
    staging = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    (staging / "clips").mkdir(parents=True)
    try:
        rows = []
        for name, source, split in _synthetic_sources(bench):
            for k, template in enumerate(SYNTHETIC_CAPTIONS):
                seed = int.from_bytes(hashlib.sha256(f"audiobert-pool:{settings['benchmark']}:{name}:{k}".encode())
                                      .digest()[:8], "big") & (2**63 - 1)
                data = encode_audio(pcm16(generator.render(generator.sources(name), seed)), generator.sample_rate)
                relative = f"clips/{_sha256(data)[:16]}.wav"
                (staging / relative).write_bytes(data)
                rows.append([relative, template.format(name=name), source, split or ""])
        sink = io.StringIO(newline="")
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(["path", "caption", "source", "split"])
        writer.writerows(rows)
        (staging / "pool.json").write_text(json.dumps({**settings, "clips": len(rows)}, indent=2))
        # The captions table goes last: a folder with it is whole.
        (staging / "captions.csv").write_text(sink.getvalue(), encoding="utf-8")
        try:
            staging.rename(final)
        except OSError:
            if not (final / "captions.csv").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(final)
