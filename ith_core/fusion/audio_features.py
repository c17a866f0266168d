"""Stage 4: read the selected audios, encode them with AST once per audio id, store the features.

Input is the imagination stage's selection table (`read_selection`, the one place that knows its
contract): one row per (example, span) with `audio_id`/`audio_path` (null when no candidate
passed CLAP: that span gets no fusion) and `sample_rate`. Each distinct audio id is encoded
once, however many examples share it.

- frozen encoder (`train_audio_encoder=False`): store AST's `last_hidden_state` (1214 x 768 per
  5 s clip at paper size), optionally mean-pooled over contiguous token groups to
  `audio_tokens` (AST orders patch tokens frequency-major, so k groups ~ k frequency bands).
- trainable encoder (the paper's choice): store the AST input features (1024 frames x 128 mel
  bins); the fusion model runs AST on them during training.
Both in fp16, in safetensors shards (storage.features): a shard is written whole under a
temporary name and renamed, its index last; finished shards are skipped on rerun.

WAVs: 16-bit PCM or float, mono or stereo, any rate; channels are averaged and the signal is
resampled to 16 kHz with soxr (`ith_core.audio`).

    rows = read_selection("runs/x/imagine/selection.parquet")
    report = precompute_audio_features(rows, encoder_path, FeatureStore(layout, "audio_features"), cfg)
"""

from __future__ import annotations

import logging
import time

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ith_core.audio import read_wav, resample
from storage.features import FeatureStore, plan_shards

logger = logging.getLogger(__name__)

AST_SAMPLE_RATE = 16000

SELECTION_COLUMNS = {
    "example_id": pa.string(),
    "task": pa.string(),
    "split": pa.string(),
    "span_index": pa.int64(),
    "span_text": pa.string(),
    "char_start": pa.int64(),
    "char_end": pa.int64(),
    "audio_id": pa.string(),
    "audio_path": pa.string(),
    "sample_rate": pa.int64(),
}


def read_selection(source: str | pa.Table) -> list[dict]:
    """The selection table (path/URL of a Parquet file or folder, or a table) as checked rows.

    The single adapter to the imagination stage's output: if its contract changes, only this
    function changes.
    """
    if isinstance(source, pa.Table):
        table = source
    else:
        fs, path = fsspec.core.url_to_fs(source)
        table = pq.read_table(path, filesystem=fs)
    missing = sorted(set(SELECTION_COLUMNS) - set(table.column_names))
    if missing:
        raise ValueError(
            f"selection table: missing columns {missing} (has {table.column_names}); the imagination "
            "stage must write example_id, task, split, span_index, span_text, char_start, char_end, "
            "audio_id, audio_path, sample_rate"
        )
    rows = table.select(list(SELECTION_COLUMNS)).to_pylist()
    for r in rows:
        if (r["audio_id"] is None) != (r["audio_path"] is None):
            raise ValueError(
                f"selection table: row {r['example_id']}/{r['span_index']}: audio_id and audio_path must "
                f"be both null (no accepted audio) or both set, got {r['audio_id']!r}, {r['audio_path']!r}"
            )
        if r["audio_id"] is not None and not (r["sample_rate"] or 0) > 0:
            raise ValueError(
                f"selection table: row {r['example_id']}/{r['span_index']}: sample_rate must be > 0 for "
                f"an accepted audio, got {r['sample_rate']!r}"
            )
        if not 0 <= r["char_start"] < r["char_end"]:
            raise ValueError(
                f"selection table: row {r['example_id']}/{r['span_index']}: need 0 <= char_start < "
                f"char_end, got {r['char_start']}, {r['char_end']}"
            )
    return rows


def distinct_audios(rows: list[dict]) -> dict[str, tuple[str, int]]:
    """audio_id -> (path, sample rate) over rows with accepted audio."""
    out: dict[str, tuple[str, int]] = {}
    for r in rows:
        if r["audio_id"] is not None:
            out.setdefault(r["audio_id"], (r["audio_path"], int(r["sample_rate"])))
    return out


