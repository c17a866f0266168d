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
        nested = {"data": DataConfig, "span": SpanDetectorConfig}
        kwargs: dict[str, Any] = {}
        for name, value in raw.items():
            if name in nested:
                kwargs[name] = _build(nested[name], value, prefix=name)
            else:
                kwargs[name] = value
        return _build(cls, kwargs, prefix="")


# Stage settings that differ by profile. The paper profile uses the method's settings as they
# are; the tiny profile's random-weight models need a larger learning rate to learn anything in
# a couple of epochs, and its default run works on a small sample so that it ends in minutes.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"sample_limit": 64},
        "span": {"epochs": 2, "learning_rate": 1e-3},
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
