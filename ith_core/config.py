"""Typed, validated settings for every stage of the pipeline.

One frozen dataclass per stage. Each validates itself when built and raises `ConfigError`
naming the field, the rule, the value and the fix. `RunConfig.resolved()` is what a run
writes next to its outputs (`config.json`); `RunConfig.from_dict` reads it back and rejects
unknown keys, so a typo in a settings file is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

TASKS = ("animal", "pitch")
SPLITS = ("train", "dev", "test", "wiki")
PROFILE_NAMES = ("tiny", "paper")


class ConfigError(ValueError):
    """A setting broke a rule; the message names the field, the rule, the value and the fix."""


def require(ok: bool, field_name: str, rule: str, value: Any, fix: str = "") -> None:
    if not ok:
        message = f"{field_name} must {rule}, got {value!r}"
        raise ConfigError(f"{message}; {fix}" if fix else message)


def _as_tuple(value: Any) -> tuple:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@dataclass(frozen=True)
class DataConfig:
    """Where AuditoryBench comes from and which part of it a run uses.

    `data_dir` is a directory or fsspec URL holding the benchmark's CSV files in the layout of
    `<task dir>/<split>.csv`; None means `$ITH_AUDITORYBENCH_DIR`, else the pinned upstream files
    downloaded into the cache and verified.
    """

    data_dir: str | None = None
    tasks: tuple[str, ...] = TASKS
    splits: tuple[str, ...] = SPLITS
    # Examples per (task, split) that later stages work on; ingestion always reads every row.
    sample_limit: int | None = None
    sample_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", _as_tuple(self.tasks))
        object.__setattr__(self, "splits", _as_tuple(self.splits))
        require(len(self.tasks) > 0, "data.tasks", "name at least one task", self.tasks, f"choose from {TASKS}")
        for task in self.tasks:
            require(task in TASKS, "data.tasks", f"contain only {TASKS}", task)
        require(len(self.splits) > 0, "data.splits", "name at least one split", self.splits, f"choose from {SPLITS}")
        for split in self.splits:
            require(split in SPLITS, "data.splits", f"contain only {SPLITS}", split)
        require(len(set(self.tasks)) == len(self.tasks), "data.tasks", "not repeat a task", self.tasks)
        require(len(set(self.splits)) == len(self.splits), "data.splits", "not repeat a split", self.splits)
        if self.sample_limit is not None:
            require(self.sample_limit >= 1, "data.sample_limit", "be >= 1 or None (all rows)", self.sample_limit)


@dataclass(frozen=True)
class SpanDetectorConfig:
    """Stage 1: the auditory span detector (token classifier, 2 labels).

    Defaults are the method's: 5 epochs, batch 16, AdamW lr 1e-5, max length 128, trained on
    both tasks' train splits. The tiny profile overrides some of them (see profiles).
    """

    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 42
    # Caps the optimiser steps (None: all epochs); lets the tiny profile stay quick.
    max_train_steps: int | None = None
    # Caps the training examples (None: every accepted train row of every task).
    max_train_examples: int | None = None
    inference_batch_size: int = 64
    # A token is inside a span when P(label 1) >= threshold.
    threshold: float = 0.5

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "span.epochs", "be >= 1", self.epochs)
        require(self.batch_size >= 1, "span.batch_size", "be >= 1", self.batch_size)
        require(self.learning_rate > 0, "span.learning_rate", "be > 0", self.learning_rate)
        require(self.weight_decay >= 0, "span.weight_decay", "be >= 0", self.weight_decay)
        require(8 <= self.max_length <= 512, "span.max_length", "lie in [8, 512]", self.max_length,
                "BERT-family models accept at most 512 positions")
        if self.max_train_steps is not None:
            require(self.max_train_steps >= 1, "span.max_train_steps", "be >= 1 or None", self.max_train_steps)
        if self.max_train_examples is not None:
            require(self.max_train_examples >= 1, "span.max_train_examples", "be >= 1 or None",
                    self.max_train_examples)
        require(self.inference_batch_size >= 1, "span.inference_batch_size", "be >= 1", self.inference_batch_size)
        require(0.0 < self.threshold < 1.0, "span.threshold", "lie strictly between 0 and 1", self.threshold)


@dataclass(frozen=True)
class ImagineConfig:
    """Stages 2-3: audio generation and CLAP rejection sampling (method defaults)."""

    prompt_template: str = "{span} sound"
    fallback_prompt: str = "sound"
    negative_prompt: str = "Low quality"
    num_inference_steps: int = 50
    duration_s: float = 5.0
    num_candidates: int = 5
    guidance_scale: float = 7.0
    seed: int = 42
    # "auto": float16 on GPU, float32 on CPU.
    dtype: str = "auto"
    # "full": denoise the model's whole latent window and crop (the reference behaviour);
    # "exact": denoise only the latent frames the duration needs.
    latent_length: str = "full"
    batch_size: int = 8
    shard_size: int = 64
    clap_backend: str = "transformers"
    clap_batch_size: int = 32
    thresholds: dict[str, float] = field(default_factory=lambda: {"animal": 0.4, "pitch": 0.3})
    threshold_grid: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    # "local": one worker per visible GPU (one on CPU); "ray": prefect-ray, one GPU per shard task.
    task_runner: str = "local"
    ray_address: str | None = None
    gpus: int | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold_grid", tuple(float(t) for t in self.threshold_grid))
        require("{span}" in self.prompt_template, "imagine.prompt_template", "contain '{span}'",
                self.prompt_template)
        require(self.num_inference_steps >= 1, "imagine.num_inference_steps", "be >= 1", self.num_inference_steps)
        require(self.duration_s > 0, "imagine.duration_s", "be > 0", self.duration_s)
        require(self.num_candidates >= 1, "imagine.num_candidates", "be >= 1", self.num_candidates)
        require(self.guidance_scale >= 0, "imagine.guidance_scale", "be >= 0", self.guidance_scale)
        require(self.dtype in ("auto", "float16", "bfloat16", "float32"), "imagine.dtype",
                "be auto, float16, bfloat16 or float32", self.dtype)
        require(self.latent_length in ("full", "exact"), "imagine.latent_length", "be 'full' or 'exact'",
                self.latent_length)
        require(self.batch_size >= 1, "imagine.batch_size", "be >= 1", self.batch_size)
        require(self.shard_size >= 1, "imagine.shard_size", "be >= 1", self.shard_size)
        # laion-clap is not shipped: it pins numpy<2 (pyarrow then fails) and needs torchvision.
        require(self.clap_backend == "transformers", "imagine.clap_backend", "be 'transformers'", self.clap_backend,
                "the laion_clap backend is not available in this release")
        require(self.clap_batch_size >= 1, "imagine.clap_batch_size", "be >= 1", self.clap_batch_size)
        for task, value in self.thresholds.items():
            require(task in TASKS, "imagine.thresholds", f"have keys among {TASKS}", task)
            require(-1.0 <= value <= 1.0, f"imagine.thresholds.{task}", "lie in [-1, 1] (a cosine similarity)", value)
        for value in self.threshold_grid:
            require(-1.0 <= value <= 1.0, "imagine.threshold_grid", "hold values in [-1, 1]", value)
        require(self.task_runner in ("local", "ray"), "imagine.task_runner", "be 'local' or 'ray'", self.task_runner)
        if self.gpus is not None:
            require(self.gpus >= 0, "imagine.gpus", "be >= 0 or None (all visible)", self.gpus)
        require(self.retries >= 0, "imagine.retries", "be >= 0", self.retries)


@dataclass(frozen=True)
class FusionConfig:
    """Stages 4-5: audio encoding, the fusion LM, training and evaluation (method defaults)."""

    # The paper trains the AST encoder too; a frozen encoder makes its outputs precomputable.
    train_audio_encoder: bool = False
    # Pool the frozen encoder's stored tokens to this many (None: keep all, about 1214 per clip at
    # paper size). A trainable encoder runs inside the model and the fusion layer sees all its tokens.
    audio_tokens: int | None = None
    # -1: fuse on the embedding output (before encoder layer 0); i >= 0: after encoder layer i.
    fusion_layer: int = -1
    num_heads: int = 12
    ffn_dim: int = 3072
    dropout: float = 0.1
    learning_rates: dict[str, float] = field(default_factory=lambda: {"animal": 3e-4, "pitch": 4e-5})
    batch_size: int = 32
    epochs: int = 8
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    seeds: tuple[int, ...] = (42,)
    mixed_precision: str = "auto"
    bootstrap_samples: int = 1000
    num_processes: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.audio_tokens is not None:
            require(self.audio_tokens >= 1, "fusion.audio_tokens", "be >= 1 or None (all)", self.audio_tokens)
        require(self.fusion_layer >= -1, "fusion.fusion_layer", "be -1 (embedding output) or a layer index >= 0",
                self.fusion_layer)
        require(self.num_heads >= 1, "fusion.num_heads", "be >= 1", self.num_heads)
        require(self.ffn_dim >= 1, "fusion.ffn_dim", "be >= 1", self.ffn_dim)
        require(0.0 <= self.dropout < 1.0, "fusion.dropout", "lie in [0, 1)", self.dropout)
        for task, value in self.learning_rates.items():
            require(task in TASKS, "fusion.learning_rates", f"have keys among {TASKS}", task)
            require(value > 0, f"fusion.learning_rates.{task}", "be > 0", value)
        require(self.batch_size >= 1, "fusion.batch_size", "be >= 1", self.batch_size)
        require(self.epochs >= 1, "fusion.epochs", "be >= 1", self.epochs)
        require(0.0 <= self.warmup_ratio < 1.0, "fusion.warmup_ratio", "lie in [0, 1)", self.warmup_ratio)
        require(8 <= self.max_length <= 512, "fusion.max_length", "lie in [8, 512]", self.max_length)
        require(len(self.seeds) >= 1, "fusion.seeds", "name at least one seed", self.seeds)
        require(self.mixed_precision in ("auto", "no", "fp16", "bf16"), "fusion.mixed_precision",
                "be auto, no, fp16 or bf16", self.mixed_precision)
        require(self.bootstrap_samples >= 100, "fusion.bootstrap_samples", "be >= 100", self.bootstrap_samples)
        require(self.num_processes >= 1, "fusion.num_processes", "be >= 1", self.num_processes)


@dataclass(frozen=True)
class RunConfig:
    """One pipeline run: profile, data, stage settings and where outputs go."""

    profile: str = "tiny"
    run_root: str = "runs"
    run_id: str | None = None
    # Where models are cached or looked for; None means $ITH_HOME/models (default ~/.cache/ith/models).
    model_dir: str | None = None
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    span: SpanDetectorConfig = field(default_factory=SpanDetectorConfig)
    imagine: ImagineConfig = field(default_factory=ImagineConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        require(self.profile in PROFILE_NAMES, "profile", f"be one of {PROFILE_NAMES}", self.profile)
        require(bool(self.run_root), "run_root", "be a non-empty path or fsspec URL", self.run_root)
        if self.run_id is not None:
            ok = bool(self.run_id) and all(c.isalnum() or c in "-_." for c in self.run_id)
            require(ok and not self.run_id.startswith("."), "run_id",
                    "use only letters, digits, '-', '_' and '.' and not start with '.'", self.run_id)
        require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                "device", "be 'auto', 'cpu' or 'cuda[:N]'", self.device)

    def resolved(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not where they are written)."""
        content = self.resolved()
        for key in ("run_root", "run_id", "model_dir", "device"):
            content.pop(key)
        # How the work is spread over machines does not change what it computes.
        for section, keys in EXECUTION_SETTINGS.items():
            for key in keys:
                content[section].pop(key)
        blob = json.dumps(content, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def effective_run_id(self) -> str:
        """The run id: explicit, or derived from the fingerprint so an identical run reuses its folder."""
        return self.run_id or f"{self.profile}-{self.fingerprint()[:12]}"

    @classmethod
    def for_profile(cls, profile: str = "tiny", **overrides: Any) -> "RunConfig":
        """The profile's defaults, then `overrides` (top-level fields, or `data`/`span` mappings)."""
        require(profile in PROFILE_NAMES, "profile", f"be one of {PROFILE_NAMES}", profile)
        merged: dict[str, Any] = {"profile": profile}
        for name, value in PROFILE_DEFAULTS[profile].items():
            merged[name] = dict(value) if isinstance(value, dict) else value
        for name, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **value}
            else:
                merged[name] = value
        return cls.from_dict(merged)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        raw = dict(raw)
        nested = {"data": DataConfig, "span": SpanDetectorConfig, "imagine": ImagineConfig, "fusion": FusionConfig}
        kwargs: dict[str, Any] = {}
        for name, value in raw.items():
            if name in nested:
                kwargs[name] = _build(nested[name], value, prefix=name)
            else:
                kwargs[name] = value
        return _build(cls, kwargs, prefix="")


