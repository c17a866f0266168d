"""The shared audio store of stages 2-3: the only code that knows its paths and manifest schema.

Every run over the same `run_root` shares `<run_root>/_imagine/`:

    audio/<id[:2]>/<id>/<k>.wav          candidate k of an audio id (16-bit PCM), content-addressed
    shards/part-<hash>.parquet           a shard's manifest: one row per (audio id, candidate)

A shard is named by a hash of its sorted audio ids. Its manifest is written last, after every
WAV it lists, so the manifest's existence means the shard is whole; readers trust manifests
only and never list audio folders. Everything is written under a temporary name and renamed,
so a crash leaves stray `.tmp-*` files (never read) but no partial file under a real name.
Since an audio id fixes its bytes, two runs writing the same shard at once write identical
content under identical names; readers dedupe rows by (audio_id, candidate).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import uuid
import wave

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
        target = self.path(relative)
        parent = posixpath.dirname(target)
        self.fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(target)}")
        try:
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)
            # Rename is atomic on local disks; on object stores the upload itself is atomic.
            self.fs.mv(tmp, target)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def write_wav(self, audio_id: str, candidate: int, samples: np.ndarray, sample_rate: int) -> tuple[str, str]:
        """Writes one candidate; returns (relative path, sha256 of the file)."""
        data = wav_bytes(samples, sample_rate)
        relative = self.wav_relpath(audio_id, candidate)
        self._write_atomic(data, relative)
        return relative, hashlib.sha256(data).hexdigest()

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
