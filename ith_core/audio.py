"""Audio helpers shared by the stages: read a WAV (or FLAC) from any fsspec URL, mix to mono, resample.

One implementation for CLAP scoring (48 kHz) and AST encoding (16 kHz), with no scipy: the bytes
are decoded by `storage.wav` (the project's one WAV parser; integers scaled by 2^(bits-1)),
resampling is soxr's (a declared dependency).

    samples, rate = read_wav("runs/_imagine/audio/ab/abcd/0.wav")   # (channels, samples) float32
    mono_16k = resample(to_mono(samples), rate, 16000)               # (samples',) float32
"""

from __future__ import annotations

import fsspec
import numpy as np
import soxr

from storage.wav import WavError, decode_audio


def read_wav(url: str) -> tuple[np.ndarray, int]:
    """(float32 samples shaped (channels, samples), sample rate) from a WAV or FLAC path or fsspec URL."""
    with fsspec.open(url, "rb") as handle:
        data = handle.read()
    try:
        return decode_audio(data)
    except WavError as error:
        raise WavError(f"{url}: {error}") from None


def to_mono(waveforms: np.ndarray) -> np.ndarray:
    """(..., channels, samples) -> (..., samples), the channel mean."""
    return waveforms.mean(axis=-2)


def resample(waveforms: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(samples,) or (n, samples) float32 at rate_in -> same rank at rate_out (soxr, HQ filter)."""
    if rate_in == rate_out:
        return np.ascontiguousarray(waveforms, dtype=np.float32)
    if waveforms.ndim == 1:
        return np.asarray(
            soxr.resample(np.ascontiguousarray(waveforms, dtype=np.float32), rate_in, rate_out, quality="HQ"),
            dtype=np.float32,
        )
    # soxr takes (frames, channels): the batch becomes the channels, one call for all rows.
    out = soxr.resample(np.ascontiguousarray(waveforms.T, dtype=np.float32), rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)
