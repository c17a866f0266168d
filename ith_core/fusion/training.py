"""Training entry point of the fusion LM (ITH) and its text-only baseline, the accelerate way.

Run it through `accelerate launch` so one GPU, many GPUs or many nodes is a launch setting:

    accelerate launch -m ith_core.fusion.training --config runs/x/fusion_train/jobs.json
    accelerate launch --multi_gpu --num_processes 2 -m ith_core.fusion.training --config jobs.json  # 2 procs (gloo on CPU)
    python -m ith_core.fusion.training --config jobs.json                                         # one process

(`accelerate launch --cpu --num_processes 2` silently runs ONE process; `--multi_gpu` without GPUs
runs two over gloo.) The config file (`TrainSpec`, JSON) names the LM, the examples table, the
selection table and feature folder, the FusionConfig and a list of jobs (task, model "ith" or
"text", seed); jobs run one after another in the same process group.

Per job, in `<output_dir>/<job name>/`:
    states/step-<global step>[-epoch-end]/   accelerate save_state (model safetensors; optimizer,
                                 scheduler, RNG as torch files read back with weights_only=True)
                                 and progress.json, written last: a state without it is ignored.
                                 A save never writes into a folder holding a whole state: the
                                 end-of-epoch save has its own name even at a step that a
                                 mid-epoch save already used; older states go once it is whole
    best/                        dev-best weights: lm/ (save_pretrained, safetensors + tokenizer),
                                 fusion.safetensors, config.json (the resolved job config)
    train_log.json, DONE.json    DONE.json last: a finished job is skipped on rerun
A crashed or retried run resumes from the newest whole state: `load_state` then
`skip_first_batches` over the interrupted epoch, whose order depends only on (seed, epoch).
The epoch loss in the history is the mean over the epoch's batches (each the mean over
processes), carried in progress.json so a resumed epoch still averages all of its batches.

Batch size is global (the method's 32): each of N processes takes batch_size / N. Mixed precision:
"auto" is bf16 (or fp16) on GPU, none on CPU. No Prefect import here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

from ith_core.config import AudioBertConfig, FusionConfig, require
from ith_core.fusion.audio_features import read_selection
from ith_core.fusion.lm_inputs import (
    EpochPermutationSampler,
    FusionCollator,
    FusionDataset,
    encode_examples,
    pitch_token_ids,
    spans_from_selection,
)
from ith_core.fusion.model import EncodedTokens, audio_feature_statistics, build_fusion_model
from ith_core.models.profiles import load_audio_encoder, load_lm
from ith_core.retrieval.audiobert_model import audio_statistics, build_audiobert_model
from storage.features import FeatureReader

logger = logging.getLogger(__name__)

PROGRESS = "progress.json"
# Jobs whose model hears audio (reads the selection table and the stored features).
AUDIO_MODELS = ("ith", "audiobert")


@dataclass(frozen=True)
class TrainJob:
    task: str
    model: str  # "ith" (fusion), "text" (same LM, same training, no fusion) or "audiobert" (ith_core.retrieval.audiobert_model)
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-{self.task}-seed{self.seed}"

    def __post_init__(self) -> None:
        require(self.task in ("animal", "pitch"), "job.task", "be 'animal' or 'pitch'", self.task)
        require(self.model in ("ith", "text", "audiobert"), "job.model", "be 'ith', 'text' or 'audiobert'", self.model)


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training run reads; written as JSON next to its outputs."""

    lm_path: str
    examples_path: str  # Parquet: example_id, task, split, sentence, answer, options
    output_dir: str
    selection_path: str | None = None
    features_dir: str | None = None  # local folder of the feature shards (storage.features)
    audio_encoder_path: str | None = None  # needed when fusion.train_audio_encoder
    fusion: dict = field(default_factory=dict)
    # AudioBertConfig dump: the model settings of "audiobert" jobs (training settings are in `fusion`).
    audiobert: dict = field(default_factory=dict)
    jobs: tuple = ()
    train_split: str = "train"
    dev_split: str = "dev"
    # Caps optimiser steps per job (None: every epoch); for smoke runs.
    max_train_steps: int | None = None
    # Also save state every N steps inside an epoch (None: at epoch ends only).
    checkpoint_every_steps: int | None = None
    eval_batch_size: int = 64

    @classmethod
    def from_json(cls, path: str) -> "TrainSpec":
        raw = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        require(
            not unknown,
            f"train spec {unknown[0] if unknown else ''}",
            "be a known key",
            unknown,
            f"known keys: {sorted(known)}",
        )
        raw["jobs"] = tuple(TrainJob(**j) if isinstance(j, dict) else j for j in raw.get("jobs", ()))
        return cls(**raw)

    def to_json(self) -> dict:
        return {**asdict(self), "jobs": [asdict(j) for j in self.jobs]}

    @property
    def fusion_config(self) -> FusionConfig:
        return FusionConfig(**self.fusion)


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


