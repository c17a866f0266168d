"""Clip pools of the AudioBERT backend: a pool folder read into a manifest, cached; no Prefect here.

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

The pool's CLAP index is built by `clip_index`, queries are scored and retrieved by `queries`,
and the synthetic benchmark's own pool is written by `synthetic_pool`.

    pool = load_pool("/data/freesound_pool")
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import posixpath
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ith_core.config import SPLITS
from storage.layout import ith_home, listing_stamp, write_atomic
from storage.wav import WavError, decode_audio

logger = logging.getLogger(__name__)

# Bump when reading a pool folder changes what its manifest holds.
MANIFEST_VERSION = 1

AUDIO_EXTENSIONS = (".wav", ".flac")
CAPTION_TABLES = ("captions.csv", "captions.tsv", "captions.jsonl", "captions.parquet")

MANIFEST_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("path", pa.string()),  # a path or fsspec URL that ith_core.audio.read_wav opens
        ("caption", pa.string()),
        ("source", pa.string()),  # null: unknown
        ("split", pa.string()),  # null: the clip belongs to every split
        ("sample_rate", pa.int64()),
        ("duration_s", pa.float64()),
        ("sha256", pa.string()),  # of the file's bytes
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),  # 1-based data row of the captions table (JSON mode: of the sorted clips); null: no row
        ("path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),  # the field and the rule it broke
    ]
)


class PoolError(ValueError):
    """A clip pool cannot be used as a whole; the message names the pool, the problem and the fix."""


def retrieval_home() -> Path:
    """`$ITH_HOME/retrieval`: cached pool manifests, CLAP indexes and generated pools."""
    return ith_home() / "retrieval"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_pool_folder(final: Path, clips: list[tuple[bytes, str, str, str]], info: dict) -> str:
    """Writes a pool folder the pipeline renders itself (the synthetic benchmark's, the rehearsal's), whole or not at all.

    `clips`: (WAV bytes, caption, source, split) each, stored as clips/<sha256 of the bytes>[:16].wav (never a
    name from the caption); `info` goes to pool.json. captions.csv (path, caption, source, split) is written
    last, in a temporary sibling folder renamed into place: a folder with it is whole, and a concurrent
    writer of the same folder loses the rename and uses the winner's.
    """
    staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    (staging / "clips").mkdir(parents=True)
    try:
        rows = []
        for data, caption, source, split in clips:
            relative = f"clips/{_sha256(data)[:16]}.wav"
            (staging / relative).write_bytes(data)
            rows.append([relative, caption, source, split])
        sink = io.StringIO(newline="")
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(["path", "caption", "source", "split"])
        writer.writerows(rows)
        (staging / "pool.json").write_text(json.dumps(info, indent=2))
        (staging / "captions.csv").write_text(sink.getvalue(), encoding="utf-8")
        try:
            staging.rename(final)
        except OSError:
            if not (final / "captions.csv").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(final)


def clip_id_for(relative_path: str, content_sha256: str) -> str:
    """128-bit id of a clip: its path inside the pool and its bytes (never its caption)."""
    return _sha256(f"{relative_path}\0{content_sha256}".encode())[:32]


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
        return {
            "name": self.name,
            "kind": self.kind,
            "clips": self.size,
            "rejects": self.rejects.num_rows,
            "rejects_by_reason": dict(Counter(self.rejects["reason"].to_pylist())),
            "clips_by_split": dict(sorted(splits.items())),
            "manifest_sha256": self.manifest_hash,
            **self.report,
        }


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
                rejects.append(
                    {
                        "row": number,
                        "path": None,
                        "reason": "malformed_row",
                        "detail": f"row {number}: not a JSON object ({error.msg})",
                    }
                )
                raw_rows.append(None)
                continue
            if not isinstance(obj, dict):
                rejects.append(
                    {
                        "row": number,
                        "path": None,
                        "reason": "malformed_row",
                        "detail": f"row {number}: must be a JSON object, got {type(obj).__name__}",
                    }
                )
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
                rejects.append(
                    {
                        "row": number,
                        "path": None,
                        "reason": "malformed_row",
                        "detail": f"row {number}: {len(line)} fields, the header has {len(columns)}",
                    }
                )
                raw_rows.append(None)
                continue
            raw_rows.append(dict(zip(columns, line)))
    missing = [c for c in ("path", "caption") if c not in columns]
    if missing:
        raise PoolError(
            f"{where} lacks the column(s) {', '.join(missing)} (has {', '.join(columns) or 'none'}); "
            "a captions table needs path and caption, and may have source and split"
        )
    ignored = [c for c in columns if c not in ("path", "caption", "source", "split")]
    for number, raw in enumerate(raw_rows, start=1):
        if raw is None:
            continue  # already rejected as malformed
        rows.append(
            {
                "row": number,
                "path": _text_cell(raw.get("path")),
                "caption": _text_cell(raw.get("caption")),
                "source": _text_cell(raw.get("source")) or None,
                "split": raw.get("split"),
            }
        )
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
        raise PoolError(
            f"clip pool {url} is not a folder (or does not exist); set audiobert.pool to a folder of "
            ".wav/.flac clips with a captions table"
        )
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
            raise PoolError(
                f"clip pool {url} holds no .wav or .flac files and no captions table ({', '.join(CAPTION_TABLES)})"
            )
        fmt = "json beside each clip"
        rows = []
        for number, rel in enumerate(audio, start=1):
            sidecar = rel[: rel.rfind(".")] + ".json"
            if sidecar not in present:
                rejects.append(
                    {
                        "row": number,
                        "path": rel,
                        "reason": "no_caption",
                        "detail": f"row {number}: no captions table and no {sidecar} beside the clip",
                    }
                )
                continue
            parsed, problem = _sidecar_caption(fs, posixpath.join(root, sidecar))
            if problem:
                rejects.append(
                    {"row": number, "path": rel, "reason": "malformed_row", "detail": f"row {number}: {problem}"}
                )
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
                rejects.append(
                    {
                        "row": None,
                        "path": rel,
                        "reason": "no_caption",
                        "detail": f"audio file {rel!r} is not named by {fmt}",
                    }
                )

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
                rejects.append(
                    {
                        "row": r["row"],
                        "path": r["path"],
                        "reason": "unreadable_audio",
                        "detail": f"row {r['row']}: {problem}",
                    }
                )
                continue
            sha, rate, frames = probed
            if frames == 0:
                rejects.append(
                    {
                        "row": r["row"],
                        "path": r["path"],
                        "reason": "empty_audio",
                        "detail": f"row {r['row']}: the clip holds no samples",
                    }
                )
                continue
            manifest_rows.append(
                {
                    "clip_id": clip_id_for(r["path"], sha),
                    "path": _url(fs, posixpath.join(root, r["path"])),
                    "caption": r["caption"],
                    "source": r["source"],
                    "split": r["split"],
                    "sample_rate": int(rate),
                    "duration_s": frames / rate,
                    "sha256": sha,
                }
            )
            if done % 5000 == 0:
                logger.info(
                    "pool %s: %d of %d clips read (%.0f s)", url, done, len(checked), time.perf_counter() - started
                )
    row_rejects = sum(1 for r in rejects if r["row"] is not None)
    if len(manifest_rows) + row_rejects != rows_in:
        raise RuntimeError(
            f"pool {url}: {rows_in} caption rows but {len(manifest_rows)} clips and {row_rejects} rejected rows"
        )
    rejects.sort(key=lambda r: (r["row"] is None, r["row"] or 0, r["path"] or ""))
    reject_table = pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA)
    if not manifest_rows:
        reasons = Counter(r["reason"] for r in rejects)
        first = "; ".join(r["detail"] for r in rejects[:3])
        raise PoolError(f"clip pool {url} has no usable clip: {dict(reasons)} (e.g. {first})")
    if rejects:
        reasons = Counter(r["reason"] for r in rejects)
        logger.warning(
            "pool %s: %d rows or files left out %s, e.g. %s", url, len(rejects), dict(reasons), rejects[0]["detail"]
        )
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
        raise PoolError(
            f"clip pool {url} is not a folder (or does not exist); set audiobert.pool to a folder of "
            ".wav/.flac clips with a captions table"
        )
    stamp = listing_stamp(fs, root)
    canonical = fs.unstrip_protocol(root)
    cache = Path(cache_root) if cache_root else retrieval_home() / "pools"
    folder = cache / _sha256(canonical.encode())[:16]
    info = folder / "pool.json"
    if info.is_file():
        saved = json.loads(info.read_text())
        if saved.get("stamp") == stamp and saved.get("version") == MANIFEST_VERSION:
            return Pool(
                url,
                "folder",
                pq.read_table(folder / "manifest.parquet"),
                pq.read_table(folder / "rejects.parquet"),
                saved["report"],
            )
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
    write_atomic(
        local,
        str(info),
        json.dumps(
            {"url": canonical, "stamp": stamp, "version": MANIFEST_VERSION, "report": report}, indent=2
        ).encode(),
    )
    return Pool(url, "folder", pool.manifest, pool.rejects, report)
