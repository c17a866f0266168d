"""Stage 1 of the method: detect the spans of a sentence that describe a sound.

A token classifier (`AutoModelForTokenClassification`, 2 labels: 1 inside an auditory span,
0 outside) over any BERT-family checkpoint.

Labels follow the method: each gold span is tokenized on its own and the FIRST place in the
sentence where that token sequence occurs is marked 1. A span whose tokens do not occur in the
(truncated) sentence gets no label; it is counted, never an error. Two small, documented
liberties: surrounding whitespace and trailing sentence punctuation (`.,;:!?`) are stripped from
the span first (a span "whine." still labels "whine," in the sentence), and for byte-level BPE
tokenizers the span is also tried with a leading space, since there a word's tokens depend on it.

Inference turns each run of consecutive label-1 tokens into one span; the span text is the
sentence's own characters between the run's first and last token (so wordpieces come back
re-joined, in the sentence's casing), with character offsets. Several spans per sentence are
kept.

Run it through the pipeline (`ith run`), or directly:

    examples = ...  # pyarrow table with example_id, sentence, spans
    model, tokenizer = train_span_detector(model, tokenizer, train_rows, cfg)
    spans = detect_spans(model, tokenizer, rows, cfg)
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_constant_schedule, get_linear_schedule_with_warmup

from ith_core.config import ConfigError, SpanDetectorConfig

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
_TRAILING_PUNCT = ".,;:!?"


@dataclass(frozen=True)
class SpanRecord:
    """One detected span of one example."""

    example_id: str
    span_index: int
    span_text: str
    char_start: int
    char_end: int
    score: float


@dataclass
class LabelStats:
    spans_total: int = 0
    spans_found: int = 0
    spans_not_found: int = 0
    examples: int = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


def clean_span(span: str) -> str:
    return span.strip().rstrip(_TRAILING_PUNCT).strip()


def _find_first(haystack: Sequence[int], needle: Sequence[int], allowed: Sequence[bool]) -> int:
    n = len(needle)
    for start in range(len(haystack) - n + 1):
        if all(allowed[start : start + n]) and list(haystack[start : start + n]) == list(needle):
            return start
    return -1


def build_token_labels(
    sentence: str, spans: Sequence[str], tokenizer, max_length: int
) -> tuple[dict, list[int], list[bool]]:
    """Tokenizes a sentence and labels the first occurrence of each gold span.

    Returns the encoding (input_ids, attention_mask, offset_mapping), the labels (-100 on
    special tokens) and, per span, whether it was found.
    """
    encoding = tokenizer(
        sentence, truncation=True, max_length=max_length, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    ids = encoding["input_ids"]
    special = encoding.pop("special_tokens_mask")
    content = [not s for s in special]
    labels = [IGNORE_INDEX if s else 0 for s in special]
    found = []
    for span in spans:
        text = clean_span(span)
        start = -1
        if text:
            for variant in (text, " " + text):
                needle = tokenizer(variant, add_special_tokens=False)["input_ids"]
                if needle:
                    start = _find_first(ids, needle, content)
                    if start >= 0:
                        break
        if start >= 0:
            for i in range(start, start + len(needle)):
                labels[i] = 1
        found.append(start >= 0)
    return encoding, labels, found


def labels_to_spans(
    sentence: str,
    token_labels: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    scores: Sequence[float] | None = None,
) -> list[tuple[int, int, str, float]]:
    """Runs of consecutive label-1 tokens -> (char_start, char_end, text, mean score).

    Tokens labelled -100 (special, padding) and tokens with an empty offset end a run.
    """
    spans: list[tuple[int, int, str, float]] = []
    run: list[int] = []

    def close() -> None:
        if run:
            start, end = offsets[run[0]][0], offsets[run[-1]][1]
            mean = sum(scores[i] for i in run) / len(run) if scores is not None else 1.0
            spans.append((start, end, sentence[start:end], float(mean)))
            run.clear()

    for i, label in enumerate(token_labels):
        begin, end = offsets[i]
        if label == 1 and end > begin:
            run.append(i)
        else:
            close()
    close()
    return spans


# -- data ------------------------------------------------------------------------------------


def encode_examples(rows: Sequence[dict], tokenizer, max_length: int) -> tuple[list[dict], LabelStats]:
    """rows: dicts with `sentence` and `spans`. Returns model features and label statistics."""
    stats = LabelStats()
    features = []
    for row in rows:
        encoding, labels, found = build_token_labels(row["sentence"], row["spans"], tokenizer, max_length)
        stats.examples += 1
        stats.spans_total += len(found)
        stats.spans_found += sum(found)
        stats.spans_not_found += len(found) - sum(found)
        features.append(
            {
                "input_ids": encoding["input_ids"],
                "attention_mask": encoding["attention_mask"],
                "labels": labels,
                "offset_mapping": encoding["offset_mapping"],
            }
        )
    return features, stats


def _collate(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in batch)
    out = {
        "input_ids": torch.full((len(batch), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(batch), width), dtype=torch.long),
        "labels": torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long),
    }
    for i, f in enumerate(batch):
        n = len(f["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(f["input_ids"])
        out["attention_mask"][i, :n] = torch.tensor(f["attention_mask"])
        out["labels"][i, :n] = torch.tensor(f["labels"])
    return out


def _loader(features: list[dict], tokenizer, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        features, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=lambda b: _collate(b, pad_id)
    )


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when there is a GPU, else cpu; an explicit cuda device must exist (ConfigError)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = (
                f"{count} CUDA device{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1})"
                if count
                else f"no CUDA device (torch {torch.__version__}, "
                f"{'built with CUDA ' + torch.version.cuda if torch.version.cuda else 'a CPU-only build'})"
            )
            raise ConfigError(
                f"device must be a device this machine has, got {device!r}: torch sees {seen}; use --device auto or cpu"
            )
    return torch.device(device)


def _progress(iterable, total: int, desc: str):
    # A progress bar on a terminal only: workers and CI logs get periodic log lines instead.
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, leave=False)
    return iterable


def gold_spans(rows: Sequence[dict]) -> tuple[list[SpanRecord], int]:
    """The rows' gold span columns as span records, and how many of them were not found.

    Each gold span is placed at the first occurrence of its lower-cased text in the lower-cased
    sentence: the reference code's rule for fusion positions (it searches the pitch spans this
    way; for animal it lower-cases only the span). A span that does not occur gets no record, and
    is counted, where the reference falls back to fusing at [CLS].
    """
    records: list[SpanRecord] = []
    not_found = 0
    for row in rows:
        index = 0
        for span in row["spans"]:
            text = span.strip()
            # Case-insensitive search in the original string, so offsets stay the sentence's own.
            found = re.search(re.escape(text), row["sentence"], flags=re.IGNORECASE) if text else None
            if found is None:
                not_found += 1
                continue
            records.append(SpanRecord(row["example_id"], index, found.group(0), found.start(), found.end(), 1.0))
            index += 1
    return records, not_found


# -- training ----------------------------------------------------------------------------------


def train_span_detector(
    model,
    tokenizer,
    train_rows: Sequence[dict],
    cfg: SpanDetectorConfig,
    device: str = "auto",
    dev_rows: Sequence[dict] | None = None,
) -> dict:
    """Fine-tunes `model` in place with AdamW (constant or linearly decaying lr); returns a training report.

    With `dev_rows`, the dev span F1 after every epoch is logged and reported (`epoch_dev_span_f1`):
    evaluation draws no random numbers, so the training is the same with or without it. The last
    epoch's whole evaluation is the trained model's (`dev_metrics`): callers need not evaluate again.
    """
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rows = list(train_rows)
    if cfg.max_train_examples is not None and len(rows) > cfg.max_train_examples:
        rows = random.Random(cfg.seed).sample(rows, cfg.max_train_examples)
    features, stats = encode_examples(rows, tokenizer, cfg.max_length)
    for f in features:
        f.pop("offset_mapping")
    if not features:
        raise ValueError("span detector training needs at least one train example; none were given")

    target = resolve_device(device)
    accelerator = Accelerator(cpu=target.type == "cpu")
    loader = _loader(features, tokenizer, cfg.batch_size, shuffle=True, seed=cfg.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, eps=cfg.adam_epsilon
    )
    steps_per_epoch = math.ceil(len(features) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_train_steps is not None:
        total_steps = min(total_steps, cfg.max_train_steps)
    scheduler = (
        get_constant_schedule(optimizer)
        if cfg.lr_schedule == "constant"
        else get_linear_schedule_with_warmup(optimizer, 0, total_steps)
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    model.train()
    step, losses, dev_f1, dev_metrics, started = 0, [], [], None, time.perf_counter()
    for epoch in range(cfg.epochs):
        epoch_losses = []
        for batch in _progress(loader, steps_per_epoch, f"span detector epoch {epoch + 1}/{cfg.epochs}"):
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            epoch_losses.append(loss.item())
            step += 1
            # About ten progress lines per run in the run log (the bar above is for the console).
            if step % max(total_steps // 10, 1) == 0 and step < total_steps:
                logger.info(
                    "span detector: step %d of %d (epoch %d/%d), recent loss %.4f",
                    step,
                    total_steps,
                    epoch + 1,
                    cfg.epochs,
                    sum(epoch_losses[-20:]) / len(epoch_losses[-20:]),
                )
            if step >= total_steps:
                break
        losses.append(sum(epoch_losses) / max(len(epoch_losses), 1))
        dev = ""
        if dev_rows is not None:
            model.eval()
            dev_metrics = evaluate_span_detector(accelerator.unwrap_model(model), tokenizer, dev_rows, cfg, device)
            dev_f1.append(dev_metrics["span_f1"])
            model.train()
            dev = f", dev span F1 {dev_f1[-1]:.3f}"
        logger.info(
            "span detector epoch %d/%d: mean loss %.4f%s (step %d of %d)",
            epoch + 1,
            cfg.epochs,
            losses[-1],
            dev,
            step,
            total_steps,
        )
        if step >= total_steps:
            break
    model = accelerator.unwrap_model(model)
    model.eval()
    return {
        "train_examples": len(features),
        "steps": step,
        "epochs_run": len(losses),
        "epoch_mean_loss": losses,
        **({"epoch_dev_span_f1": dev_f1, "dev_metrics": dev_metrics} if dev_rows is not None else {}),
        "seconds": time.perf_counter() - started,
        "labels": stats.as_dict(),
    }


# -- inference and evaluation ------------------------------------------------------------------


@torch.no_grad()
def _predict(
    model, tokenizer, features: list[dict], batch_size: int, threshold: float, device: str
) -> list[tuple[list[int], list[float]]]:
    """Per example: predicted label per token (-100 on special/padding) and P(label 1)."""
    target = resolve_device(device)
    model.to(target).eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    results: list[tuple[list[int], list[float]]] = [([], [])] * len(features)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for index in _progress(batches, len(batches), "detecting spans"):
        batch = _collate([features[i] for i in index], pad_id)
        logits = model(
            input_ids=batch["input_ids"].to(target), attention_mask=batch["attention_mask"].to(target)
        ).logits
        probs = logits.float().softmax(-1)[..., 1].cpu()
        for row, i in enumerate(index):
            n = len(features[i]["input_ids"])
            p = probs[row, :n].tolist()
            gold = features[i]["labels"]
            labels = [IGNORE_INDEX if gold[t] == IGNORE_INDEX else int(p[t] >= threshold) for t in range(n)]
            results[i] = (labels, p)
    return results


def detect_spans(
    model, tokenizer, rows: Sequence[dict], cfg: SpanDetectorConfig, device: str = "auto"
) -> list[SpanRecord]:
    """Every detected span of every row (dicts with `example_id`, `sentence`), batched."""
    features, _ = encode_examples([{"sentence": r["sentence"], "spans": []} for r in rows], tokenizer, cfg.max_length)
    predictions = _predict(model, tokenizer, features, cfg.inference_batch_size, cfg.threshold, device)
    records = []
    for row, feature, (labels, probs) in zip(rows, features, predictions):
        found = labels_to_spans(row["sentence"], labels, feature["offset_mapping"], probs)
        for k, (start, end, text, score) in enumerate(found):
            records.append(SpanRecord(row["example_id"], k, text, start, end, score))
    return records


def evaluate_span_detector(
    model, tokenizer, rows: Sequence[dict], cfg: SpanDetectorConfig, device: str = "auto"
) -> dict:
    """Token-level F1 (label 1) and span-level exact-match precision, recall and F1.

    Gold spans are the runs of the method's labels, so a gold span absent from the sentence is
    neither a target nor a miss; predicted spans are the runs of predicted labels.
    """
    features, stats = encode_examples(rows, tokenizer, cfg.max_length)
    predictions = _predict(model, tokenizer, features, cfg.inference_batch_size, cfg.threshold, device)
    tp = fp = fn = 0
    span_tp = span_pred = span_gold = 0
    for row, feature, (labels, _) in zip(rows, features, predictions):
        gold = feature["labels"]
        for g, p in zip(gold, labels):
            if g == IGNORE_INDEX:
                continue
            tp += g == 1 and p == 1
            fp += g == 0 and p == 1
            fn += g == 1 and p == 0
        gold_spans = {(s, e) for s, e, _, _ in labels_to_spans(row["sentence"], gold, feature["offset_mapping"])}
        pred_spans = {(s, e) for s, e, _, _ in labels_to_spans(row["sentence"], labels, feature["offset_mapping"])}
        span_tp += len(gold_spans & pred_spans)
        span_pred += len(pred_spans)
        span_gold += len(gold_spans)

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r else 0.0

    token_p = tp / (tp + fp) if tp + fp else 0.0
    token_r = tp / (tp + fn) if tp + fn else 0.0
    span_p = span_tp / span_pred if span_pred else 0.0
    span_r = span_tp / span_gold if span_gold else 0.0
    return {
        "examples": len(rows),
        "token_precision": token_p,
        "token_recall": token_r,
        "token_f1": f1(token_p, token_r),
        "span_precision": span_p,
        "span_recall": span_r,
        "span_f1": f1(span_p, span_r),
        "gold_spans": span_gold,
        "predicted_spans": span_pred,
        "labels": stats.as_dict(),
    }
