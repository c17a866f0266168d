"""The `tone` generator backend: a planted-signal check, NOT a text-to-audio model.

It implements the same `AudioGenerator` interface as Stable Audio (`generate(prompts, seeds)` ->
float32 waveforms (prompts, candidates, channels, samples)) and is chosen with
`imagine.generator=tone`. Its "checkpoint" is a folder holding `tone_generator.json`, the table
of every source name of the synthetic benchmark and its hidden tone in Hz (ith_core.data.synthetic
writes it). For a prompt it renders the tone of every table name that occurs in the prompt as a
whole word; a prompt naming no source gets noise alone, which carries no signal.

Nuisance variables are drawn per candidate from the candidate's own seed, independently of the
tone, so nothing but the tone's frequency tells one source from another: gain, phase, a detune
of up to +-3 %, white noise at 10-30 dB SNR, the tone's onset and length (50-100 % of the clip),
stereo image (identical channels or decorrelated noise and phase) and sample format (quantised
to 8, 12, 16 or 24 bits). Output: 44.1 kHz stereo, the duration the run asks for
(`imagine.duration_s`), like Stable Audio's. The table names the renderer version it was
written for (`RENDER_VERSION`); the version is part of the generator's identity, hence of every
audio id, so changed rendering never reuses stored audio.

Imperfect imagination (`synthetic.tone_error_rate` q, written into the table with each name's
wrong bands): a candidate renders, with probability q, a tone drawn from a wrong band (another
answer's) in place of each source's hidden tone. Whether it does is drawn from the candidate's
own seed alone (`renders_wrong_band`), independently of the prompt and the answer, from a stream
apart from the nuisance draws, so at q = 0 every waveform is the one rendered before q existed.

    gen = ToneGenerator.from_folder("~/.cache/ith/data/synthetic/<hash>/tone_generator", settings)
    waves = gen.generate(["kelomit call sound"], [[11, 12]])   # (1, 2, 2, 88200)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

TONE_FILE = "tone_generator.json"
# Bump when rendering changes; ith_core.data.synthetic writes it into the table.
RENDER_VERSION = 3
SAMPLE_RATE = 44100
CHANNELS = 2


class ToneGenerator:
    """Renders each prompt's hidden source tone(s) with per-candidate nuisance; see the module docstring."""

    def __init__(
        self,
        tones_hz: dict[str, float],
        settings,
        identity: str,
        error_rate: float = 0.0,
        wrong_bands_hz: dict[str, list] | None = None,
    ) -> None:
        if not tones_hz:
            raise ValueError("tone generator: its table of source tones is empty")
        if not 0.0 <= error_rate < 1.0:
            raise ValueError(f"tone generator: error_rate must be in [0, 1), got {error_rate}")
        self.tones_hz = {name.casefold(): float(hz) for name, hz in tones_hz.items()}
        self.error_rate = float(error_rate)
        self.wrong_bands_hz = {
            name.casefold(): [(float(lo), float(hi)) for lo, hi in bands]
            for name, bands in (wrong_bands_hz or {}).items()
        }
        self.settings = settings
        self.identity = identity
        self.sample_rate = SAMPLE_RATE
        self.channels = CHANNELS

    @classmethod
    def from_folder(cls, folder: str | Path, settings) -> "ToneGenerator":
        path = Path(folder) / TONE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the tone generator needs the synthetic benchmark's tone table "
                "(`ith run --benchmark synthetic` writes it); it has no meaning for AuditoryBench"
            )
        table = json.loads(path.read_text())
        if table.get("kind") != "tone" or not isinstance(table.get("tones_hz"), dict):
            raise ValueError(f"{path} is not a tone generator table (kind 'tone' with a 'tones_hz' mapping)")
        if table.get("renderer") != RENDER_VERSION:
            raise ValueError(
                f"{path} was written for tone renderer {table.get('renderer')}, this is version "
                f"{RENDER_VERSION}; delete {Path(folder).parent} and rerun to write it anew"
            )
        return cls(
            table["tones_hz"],
            settings,
            settings.generator_id,
            error_rate=float(table.get("error_rate", 0.0)),
            wrong_bands_hz=table.get("wrong_bands_hz"),
        )

    def source_names(self, prompt: str) -> list[str]:
        """The table names that occur in `prompt` as whole words, in prompt order."""
        words = re.findall(r"[\w']+", prompt.casefold())
        return [w for w in dict.fromkeys(words) if w in self.tones_hz]

    def sources(self, prompt: str) -> list[float]:
        """The hidden tones of the table names that occur in `prompt` as whole words, in prompt order."""
        return [self.tones_hz[w] for w in self.source_names(prompt)]

    def _error_stream(self, seed: int) -> np.random.Generator:
        # Apart from render()'s stream (seeded by the seed alone), so errors leave the nuisance as it was.
        return np.random.default_rng([int(seed), 0x5EED_E77])

    def renders_wrong_band(self, seed: int) -> bool:
        """Whether the candidate of this seed renders wrong bands: a draw from the seed alone."""
        return self.error_rate > 0 and bool(self._error_stream(seed).random() < self.error_rate)

    def candidate_tones(self, prompt: str, seed: int) -> list[float]:
        """The tones candidate `seed` of `prompt` renders: the sources' hidden tones, or, when the
        candidate errs, for each source with wrong bands a tone log-uniform in one of them."""
        names = self.source_names(prompt)
        if not self.renders_wrong_band(seed):
            return [self.tones_hz[n] for n in names]
        rng = self._error_stream(seed)
        rng.random()  # the draw that decided the error
        tones = []
        for name in names:
            bands = self.wrong_bands_hz.get(name)
            if not bands:  # the anchor has no wrong band
                tones.append(self.tones_hz[name])
                continue
            low, high = bands[int(rng.integers(len(bands)))]
            tones.append(float(np.exp(rng.uniform(np.log(low), np.log(high)))))
        return tones

    def render(self, tones: Sequence[float], seed: int) -> np.ndarray:
        """One candidate: (channels, samples) float32 in [-1, 1]."""
        rng = np.random.default_rng(int(seed))
        n = int(round(self.settings.duration_s * self.sample_rate))
        t = np.arange(n) / self.sample_rate
        length = int(n * rng.uniform(0.5, 1.0))
        onset = int(rng.uniform(0, n - length + 1))
        envelope = np.zeros(n)
        ramp = min(length // 10, int(0.01 * self.sample_rate)) or 1
        envelope[onset : onset + length] = 1.0
        envelope[onset : onset + ramp] = np.linspace(0.0, 1.0, ramp)
        envelope[onset + length - ramp : onset + length] = np.linspace(1.0, 0.0, ramp)
        gain = rng.uniform(0.2, 0.9)
        snr_db = rng.uniform(10.0, 30.0)
        detune = rng.uniform(0.97, 1.03)
        stereo = bool(rng.integers(0, 2))
        bits = int(rng.choice([8, 12, 16, 24]))
        channels = []
        for _ in range(self.channels if stereo else 1):
            phase = rng.uniform(0, 2 * np.pi)
            signal = np.zeros(n)
            for hz in tones:
                # The source's signature: its tone plus noise in a band of +-0.15 octave around it.
                f = hz * detune
                spectrum = np.fft.rfft(rng.standard_normal(n))
                bins = np.fft.rfftfreq(n, 1 / self.sample_rate)
                spectrum[(bins < f * 2**-0.15) | (bins > f * 2**0.15)] = 0
                band = np.fft.irfft(spectrum, n)
                band /= np.abs(band).max() or 1.0
                signal += np.sin(2 * np.pi * f * t + phase) + band
            signal *= envelope
            peak = np.abs(signal).max()
            signal = signal / peak if peak > 0 else signal
            channels.append(gain * (signal + rng.standard_normal(n) * 10 ** (-snr_db / 20)))
        if not stereo:  # the same signal on every channel
            channels = channels * self.channels
        audio = np.clip(np.stack(channels), -1.0, 1.0)
        step = 2.0 ** (1 - bits)
        return (np.round(audio / step) * step).astype(np.float32)

    def generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        if len(prompts) != len(seeds) or len({len(s) for s in seeds}) > 1:
            raise ValueError(f"seeds must hold the same number of seeds for each of the {len(prompts)} prompts")
        out = [
            [self.render(self.candidate_tones(prompt, seed), seed) for seed in row]
            for prompt, row in zip(prompts, seeds)
        ]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))