# -- data -------------------------------------------------------------------------------------------


def load_examples(spec: TrainSpec, task: str, splits) -> list[dict]:
    table = pq.read_table(spec.examples_path)
    table = table.filter(
        pc.and_(pc.equal(table["task"], task), pc.is_in(table["split"], value_set=pa.array(list(splits))))
    )
    cols = [
        c for c in ("example_id", "task", "split", "sentence", "answer", "options", "flags") if c in table.column_names
    ]
    return table.select(cols).to_pylist()


def load_spans(spec: TrainSpec):
    if spec.selection_path is None:
        return {}
    return spans_from_selection(read_selection(spec.selection_path))


def feature_reader(spec: TrainSpec):

    require(
        spec.features_dir is not None,
        "features_dir",
        "be set for an ITH job",
        None,
        "run the audio-encoding stage first and pass its folder",
    )
    parts = sorted(Path(spec.features_dir).glob("part-*.parquet"))
    index = pa.concat_tables([pq.read_table(p) for p in parts])
    return FeatureReader(spec.features_dir, index)


def get_dataloaders(accelerator, spec: TrainSpec, job: TrainJob, tokenizer, features=None):
    """(train loader, dev loader, train sampler, counts) for one job; prepared by the caller."""

    cfg = spec.fusion_config
    per_device = cfg.batch_size // accelerator.num_processes
    require(
        cfg.batch_size % accelerator.num_processes == 0,
        "fusion.batch_size",
        f"be divisible by the {accelerator.num_processes} processes (it is the global batch)",
        cfg.batch_size,
    )
    use_audio = job.model in AUDIO_MODELS
    spans = load_spans(spec) if use_audio else {}
    train_rows = load_examples(spec, job.task, (spec.train_split,))
    dev_rows = load_examples(spec, job.task, (spec.dev_split,))
    train_items, train_counts = encode_examples(tokenizer, train_rows, spans, cfg.max_length, use_audio=use_audio)
    dev_items, dev_counts = encode_examples(tokenizer, dev_rows, spans, cfg.max_length, use_audio=use_audio)
    require(len(train_items) > 0, "train examples", f"exist for task {job.task}", 0, "check the examples table")
    collator = FusionCollator(tokenizer.pad_token_id, features if use_audio else None)
    sampler = EpochPermutationSampler(len(train_items), job.seed)
    # A private generator: creating an iterator then draws its base seed from it, not from the
    # global RNG, so a resumed run (whose RNG state load_state restores) replays the same dropout.
    train_dl = DataLoader(
        FusionDataset(train_items),
        batch_size=per_device,
        sampler=sampler,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(job.seed),
    )
    dev_dl = DataLoader(FusionDataset(dev_items), batch_size=spec.eval_batch_size, shuffle=False, collate_fn=collator)
    counts = {
        "train_items": len(train_items),
        "dev_items": len(dev_items),
        "train_dropped": train_counts,
        "dev_dropped": dev_counts,
        "train_spans": sum(len(i.span_positions) for i in train_items),
    }
    return train_dl, dev_dl, sampler, counts


# -- model ------------------------------------------------------------------------------------------


def build_model(spec: TrainSpec, job: TrainJob, features=None):
    cfg = spec.fusion_config
    mlm, tokenizer = load_lm(spec.lm_path)
    if job.model == "text":
        return build_fusion_model(mlm, cfg, None, fusion=False), tokenizer
    if job.model == "audiobert":
        return _audiobert_model(spec, mlm, features), tokenizer
    return build_ith_model(mlm, cfg, spec.audio_encoder_path, features), tokenizer


