"""A small captioned clip pool for `ith rehearse`, rendered offline: AudioBERT's retrieval runs on it as
on a real pool folder (`pool.load_pool`), at the published models' sizes.

The clips are not recordings: each is a seeded mix of a few partials and noise (a stand-in with the
sample rate and length of real clips), captioned "the sound of <span>" for the most frequent spans
of the benchmark's train split. A rehearsal checks that retrieval, encoding and training run at
paper size, not what real audio would retrieve.

    folder = rehearsal_pool(root, spans, clips=32)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ith_core.retrieval.pool import write_pool_folder
from storage.audio_store import encode_audio, pcm16

REHEARSAL_POOL_VERSION = 1
CAPTION = "the sound of {span}"


def _clip(seed: int, sample_rate: int, duration_s: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * duration_s)) / sample_rate
    tone = sum(
        rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t + rng.uniform(0, 2 * np.pi))
        for _ in range(3)
    )
    envelope = np.minimum(1.0, t / 0.05) * np.exp(-t * rng.uniform(0.1, 1.0))
    audio = tone * envelope + rng.normal(0, 0.02, t.shape)
    return audio[None, :].astype(np.float32)  # (channels, samples)


def rehearsal_pool(
    root: str | Path, spans: Sequence[str], clips: int = 32, sample_rate: int = 48000, duration_s: float = 5.0
) -> str:
    """The pool folder under `root` for the first `clips` of `spans` (written once, reused)."""
    chosen = list(dict.fromkeys(s for s in spans if s.strip()))[:clips]
    if not chosen:
        raise ValueError("rehearsal_pool needs at least one non-empty span to caption a clip with")
    settings = {"version": REHEARSAL_POOL_VERSION, "spans": chosen, "rate": sample_rate, "seconds": duration_s}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    final = Path(root) / key
    if (final / "captions.csv").is_file():
        return str(final)
    clips = []
    for span in chosen:
        seed = int.from_bytes(hashlib.sha256(f"rehearsal-pool:{span}".encode()).digest()[:8], "big")
        data = encode_audio(pcm16(_clip(seed, sample_rate, duration_s)), sample_rate)
        clips.append((data, CAPTION.format(span=span), span, ""))
    return write_pool_folder(final, clips, {**settings, "clips": len(clips)})