def load_wav(path: str) -> tuple[np.ndarray, int]:
    """(float32 samples in [-1, 1], shape (n,) or (n, channels), sample rate) from a WAV path or URL."""
    samples, rate = read_wav(path)
    return (samples[0] if samples.shape[0] == 1 else samples.T), rate


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    return resample(samples.mean(axis=1) if samples.ndim == 2 else samples, rate, AST_SAMPLE_RATE)


def pool_tokens(tokens: torch.Tensor, k: int | None) -> torch.Tensor:
    """(B, L, D) -> (B, k, D): mean over k contiguous token groups (identity when k is None or >= L)."""
    if k is None or k >= tokens.shape[1]:
        return tokens
    return torch.nn.functional.adaptive_avg_pool1d(tokens.transpose(1, 2), k).transpose(1, 2)


def precompute_audio_features(
    rows: list[dict],
    encoder,
    feature_extractor,
    store: FeatureStore,
    *,
    trainable_encoder: bool,
    audio_tokens: int | None,
    batch_size: int = 16,
    shard_size: int = 256,
    device: str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> dict:
    """Encodes every distinct accepted audio once; writes shards `rank::world_size`; skips finished ones.

    Returns counts, timings and storage in bytes.
    """
    audios = distinct_audios(rows)
    shards = plan_shards(audios, shard_size)
    dtype = torch.float16
    encoder = encoder.to(device).eval()
    use_amp = device.startswith("cuda")
    started = time.perf_counter()
    done = skipped = encoded = 0
    stored_bytes = 0
    for shard in range(rank, len(shards), world_size):
        ids = shards[shard]
        if store.shard_done(shard, ids):
            skipped += 1
            continue
        tensors: dict[str, torch.Tensor] = {}
        for i in range(0, len(ids), batch_size):
            chunk = ids[i : i + batch_size]
            waves = []
            for audio_id in chunk:
                samples, rate = load_wav(audios[audio_id][0])
                waves.append(to_mono_16k(samples, rate))
            inputs = feature_extractor(waves, sampling_rate=AST_SAMPLE_RATE, return_tensors="pt")["input_values"]
            if trainable_encoder:
                out = inputs
            else:
                with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                    out = encoder(input_values=inputs.to(device)).last_hidden_state
                out = pool_tokens(out.float(), audio_tokens)
            for audio_id, t in zip(chunk, out):
                tensors[audio_id] = t.to(dtype).cpu()
            encoded += len(chunk)
        store.write_shard(shard, tensors)
        stored_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        done += 1
    seconds = time.perf_counter() - started
    return {
        "audios": len(audios),
        "shards": len(shards),
        "shards_written": done,
        "shards_skipped": skipped,
        "audios_encoded": encoded,
        "bytes_written": stored_bytes,
        "seconds": round(seconds, 3),
        "audios_per_s": round(encoded / seconds, 2) if encoded and seconds > 0 else None,
    }


def ast_token_count(
    num_frames: int = 1024, num_mel_bins: int = 128, patch: int = 16, f_stride: int = 10, t_stride: int = 10
) -> int:
    """AST's sequence length: frequency x time patches, plus the CLS and distillation tokens."""
    f = (num_mel_bins - patch) // f_stride + 1
    t = (num_frames - patch) // t_stride + 1
    return f * t + 2


def storage_estimate(
    num_audios: int,
    *,
    trainable_encoder: bool,
    audio_tokens: int | None,
    hidden: int = 768,
    num_frames: int = 1024,
    num_mel_bins: int = 128,
    bytes_per_value: int = 2,
) -> dict:
    """Bytes per audio and in total, from shapes (safetensors adds a small header per shard)."""
    if trainable_encoder:
        per_audio = num_frames * num_mel_bins * bytes_per_value
        shape = (num_frames, num_mel_bins)
    else:
        tokens = ast_token_count(num_frames, num_mel_bins)
        tokens = min(tokens, audio_tokens) if audio_tokens else tokens
        per_audio = tokens * hidden * bytes_per_value
        shape = (tokens, hidden)
    return {
        "shape": shape,
        "bytes_per_audio": per_audio,
        "num_audios": num_audios,
        "total_bytes": per_audio * num_audios,
        "total_gib": round(per_audio * num_audios / 2**30, 3),
    }
