"""Stage drivers `train-span-detector` and `detect-spans`: the span detector fine-tuned on the train
split, then the spans of a sample of each chosen (task, split), one table per split.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time

import pyarrow as pa
from transformers import set_seed

from ith_core.config import RunConfig
from ith_core.models import profiles, span_detector
from ith_core.models.span_detector import evaluate_span_detector, gold_spans, resolve_device
from ith_core.stages.ingest import examples_of, ingest_key, span_training_rows
from ith_core.stages.skeleton import layout_for, reuse_or_clear, stage_key
from storage import run_files

logger = logging.getLogger(__name__)

SPAN_DETECTOR_VERSION = 2  # bump when a stage writes something else for the same inputs
SPANS_VERSION = 1

# Bump when a stage's code changes its output, so old results are not reused.


# -- span detection ------------------------------------------------------------------------------


def _detector_key(cfg: RunConfig, lm_path: str) -> str:
    span = cfg.resolved()["span"]
    training = {
        k: span[k]
        for k in (
            "epochs",
            "batch_size",
            "learning_rate",
            "weight_decay",
            "adam_epsilon",
            "lr_schedule",
            "max_length",
            "seed",
            "max_train_steps",
            "max_train_examples",
            "threshold",
        )
    }
    # Added later: left out while unset, so the keys of finished detectors stay what they were.
    if span["max_eval_examples"] is not None:
        training["max_eval_examples"] = span["max_eval_examples"]
    # What the base model is, not where it was loaded from: a worker with another ITH_HOME reuses the stage.
    return stage_key(
        run_files.SPAN_DETECTOR,
        SPAN_DETECTOR_VERSION,
        ingest_key(cfg),
        cfg.profile,
        profiles.model_identity(lm_path),
        training,
    )


def train_span_detector(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Fine-tunes the span detector on the train splits; evaluates it on dev before and after."""
    layout = layout_for(cfg)
    key = _detector_key(cfg, model_paths["lm"])
    if (report := reuse_or_clear(layout, run_files.SPAN_DETECTOR, key)) is not None:
        return report
    started = time.perf_counter()
    # The classification head is initialised when the model loads: seed first, so the same
    # settings give the same detector.
    set_seed(cfg.span.seed)
    model, tokenizer = profiles.load_span_base(model_paths["lm"])
    train_rows = span_training_rows(layout, cfg, ("train",))
    dev_rows = span_training_rows(layout, cfg, ("dev",))
    if cfg.span.max_eval_examples is not None:
        dev_rows = sample_rows(dev_rows, cfg.span.max_eval_examples, cfg.span.seed)
    untrained = evaluate_span_detector(model, tokenizer, dev_rows, cfg.span, cfg.device)
    training = span_detector.train_span_detector(model, tokenizer, train_rows, cfg.span, cfg.device, dev_rows=dev_rows)
    # The last epoch's dev evaluation is the trained model's: a second pass over dev would repeat it
    # (a pass over the whole dev split is minutes at paper size on a CPU).
    trained = training.pop("dev_metrics", None) or evaluate_span_detector(
        model, tokenizer, dev_rows, cfg.span, cfg.device
    )
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        layout.put_dir(tmp, *run_files.SPAN_MODEL)
    metrics = {"dev_untrained": untrained, "dev_trained": trained, "training": training}
    layout.write_json(metrics, *run_files.SPAN_METRICS)
    logger.info(
        "span detector: dev span F1 %.3f untrained -> %.3f trained (token F1 %.3f, %d steps on %d examples)",
        untrained["span_f1"],
        trained["span_f1"],
        trained["token_f1"],
        training["steps"],
        training["train_examples"],
    )
    report = {
        "train_examples": training["train_examples"],
        "dev_examples": len(dev_rows),
        "steps": training["steps"],
        "train_labels": training["labels"],
        "dev_span_f1_untrained": round(untrained["span_f1"], 4),
        "dev_span_f1": round(trained["span_f1"], 4),
        "dev_span_f1_per_epoch": [round(f, 4) for f in training.get("epoch_dev_span_f1", [])],
        "dev_token_f1": round(trained["token_f1"], 4),
        "dev_span_precision": round(trained["span_precision"], 4),
        "dev_span_recall": round(trained["span_recall"], 4),
        "device": str(resolve_device(cfg.device)),
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {"model": layout.url(*run_files.SPAN_MODEL), "metrics": layout.url(*run_files.SPAN_METRICS)},
    }
    layout.mark_done(run_files.SPAN_DETECTOR, key, report)
    return {**report, "cached": False}


