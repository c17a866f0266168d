"""Devices of the imagine workers, their per-process model caches and batch sizes.

One device per concurrently running shard (`device_pool`), the generator and CLAP loaded once per
process and device (`load_models`), and generation and decode batches sized to the device's
free memory (`batch_sizes`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

import torch

from ith_core.config import ConfigError, RunConfig
from ith_core.imagination.clap_scoring import ClapScorer
from ith_core.imagination.generators import (
    AudioLDM2Generator,
    GenerationSettings,
    StableAudioGenerator,
    generator_identity,
)
from ith_core.imagination.planted_scorer import PlantedScorer
from ith_core.imagination.tone_generator import ToneGenerator
from ith_core.models.profiles import load_audioldm2, load_generator

logger = logging.getLogger(__name__)


# Clips per generation call on a CPU when imagine.batch_size is unset (CPU time is linear in it).
CPU_BATCH_SIZE = 8


def planning_device(cfg: RunConfig) -> str:
    """The device kind shard workers will use; it decides the "auto" dtype, hence the audio ids."""
    if cfg.device != "auto":
        return cfg.device
    if cfg.imagine.task_runner == "ray":
        # Ray places each shard on a GPU of some node, which this process may not have.
        return "cuda" if (cfg.imagine.gpus is None or cfg.imagine.gpus > 0) and _cuda_available() else "cpu"
    return "cuda" if _cuda_available() and cfg.imagine.gpus != 0 else "cpu"


def _cuda_available() -> bool:
    return torch.cuda.is_available()


class DevicePool:
    """Hands each concurrently running shard its own device (one worker per GPU, pinned)."""

    def __init__(self, devices: Sequence[str]) -> None:
        self.devices = tuple(devices)
        self._free: queue.Queue[str] = queue.Queue()
        for device in self.devices:
            self._free.put(device)

    @contextlib.contextmanager
    def acquire(self):
        device = self._free.get()
        try:
            yield device
        finally:
            self._free.put(device)


_POOLS: dict[tuple[str, ...], DevicePool] = {}
_POOLS_LOCK = threading.Lock()


def device_pool(devices: Sequence[str]) -> DevicePool:
    with _POOLS_LOCK:
        return _POOLS.setdefault(tuple(devices), DevicePool(devices))


def local_devices(cfg: RunConfig) -> list[str]:
    """cuda:0..N-1 for the visible GPUs (capped by imagine.gpus), the explicit device, or cpu."""
    if cfg.device != "auto":
        return [cfg.device]
    count = 0
    if _cuda_available():
        count = torch.cuda.device_count()
    if cfg.imagine.gpus is not None:
        count = min(count, cfg.imagine.gpus)
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def _cached_model(key: tuple, build):
    # Workers run many shards; loading the generator once per process and device, not per shard.
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = build()
        return _MODELS[key]


def release_models() -> int:
    """Drops this process's cached generators and CLAP scorers; returns how many entries were dropped.

    The flow calls it once its shards are done: otherwise the generator (4 GiB of DiT in float32 at
    paper size) and CLAP stay loaded through the fusion stage, beside the models it loads (found by
    `ith rehearse`; the tiny profile's models are too small to notice).
    """
    with _MODELS_LOCK:
        dropped = len(_MODELS)
        _MODELS.clear()
    gc.collect()
    if _cuda_available():
        torch.cuda.empty_cache()
    return dropped


def load_models(cfg: RunConfig, model_paths: dict[str, str], plan: dict, device: str):

    settings = GenerationSettings(**{k: v for k, v in plan["settings"].items() if k != "version"})
    if generator_identity(model_paths["generator"]) != settings.generator_id:
        raise ConfigError(
            f"generator {model_paths['generator']} is not the one this run was planned with "
            f"({settings.generator_id}); plan a new run instead of resuming this one"
        )
    if cfg.imagine.generator == "tone":
        generator = ToneGenerator.from_folder(model_paths["generator"], settings)
    elif cfg.imagine.generator == "audioldm2":
        pipe = _cached_model(
            ("generator", model_paths["generator"], settings.dtype, device),
            lambda: load_audioldm2(model_paths["generator"], torch_dtype=getattr(torch, settings.dtype)).to(device),
        )
        generator = AudioLDM2Generator(pipe, settings, device, decode_batch_size=cfg.imagine.decode_batch_size)
    else:
        pipe = _cached_model(
            ("generator", model_paths["generator"], settings.dtype, device),
            lambda: load_generator(model_paths["generator"], torch_dtype=getattr(torch, settings.dtype)).to(device),
        )
        generator = StableAudioGenerator(
            pipe, settings, device, decode=cfg.imagine.decode, decode_batch_size=cfg.imagine.decode_batch_size
        )
    if cfg.benchmark == "synthetic" and cfg.synthetic.scorer == "planted":
        # The synthetic benchmark's planted scorer in the `clap` role (prepare_models points the role
        # at its folder, so its identity is the plan's clap_id): scores of the audio, not CLAP.
        scorer = PlantedScorer.from_folder(model_paths["clap"])
    else:
        scorer = _cached_model(
            ("clap", model_paths["clap"], device, cfg.imagine.clap_batch_size),
            lambda: ClapScorer.from_folder(model_paths["clap"], device, cfg.imagine.clap_batch_size),
        )
    return generator, scorer


def size_batches(
    free_bytes_: int, generate_bytes_per_clip: int, decode_bytes_per_clip: int, fraction: float = 0.6, cap: int = 64
) -> tuple[int, int]:
    """(clips per generation call, clips per VAE decode) that fit `fraction` of the free device memory.

    Per-clip bytes are the marginal peak of one more clip (`StableAudioGenerator.memory_per_clip`
    measures them on the device); `cap` bounds the generation batch, past which a GPU gains little.
    """
    budget = fraction * free_bytes_
    generate = max(1, min(cap, int(budget // max(1, generate_bytes_per_clip))))
    decode = max(1, min(generate, int(budget // max(1, decode_bytes_per_clip))))
    return generate, decode


def batch_sizes(cfg: RunConfig, generator: StableAudioGenerator | AudioLDM2Generator) -> tuple[int, int | None]:
    """(clips per generation call, clips per decode) from the settings, else from the device.

    On a GPU, unset sizes come from its free memory and the per-clip peaks measured once per
    process and generator (`memory_per_clip`); on a CPU the generation batch is CPU_BATCH_SIZE
    clips (time is linear in it) and decoding takes the whole batch.
    """
    batch, decode = cfg.imagine.batch_size, cfg.imagine.decode_batch_size
    if batch is not None and decode is not None:
        return batch, decode
    # Memory probing is the diffusion generators' (Stable Audio, AudioLDM2); other backends need not offer it.
    if not str(getattr(generator, "device", "cpu")).startswith("cuda") or not hasattr(generator, "memory_per_clip"):
        return batch or CPU_BATCH_SIZE, decode
    key = (
        "memory",
        generator.identity,
        generator.settings.dtype,
        generator.latent_frames,
        generator.decode_frames,
        generator.device,
    )
    per_clip = _cached_model(key, generator.memory_per_clip)
    free, _ = torch.cuda.mem_get_info(torch.device(generator.device))
    auto_batch, auto_decode = size_batches(free, *per_clip)
    batch = batch or auto_batch
    decode = decode or min(auto_decode, batch)
    logger.info(
        "imagine on %s: %.1f GiB free, per clip %.2f GiB generating and %.2f GiB decoding -> batch %d, decode %d",
        generator.device,
        free / 2**30,
        per_clip[0] / 2**30,
        per_clip[1] / 2**30,
        batch,
        decode,
    )
    return batch, decode


def worker_identity() -> dict:
    """Where this shard runs: process, host, and the Ray worker and node when inside a Ray worker."""
    out: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        out.update(ray_node_id=context.get_node_id(), ray_worker_id=context.get_worker_id())
    return out
