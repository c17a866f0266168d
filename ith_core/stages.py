"""Stage drivers: each reads its inputs from the run folder, calls the core logic, writes its
outputs atomically and marks the stage done last. Each returns a JSON-friendly report (row
counts, rejects by reason, timings, metrics) that also goes into `summary.json`.

A stage whose marker exists with the same key is skipped and returns its recorded report with
`cached: true`; a stage without a marker is cleared and redone. The key is a hash of exactly
the settings that change the stage's output, so an identical run reuses everything.

No Prefect here: `tasks/` wraps these functions, and tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ith_core import auditorybench, profiles
from ith_core.config import RunConfig
from ith_core.spans import detect_spans, evaluate_span_detector, gold_spans, resolve_device, train_span_detector
from storage.layout import RunLayout

logger = logging.getLogger(__name__)

# Bump when a stage's code changes its output, so old results are not reused.
# ingest 2: normalised_duplicate_row; span_detector 2: the base model by its identity, not its folder.
STAGE_VERSIONS = {"ingest": 2, "span_detector": 2, "spans": 1}

SPANS_SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("span_index", pa.int32()),
    ("span_text", pa.string()),
    ("char_start", pa.int32()),
    ("char_end", pa.int32()),
    ("score", pa.float32()),
])

SAMPLE_SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("n_spans", pa.int32()),
])


def layout_for(cfg: RunConfig) -> RunLayout:
    return RunLayout(cfg.run_root, cfg.effective_run_id)


def stage_key(stage: str, *parts: Any) -> str:
    blob = json.dumps([stage, STAGE_VERSIONS[stage], *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _cached(layout: RunLayout, stage: str, key: str) -> dict | None:
    report = layout.stage_done(stage, key)
    if report is not None:
        logger.info("stage %s: finished earlier in %s, reusing it", stage, layout.url(stage))
        return {**report, "cached": True}
    layout.clear_stage(stage)
    return None


def load_run_config(run_root: str, run_id: str, device: str | None = None) -> RunConfig:
    """A finished or started run's resolved config, pointed at `run_root` (the run may have moved)."""
    layout = RunLayout(run_root, run_id)
    if not layout.exists("config.json"):
        raise FileNotFoundError(f"no run {run_id!r} under {run_root} (missing {layout.url('config.json')})")
    raw = layout.read_json("config.json")
    raw.pop("fingerprint", None)
    raw.update(run_root=run_root, run_id=run_id)
    if device is not None:
        raw["device"] = device
    return RunConfig.from_dict(raw)


def write_config(cfg: RunConfig) -> str:
    layout = layout_for(cfg)
    layout.write_json({**cfg.resolved(), "run_id": cfg.effective_run_id, "fingerprint": cfg.fingerprint()},
                      "config.json")
    return layout.url()


# -- ingestion -------------------------------------------------------------------------------

def _ingest_key(cfg: RunConfig) -> str:
    if cfg.benchmark == "synthetic":
        from ith_core import synthetic

        return stage_key("ingest", "synthetic", synthetic.settings_hash(cfg.synthetic), cfg.data.tasks)
    # What the files are, not where they were read: a verified copy elsewhere reuses the stage. A
    # config built without `resolve_data` (a test calling a driver) falls back to the location.
    return stage_key("ingest", cfg.data.content or cfg.data.data_dir, cfg.data.tasks)


def resolve_data(cfg: RunConfig) -> RunConfig:
    """`cfg` with `data.content` filled in (`auditorybench.content_id`): what enters the run id.

    Reads the files where `--data-dir` or `$ITH_AUDITORYBENCH_DIR` point (a missing one is a
    `DataError` now, before a run folder exists); downloads nothing. The synthetic benchmark's
    files follow from its settings, which the run id already holds.
    """
    if cfg.benchmark != "auditorybench":
        return cfg
    content = auditorybench.content_id(cfg.data.data_dir, cfg.data.tasks)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"content": content})})


