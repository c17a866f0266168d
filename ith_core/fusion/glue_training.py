"""GLUE fine-tuning with and without imagined audio: one (task, system, seed) at a time.

The release's GLUE recipe (models/glue/), with its bugs fixed:

    sentence pair -> tokenizer(s1, s2)  (pairs: both sentences; single-sentence tasks: s1)
    spans (detected over s1 + "\\n" + s2) -> the token positions they cover, per segment
    FusionLM(AutoModelForSequenceClassification)   fusion at `fusion.fusion_layer`, as for AuditoryBench
    [CLS] -> dropout -> linear head             num_labels classes, or 1 (STS-B: regression, MSE)
    AdamW, cosine schedule with linear warm-up, gradient clipping, `glue.epochs` epochs

`system="bert"` is the same model without any fusion parameter (`FusionLM(fusion=False)`): the
baseline differs from ITH only in the audio path. Fixed from the release:
- the attention mask reaches every encoder layer (the release calls the layers without it, so
  padding is attended to and predictions depend on the batch's padding);
- spans are placed by their character offsets in their own sentence (the release searches the
  decoded pair text with `str.index`, which finds the first occurrence, in either sentence,
  or none after lower-casing/decoding changes the text, and then fuses position 0, [CLS]);
- a span without accepted audio is not fused (the release fuses a zero waveform for padding slots
  and decides "has audio" from the file name);
- the model that is scored is the last epoch's, chosen by nothing: the release keeps the epoch
  with the best dev metric and reports that dev metric, selecting on the very rows it reports;
- GLUE's own metrics per task (F1 and accuracy for QQP/MRPC, Pearson and Spearman for STS-B), not
  accuracy alone (`ith_core.evaluation.glue_metrics`).

    report, rows = train_and_evaluate(job, settings, lm_path, train_rows, dev_rows, spans, features, encoder_path)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

from ith_core.config import FusionConfig, GlueConfig, require
from ith_core.data.glue import PAIR_SEPARATOR
from ith_core.fusion.lm_inputs import EncodedItem, EpochPermutationSampler, FusionCollator, FusionDataset, SpanAudio
from ith_core.fusion.model import build_fusion_model
from ith_core.fusion.training import build_ith_model, standardize_audio_inputs
from ith_core.models.profiles import load_sequence_classifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueJob:
    task: str
    system: str  # "bert" (no audio) or "ith"
    seed: int
    num_labels: int  # 1: regression (STS-B)

    @property
    def name(self) -> str:
        return f"{self.task}-{self.system}-seed{self.seed}"

    @property
    def hears_audio(self) -> bool:
        return self.system == "ith"


def span_positions(
    offsets: list[tuple[int, int]], sequence_ids: list[int | None], first_length: int, start: int, end: int
) -> list[int]:
    """Token positions whose characters overlap [start, end) of the joined pair text.

    `offsets` are each token's characters within its own sentence; a token of the second
    sentence starts `first_length + 1` characters into the joined text (the separator is one
    character). Special tokens (sequence id None) and empty offsets are never part of a span.
    """
    out = []
    for position, ((a, b), seq) in enumerate(zip(offsets, sequence_ids)):
        if seq is None or b <= a:
            continue
        shift = 0 if seq == 0 else first_length + len(PAIR_SEPARATOR)
        if a + shift < end and b + shift > start:
            out.append(position)
    return out


def encode_rows(
    tokenizer, rows: list[dict], spans: dict[str, list[SpanAudio]], max_length: int, use_audio: bool
) -> tuple[list[EncodedItem], list[float], dict[str, list[int]], dict]:
    """(items, labels, segment ids, counts) for `GlueCollator`: token ids, and with audio each span's positions."""
    items, labels, segments = [], [], {}
    counts = {"spans": 0, "spans_truncated": 0}
    for row in rows:
        s1, s2 = row["sentence1"], row["sentence2"]
        enc = tokenizer(
            s1,
            s2,
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=True,
        )
        ids = list(enc["input_ids"])
        item = EncodedItem(
            example_id=row["example_id"],
            task=row["task"],
            split=row["split"],
            input_ids=ids,
            labels=[-100] * len(ids),
            mask_positions=[],
            target_ids=[],
        )
        if use_audio:
            sequence_ids = enc.sequence_ids()
            for span in spans.get(row["example_id"], []):
                positions = span_positions(enc["offset_mapping"], sequence_ids, len(s1), span.char_start, span.char_end)
                if not positions:  # cut off by max_length
                    counts["spans_truncated"] += 1
                    continue
                item.span_positions.append(positions)
                item.span_audio_ids.append(span.audio_id)
                item.span_texts.append(span.span_text)
                counts["spans"] += 1
        items.append(item)
        labels.append(float(row["label"]))
        if "token_type_ids" in enc:
            segments[row["example_id"]] = list(enc["token_type_ids"])
    return items, labels, segments, counts


