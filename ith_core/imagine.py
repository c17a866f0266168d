"""Stage 2 core: prompts, deterministic audio ids, deduplication, and the audio generator.

One generation per unique prompt: every span occurrence (and every sampled example without a
span) maps to a prompt, and the prompt, the generator's identity and every setting that changes
the audio hash into an `audio_id`. Candidate k of an audio id starts from noise drawn from a CPU
`torch.Generator` seeded by (base seed, audio id, k), so a waveform does not depend on which
other prompts share its batch, which shard or worker runs it, or which machine draws the noise.

    gen = StableAudioGenerator.from_folder(path, settings, device="cuda:0")
    waveforms = gen.generate(["dog barking sound"], [candidate_seeds(42, audio_id, 5)])
    # -> float32 tensor (prompts, candidates, channels, samples) at gen.sample_rate

Latent length ("full" vs "exact"): Stable Audio Open was trained on whole ~47.5 s windows with
timing conditioning ("seconds_total") telling it where the sound ends; the reference denoises
the whole window and crops, paying for 47.5 s to keep 5 s. "exact" denoises only
ceil(duration * rate / hop) latent frames (108 instead of 1024 at paper size, about 9x fewer
DiT tokens, and attention is quadratic in them), which is far faster, but the model then sees
window lengths it was not trained on, so quality can differ from the reference; "full" stays
the default because it reproduces the method.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ith_core.config import ImagineConfig

# Bump when a change here changes the audio produced for the same settings: it enters every id.
GENERATION_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Prompts and ids


def normalize_span(text: str) -> str:
    """Case-folded, whitespace-collapsed span text: the unit of deduplication.

    The method's count of distinct spans (21,321 over the benchmark) is over case-folded spans,
    and the span detector is uncased, so detected spans are lower case already.
    """
    return re.sub(r"\s+", " ", text).strip().casefold()


def prompt_for(span_text: str | None, cfg: ImagineConfig) -> tuple[str, str]:
    """(generation prompt, CLAP text) for one span occurrence; None means "no span detected".

    CLAP scores against the span itself, not the templated prompt; an example without a span
    is scored against the fallback prompt, the only text it has.
    """
    if span_text is None or not normalize_span(span_text):
        return cfg.fallback_prompt, cfg.fallback_prompt
    span = normalize_span(span_text)
    return cfg.prompt_template.format(span=span), span


@dataclass(frozen=True)
class GenerationSettings:
    """Every setting that changes a generated waveform; all of it enters the audio id."""

    generator_id: str
    negative_prompt: str
    num_inference_steps: int
    duration_s: float
    num_candidates: int
    guidance_scale: float
    seed: int
    dtype: str
    latent_length: str

    @classmethod
    def from_config(cls, cfg: ImagineConfig, generator_id: str, device: str) -> "GenerationSettings":
        return cls(generator_id=generator_id, negative_prompt=cfg.negative_prompt,
                   num_inference_steps=cfg.num_inference_steps, duration_s=float(cfg.duration_s),
                   num_candidates=cfg.num_candidates, guidance_scale=float(cfg.guidance_scale), seed=cfg.seed,
                   dtype=resolve_dtype(cfg.dtype, device), latent_length=cfg.latent_length)

    def key(self) -> dict:
        return {**asdict(self), "version": GENERATION_VERSION}


def audio_id(prompt: str, settings: GenerationSettings) -> str:
    """128-bit hex id of (prompt, generator identity, generation settings, seed)."""
    blob = json.dumps({"prompt": prompt, **settings.key()}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def candidate_seeds(base_seed: int, audio_id_: str, num_candidates: int) -> list[int]:
    """One 63-bit seed per candidate, from the base seed and the audio id only."""
    seeds = []
    for k in range(num_candidates):
        digest = hashlib.sha256(f"{base_seed}:{audio_id_}:{k}".encode()).digest()
        seeds.append(int.from_bytes(digest[:8], "big") & (2**63 - 1))
    return seeds


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    # Half precision is the method's choice on GPUs; CPUs lack fast fp16 kernels.
    return "float16" if str(device).startswith("cuda") else "float32"


def generator_identity(folder: str | Path) -> str:
    """A name that changes whenever the generator's weights can change.

    Tiny profile: its folder name `tiny-<recipe hash>`. A Hugging Face snapshot: repo@commit.
    Anything else: a hash of its configs and of its weight files' names and sizes.
    """
    folder = Path(folder).resolve()
    if folder.parent.name.startswith("tiny-"):
        return folder.parent.name
    parts = folder.parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i >= 1 and parts[i - 1].startswith("models--") and i + 1 < len(parts):
            return f"{parts[i - 1][len('models--'):].replace('--', '/')}@{parts[i + 1]}"
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            rel = file.relative_to(folder).as_posix()
            digest.update(rel.encode())
            digest.update(file.read_bytes() if file.suffix == ".json" else str(file.stat().st_size).encode())
    return f"{folder.name}-{digest.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------
# Generator interface


@runtime_checkable
class AudioGenerator(Protocol):
    """What the stage needs from a text-to-audio model.

    Any diffusers text-to-audio pipeline that accepts `latents=` and a list of per-sample
    generators (AudioLDM2 does) fits behind it with its own latent shape.
    """

    identity: str
    sample_rate: int

    def generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        """(prompts, candidates, channels, samples) float32 waveforms; seeds[i][k] seeds candidate k of prompt i."""
        ...


class StableAudioGenerator:
    """diffusers `StableAudioPipeline` with per-candidate seeded noise and full/exact latents."""

    def __init__(self, pipe, settings: GenerationSettings, device: str) -> None:
        self.pipe = pipe
        self.settings = settings
        self.device = device
        self.identity = settings.generator_id
        self.sample_rate = int(pipe.vae.config.sampling_rate)
        self.channels = int(pipe.vae.config.audio_channels)
        self.hop = int(pipe.vae.hop_length)
        self.full_frames = int(pipe.transformer.config.sample_size)
        self.latent_channels = int(pipe.transformer.config.in_channels)
        max_s = self.full_frames * self.hop / self.sample_rate
        if settings.duration_s > max_s:
            raise ValueError(f"imagine.duration_s must be <= the generator's window of {max_s:.2f} s, "
                             f"got {settings.duration_s}; shorten the clips or use a model with a longer window")
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_folder(cls, folder: str | Path, cfg: ImagineConfig, device: str) -> "StableAudioGenerator":
        from ith_core.profiles import load_generator

        settings = GenerationSettings.from_config(cfg, generator_identity(folder), device)
        pipe = load_generator(folder, torch_dtype=getattr(torch, settings.dtype)).to(device)
        return cls(pipe, settings, device)

    @property
    def latent_frames(self) -> int:
        if self.settings.latent_length == "full":
            return self.full_frames
        needed = math.ceil(self.settings.duration_s * self.sample_rate / self.hop)
        return min(self.full_frames, needed)

    def initial_latents(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Standard-normal latents, one seeded CPU generator per candidate.

        The same generators go on to the scheduler, whose SDE solver draws fresh noise at every
        step: with a list of generators diffusers draws each sample's noise from its own one,
        so that noise, too, is independent of the batch. CPU generators give the same numbers
        on every machine.
        """
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        shape = (1, self.latent_channels, self.latent_frames)
        latents = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return latents.to(self.device, getattr(torch, self.settings.dtype)), generators

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        k = self.settings.num_candidates
        if len(prompts) != len(seeds) or any(len(s) != k for s in seeds):
            raise ValueError(f"seeds must hold {k} seeds for each of the {len(prompts)} prompts")
        # The pipeline orders samples prompt-major (p0c0, p0c1, ..., p1c0), as flattened here.
        latents, generators = self.initial_latents([s for row in seeds for s in row])
        audio = self.pipe(
            list(prompts),
            negative_prompt=[self.settings.negative_prompt] * len(prompts),
            num_inference_steps=self.settings.num_inference_steps,
            audio_end_in_s=self.settings.duration_s,
            num_waveforms_per_prompt=k,
            guidance_scale=self.settings.guidance_scale,
            latents=latents,
            generator=generators if len(generators) > 1 else generators[0],
            output_type="pt",
        ).audios
        audio = audio.float()
        return audio.reshape(len(prompts), k, audio.shape[-2], audio.shape[-1])