def data_source(cfg: RunConfig) -> str:
    """Where the run's benchmark files are: AuditoryBench (located, downloaded if needed) or the synthetic one."""
    if cfg.benchmark == "synthetic":
        from ith_core import synthetic

        return str(synthetic.ensure_benchmark(cfg.synthetic))
    return auditorybench.locate(cfg.data.data_dir)


def ingest_stage(cfg: RunConfig) -> dict:
    """Reads all four splits of the chosen tasks (later stages pick `data.splits` from them)."""
    layout = layout_for(cfg)
    key = _ingest_key(cfg)
    if (report := _cached(layout, "ingest", key)) is not None:
        return report
    started = time.perf_counter()
    source = data_source(cfg)
    result = auditorybench.ingest(source, cfg.data.tasks, auditorybench.SPLITS)
    layout.write_table(result.examples, "ingest", "examples.parquet")
    layout.write_table(result.rejects, "ingest", "rejects.parquet")
    layout.write_json(result.provenance, "ingest", "provenance.json")
    rejects_by_reason: dict[str, int] = {}
    flags_by_reason: dict[str, int] = {}
    for counts in result.counts.values():
        for reason, n in counts["rejects_by_reason"].items():
            rejects_by_reason[reason] = rejects_by_reason.get(reason, 0) + n
        for reason, n in counts["flags_by_reason"].items():
            flags_by_reason[reason] = flags_by_reason.get(reason, 0) + n
    report = {
        "benchmark": cfg.benchmark,
        "source": source,
        "rows_in": sum(c["rows_in"] for c in result.counts.values()),
        "accepted": result.examples.num_rows,
        "rejected": result.rejects.num_rows,
        "rejects_by_reason": rejects_by_reason,
        "flags_by_reason": flags_by_reason,
        "per_split": result.counts,
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {name: layout.url("ingest", name) for name in ("examples.parquet", "rejects.parquet")},
    }
    layout.mark_done("ingest", key, report)
    return {**report, "cached": False}


def _examples(layout: RunLayout, cfg: RunConfig, splits) -> list[dict]:
    table = layout.read_table("ingest", "examples.parquet")
    mask = pc.and_(pc.is_in(table["task"], pa.array(cfg.data.tasks)), pc.is_in(table["split"], pa.array(splits)))
    return table.filter(mask).select(["example_id", "task", "split", "sentence", "spans"]).to_pylist()


# -- models --------------------------------------------------------------------------------------

def tiny_corpus(cfg: RunConfig) -> list[str]:
    """What the tiny profile's tokenizers are trained on: train sentences, gold spans and answers.

    The answers (and animal options) are in it because the sentences hold [MASK] where the answer
    goes: a real LM's vocabulary knows animal names, and the tiny one should too. The synthetic
    benchmark's made-up source names are left out.
    """
    layout = layout_for(cfg)
    table = layout.read_table("ingest", "examples.parquet")
    table = table.filter(pc.and_(pc.is_in(table["task"], pa.array(cfg.data.tasks)), pc.equal(table["split"], "train")))
    rows = table.select(["sentence", "spans", "answer", "options"]).to_pylist()
    corpus = ([r["sentence"] for r in rows] + [s for r in rows for s in r["spans"]] + [r["answer"] for r in rows]
              + [o for r in rows for o in (r["options"] or [])])
    if cfg.benchmark == "synthetic":
        # Made-up source names must stay unknown to the LM: a name learnt as a token would let
        # the text-only model memorise the train names' answers.
        from ith_core import synthetic

        corpus = synthetic.without_source_names(corpus, cfg.synthetic)
    return corpus