def sample_rows(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A deterministic sample per (task, split): the `limit` rows with the smallest seeded hash.

    Independent of row order and of which other splits are in the run.
    """
    if limit is None or len(rows) <= limit:
        return rows

    def rank(row: dict) -> str:
        return hashlib.sha256(f"{seed}:{row['example_id']}".encode()).hexdigest()

    chosen = set(r["example_id"] for r in sorted(rows, key=rank)[:limit])
    return [r for r in rows if r["example_id"] in chosen]


def detect_spans(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Detects spans on a sample of each chosen (task, split); one table per split.

    `span.source=gold` writes the benchmark's own span columns instead, placed by a lower-cased
    string match (`spans.gold_spans`, the reference code's rule); gold spans that do not occur in
    their sentence are left out and counted (`gold_spans_not_found`).
    """
    layout = layout_for(cfg)
    d = cfg.data
    key = stage_key(
        run_files.SPANS,
        SPANS_VERSION,
        _detector_key(cfg, model_paths["lm"]),
        d.splits,
        d.sample_limit,
        d.sample_seed,
        cfg.span.inference_batch_size,
        cfg.span.source,
    )
    if (report := reuse_or_clear(layout, run_files.SPANS, key)) is not None:
        return report
    started = time.perf_counter()
    gold = cfg.span.source == "gold"
    if not gold:
        model, tokenizer = profiles.load_span_base(str(layout.local_dir(*run_files.SPAN_MODEL)))
    rows = examples_of(layout, cfg, d.splits)
    per_split: dict[str, dict] = {}
    for task in d.tasks:
        for split in d.splits:
            part = sample_rows(
                [r for r in rows if r["task"] == task and r["split"] == split], d.sample_limit, d.sample_seed
            )
            not_found = 0
            if gold:
                records, not_found = gold_spans(part)
            else:
                records = span_detector.detect_spans(model, tokenizer, part, cfg.span, cfg.device)
            counts: dict[str, int] = {}
            for rec in records:
                counts[rec.example_id] = counts.get(rec.example_id, 0) + 1
            spans = pa.Table.from_pylist(
                [{**vars(rec), "task": task, "split": split} for rec in records], schema=run_files.SPANS_SCHEMA
            )
            sample = pa.Table.from_pylist(
                [
                    {
                        "example_id": r["example_id"],
                        "task": task,
                        "split": split,
                        "n_spans": counts.get(r["example_id"], 0),
                    }
                    for r in part
                ],
                schema=run_files.SAMPLE_SCHEMA,
            )
            layout.write_table(spans, *run_files.spans_table(task, split))
            layout.write_table(sample, *run_files.sampled_examples(task, split))
            per_split[f"{task}/{split}"] = {
                "examples": len(part),
                "examples_with_spans": len(counts),
                "examples_without_spans": len(part) - len(counts),
                "spans": len(records),
                **({"gold_spans_not_found": not_found} if gold else {}),
            }
    report = {
        "source": cfg.span.source,
        "examples": sum(v["examples"] for v in per_split.values()),
        "spans": sum(v["spans"] for v in per_split.values()),
        "per_split": per_split,
        "sample_limit": d.sample_limit,
        **({} if gold else {"device": str(resolve_device(cfg.device))}),
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": layout.url(run_files.SPANS),
    }
    layout.mark_done(run_files.SPANS, key, report)
    return {**report, "cached": False}