# Settings that only choose how work is executed (batching, sharding, workers); left out of the
# run fingerprint, since results do not depend on them.
EXECUTION_SETTINGS: dict[str, tuple[str, ...]] = {
    "span": ("inference_batch_size",),
    "imagine": ("batch_size", "shard_size", "clap_batch_size", "task_runner", "ray_address", "gpus", "retries"),
    "fusion": ("num_processes",),
}

# Stage settings that differ by profile. The paper profile uses the method's settings as they
# are; the tiny profile's random-weight models need a larger learning rate to learn anything in
# a couple of epochs, and its default run works on a small sample so that it ends in minutes.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"sample_limit": 64},
        "span": {"epochs": 2, "learning_rate": 1e-3},
        # Random-weight CLAP scores cluster around 0.04-0.21, so the method's thresholds would
        # accept nothing; 0.177 accepts a fair share and keeps the rejection path exercised.
        "imagine": {"num_inference_steps": 4, "num_candidates": 2, "duration_s": 2.0, "latent_length": "exact",
                    "thresholds": {"animal": 0.177, "pitch": 0.177}},
        # The tiny LM is 64 wide: 4 heads divide it; random weights need a larger learning rate.
        # 64 pooled audio tokens instead of AST's 1214 keep the tiny run's features small and quick.
        "fusion": {"num_heads": 4, "ffn_dim": 256, "learning_rates": {"animal": 2e-3, "pitch": 2e-3},
                   "audio_tokens": 64},
    },
    "paper": {},
}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if isinstance(raw, cls):
        return raw
    require(isinstance(raw, dict), prefix or cls.__name__, "be a mapping", type(raw).__name__)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    where = f"{prefix}." if prefix else ""
    require(not unknown, f"{where}{unknown[0] if unknown else ''}", "be a known setting",
            unknown[0] if unknown else None, f"known settings: {sorted(known)}")
    return cls(**raw)
