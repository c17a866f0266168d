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

AudioLDM2 (`AudioLDM2Generator`, imagine.generator=audioldm2; cvssp/audioldm2, 16 kHz mono) sits
behind the same interface. Its latent is a mel spectrogram's (time x mel bins), its window the
UNet's sample_size (10.24 s at paper size): "full" denoises that window and crops, "exact" only
the frames the duration needs, as for Stable Audio. Its VAE decoder attends over the whole mel
spectrogram, so a prefix decode would change the audio: it always decodes the whole latent
(imagine.decode has no effect), in slices of decode_batch_size clips.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ith_core.config import ImagineConfig
from ith_core.models.identity import files_digest, snapshot_name
from ith_core.models.profiles import load_audioldm2, load_generator
from storage.audio_store import pcm16

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
        return cls(
            generator_id=generator_id,
            negative_prompt=cfg.negative_prompt,
            num_inference_steps=cfg.num_inference_steps,
            duration_s=float(cfg.duration_s),
            num_candidates=cfg.num_candidates,
            guidance_scale=float(cfg.guidance_scale),
            seed=cfg.seed,
            dtype=resolve_dtype(cfg.dtype, device),
            latent_length=cfg.latent_length,
        )

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
    return snapshot_name(folder) or files_digest(folder)


def setting_notes(cfg: ImagineConfig) -> dict[str, str]:
    """What the Stable Audio settings mean for the configured generator, by setting name (`ith config`
    prints each under its setting). Empty for Stable Audio, whose settings they are.

    With AudioLDM2 every such setting is applied where it has a meaning and said to have none where
    it has none; none is refused: `latent_length` keeps its meaning (the model's whole window or
    only the frames the duration needs), `decode_batch_size` slices the VAE decode and vocoder, and
    `decode` has no effect (the whole latent is always decoded, which is what `full` asks for).
    """
    if cfg.generator != "audioldm2":
        return {}
    return {
        "latent_length": "AudioLDM2: full denoises its UNet's whole window (256 latent frames, 10.24 s for "
        "cvssp/audioldm2) and crops to duration_s; exact only the frames the duration needs",
        "decode": "no effect with AudioLDM2: its VAE decoder attends over the whole mel spectrogram, so a "
        "prefix decode would change the audio; the whole latent is always decoded (as full), then cropped",
        "decode_batch_size": "AudioLDM2: clips per VAE decode + HiFi-GAN vocoder call",
    }


# ---------------------------------------------------------------------------------------------
# Generator interface


@runtime_checkable
class AudioGenerator(Protocol):
    """What the stage needs from a text-to-audio model.

    `generate` takes any number of seeds per prompt (the same number for every prompt of one
    call): lazy rejection sampling asks for one candidate per prompt at a time, candidate k's
    seed always being `candidate_seeds(...)[k]`, so candidate k is the same audio whichever
    call generates it. Any diffusers text-to-audio pipeline that accepts `latents=` and a list
    of per-sample generators (AudioLDM2 does) fits behind it with its own latent shape.
    """

    identity: str
    sample_rate: int

    def generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        """(prompts, len(seeds[0]), channels, samples) float32 waveforms; seeds[i][j] seeds the j-th of prompt i."""
        ...


class GeneratedAudioError(RuntimeError):
    """A generation call returned NaN, infinite or silent audio; nothing of the call was scored or stored.

    Deterministic (the same call gives the same audio), so it is not retried. `audio_ids` lists
    the bad clips' audio ids.
    """

    def __init__(self, message: str, audio_ids=()) -> None:
        super().__init__(message)
        self.audio_ids = sorted(set(audio_ids))


def audio_fault(waveform: np.ndarray) -> str | None:
    """What makes one generated clip unusable: "NaN", "inf", "silent" (every 16-bit sample zero), or None."""
    if np.isnan(waveform).any():
        return "NaN"
    if np.isinf(waveform).any():
        return "inf"
    # The file would hold pcm16's samples: a clip quieter than half a 16-bit step is stored as silence.
    if not pcm16(waveform).any():
        return "silent"
    return None