def prepare_models(cfg: RunConfig) -> dict[str, str]:
    """Role -> local model folder; builds the tiny profile once, finds the paper checkpoints.

    The paper profile looks only for the roles the run's systems need (`fusion_stage.
    required_roles`: a text-only table needs no generator). With `imagine.generator=tone` the
    generator is the synthetic benchmark's tone table and Stable Audio is not looked for.
    """
    from ith_core.fusion_stage import required_roles

    corpus = tiny_corpus(cfg) if cfg.profile == "tiny" else None
    tone = cfg.imagine.generator == "tone"
    if tone and cfg.benchmark != "synthetic":
        from ith_core.config import ConfigError

        raise ConfigError("imagine.generator=tone renders the hidden tones of the synthetic benchmark's sources and "
                          f"has nothing to render for {cfg.benchmark}; use --benchmark synthetic or "
                          "imagine.generator=stable-audio")
    needed = required_roles(cfg)
    skip = tuple(r for r in profiles.ROLES if r not in needed or (r == "generator" and tone))
    paths = profiles.resolve_models(cfg.profile, cfg.model_dir, corpus=corpus, skip_roles=skip)
    if tone and "generator" in needed:
        from ith_core import synthetic

        paths["generator"] = synthetic.tone_generator_dir(cfg.synthetic)
    return {role: str(path) for role, path in paths.items()}


# -- span detection ------------------------------------------------------------------------------

def _detector_key(cfg: RunConfig, lm_path: str) -> str:
    span = cfg.resolved()["span"]
    training = {k: span[k] for k in ("epochs", "batch_size", "learning_rate", "weight_decay", "adam_epsilon",
                                     "lr_schedule", "max_length", "seed", "max_train_steps", "max_train_examples",
                                     "threshold")}
    # What the base model is, not where it was loaded from: a worker with another ITH_HOME reuses the stage.
    return stage_key("span_detector", _ingest_key(cfg), cfg.profile, profiles.model_identity(lm_path), training)


def span_detector_stage(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Fine-tunes the span detector on the train splits; evaluates it on dev before and after."""
    layout = layout_for(cfg)
    key = _detector_key(cfg, model_paths["lm"])
    if (report := _cached(layout, "span_detector", key)) is not None:
        return report
    started = time.perf_counter()
    # The classification head is initialised when the model loads: seed first, so the same
    # settings give the same detector.
    from transformers import set_seed

    set_seed(cfg.span.seed)
    model, tokenizer = profiles.load_span_base(model_paths["lm"])
    train_rows = _examples(layout, cfg, ("train",))
    dev_rows = _examples(layout, cfg, ("dev",))
    untrained = evaluate_span_detector(model, tokenizer, dev_rows, cfg.span, cfg.device)
    training = train_span_detector(model, tokenizer, train_rows, cfg.span, cfg.device, dev_rows=dev_rows)
    trained = evaluate_span_detector(model, tokenizer, dev_rows, cfg.span, cfg.device)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        layout.put_dir(tmp, "span_detector", "model")
    metrics = {"dev_untrained": untrained, "dev_trained": trained, "training": training}
    layout.write_json(metrics, "span_detector", "metrics.json")
    logger.info("span detector: dev span F1 %.3f untrained -> %.3f trained (token F1 %.3f, %d steps on %d examples)",
                untrained["span_f1"], trained["span_f1"], trained["token_f1"], training["steps"],
                training["train_examples"])
    report = {
        "train_examples": training["train_examples"],
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
        "outputs": {"model": layout.url("span_detector", "model"), "metrics": layout.url("span_detector", "metrics.json")},
    }
    layout.mark_done("span_detector", key, report)
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


def spans_stage(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Detects spans on a sample of each chosen (task, split); one table per split.

    `span.source=gold` writes the benchmark's own span columns instead, placed by a lower-cased
    string match (`spans.gold_spans`, the reference code's rule); gold spans that do not occur in
    their sentence are left out and counted (`gold_spans_not_found`).
    """
    layout = layout_for(cfg)
    d = cfg.data
    key = stage_key("spans", _detector_key(cfg, model_paths["lm"]), d.splits, d.sample_limit, d.sample_seed,
                    cfg.span.inference_batch_size, cfg.span.source)
    if (report := _cached(layout, "spans", key)) is not None:
        return report
    started = time.perf_counter()
    gold = cfg.span.source == "gold"
    if not gold:
        model, tokenizer = profiles.load_span_base(str(layout.local_dir("span_detector", "model")))
    rows = _examples(layout, cfg, d.splits)
    per_split: dict[str, dict] = {}
    for task in d.tasks:
        for split in d.splits:
            part = sample_rows([r for r in rows if r["task"] == task and r["split"] == split], d.sample_limit,
                               d.sample_seed)
            not_found = 0
            if gold:
                records, not_found = gold_spans(part)
            else:
                records = detect_spans(model, tokenizer, part, cfg.span, cfg.device)
            counts: dict[str, int] = {}
            for rec in records:
                counts[rec.example_id] = counts.get(rec.example_id, 0) + 1
            spans = pa.Table.from_pylist(
                [{**vars(rec), "task": task, "split": split} for rec in records], schema=SPANS_SCHEMA)
            sample = pa.Table.from_pylist(
                [{"example_id": r["example_id"], "task": task, "split": split, "n_spans": counts.get(r["example_id"], 0)}
                 for r in part], schema=SAMPLE_SCHEMA)
            layout.write_table(spans, "spans", f"{task}-{split}.parquet")
            layout.write_table(sample, "spans", f"{task}-{split}.examples.parquet")
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
        "outputs": layout.url("spans"),
    }
    layout.mark_done("spans", key, report)
    return {**report, "cached": False}