def build_ith_model(lm, cfg: FusionConfig, audio_encoder_path: str | None, features=None):
    """`lm` (any BERT-family head model) under the fusion layer: with AST loaded to train end to end
    (`fusion.train_audio_encoder`), else at the width of the stored features."""
    encoder = None
    if cfg.train_audio_encoder:
        encoder, _ = load_audio_encoder(audio_encoder_path)
        audio_dim = encoder.config.hidden_size
    else:
        any_id = next(iter(features.shard_of))
        audio_dim = int(features.get(any_id).shape[-1])
    return build_fusion_model(lm, cfg, audio_dim, fusion=True, audio_encoder=encoder)


def standardize_audio_inputs(model, cfg: FusionConfig, features, train_audio: list[str], device) -> None:
    """Fixed standardisation of the encoder's tokens (see AudioProjector), from the training audios
    only, when the settings ask for it: the stored tokens (frozen encoder) or the trained encoder's
    tokens before training; a resumed run recomputes the same values before load_state."""
    standardize = cfg.standardize_audio if cfg.standardize_audio is not None else not cfg.train_audio_encoder
    if not standardize or len(set(train_audio)) < 2:
        return
    if cfg.train_audio_encoder:  # the encoder runs over the training audios: on the device
        model.to(device)
    source = EncodedTokens(model, features) if cfg.train_audio_encoder else features
    model.projector.set_input_statistics(*audio_feature_statistics(source, train_audio))


def _audiobert_model(spec: TrainSpec, mlm, features=None, audio_dim: int | None = None):
    """The AudioBERT model of a spec: AST loaded to train, or the stored vectors' width (frozen variant)."""
    settings = AudioBertConfig(**spec.audiobert)
    encoder = None
    if settings.train_audio_encoder:
        encoder, _ = load_audio_encoder(spec.audio_encoder_path)
    elif audio_dim is None:
        audio_dim = int(features.get(next(iter(features.shard_of))).shape[-1])
    return build_audiobert_model(mlm, settings, encoder, audio_dim)