def check_generated(waveforms: np.ndarray, clips: Sequence[tuple[str, int, str]], settings: GenerationSettings) -> None:
    """Raises `GeneratedAudioError` naming every unusable clip of one generation call, with the likely cause.

    `waveforms`: the call's (clips, channels, samples) float output; `clips`: (audio id, candidate,
    prompt) of each, in the same order. Called before anything of the call is scored or stored.
    """
    bad = [(clip, kind) for clip, wave in zip(clips, waveforms) if (kind := audio_fault(wave)) is not None]
    if not bad:
        return
    lines = [f"  {a} candidate {c} ({prompt!r}): {kind}" for (a, c, prompt), kind in bad]
    if settings.dtype == "float16":
        cause = (
            "likely an fp16 overflow of float16 inference: rerun with `--set imagine.dtype=float32`; "
            "if float32 audio is bad too, the checkpoint is broken or untrained"
        )
    else:
        cause = (
            f"likely a broken or random (untrained) checkpoint: {settings.dtype} inference of these "
            "weights gives no usable audio; check or fetch the generator's weights again"
        )
    raise GeneratedAudioError(
        f"generator {settings.generator_id} ({settings.dtype}) returned unusable audio (NaN, inf or silent) "
        f"for {len(bad)} of {len(clips)} clips of one generation call; none of the call was scored or "
        f"stored:\n" + "\n".join(lines) + f"\n{cause}",
        [a for (a, _, _), _ in bad],
    )


def decoder_reach_frames(
    downsampling_ratios: Sequence[int], kernel: int = 7, dilations: Sequence[int] = (1, 3, 9)
) -> int:
    """Latent frames to the right of a sample that an Oobleck decoder reads, rounded up.

    The decoder is convolutional only (no attention, no normalisation over time): a first conv
    (kernel 7) at latent rate, then per upsampling block a transposed conv (kernel 2s, reaching
    two input frames at most) and three residual units (kernel 7, dilations 1, 3, 9) at the
    block's output rate, then a last conv (kernel 7). Decoding `needed + reach` frames therefore
    gives the first `needed` frames' samples as a whole-window decode does, up to the float
    rounding of convolutions over another length (measured by the tests and the benchmark).
    """
    half = kernel // 2
    reach, rate = float(half), 1
    for stride in reversed(list(downsampling_ratios)):
        reach += 2.0 / rate
        rate *= stride
        reach += sum(half * d for d in dilations) / rate
    reach += half / rate
    return math.ceil(reach)


class _SplittingGenerator:
    """`generate` with its checks and CUDA out-of-memory halving, for generators whose noise is per candidate.

    A subclass gives `_generate(prompts, seeds)`; halving a batch changes no waveform, since every
    candidate's noise comes from its own seed.
    """

    device: str

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        n = len(seeds[0]) if seeds else 0
        if len(prompts) != len(seeds) or n < 1 or any(len(s) != n for s in seeds):
            raise ValueError(
                f"seeds must hold the same number (>= 1) of seeds for each of the {len(prompts)} "
                f"prompts, got {[len(s) for s in seeds]}"
            )
        try:
            return self._generate(prompts, seeds)
        except torch.cuda.OutOfMemoryError:
            if len(prompts) * n == 1:
                raise
            torch.cuda.empty_cache()
            # Halve the batch: by prompts while there are several, else by candidates.
            if len(prompts) > 1:
                half = len(prompts) // 2
                return torch.cat(
                    [self.generate(prompts[:half], seeds[:half]), self.generate(prompts[half:], seeds[half:])]
                )
            half = n // 2
            return torch.cat(
                [self.generate(prompts, [s[:half] for s in seeds]), self.generate(prompts, [s[half:] for s in seeds])],
                dim=1,
            )

    def _generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        raise NotImplementedError

    def _synchronize(self) -> None:
        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize(self.device)