class GlueCollator:
    """`FusionCollator`'s batch (ids, mask, span and audio tensors) with one label per example and,
    where the tokenizer gives them (BERT), the segment ids of the pair (padding: 0)."""

    def __init__(
        self, inner: FusionCollator, labels: dict[str, float], segments: dict[str, list[int]], regression: bool
    ) -> None:
        self.inner = inner
        self.labels = labels
        self.segments = segments
        self.regression = regression

    def __call__(self, items: list[EncodedItem]) -> dict[str, Any]:
        batch = self.inner(items)
        values = [self.labels[it.example_id] for it in items]
        batch["labels"] = torch.tensor(values, dtype=torch.float32 if self.regression else torch.long)
        if self.segments:
            types = torch.zeros_like(batch["input_ids"])
            for b, it in enumerate(items):
                row = self.segments[it.example_id]
                types[b, : len(row)] = torch.tensor(row)
            batch["token_type_ids"] = types
        return batch


def _build(job: GlueJob, fusion: FusionConfig, lm_path: str, encoder_path: str | None, features):
    model, tokenizer = load_sequence_classifier(lm_path, job.num_labels)
    if not job.hears_audio:
        return build_fusion_model(model, fusion, None, fusion=False), tokenizer
    return build_ith_model(model, fusion, encoder_path, features), tokenizer


def train_and_evaluate(
    job: GlueJob,
    glue: GlueConfig,
    fusion: FusionConfig,
    lm_path: str,
    train_rows: list[dict],
    dev_rows: list[dict],
    spans: dict[str, list[SpanAudio]],
    features=None,
    encoder_path: str | None = None,
    device: str = "cpu",
) -> tuple[dict, list[dict]]:
    """Fine-tunes one job on `train_rows`, predicts `dev_rows` with the last epoch's model.

    Rows: example_id, task, split, sentence1, sentence2 (None for single sentences), label (class
    id or score). Returns (report, prediction rows of GLUE_PREDICTION_SCHEMA).
    """
    require(
        len(train_rows) > 0, f"GLUE {job.task} train rows", "exist", 0, "check the GLUE folder and data.sample_limit"
    )
    require(len(dev_rows) > 0, f"GLUE {job.task} dev rows", "exist", 0, "check the GLUE folder and data.sample_limit")
    require(
        not job.hears_audio or features is not None,
        "features",
        "be given for an ITH job",
        None,
        "run the encode-audio stage first",
    )
    started = time.perf_counter()
    accelerator = Accelerator(cpu=not str(device).startswith("cuda"))
    set_seed(job.seed)
    model, tokenizer = _build(job, fusion, lm_path, encoder_path, features)
    regression = job.num_labels == 1
    train_items, train_labels, train_types, train_counts = encode_rows(
        tokenizer, train_rows, spans, glue.max_length, job.hears_audio
    )
    dev_items, dev_labels, dev_types, dev_counts = encode_rows(
        tokenizer, dev_rows, spans, glue.max_length, job.hears_audio
    )
    labels = {it.example_id: y for it, y in zip(train_items + dev_items, train_labels + dev_labels)}
    collator = GlueCollator(
        FusionCollator(tokenizer.pad_token_id, features if job.hears_audio else None),
        labels,
        {**train_types, **dev_types},
        regression,
    )
    sampler = EpochPermutationSampler(len(train_items), job.seed)
    train_dl = DataLoader(
        FusionDataset(train_items),
        batch_size=glue.batch_size,
        sampler=sampler,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(job.seed),
    )
    dev_dl = DataLoader(FusionDataset(dev_items), batch_size=glue.eval_batch_size, shuffle=False, collate_fn=collator)
    if job.hears_audio:
        train_audio = [a for item in train_items for a in item.span_audio_ids]
        standardize_audio_inputs(model, fusion, features, train_audio, accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=glue.learning_rate)
    total_steps = math.ceil(len(train_items) / glue.batch_size) * glue.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(glue.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, dev_dl, scheduler)
    history = []
    for epoch in range(glue.epochs):
        sampler.set_epoch(epoch)
        model.train()
        loss_sum, batches = 0.0, 0
        for batch in train_dl:
            out = model(**batch)
            accelerator.backward(out.loss)
            accelerator.clip_grad_norm_(model.parameters(), glue.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss_sum += float(out.loss.detach())
            batches += 1
        history.append({"epoch": epoch + 1, "train_loss": round(loss_sum / max(batches, 1), 5)})
        logger.info(
            "GLUE %s: epoch %d/%d, train loss %.4f", job.name, epoch + 1, glue.epochs, history[-1]["train_loss"]
        )
    model.eval()
    predictions: list[float] = []
    with torch.no_grad():
        for batch in dev_dl:
            logits = model(**batch).logits.float()
            values = logits[:, 0] if regression else logits.argmax(dim=-1)
            predictions.extend(float(v) for v in values.cpu())
    rows = [
        {
            "example_id": it.example_id,
            "task": job.task,
            "split": it.split,
            "system": job.system,
            "seed": job.seed,
            "label": labels[it.example_id],
            "prediction": p,
            "spans_fused": len(it.span_positions),
        }
        for it, p in zip(dev_items, predictions)
    ]
    report = {
        "job": job.name,
        "train_examples": len(train_items),
        "dev_examples": len(dev_items),
        "train_spans_fused": train_counts["spans"],
        "dev_spans_fused": dev_counts["spans"],
        "spans_truncated": train_counts["spans_truncated"] + dev_counts["spans_truncated"],
        "steps": total_steps,
        "history": history,
        "device": str(accelerator.device),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report, rows