def write_summary(cfg: RunConfig, reports: dict[str, dict], seconds: float) -> str:
    layout = layout_for(cfg)
    summary = {
        "run_id": cfg.effective_run_id,
        "profile": cfg.profile,
        "run_dir": layout.url(),
        "fingerprint": cfg.fingerprint(),
        "stages": reports,
        "seconds": round(seconds, 3),
    }
    layout.write_json(summary, "summary.json")
    return layout.url("summary.json")


# -- markdown summaries (Prefect artifacts, stage logs) --------------------------------------

def ingest_markdown(run_id: str, report: dict, profile: str, benchmark: str) -> str:
    from ith_core.report import profile_statement

    lines = [f"# Ingestion of run {run_id}", "", f"**{profile_statement(profile, benchmark)}**", "",
             f"{report['rows_in']} rows read: {report['accepted']} accepted, {report['rejected']} rejected "
             f"(rows in = accepted + rejected). Source: `{report['source']}`.", "",
             "| task/split | rows in | accepted | rejected | rejects by reason | flags (kept) |",
             "|---|---:|---:|---:|---|---|"]
    for name, counts in sorted(report["per_split"].items()):
        rejects = ", ".join(f"{k} {v}" for k, v in counts["rejects_by_reason"].items() if v) or "-"
        flags = ", ".join(f"{k} {v}" for k, v in counts["flags_by_reason"].items() if v) or "-"
        lines.append(f"| {name} | {counts['rows_in']} | {counts['accepted']} | {counts['rejected']} | {rejects} | {flags} |")
    return "\n".join(lines) + "\n"


def spans_markdown(run_id: str, detector: dict, spans: dict, profile: str, benchmark: str) -> str:
    from ith_core.report import profile_statement

    lines = [f"# Span detection of run {run_id}", "", f"**{profile_statement(profile, benchmark)}**", "",
             f"Dev span F1 {detector['dev_span_f1_untrained']:.3f} untrained -> {detector['dev_span_f1']:.3f} "
             f"trained (token F1 {detector['dev_token_f1']:.3f}, span precision {detector['dev_span_precision']:.3f}, "
             f"recall {detector['dev_span_recall']:.3f}; {detector['steps']} steps on {detector['train_examples']} "
             "train examples).", ""]
    if detector.get("dev_span_f1_per_epoch"):
        lines += ["Dev span F1 after each epoch: " + ", ".join(
            f"epoch {e + 1} {f:.3f}" for e, f in enumerate(detector["dev_span_f1_per_epoch"])) + ".", ""]
    lines += ["| task/split | examples | with spans | without | spans |", "|---|---:|---:|---:|---:|"]
    for name, counts in sorted(spans["per_split"].items()):
        lines.append(f"| {name} | {counts['examples']} | {counts['examples_with_spans']} | "
                     f"{counts['examples_without_spans']} | {counts['spans']} |")
    return "\n".join(lines) + "\n"