class StableAudioGenerator(_SplittingGenerator):
    """diffusers `StableAudioPipeline` with per-candidate seeded noise, full/exact latents and
    prefix decoding.

    Denoising runs in the pipeline (output_type "latent"); decoding is done here, on only the
    latent prefix the kept seconds need plus the decoder's reach (`decode="prefix"`, 119 of 1024
    frames for 5 s at paper size), in slices of `decode_batch_size` clips. A CUDA out-of-memory
    error halves the batch and retries: noise is per candidate, so a split batch gives the same
    audio.

    `timings` accumulates over the generator's life: seconds of denoising (the pipeline call: text
    encoding and every DiT step) and of VAE decoding, with their work in clips x steps and clips,
    the units of a rehearsal's costs. Work redone after an out-of-memory split counts again in
    both seconds and work, so their ratios stay per unit.
    """

    def __init__(
        self,
        pipe,
        settings: GenerationSettings,
        device: str,
        decode: str = "prefix",
        decode_batch_size: int | None = None,
    ) -> None:
        self.pipe = pipe
        self.settings = settings
        self.device = device
        self.decode_mode = decode
        self.identity = settings.generator_id
        self.sample_rate = int(pipe.vae.config.sampling_rate)
        self.channels = int(pipe.vae.config.audio_channels)
        self.hop = int(pipe.vae.hop_length)
        self.full_frames = int(pipe.transformer.config.sample_size)
        self.latent_channels = int(pipe.transformer.config.in_channels)
        self.decode_batch_size = decode_batch_size
        self.timings = {"seconds_denoise": 0.0, "seconds_decode": 0.0, "denoise_clip_steps": 0, "decoded_clips": 0}
        max_s = self.full_frames * self.hop / self.sample_rate
        if settings.duration_s > max_s:
            raise ValueError(
                f"imagine.duration_s must be <= the generator's window of {max_s:.2f} s, "
                f"got {settings.duration_s}; shorten the clips or use a model with a longer window"
            )
        if decode not in ("prefix", "full"):
            raise ValueError(f"decode must be 'prefix' or 'full', got {decode!r}")
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_folder(cls, folder: str | Path, cfg: ImagineConfig, device: str) -> "StableAudioGenerator":
        settings = GenerationSettings.from_config(cfg, generator_identity(folder), device)
        pipe = load_generator(folder, torch_dtype=getattr(torch, settings.dtype)).to(device)
        return cls(pipe, settings, device, decode=cfg.decode, decode_batch_size=cfg.decode_batch_size)

    @property
    def samples(self) -> int:
        """Samples kept per candidate (the pipeline's own crop: int(duration * rate))."""
        return int(self.settings.duration_s * self.sample_rate)

    @property
    def latent_frames(self) -> int:
        if self.settings.latent_length == "full":
            return self.full_frames
        needed = math.ceil(self.settings.duration_s * self.sample_rate / self.hop)
        return min(self.full_frames, needed)

    @property
    def decode_frames(self) -> int:
        """Latent frames decoded per candidate: the kept samples' frames plus the decoder's reach."""
        if self.decode_mode == "full":
            return self.latent_frames
        reach = decoder_reach_frames(self.pipe.vae.config.downsampling_ratios)
        return min(self.latent_frames, math.ceil(self.samples / self.hop) + reach)

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

    def _generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        n = len(seeds[0])
        # The pipeline orders samples prompt-major (p0c0, p0c1, ..., p1c0), as flattened here.
        latents, generators = self.initial_latents([s for row in seeds for s in row])
        started = time.perf_counter()
        latents = self.pipe(
            list(prompts),
            negative_prompt=[self.settings.negative_prompt] * len(prompts),
            num_inference_steps=self.settings.num_inference_steps,
            audio_end_in_s=self.settings.duration_s,
            num_waveforms_per_prompt=n,
            guidance_scale=self.settings.guidance_scale,
            latents=latents,
            generator=generators if len(generators) > 1 else generators[0],
            output_type="latent",
        ).audios
        self._synchronize()  # CUDA runs asynchronously: without it the clock would stop before the work
        denoised = time.perf_counter()
        self.timings["seconds_denoise"] += denoised - started
        self.timings["denoise_clip_steps"] += len(latents) * self.settings.num_inference_steps
        audio = self.decode(latents)
        self._synchronize()
        self.timings["seconds_decode"] += time.perf_counter() - denoised
        self.timings["decoded_clips"] += len(latents)
        return audio.reshape(len(prompts), n, audio.shape[-2], audio.shape[-1])

    @torch.inference_mode()
    def memory_per_clip(self) -> tuple[int, int]:
        """(denoising, decoding) device bytes one more clip adds to the peak, measured on this CUDA device.

        Each is the difference of the peaks of a 2-clip and a 1-clip call (one denoising step,
        one decode of `decode_frames`), so fixed costs (weights, workspaces) cancel out.
        """
        device = torch.device(self.device)
        dtype = getattr(torch, self.settings.dtype)

        def peak(fn) -> int:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - base

        def denoise(n: int) -> None:
            latents = torch.randn(n, self.latent_channels, self.latent_frames, device=device, dtype=dtype)
            self.pipe(
                ["sound"] * n,
                negative_prompt=[self.settings.negative_prompt] * n,
                num_inference_steps=1,
                audio_end_in_s=self.settings.duration_s,
                guidance_scale=self.settings.guidance_scale,
                latents=latents,
                output_type="latent",
            )

        latents = torch.zeros(2, self.latent_channels, self.decode_frames, device=device, dtype=dtype)
        generate = peak(lambda: denoise(2)) - peak(lambda: denoise(1))
        decode = peak(lambda: self.pipe.vae.decode(latents)) - peak(lambda: self.pipe.vae.decode(latents[:1]))
        return max(1, generate), max(1, decode)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(clips, channels, frames) latents -> (clips, audio channels, samples) float32, the kept seconds only."""
        frames = self.decode_frames
        step = self.decode_batch_size or len(latents)
        out = []
        for start in range(0, len(latents), step):
            chunk = latents[start : start + step, :, :frames]
            out.append(self.pipe.vae.decode(chunk).sample[:, :, : self.samples].float())
        return torch.cat(out)


def _peak_bytes(device: torch.device, fn) -> int:
    """Device bytes `fn` adds to the peak above what is allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


