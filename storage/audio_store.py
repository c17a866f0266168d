"""The shared audio store of stages 2-3: the only code that knows its paths and manifest schema.

Every run over the same `run_root` shares `<run_root>/_imagine/`:

    audio/<id[:2]>/<id>/<k>-<sha[:16]>.<wav|flac>   candidate k of an audio id, named by its content
    shards/part-<hash>.parquet                     a shard's manifest: one row per (audio id, candidate)

A shard is named by a hash of its work (audio ids and how they are sampled). Its manifest is
written last, after every file it lists, so the manifest's existence means the shard is whole;
readers trust manifests only and never list audio folders. Everything is written under a
temporary name and renamed, so a crash leaves stray `.tmp-*` files (never read) but no partial
file under a real name.

Audio files are named by the sha256 of their bytes (16-bit PCM WAV or FLAC of the same int16
samples). A file is therefore never replaced by other content: two writers of one audio id
that render it bit-identically write the same name (the second finds it and counts a
collision), writers whose renderings differ in the last bits (other machines, thread counts)
write two files, and each manifest names its own. A manifest row whose file no longer hashes
to its checksum is damage, never a race: `verify_checksums` raises `AudioStoreError` naming the
files and audio ids, and `ith repair-audio` regenerates them. No file is ever deleted (run
tables of every run over the root may name it): a repair that renders the same bytes restores
the file under its name (`put_audio(..., restore=True)`); one that renders other bytes writes a
new file and points the manifests at it. A candidate may have no file
(`audio_path` null: `imagine.keep_audio=selected` keeps only the chosen candidates' audio);
its score still counts. Readers dedupe rows by (audio_id, candidate), preferring rows with audio.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
import shutil
import wave
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile
from fsspec.implementations.local import LocalFileSystem

from storage.layout import temporary_sibling, write_atomic
from storage.wav import decode_pcm16

STORE_DIR = "_imagine"
logger = logging.getLogger(__name__)
AUDIO_FORMATS = ("wav", "flac")

CANDIDATES_SCHEMA = pa.schema(
    [
        ("audio_id", pa.string()),
        ("candidate", pa.int32()),
        ("prompt", pa.string()),
        ("clap_text", pa.string()),
        ("seed", pa.int64()),
        ("clap_score", pa.float32()),
        ("clap_id", pa.string()),
        ("audio_path", pa.string()),  # relative to the store root; null: the audio was not kept
        ("duration_s", pa.float32()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("checksum", pa.string()),  # sha256 of the audio file's bytes; null when no file was kept
        ("shard", pa.string()),
        # How the shard rendered it: rows of one manifest with the same `batch` (in manifest order)
        # were one generation call, decoded in slices of `decode_batch_size` clips (null: the whole
        # call). Floating-point results depend on the batch, so `ith repair-audio` renders the same
        # call again to get the same bytes. Null in manifests written before these columns existed.
        ("batch", pa.int32()),
        ("decode_batch_size", pa.int32()),
    ]
)


class AudioStoreError(RuntimeError):
    """A manifest row names an audio file that is missing, unreadable or not the audio the row describes.

    `audio_ids` lists the affected audio ids (for `ith repair-audio`).
    """

    def __init__(self, message: str, audio_ids=()) -> None:
        super().__init__(message)
        self.audio_ids = sorted(set(audio_ids))


class StoredAudio(NamedTuple):
    path: str  # relative to the store root
    checksum: str  # sha256 of the file's bytes
    created: bool  # False: a file with these very bytes was there already (a collision)


def shard_name(work_keys) -> str:
    """Deterministic name of a shard: the same work (sorted keys) gives the same name in every run."""
    digest = hashlib.sha256("\n".join(sorted(work_keys)).encode()).hexdigest()
    return f"part-{digest[:20]}"


def pcm16(waveform: np.ndarray) -> np.ndarray:
    """(..., samples) float in [-1, 1] -> int16, the exact samples an audio file holds."""
    return np.round(np.clip(waveform, -1.0, 1.0) * 32767.0).astype(np.int16)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """(channels, samples) int16 -> a 16-bit PCM WAV file."""
    sink = io.BytesIO()
    with wave.open(sink, "wb") as handle:
        handle.setnchannels(samples.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(np.ascontiguousarray(samples.T).astype("<i2").tobytes())
    return sink.getvalue()


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    """(channels, samples) int16 -> file bytes: 16-bit PCM WAV, or FLAC (lossless, same samples)."""
    if fmt == "wav":
        return wav_bytes(samples, sample_rate)
    if fmt != "flac":
        raise ValueError(f"audio format must be one of {AUDIO_FORMATS}, got {fmt!r}")
    sink = io.BytesIO()
    soundfile.write(sink, np.ascontiguousarray(samples.T), sample_rate, format="FLAC", subtype="PCM_16")
    return sink.getvalue()


def pcm16_to_float(samples: np.ndarray) -> np.ndarray:
    """int16 -> float32 / 32767, the inverse of `pcm16`: the waveform the imagine stage scores with CLAP.

    Not the 2^15 full scale of `storage.wav.decode_audio` (what AST encoding and the clip pool read).
    """
    return samples.astype(np.float32) / 32767.0


def audio_bytes_per_clip(duration_s: float, sample_rate: int, channels: int) -> int:
    """Bytes of one 16-bit PCM clip (the WAV size; FLAC is smaller, by how much depends on the audio)."""
    return int(duration_s * sample_rate) * channels * 2 + 44


class AudioStore:
    """Paths and atomic I/O of `<run_root>/_imagine/` on any fsspec URL."""

    def __init__(self, run_root: str) -> None:
        self.run_root = run_root
        self.fs, root = fsspec.core.url_to_fs(run_root)
        self.root = posixpath.join(root.rstrip("/") or "/", STORE_DIR)
        self.fs.makedirs(posixpath.join(self.root, "shards"), exist_ok=True)

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def url(self, relative: str) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        full = self.path(relative)
        return full if protocol in ("file", "local") else self.fs.unstrip_protocol(full)

    @staticmethod
    def audio_relpath(audio_id: str, candidate: int, checksum: str, fmt: str) -> str:
        return f"audio/{audio_id[:2]}/{audio_id}/{candidate}-{checksum[:16]}.{fmt}"

    @staticmethod
    def manifest_relpath(shard: str) -> str:
        return f"shards/{shard}.parquet"

    # -- writes ------------------------------------------------------------------------------
    def put_audio(
        self,
        audio_id: str,
        candidate: int,
        samples: np.ndarray,
        sample_rate: int,
        fmt: str = "wav",
        restore: bool = False,
    ) -> StoredAudio:
        """Writes one candidate under its content name; an existing file of that name is these bytes.

        `restore`: hash an existing file of that name and replace it (atomically) when its bytes
        are not these, as a repair does to a damaged file; `created` is then True.
        """
        data = encode_audio(samples, sample_rate, fmt)
        checksum = hashlib.sha256(data).hexdigest()
        relative = self.audio_relpath(audio_id, candidate, checksum, fmt)
        target = self.path(relative)
        if self.fs.exists(target) and self.fs.size(target) == len(data):
            if not restore or hashlib.sha256(self.read_bytes(relative)).hexdigest() == checksum:
                return StoredAudio(relative, checksum, False)
        write_atomic(self.fs, target, data)
        return StoredAudio(relative, checksum, True)

    def write_manifest(self, shard: str, rows: list[dict]) -> str:
        """The shard's completion marker: call it after every file it lists is written."""
        table = pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA)
        relative = self.manifest_relpath(shard)
        self._write_table(table, relative)
        return self.url(relative)

    def _rows_in(self, target: str) -> int | None:
        try:
            with self.fs.open(target, "rb") as handle:
                return pq.read_metadata(handle).num_rows
        except FileNotFoundError:
            return None

    def _write_table(self, table: pa.Table, relative: str) -> bool:
        """Writes a manifest under a temporary name, then renames it into place, unless a finished
        manifest of that name holds more rows: a shorter one never replaces it (another writer of
        the shard sampled further, e.g. for a higher threshold; its rows name audio that exists).
        Returns False when the finished one was kept. The check and the rename are two steps: two
        writers of one shard in the same instant can still race (the rows either keeps are whole)."""
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        target = self.path(relative)
        tmp = temporary_sibling(target)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as handle:
                handle.write(sink.getvalue())
            finished = self._rows_in(target)
            if finished is not None and finished > table.num_rows:
                logger.warning(
                    "kept manifest %s (%d rows): the new one has only %d rows",
                    self.url(relative),
                    finished,
                    table.num_rows,
                )
                return False
            self.fs.mv(tmp, target)
            return True
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def repoint_rows(self, replacements: dict[str, dict]) -> list[str]:
        """Every manifest row naming a file in `replacements` (old relative path -> new `audio_path`,
        `checksum`, `clap_score`) is pointed at the new file, in place: rows keep their order, shard
        and batch, so the render recorded for each stays true. Atomic per manifest; returns the
        shards rewritten. Used by `ith repair-audio` when a re-render gives other bytes."""
        rewritten = []
        for file in self.manifests():
            with self.fs.open(file, "rb") as handle:
                table = pq.read_table(handle, schema=CANDIDATES_SCHEMA)
            rows = table.to_pylist()
            hit = [i for i, r in enumerate(rows) if r["audio_path"] in replacements]
            if not hit:
                continue
            for i in hit:
                new = replacements[rows[i]["audio_path"]]
                rows[i] = {**rows[i], **{k: new[k] for k in ("audio_path", "checksum", "clap_score")}}
            shard = posixpath.basename(file)[: -len(".parquet")]
            self._write_table(pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA), self.manifest_relpath(shard))
            rewritten.append(shard)
        return rewritten

    # -- reads -------------------------------------------------------------------------------
    def has_shard(self, shard: str) -> bool:
        return self.fs.exists(self.path(self.manifest_relpath(shard)))

    def manifests(self) -> list[str]:
        # Only finished manifests: temporary files start with ".tmp-" and are never read.
        files = self.fs.glob(self.path("shards/part-*.parquet"))
        return sorted(f for f in files if not posixpath.basename(f).startswith(".tmp-"))

    def read_manifest(self, shard: str) -> pa.Table:
        """One shard's rows, in the order the shard wrote them."""
        with self.fs.open(self.path(self.manifest_relpath(shard)), "rb") as handle:
            return pq.read_table(handle, schema=CANDIDATES_SCHEMA)

    def read_candidates(self, audio_ids=None) -> pa.Table:
        """Every finished candidate row (of `audio_ids` if given), one per (audio_id, candidate)."""
        tables = []
        wanted = None if audio_ids is None else pa.array(sorted(set(audio_ids)), pa.string())
        for file in self.manifests():
            with self.fs.open(file, "rb") as handle:
                table = pq.read_table(handle, schema=CANDIDATES_SCHEMA)
            if wanted is not None:
                table = table.filter(pc.is_in(table["audio_id"], value_set=wanted))
            if table.num_rows:
                tables.append(table)
        if not tables:
            return CANDIDATES_SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        no_audio = pc.is_null(table["audio_path"])
        table = table.append_column("_no_audio", no_audio).sort_by(
            [("audio_id", "ascending"), ("candidate", "ascending"), ("_no_audio", "ascending"), ("shard", "ascending")]
        )
        # Overlapping shards of several runs hold one candidate more than once: the same score,
        # rendered by another writer or without its audio kept. A row with audio wins.
        keep, last = [], None
        for i, key in enumerate(zip(table["audio_id"].to_pylist(), table["candidate"].to_pylist())):
            if key != last:
                keep.append(i)
                last = key
        return table.take(pa.array(keep, pa.int64())).drop(["_no_audio"])

    def listed_paths(self, audio_ids) -> set[str]:
        """Every audio file any manifest row of `audio_ids` names (all rows, before deduplication)."""
        wanted = pa.array(sorted(set(audio_ids)), pa.string())
        paths: set[str] = set()
        for file in self.manifests():
            with self.fs.open(file, "rb") as handle:
                table = pq.read_table(handle, columns=["audio_id", "audio_path"])
            paths.update(table.filter(pc.is_in(table["audio_id"], value_set=wanted))["audio_path"].to_pylist())
        paths.discard(None)
        return paths

    def finished_ids(self) -> set[str]:
        ids: set[str] = set()
        for file in self.manifests():
            with self.fs.open(file, "rb") as handle:
                ids.update(pq.read_table(handle, columns=["audio_id"])["audio_id"].to_pylist())
        return ids

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open(self.path(relative), "rb") as handle:
            return handle.read()

    def read_samples(self, relative: str) -> np.ndarray:
        """A stored clip's (channels, samples) int16, exactly as written."""
        return decode_pcm16(self.read_bytes(relative))[0]

    def _check(self, row: dict) -> str | None:
        """None if the row's file hashes to its checksum, else why not."""
        try:
            data = self.read_bytes(row["audio_path"])
        except FileNotFoundError:
            return "missing"
        checksum = hashlib.sha256(data).hexdigest()
        return None if checksum == row["checksum"] else f"sha256 {checksum[:16]}..., recorded {row['checksum'][:16]}..."

    def check_files(self, table: pa.Table, workers: int = 16) -> tuple[int, list[tuple[dict, str]]]:
        """(files checked, [(row, why) for every row whose file is missing or not its checksum])."""
        rows = [
            r
            for r in table.select(["audio_id", "candidate", "audio_path", "checksum", "shard"]).to_pylist()
            if r["audio_path"] is not None
        ]
        if not rows:
            return 0, []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(rows)))) as pool:
            problems = list(pool.map(self._check, rows))
        return len(rows), [(row, why) for row, why in zip(rows, problems) if why is not None]

    def size_problem(self, row: dict) -> str | None:
        """A cheap look at a row's file (existence, and a WAV's exact size; no hashing): None or why not."""
        try:
            size = self.fs.size(self.path(row["audio_path"]))
        except FileNotFoundError:
            return "missing"
        if row["audio_path"].endswith(".wav"):
            want = round(row["duration_s"] * row["sample_rate"]) * row["channels"] * 2 + 44
            if size != want:
                return f"{size} bytes, a {row['duration_s']:g} s WAV has {want}"
        elif not size:
            return "empty"
        return None

    def verify_checksums(self, table: pa.Table, workers: int = 16) -> int:
        """Checks every row's file against its recorded checksum; returns the files checked.

        Files are named by their content and never replaced, so any mismatch or missing file is
        damage: the stored scores would describe other audio. Raises `AudioStoreError` naming
        every bad file and its audio id. Threads overlap the reads and hashing (hashlib drops the GIL).
        """
        checked, bad = self.check_files(table, workers)
        if bad:
            raise self.damage_error(bad, "missing or do not match their recorded checksum")
        return checked

    def damage_error(self, bad: list[tuple[dict, str]], what: str) -> AudioStoreError:
        """One error naming every bad file (path, audio id, candidate, manifest) and why."""
        lines = [
            f"{self.url(r['audio_path'])} (audio id {r['audio_id']}, candidate {r['candidate']}, "
            f"manifest {r['shard']}): {why}"
            for r, why in bad[:10]
        ]
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        return AudioStoreError(
            f"{len(bad)} stored audio file(s) are {what}, so their CLAP scores describe other "
            "audio:\n  " + "\n  ".join(lines) + more,
            [r["audio_id"] for r, _ in bad],
        )


def free_bytes(run_root: str) -> int | None:
    """Free bytes on the file system of a local run root; None where it cannot be measured (object stores)."""

    fs, root = fsspec.core.url_to_fs(run_root)
    if not isinstance(fs, LocalFileSystem):
        return None
    path = root
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path or ".").free
