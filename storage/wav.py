"""Audio file bytes -> samples: the one WAV parser (and FLAC through soundfile) of the project.

    samples, rate = decode_audio(data)   # (channels, samples) float32, integers / 2^(bits-1)
    pcm, rate = decode_pcm16(data)       # (channels, samples) int16, exactly as the store wrote them

`decode_wav` reads PCM 8-bit (unsigned), 16-, 24- and 32-bit (signed), IEEE float 32/64 and
WAVE_FORMAT_EXTENSIBLE files holding either; integers are scaled by 2^(bits-1), so full scale
maps to [-1, 1). The chunk walk is ours rather than the stdlib `wave` module's because `wave`
(Python 3.11) rejects float and extensible files. FLAC files (the audio store's
`imagine.audio_format=flac`) are decoded by soundfile (libsndfile), scaled the same way.
Writing is the audio store's (`storage.audio_store.encode_audio`).
"""

from __future__ import annotations

import io
import struct
from typing import NamedTuple

import numpy as np
import soundfile

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    """The bytes are not a WAV file this reader understands; the message says which rule broke."""


class WavData(NamedTuple):
    tag: int  # WAVE_FORMAT_PCM or WAVE_FORMAT_IEEE_FLOAT (an extensible file's sub-format)
    channels: int
    rate: int
    bits: int
    frames: int
    raw: bytes  # the data chunk, cut to whole frames


def parse_wav(data: bytes) -> WavData:
    """The format and sample bytes of a RIFF/WAVE file; `WavError` names what is wrong."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    fmt = None
    payload = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            payload = body
        # Chunks are padded to an even length.
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16:
        raise WavError("no fmt chunk")
    if payload is None:
        raise WavError("no data chunk")
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 26:
            raise WavError("extensible fmt chunk too short")
        # The sub-format GUID starts with the plain format tag.
        tag = struct.unpack("<H", fmt[24:26])[0]
    if channels < 1 or rate < 1:
        raise WavError(f"channels and rate must be >= 1, got {channels}, {rate}")
    width = bits // 8
    if block_align != width * channels or bits % 8:
        raise WavError(f"unsupported sample layout: {bits} bits, block align {block_align}, {channels} channels")
    frames = len(payload) // block_align
    return WavData(tag, channels, rate, bits, frames, payload[: frames * block_align])


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes -> ((channels, samples) float32, sample rate)."""
    tag, channels, rate, bits, frames, raw = parse_wav(data)
    if tag == WAVE_FORMAT_PCM:
        if bits == 8:
            samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif bits == 16:
            samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        elif bits == 24:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
            samples = ints.astype(np.float32) / float(1 << 23)
        elif bits == 32:
            samples = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
        else:
            raise WavError(f"unsupported PCM width: {bits} bits (8, 16, 24 or 32)")
    elif tag == WAVE_FORMAT_IEEE_FLOAT:
        if bits not in (32, 64):
            raise WavError(f"unsupported float width: {bits} bits (32 or 64)")
        samples = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise WavError(f"unsupported format tag 0x{tag:04x} (PCM or IEEE float only)")
    return np.ascontiguousarray(samples.reshape(frames, channels).T), int(rate)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """WAV or FLAC bytes -> ((channels, samples) float32, sample rate); `WavError` names what is wrong."""
    if data[:4] == b"fLaC":
        try:
            frames, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except RuntimeError as error:  # soundfile.LibsndfileError is one
            raise WavError(f"not a readable FLAC file ({error})") from None
        return np.ascontiguousarray(frames.T), int(rate)
    return decode_wav(data)


def decode_pcm16(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit WAV or FLAC bytes -> ((channels, samples) int16, sample rate), exactly as written."""
    if data[:4] == b"fLaC":
        frames, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
        return np.ascontiguousarray(frames.T), int(rate)
    wav = parse_wav(data)
    if wav.tag != WAVE_FORMAT_PCM or wav.bits != 16:
        raise WavError(f"{wav.bits}-bit samples (format tag 0x{wav.tag:04x}), the store writes 16-bit PCM")
    frames = np.frombuffer(wav.raw, dtype="<i2")
    return frames.reshape(-1, wav.channels).T.astype(np.int16), wav.rate