class AudioLDM2Generator(_SplittingGenerator):
    """diffusers `AudioLDM2Pipeline` (cvssp/audioldm2) with per-candidate seeded noise and full/exact latents.

    Each prompt is encoded on its own (CLAP text, T5, and GPT-2's 8 generated states, for the prompt
    and the negative prompt), exactly as a one-prompt pipeline call encodes it: the pipeline pads T5
    tokens to the longest prompt of a call, and the padding moves the positions GPT-2 generates
    from, so encoding prompts together would make a prompt's audio depend on its batch. The
    encodings are then padded to a common length with their attention masks (the UNet's
    cross-attention masks the padding) and denoised in one batch from latents drawn by one seeded
    CPU generator per candidate. The pipeline's own ranking of several waveforms per prompt by its
    CLAP is never used: candidates stay in seed order, and the stage's CLAP chooses.

    Decoding (VAE to a mel spectrogram, HiFi-GAN vocoder to 16 kHz) covers the whole latent, then
    crops to the kept samples; `decode_batch_size` clips at a time. `timings` as for Stable Audio.
    """

    def __init__(self, pipe, settings: GenerationSettings, device: str, decode_batch_size: int | None = None) -> None:
        self.pipe = pipe
        self.settings = settings
        self.device = device
        self.identity = settings.generator_id
        vocoder = pipe.vocoder.config
        self.sample_rate = int(vocoder.sampling_rate)
        self.channels = 1
        self.hop = int(np.prod(vocoder.upsample_rates))  # samples per mel frame
        self.vae_scale = int(pipe.vae_scale_factor)  # mel frames (and bins) per latent frame
        self.mel_bins = int(vocoder.model_in_dim)
        self.full_frames = int(pipe.unet.config.sample_size)
        self.latent_channels = int(pipe.unet.config.in_channels)
        self.decode_batch_size = decode_batch_size
        self.timings = {"seconds_denoise": 0.0, "seconds_decode": 0.0, "denoise_clip_steps": 0, "decoded_clips": 0}
        self._encoded: dict[str, tuple[torch.Tensor, ...]] = {}
        max_s = self.full_frames * self.vae_scale * self.hop / self.sample_rate
        if settings.duration_s > max_s:
            raise ValueError(
                f"imagine.duration_s must be <= the generator's window of {max_s:.2f} s, "
                f"got {settings.duration_s}; shorten the clips or use a model with a longer window"
            )
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_folder(cls, folder: str | Path, cfg: ImagineConfig, device: str) -> "AudioLDM2Generator":
        settings = GenerationSettings.from_config(cfg, generator_identity(folder), device)
        pipe = load_audioldm2(folder, torch_dtype=getattr(torch, settings.dtype)).to(device)
        return cls(pipe, settings, device, decode_batch_size=cfg.decode_batch_size)

    @property
    def samples(self) -> int:
        """Samples kept per candidate (the pipeline's own crop: int(duration * rate))."""
        return int(self.settings.duration_s * self.sample_rate)

    @property
    def latent_frames(self) -> int:
        if self.settings.latent_length == "full":
            return self.full_frames
        mel_frames = math.ceil(self.samples / self.hop)
        return min(self.full_frames, math.ceil(mel_frames / self.vae_scale))

    @property
    def decode_frames(self) -> int:
        """Latent frames decoded per candidate: all of them (the VAE decoder attends over the whole latent)."""
        return self.latent_frames

    def initial_latents(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Standard-normal latents (clips, channels, frames, mel bins / scale), one seeded CPU generator per candidate."""
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        shape = (1, self.latent_channels, self.latent_frames, self.mel_bins // self.vae_scale)
        latents = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return latents.to(self.device, getattr(torch, self.settings.dtype)), generators

    def encode(self, prompt: str) -> tuple[torch.Tensor, ...]:
        """(T5 states, their mask, GPT-2's generated states) of one prompt, negative prompt first when guided.

        Kept per prompt for the generator's life: lazy sampling asks for the same prompts round after round.
        """
        if prompt not in self._encoded:
            if len(self._encoded) >= 1024:
                self._encoded.clear()
            guided = self.settings.guidance_scale > 1.0
            with warnings.catch_warnings():
                # diffusers' GPT-2 loop passes `past_key_values`, which transformers 5 deprecates: nothing to change here.
                warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
                self._encoded[prompt] = self.pipe.encode_prompt(
                    prompt, self.device, 1, guided, negative_prompt=self.settings.negative_prompt if guided else None
                )
        return self._encoded[prompt]

    def _conditioning(self, prompts: Sequence[str], n: int) -> dict:
        """The pipeline's embedding arguments for `n` candidates of each prompt, prompt-major, padded to one length."""
        encoded = [self.encode(p) for p in prompts]
        length = max(e[0].shape[1] for e in encoded)

        def stack(half: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            states, masks, generated = [], [], []
            for embeds, mask, gen in encoded:
                pad = length - embeds.shape[1]
                states.append(torch.nn.functional.pad(embeds[half : half + 1], (0, 0, 0, pad)).repeat(n, 1, 1))
                masks.append(torch.nn.functional.pad(mask[half : half + 1], (0, pad)).repeat(n, 1))
                generated.append(gen[half : half + 1].repeat(n, 1, 1))
            return torch.cat(states), torch.cat(masks), torch.cat(generated)

        guided = self.settings.guidance_scale > 1.0
        states, mask, generated = stack(1 if guided else 0)
        out = {"prompt_embeds": states, "attention_mask": mask, "generated_prompt_embeds": generated}
        if guided:
            neg_states, neg_mask, neg_generated = stack(0)
            out.update(
                negative_prompt_embeds=neg_states,
                negative_attention_mask=neg_mask,
                negative_generated_prompt_embeds=neg_generated,
            )
        return out

    def _denoise(self, prompts: Sequence[str], seeds: Sequence[int], n: int, steps: int) -> torch.Tensor:
        latents, generators = self.initial_latents(seeds)
        return self.pipe(
            **self._conditioning(prompts, n),
            num_inference_steps=steps,
            audio_length_in_s=self.latent_frames * self.vae_scale * self.hop / self.sample_rate,
            guidance_scale=self.settings.guidance_scale,
            latents=latents,
            generator=generators if len(generators) > 1 else generators[0],
            output_type="latent",
        ).audios

    def _generate(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> torch.Tensor:
        n = len(seeds[0])
        started = time.perf_counter()
        latents = self._denoise(prompts, [s for row in seeds for s in row], n, self.settings.num_inference_steps)
        self._synchronize()  # CUDA runs asynchronously: without it the clock would stop before the work
        denoised = time.perf_counter()
        self.timings["seconds_denoise"] += denoised - started
        self.timings["denoise_clip_steps"] += len(latents) * self.settings.num_inference_steps
        audio = self.decode(latents)
        self._synchronize()
        self.timings["seconds_decode"] += time.perf_counter() - denoised
        self.timings["decoded_clips"] += len(latents)
        return audio.reshape(len(prompts), n, 1, audio.shape[-1])

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(clips, channels, frames, bins) latents -> (clips, samples) float32 at 16 kHz, the kept seconds only."""
        step = self.decode_batch_size or len(latents)
        out = []
        for start in range(0, len(latents), step):
            chunk = latents[start : start + step] / self.pipe.vae.config.scaling_factor
            mel = self.pipe.vae.decode(chunk).sample
            out.append(self.pipe.vocoder(mel.squeeze(1))[:, : self.samples].float())
        return torch.cat(out)

    @torch.inference_mode()
    def memory_per_clip(self) -> tuple[int, int]:
        """(denoising, decoding) device bytes one more clip adds to the peak, measured on this CUDA device
        (2-clip minus 1-clip peaks of one denoising step and of one decode, as for Stable Audio)."""
        device = torch.device(self.device)
        dtype = getattr(torch, self.settings.dtype)
        self.encode("sound")  # encoded once, outside the measured calls: its states are kept, not per clip

        def denoise(n: int) -> None:
            self._denoise(["sound"] * n, list(range(n)), 1, 1)

        shape = (2, self.latent_channels, self.decode_frames, self.mel_bins // self.vae_scale)
        latents = torch.zeros(shape, device=device, dtype=dtype)
        generate = _peak_bytes(device, lambda: denoise(2)) - _peak_bytes(device, lambda: denoise(1))
        decode = _peak_bytes(device, lambda: self.decode(latents)) - _peak_bytes(
            device, lambda: self.decode(latents[:1])
        )
        return max(1, generate), max(1, decode)
