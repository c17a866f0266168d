"""The planted scorer of the synthetic benchmark: a stand-in for CLAP that can tell, NOT CLAP.

Chosen with `synthetic.scorer=planted` (only with `--benchmark synthetic` and the tone generator),
it fills the `clap` role: the imagine stage calls its `score` exactly as it calls CLAP's, and its
scores go into the same candidate tables, thresholds, lazy sampling and selection. It exists so
that rejection sampling has something to reject: the tiny CLAP is untrained and says nothing
about tones, and the tone generator errs only when `synthetic.tone_error_rate` is set.

A score is computed from the audio alone (never from an audio id, file name or candidate index):
the clip's spectral energy within +-WINDOW_OCTAVES of the hidden tone of the source the text
names, divided by the energy in the same window around the clip's strongest frequency, clipped to
[0, 1]. A clip that renders the named source's band scores about 1; one that renders another
answer's band (at least 0.83 octave away on this benchmark) scores about the share of white
noise in the window, near 0. A text naming several sources gets the mean of their scores, a
text naming none (the fallback prompt) 0. Its "checkpoint" is a folder with `planted_scorer.json`
(`ith_core.data.synthetic.planted_scorer_dir` writes it), whose content is its identity.

    scorer = PlantedScorer.from_folder(".../synthetic/<hash>/planted_scorer")
    scores = scorer.score(waveforms, sample_rate=44100, texts=["kelomit call"])   # (prompts, candidates)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

PLANTED_SCORER_FILE = "planted_scorer.json"
# Bump when the score of the same audio and text changes; it is written into the folder, hence the identity.
PLANTED_SCORER_VERSION = 1
# Half-width of the measuring window: holds a right rendering (+-3 % detune, +-0.15 octave band)
# and never reaches a wrong band (0.83 octave or more from the source's tone).
WINDOW_OCTAVES = 0.4
# The strongest frequency is looked for above this (below the lowest band, above DC and hum).
MIN_PEAK_HZ = 100.0


class PlantedScorer:
    """Scores (prompts, candidates) of waveforms against texts by how well each clip fits the named band."""

    def __init__(self, tones_hz: dict[str, float], window_octaves: float = WINDOW_OCTAVES) -> None:
        if not tones_hz:
            raise ValueError("planted scorer: its table of source tones is empty")
        self.tones_hz = {name.casefold(): float(hz) for name, hz in tones_hz.items()}
        self.window_octaves = float(window_octaves)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "PlantedScorer":
        path = Path(folder) / PLANTED_SCORER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the planted scorer belongs to the synthetic benchmark "
                "(synthetic.scorer=planted writes it beside the tone table)"
            )
        table = json.loads(path.read_text())
        if table.get("kind") != "planted-scorer" or table.get("version") != PLANTED_SCORER_VERSION:
            raise ValueError(
                f"{path} is not a planted scorer table of version {PLANTED_SCORER_VERSION} "
                f"(kind {table.get('kind')!r}, version {table.get('version')!r}); delete it and rerun"
            )
        return cls(table["tones_hz"], table["window_octaves"])

    def named_tones(self, text: str) -> list[float]:
        words = re.findall(r"[\w']+", text.casefold())
        return [self.tones_hz[w] for w in dict.fromkeys(words) if w in self.tones_hz]

    def clip_scores(self, mono: np.ndarray, sample_rate: int, tones: Sequence[float]) -> np.ndarray:
        """(n, samples) mono clips -> (n,) scores against the same named tones."""
        if not tones:
            return np.zeros(len(mono), dtype=np.float32)
        power = np.abs(np.fft.rfft(mono.astype(np.float64), axis=-1)) ** 2
        bins = np.fft.rfftfreq(mono.shape[-1], 1.0 / sample_rate)
        ratio = 2.0**self.window_octaves
        searchable = bins >= MIN_PEAK_HZ
        peak_hz = bins[searchable][np.argmax(power[:, searchable], axis=-1)]
        out = np.zeros(len(mono))
        for i, peak in enumerate(peak_hz):
            reference = power[i, (bins >= peak / ratio) & (bins <= peak * ratio)].sum()
            if reference <= 0:
                continue  # silence fits nothing
            fits = [power[i, (bins >= hz / ratio) & (bins <= hz * ratio)].sum() / reference for hz in tones]
            out[i] = np.clip(np.mean(fits), 0.0, 1.0)
        return out.astype(np.float32)

    def score(self, waveforms: torch.Tensor | np.ndarray, sample_rate: int, texts: Sequence[str]) -> np.ndarray:
        """(prompts, candidates, channels, samples) waveforms -> (prompts, candidates) scores in [0, 1].

        Candidate k of prompt i is scored against texts[i], as `ClapScorer.score` does.
        """
        array = waveforms.detach().float().cpu().numpy() if isinstance(waveforms, torch.Tensor) else waveforms
        if array.ndim != 4 or array.shape[0] != len(texts):
            raise ValueError(
                f"waveforms must be (prompts={len(texts)}, candidates, channels, samples), "
                f"got shape {tuple(array.shape)}"
            )
        mono = array.mean(axis=2)
        return np.stack([self.clip_scores(mono[i], sample_rate, self.named_tones(t)) for i, t in enumerate(texts)])
