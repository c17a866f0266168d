"""The shared audio store of stages 2-3: the only code that knows its paths and manifest schema.

Every run over the same `run_root` shares `<run_root>/_imagine/`:

    audio/<id[:2]>/<id>/<k>.wav          candidate k of an audio id (16-bit PCM), content-addressed
    shards/part-<hash>.parquet           a shard's manifest: one row per (audio id, candidate)

A shard is named by a hash of its sorted audio ids. Its manifest is written last, after every
WAV it lists, so the manifest's existence means the shard is whole; readers trust manifests
only and never list audio folders. Everything is written under a temporary name and renamed,
so a crash leaves stray `.tmp-*` files (never read) but no partial file under a real name.

A WAV is written only if its name is absent (`put_wav`): an audio id fixes the audio but not
the last bit of every sample, since two machines (or thread counts) round differently, so a
second writer keeps the first writer's file and learns its checksum. Where two writers race
past that check (object stores have no create-if-absent), the last rename wins and one
manifest may name a checksum that is not the stored file's; `verify_checksums`, run when a
stage collects candidates, finds those rows, puts the stored file's checksum in their place
and counts them, and raises `AudioStoreError` for a missing, unreadable or differently shaped
file. Readers dedupe rows by (audio_id, candidate).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import wave
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import temporary_sibling, write_atomic

STORE_DIR = "_imagine"

CANDIDATES_SCHEMA = pa.schema([
    ("audio_id", pa.string()),
    ("candidate", pa.int32()),
    ("prompt", pa.string()),
    ("clap_text", pa.string()),
    ("seed", pa.int64()),
    ("clap_score", pa.float32()),
    ("clap_id", pa.string()),
    ("audio_path", pa.string()),  # relative to the store root
    ("duration_s", pa.float32()),
    ("sample_rate", pa.int32()),
    ("channels", pa.int32()),
    ("checksum", pa.string()),  # sha256 of the WAV file's bytes
    ("shard", pa.string()),
])


class AudioStoreError(RuntimeError):
    """A manifest row names a WAV that is missing, unreadable or not the audio the row describes."""


class StoredWav(NamedTuple):
    path: str  # relative to the store root
    checksum: str  # sha256 of the stored file, whoever wrote it
    created: bool  # False: the file was there already and was left as it was


def shard_name(audio_ids) -> str:
    """Deterministic name of a shard: the same ids give the same name in every run."""
    digest = hashlib.sha256("\n".join(sorted(audio_ids)).encode()).hexdigest()
    return f"part-{digest[:20]}"


def pcm16(waveform: np.ndarray) -> np.ndarray:
    """(channels, samples) float in [-1, 1] -> int16, the exact samples a WAV file holds."""
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


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes -> ((channels, samples) float32, sample rate)."""
    with wave.open(io.BytesIO(data), "rb") as handle:
        channels, rate = handle.getnchannels(), handle.getframerate()
        frames = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return (frames.reshape(-1, channels).T.astype(np.float32) / 32767.0), rate


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
    def wav_relpath(audio_id: str, candidate: int) -> str:
        return f"audio/{audio_id[:2]}/{audio_id}/{candidate}.wav"

    @staticmethod
    def manifest_relpath(shard: str) -> str:
        return f"shards/{shard}.parquet"

    # -- atomic writes -----------------------------------------------------------------------
    def _write_atomic(self, data: bytes, relative: str) -> None:
        write_atomic(self.fs, self.path(relative), data)

    def _publish_if_absent(self, data: bytes, relative: str) -> bool:
        """Writes `data` under `relative` unless a file is there; True if this call wrote it."""
        target = self.path(relative)
        if self.fs.exists(target):
            return False
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        tmp = temporary_sibling(target)
        try:
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)
            if isinstance(self.fs, LocalFileSystem):
                # link() fails if the name exists, so of two racing local writers exactly one wins.
                try:
                    os.link(tmp, target)
                    return True
                except FileExistsError:
                    return False
                except OSError:
                    pass  # no hard links on this file system: check, then rename, as below
            if self.fs.exists(target):
                return False
            self.fs.mv(tmp, target)
            return True
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def put_wav(self, audio_id: str, candidate: int, samples: np.ndarray, sample_rate: int) -> StoredWav:
        """Writes one candidate unless its file exists; the checksum is always the stored file's."""
        data = wav_bytes(samples, sample_rate)
        relative = self.wav_relpath(audio_id, candidate)
        if self._publish_if_absent(data, relative):
            return StoredWav(relative, hashlib.sha256(data).hexdigest(), True)
        return StoredWav(relative, hashlib.sha256(self.read_bytes(relative)).hexdigest(), False)

    def write_wav(self, audio_id: str, candidate: int, samples: np.ndarray, sample_rate: int) -> tuple[str, str]:
        """`put_wav` as (relative path, sha256 of the stored file)."""
        stored = self.put_wav(audio_id, candidate, samples, sample_rate)
        return stored.path, stored.checksum

    def write_manifest(self, shard: str, rows: list[dict]) -> str:
        """The shard's completion marker: call it after every WAV it lists is written."""
        table = pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        relative = self.manifest_relpath(shard)
        self._write_atomic(sink.getvalue(), relative)
        return self.url(relative)

    # -- reads -------------------------------------------------------------------------------
    def has_shard(self, shard: str) -> bool:
        return self.fs.exists(self.path(self.manifest_relpath(shard)))

    def manifests(self) -> list[str]:
        # Only finished manifests: temporary files start with ".tmp-" and are never read.
        files = self.fs.glob(self.path("shards/part-*.parquet"))
        return sorted(f for f in files if not posixpath.basename(f).startswith(".tmp-"))

    def read_candidates(self, audio_ids=None) -> pa.Table:
        """Every finished candidate row (of `audio_ids` if given), one per (audio_id, candidate)."""
        tables = []
        wanted = None if audio_ids is None else pa.array(sorted(set(audio_ids)), pa.string())
        for file in self.manifests():
            with self.fs.open(file, "rb") as handle:
                table = pq.read_table(handle, schema=CANDIDATES_SCHEMA)
            if wanted is not None:
                import pyarrow.compute as pc

                table = table.filter(pc.is_in(table["audio_id"], value_set=wanted))
            if table.num_rows:
                tables.append(table)
        if not tables:
            return CANDIDATES_SCHEMA.empty_table()
        table = pa.concat_tables(tables).sort_by([("audio_id", "ascending"), ("candidate", "ascending"),
                                                 ("shard", "ascending")])
        # Two runs may have finished overlapping shards; their rows for one candidate are equal.
        keep, last = [], None
        for i, key in enumerate(zip(table["audio_id"].to_pylist(), table["candidate"].to_pylist())):
            if key != last:
                keep.append(i)
                last = key
        return table.take(pa.array(keep, pa.int64()))

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
        """A stored WAV's (channels, samples) int16, exactly as written."""
        with wave.open(io.BytesIO(self.read_bytes(relative)), "rb") as handle:
            channels = handle.getnchannels()
            frames = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
        return frames.reshape(-1, channels).T.astype(np.int16)

    def _stored_checksum(self, row: dict) -> str:
        relative = row["audio_path"]
        try:
            data = self.read_bytes(relative)
        except FileNotFoundError:
            raise AudioStoreError(f"{self.url(relative)} is listed in manifest {row['shard']} but missing; "
                                  "delete that manifest and rerun its shard") from None
        checksum = hashlib.sha256(data).hexdigest()
        if checksum == row["checksum"]:
            return checksum
        # Another writer's rendering of the same audio id is expected; anything else is damage.
        try:
            with wave.open(io.BytesIO(data), "rb") as handle:
                shape = (handle.getnchannels(), handle.getframerate(), handle.getnframes(), handle.getsampwidth())
            whole = len(data) >= 44 + shape[0] * shape[2] * 2
        except (wave.Error, EOFError, ValueError) as err:
            raise AudioStoreError(f"{self.url(relative)} is not a readable WAV ({err}); delete it and manifest "
                                  f"{row['shard']}, then rerun that shard") from None
        frames = round(row["duration_s"] * row["sample_rate"])
        if not whole or shape[:2] != (row["channels"], row["sample_rate"]) or abs(shape[2] - frames) > 1 \
                or shape[3] != 2:
            raise AudioStoreError(f"{self.url(relative)} holds (channels, rate, frames, bytes per sample) = "
                                  f"{shape}, manifest {row['shard']} expects ({row['channels']}, "
                                  f"{row['sample_rate']}, {frames}, 2); delete the file and the manifest, "
                                  "then rerun that shard")
        return checksum

    def verify_checksums(self, table: pa.Table, workers: int = 16) -> tuple[pa.Table, int]:
        """Each row's checksum checked against its stored file: (table with the stored files' checksums, mismatches).

        A mismatch whose file is a whole WAV of the row's shape is a concurrent writer's copy of
        the same audio id (it differs in the last bits of some samples): the row gets the stored
        file's checksum. A missing, unreadable or differently shaped file raises `AudioStoreError`.
        Every file is read once; threads overlap the reads and hashing (hashlib drops the GIL).
        """
        rows = table.select(["audio_path", "checksum", "shard", "duration_s", "sample_rate", "channels"]).to_pylist()
        if not rows:
            return table, 0
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(rows)))) as pool:
            stored = list(pool.map(self._stored_checksum, rows))
        mismatches = sum(1 for row, checksum in zip(rows, stored) if checksum != row["checksum"])
        if mismatches:
            column = table.schema.get_field_index("checksum")
            table = table.set_column(column, table.schema.field(column), pa.array(stored, pa.string()))
        return table, mismatches