def parameter_groups(model, job: TrainJob, cfg: FusionConfig, lr: float) -> list[dict]:
    """The optimiser's groups: what trains, at the task's rate; a trained ITH audio encoder at
    `fusion.audio_encoder_lr_scale` x that rate (1, the method: one group)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    encoder = getattr(model, "audio_encoder", None) if job.model == "ith" else None
    if encoder is None or cfg.audio_encoder_lr_scale == 1.0:
        return [{"params": trainable}]
    in_encoder = {id(p) for p in encoder.parameters()}
    groups = [
        {"params": [p for p in trainable if id(p) not in in_encoder]},
        {"params": [p for p in trainable if id(p) in in_encoder], "lr": lr * cfg.audio_encoder_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def save_best(model, tokenizer, spec: TrainSpec, job: TrainJob, job_dir: Path, dev_accuracy: float, epoch: int) -> None:
    """Writes best/ atomically: a temp folder renamed over the old one.

    AudioBERT: its LM (and tokenizer) is the spec's `lm_path`, frozen; best/ holds every trained
    weight (LoRA, AST, projection) in audiobert.safetensors (the release saved LoRA only).
    """
    tmp = job_dir / f".tmp-best-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    if job.model == "audiobert":
        save_file(model.trainable_state(), str(tmp / "audiobert.safetensors"))
    else:
        model.mlm.save_pretrained(tmp / "lm")  # safetensors; tied weights handled by transformers
        tokenizer.save_pretrained(tmp / "lm")
    if job.model == "ith" and model.use_fusion:
        fusion_state = {
            f"{name}.{k}": v.detach().cpu().contiguous()
            for name in ("projector", "fusion", "audio_encoder")
            if getattr(model, name, None) is not None
            for k, v in getattr(model, name).state_dict().items()
        }
        save_file(fusion_state, str(tmp / "fusion.safetensors"))
    (tmp / "config.json").write_text(
        json.dumps(
            {
                "spec": spec.to_json(),
                "job": asdict(job),
                "dev_accuracy": dev_accuracy,
                "epoch": epoch,
                "audio_dim": _audio_dim(model),
            },
            indent=2,
        )
    )
    best = job_dir / "best"
    old = job_dir / f".old-best-{uuid.uuid4().hex}"
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    shutil.rmtree(old, ignore_errors=True)


def _audio_dim(model) -> int | None:
    if hasattr(model, "audio_dim"):  # AudioBertLM
        return model.audio_dim
    return model.projector.net[0].in_features if model.use_fusion else None


def load_best(job_dir: str | Path, device: str = "cpu"):
    """(FusionLM, tokenizer, saved config) from a job's best/ folder; safetensors only, nothing unpickled."""

    best = Path(job_dir) / "best"
    saved = json.loads((best / "config.json").read_text())
    if saved["job"]["model"] == "audiobert":
        spec = TrainSpec(**{**saved["spec"], "jobs": ()})
        mlm, tokenizer = load_lm(spec.lm_path)  # the frozen base LM, unchanged by training
        model = _audiobert_model(spec, mlm, audio_dim=saved["audio_dim"])
        model.load_trainable_state(load_file(str(best / "audiobert.safetensors")))
        return model.to(device).eval(), tokenizer, saved
    cfg = FusionConfig(**saved["spec"]["fusion"])
    mlm, tokenizer = load_lm(best / "lm")
    fusion = saved["job"]["model"] == "ith"
    encoder = None
    if fusion and cfg.train_audio_encoder:
        encoder, _ = load_audio_encoder(saved["spec"]["audio_encoder_path"])
    model = build_fusion_model(mlm, cfg, saved["audio_dim"], fusion=fusion, audio_encoder=encoder)
    if fusion:
        state = load_file(str(best / "fusion.safetensors"))
        for name in ("projector", "fusion", "audio_encoder"):
            module = getattr(model, name, None)
            if module is not None:
                module.load_state_dict({k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")})
    return model.to(device).eval(), tokenizer, saved


# -- the loop ---------------------------------------------------------------------------------------


def _dev_correct(logits: torch.Tensor, labels: torch.Tensor, task: str, pitch_ids: dict | None) -> torch.Tensor:
    if task == "pitch":
        lower, higher = pitch_ids["lower"], pitch_ids["higher"]
        pred = torch.where(logits[..., higher] > logits[..., lower], higher, lower)
    else:
        pred = logits.argmax(-1)
    return ((pred == labels) | (labels == -100)).all(-1)


EPOCH_END = "-epoch-end"


def _state_order(path: Path) -> tuple[int, bool]:
    # At one global step the end-of-epoch state comes after the mid-epoch one.
    return int(path.name.split("-")[1]), path.name.endswith(EPOCH_END)


def _latest_state(job_dir: Path) -> Path | None:
    states = sorted((p for p in (job_dir / "states").glob("step-*") if (p / PROGRESS).is_file()), key=_state_order)
    return states[-1] if states else None


def train_job(spec: TrainSpec, job: TrainJob) -> dict:

    cfg = spec.fusion_config
    job_dir = Path(spec.output_dir) / job.name
    if (job_dir / "DONE.json").is_file():
        return {**json.loads((job_dir / "DONE.json").read_text()), "cached": True}
    # Without a GPU, accelerate only forms a (gloo) process group when told it runs on CPU: with
    # cpu=False, `accelerate launch --multi_gpu --num_processes 2` starts two independent
    # single-process trainings (WORLD_SIZE=2 but DistributedType.NO).
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available()
    )
    set_seed(job.seed)
    features = feature_reader(spec) if job.model in AUDIO_MODELS else None
    model, tokenizer = build_model(spec, job, features)
    train_dl, dev_dl, sampler, counts = get_dataloaders(accelerator, spec, job, tokenizer, features)
    if job.model == "ith":
        train_audio = [a for item in train_dl.dataset.items for a in item.span_audio_ids]
        standardize_audio_inputs(model, cfg, features, train_audio, accelerator.device)
    if job.model == "audiobert" and spec.audiobert.get("standardize_audio"):
        # Fixed per-dimension statistics of the pooled audio vectors of the training clips, computed
        # before training (a resumed run recomputes the same values before load_state).
        train_audio = [a for item in train_dl.dataset.items for a in item.span_audio_ids]
        if len(set(train_audio)) >= 2:
            model.set_audio_statistics(*audio_statistics(model, features, train_audio))
    lr = cfg.learning_rates.get(job.task)
    require(lr is not None, f"fusion.learning_rates.{job.task}", "be set", None)
    # Only what trains (AudioBERT's LM is frozen under its LoRA adapters; ITH trains everything).
    optimizer = torch.optim.AdamW(parameter_groups(model, job, cfg, lr), lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_dl.dataset) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if spec.max_train_steps is not None:
        total_steps = min(total_steps, spec.max_train_steps)
    # Scheduler counted in per-process batches: accelerate steps it once per process per step.
    warmup = int(cfg.warmup_ratios.get(job.task, 0.0) * total_steps)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, warmup * accelerator.num_processes, total_steps * accelerator.num_processes
    )
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, dev_dl, scheduler)
    pitch_ids = pitch_token_ids(tokenizer) if job.task == "pitch" else None

    # loss_sum / loss_batches: the current epoch's batch losses so far (over every process).
    progress = {
        "epoch": 0,
        "batches_done": 0,
        "global_step": 0,
        "best_dev": -1.0,
        "best_epoch": None,
        "history": [],
        "loss_sum": 0.0,
        "loss_batches": 0,
    }
    state = _latest_state(job_dir)
    if state is not None:
        accelerator.load_state(str(state))
        progress = {"loss_sum": 0.0, "loss_batches": 0, **json.loads((state / PROGRESS).read_text())}
        if accelerator.is_main_process:
            logger.info(
                "%s: resumed from %s (epoch %d, batch %d)",
                job.name,
                state.name,
                progress["epoch"],
                progress["batches_done"],
            )
    resumed_from = state.name if state is not None else None

    pending = {"sum": 0.0, "batches": 0}  # this process's batch losses since the last sync

    def sync_loss() -> None:
        """Adds every process's pending batch losses to progress (a collective: all processes call it)."""
        total = pending["sum"]
        if accelerator.num_processes > 1:
            total = (
                accelerator.reduce(torch.tensor([total], dtype=torch.float64, device=accelerator.device), "sum").item()
                / accelerator.num_processes
            )
        progress["loss_sum"] += total
        progress["loss_batches"] += pending["batches"]
        pending["sum"], pending["batches"] = 0.0, 0

    def save_state(end_of_epoch: bool = False) -> None:
        sync_loss()
        target = job_dir / "states" / f"step-{progress['global_step']:07d}{EPOCH_END if end_of_epoch else ''}"
        # A folder of that name can only be the leftover of a save that crashed (a whole state at
        # or after this point would have been resumed from): start it afresh.
        if accelerator.is_main_process and target.exists():
            shutil.rmtree(target)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(target))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            # Written last: a state folder without it (a crash during save) is never resumed from.
            tmp = target / f".tmp-{PROGRESS}"
            tmp.write_text(json.dumps(progress))
            tmp.rename(target / PROGRESS)
            for old in (job_dir / "states").glob("step-*"):
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    started = time.perf_counter()
    seen = 0
    # Where the time goes (the rehearsal's unit costs): optimisation steps, dev scoring, saving.
    spent = {"steps": 0.0, "dev": 0.0, "saving": 0.0}
    finished = False
    while progress["epoch"] < cfg.epochs and not finished:
        epoch = progress["epoch"]
        # Through the prepared loader, not the sampler: accelerate's DataLoaderShard calls
        # sampler.set_epoch(its own iteration count) on every __iter__, which overrode a direct
        # sampler.set_epoch. Its count restarts at 0 in a resumed process (and in the loader
        # skip_first_batches builds), so the rest of the interrupted epoch, and every later
        # epoch, replayed epoch 0's permutation instead of their own.
        train_dl.set_epoch(epoch)
        model.train()
        loader = (
            accelerator.skip_first_batches(train_dl, progress["batches_done"]) if progress["batches_done"] else train_dl
        )
        step_started = time.perf_counter()
        for batch in loader:
            # Dropout as a function of (seed, step, rank): a resumed run replays the same masks no
            # matter how many draws data-loader iterators made from the global RNG meanwhile.
            set_seed(job.seed + 100_003 * progress["global_step"], device_specific=True)
            out = model(**batch)
            accelerator.backward(out.loss)
            if cfg.max_grad_norm is not None:
                # The reference clips every parameter's gradient (LM, AST, projector, fusion) at 1.0.
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            progress["batches_done"] += 1
            progress["global_step"] += 1
            pending["sum"] += float(out.loss.item())
            pending["batches"] += 1
            seen += batch["input_ids"].shape[0] * accelerator.num_processes
            if spec.max_train_steps is not None and progress["global_step"] >= spec.max_train_steps:
                finished = True
                break
            if spec.checkpoint_every_steps and progress["global_step"] % spec.checkpoint_every_steps == 0:
                spent["steps"] += time.perf_counter() - step_started
                saving = time.perf_counter()
                save_state()
                spent["saving"] += time.perf_counter() - saving
                step_started = time.perf_counter()
        spent["steps"] += time.perf_counter() - step_started
        # -- end of epoch: dev accuracy, dev-best weights, then the state --
        dev_started = time.perf_counter()
        model.eval()
        correct = []
        with torch.no_grad():
            for batch in dev_dl:
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                correct.append(
                    accelerator.gather_for_metrics(_dev_correct(logits, batch["labels"], job.task, pitch_ids))
                )
        dev_acc = float(torch.cat(correct).float().mean().item()) * 100 if correct else float("nan")
        sync_loss()
        # The mean over every batch of the epoch, those before a resume included (from progress).
        loss = progress["loss_sum"] / progress["loss_batches"] if progress["loss_batches"] else None
        progress["history"].append({"epoch": epoch, "dev_accuracy": round(dev_acc, 3), "loss": loss})
        spent["dev"] += time.perf_counter() - dev_started
        saving = time.perf_counter()
        if dev_acc > progress["best_dev"]:
            progress["best_dev"], progress["best_epoch"] = dev_acc, epoch
            if accelerator.is_main_process:
                save_best(accelerator.unwrap_model(model), tokenizer, spec, job, job_dir, dev_acc, epoch)
        if accelerator.is_main_process:
            logger.info(
                "%s epoch %d/%d: loss %s, dev accuracy %.2f (best %.2f at epoch %s)",
                job.name,
                epoch + 1,
                cfg.epochs,
                "n/a" if loss is None else f"{loss:.4f}",
                dev_acc,
                progress["best_dev"],
                None if progress["best_epoch"] is None else progress["best_epoch"] + 1,
            )
        progress["epoch"], progress["batches_done"], progress["loss_sum"], progress["loss_batches"] = (
            epoch + 1,
            0,
            0.0,
            0,
        )
        save_state(end_of_epoch=True)
        spent["saving"] += time.perf_counter() - saving
    seconds = time.perf_counter() - started
    report = {
        "job": job.name,
        "task": job.task,
        "model": job.model,
        "seed": job.seed,
        "world_size": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "steps": progress["global_step"],
        "best_dev": progress["best_dev"],
        "best_epoch": progress["best_epoch"],
        "history": progress["history"],
        "resumed_from": resumed_from,
        "seconds": round(seconds, 3),
        "train_samples_per_s": round(seen / seconds, 2) if seconds > 0 else None,
        "examples_seen": seen,
        **{f"seconds_{name}": round(value, 3) for name, value in spent.items()},
        "data": counts,
        "cached": False,
    }
    if accelerator.is_main_process:
        (job_dir / "train_log.json").write_text(json.dumps(report, indent=2))
        (job_dir / "DONE.json").write_text(json.dumps(report, indent=2))
    accelerator.wait_for_everyone()
    return report


def run(spec: TrainSpec) -> list[dict]:
    return [train_job(spec, job) for job in spec.jobs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="TrainSpec JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    reports = run(TrainSpec.from_json(args.config))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps([{k: r[k] for k in ("job", "steps", "best_dev", "world_size")} for r in reports]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
