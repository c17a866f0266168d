"""Run folders for the report tests.

`build_tiny_run` runs the real stages (ingest, span detector, spans, imagine: plan, shards,
collect) on the tiny profile with tiny settings, then writes the fusion stages' outputs by their
contract (every system's predictions, aggregated by the real functions, training logs, summary
entries): training every system would cost minutes, and tests/test_pipeline.py checks that a
real run writes the same contract. `build_hostile_run` fabricates a small run by the real schemas whose sentence and
span text are HTML/Markdown injections, with no span detector and no fusion outputs.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pyarrow as pa

from ith_core.config import RunConfig
from ith_core.evaluation.scoring import accuracy_table
from ith_core.stages import imagine as imagine_stage
from ith_core.stages import ingest as ingest_stage
from ith_core.stages import skeleton
from ith_core.stages import spans as spans_stage
from storage.audio_store import CANDIDATES_SCHEMA, AudioStore, pcm16
from storage.layout import RunLayout

# As tests/test_imagine.py: 1 s clips, 3 steps, 2 candidates, thresholds inside the tiny CLAP's range.
TINY_IMAGINE = {
    "num_inference_steps": 3,
    "duration_s": 1.0,
    "num_candidates": 2,
    "latent_length": "exact",
    "batch_size": 4,
    "shard_size": 8,
    "retries": 0,
    "thresholds": {"animal": 0.19, "pitch": 0.19},
}

HOSTILE_SPAN = '<script>document.title="pwned"</script>'
HOSTILE_SENTENCE = 'The <img src=x onerror="document.title=1"> | makes a [MASK] sound: ' + HOSTILE_SPAN + "."
HOSTILE_PREDICTION = "</td><script>alert(1)</script>"


def tiny_run_config(root: str, run_id: str, bench_dir) -> RunConfig:
    return RunConfig.for_profile(
        "tiny",
        run_root=str(root),
        run_id=run_id,
        device="cpu",
        data={"data_dir": str(bench_dir), "tasks": ["animal", "pitch"], "splits": ["dev", "test"], "sample_limit": 3},
        span={"max_train_steps": 20, "max_train_examples": 256},
        imagine=TINY_IMAGINE,
    )


def _coin(*parts) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


# Every system of the table, with the share of rows each gets right in the fabricated predictions.
FABRICATED_SYSTEMS = {
    "bert-zero-shot": 0.2,
    "bert-text": 0.4,
    "roberta-zero-shot": 0.2,
    "roberta-text": 0.4,
    "audiobert": 0.55,
    "ith": 0.7,
}


def write_fusion_outputs(layout: RunLayout, seeds=(42,)) -> dict:
    """The fusion stages' outputs by contract (every system of the table), with deterministic made-up
    predictions, through the real aggregation functions."""
    from ith_core.evaluation.scoring import (
        UNIT_NAMES,
        bootstrap_units,
        majority_baseline,
        paired_comparisons,
        results_dict,
        seed_mean_table,
    )
    from ith_core.stages import fusion as fusion_stage

    examples = {r["example_id"]: r for r in layout.read_table("ingest", "examples.parquet").to_pylist()}
    selection = layout.read_table("imagine", "selection.parquet").to_pylist()
    used: dict[str, tuple[list, list]] = {}
    for row in selection:
        if row["accepted"] and row["span_index"] >= 0:
            spans, ids = used.setdefault(row["example_id"], ([], []))
            spans.append(row["span_text"])
            ids.append(row["audio_id"])
    sampled = sorted({r["example_id"] for r in selection})
    predictions = []
    for system, p_correct in FABRICATED_SYSTEMS.items():
        for seed in seeds if fusion_stage.SYSTEMS[system].trained else (fusion_stage.ZERO_SHOT_SEED,):
            for example_id in sampled:
                ex = examples[example_id]
                correct = _coin(seed, system, example_id) < p_correct
                wrong = "lower" if ex["answer"] == "higher" else "higher" if ex["task"] == "pitch" else "dog"
                prediction = ex["answer"] if correct else wrong
                spans, ids = used.get(example_id, ([], [])) if system in ("ith", "audiobert") else ([], [])
                predictions.append(
                    {
                        "example_id": example_id,
                        "task": ex["task"],
                        "split": ex["split"],
                        "model": system,
                        "seed": seed,
                        "prediction": prediction,
                        "gold": ex["answer"],
                        "correct": correct,
                        "mc_prediction": None,
                        "mc_correct": None,
                        "spans_used": spans,
                        "audio_ids": ids,
                    }
                )
    # Some predictions are an injection: predictions are decoded LM output, i.e. data. Every text-only
    # prediction of an example where ITH is right and text-only wrong: the case studies show one of each task.
    by_key = {(p["example_id"], p["model"], p["seed"]): p for p in predictions}
    hostile = [
        p
        for p in predictions
        if p["model"] == "bert-text" and not p["correct"] and by_key[(p["example_id"], "ith", p["seed"])]["correct"]
    ]
    assert hostile, "the made-up predictions have no example where ITH is right and text-only wrong"
    for prediction in hostile:
        prediction["prediction"] = HOSTILE_PREDICTION
    units = bootstrap_units(list(examples.values()), "auditorybench")
    table = accuracy_table(predictions, n_boot=200, clusters=units)
    layout.write_table(pa.Table.from_pylist(predictions), "fusion", "predictions.parquet")
    layout.write_table(pa.Table.from_pylist(table), "fusion", "results.parquet")
    train_reports = []
    for system in (s for s in FABRICATED_SYSTEMS if fusion_stage.SYSTEMS[s].trained):
        for seed in seeds:
            jobs = [
                {
                    "job": f"{system}-{task}-seed{seed}",
                    "task": task,
                    "model": system,
                    "seed": seed,
                    "steps": 12,
                    "best_dev": 50.0,
                    "best_epoch": 2,
                    "seconds": 3.5,
                    "world_size": 1,
                    "history": [
                        {
                            "epoch": e,
                            "dev_accuracy": 30.0 + 10 * e + (5 if system == "ith" else 0),
                            "loss": 2.0 / (e + 1),
                        }
                        for e in range(3)
                    ],
                }
                for task in ("animal", "pitch")
            ]
            report = {"system": system, "seed": seed, "jobs": jobs, "seconds": 7.0}
            layout.write_json(
                {"key": "fabricated", "report": report}, fusion_stage.train_stage_name(system, seed), "_DONE.json"
            )
            train_reports.append(report)
    results = results_dict(table, "auditorybench", {s.name: s.published for s in fusion_stage.SYSTEMS.values()})
    results.update(
        systems=[
            {"name": s.name, "label": s.label, "published": s.published, "seeds": list(seeds)}
            for s in fusion_stage.SYSTEMS.values()
        ],
        over_seeds=seed_mean_table(predictions, n_boot=200, clusters=units),
        paired=paired_comparisons(
            predictions, [("ith", "audiobert"), ("ith", "bert-text")], n_boot=200, clusters=units
        ),
        majority=majority_baseline(list(examples.values()), ("dev", "test")),
        benchmark="auditorybench",
        bootstrap_unit=UNIT_NAMES["auditorybench"],
        device="cpu",
        seconds=1.25,
    )
    layout.write_json({"key": "fabricated", "report": results}, "fusion", "_DONE.json")
    return {"fusion": fusion_stage.fusion_summary({}, train_reports, [], results)}


def build_tiny_run(root: str, run_id: str, model_paths: dict[str, str], bench_dir) -> dict:
    """The real stages 1-3 on the tiny profile, fusion by contract; returns the stage reports."""
    started = time.perf_counter()
    cfg = tiny_run_config(root, run_id, bench_dir)
    skeleton.write_config(cfg)
    reports = {"ingest": ingest_stage.ingest_auditorybench(cfg)}
    reports["span_detector"] = spans_stage.train_span_detector(cfg, model_paths)
    reports["spans"] = spans_stage.detect_spans(cfg, model_paths)
    plan = imagine_stage.plan_imagine(cfg, model_paths)
    results = [imagine_stage.generate_candidates(cfg, model_paths, name, "cpu") for name in plan["shards"]]
    imagine_stage.record_shard_status(cfg, results)
    reports["imagine"] = imagine_stage.select_candidates(cfg)
    reports.update(write_fusion_outputs(skeleton.layout_for(cfg)))
    skeleton.write_summary(cfg, reports, time.perf_counter() - started)
    return reports


def build_hostile_run(root: str, run_id: str) -> RunLayout:
    """One animal example whose sentence and span are injections; spans and imagine outputs only."""
    from storage.run_files import MAPPING_SCHEMA, SAMPLE_SCHEMA, SELECTION_SCHEMA, SPANS_SCHEMA

    layout = RunLayout(root, run_id)
    example_id = "animal/dev/00001"
    start = HOSTILE_SENTENCE.index(HOSTILE_SPAN)
    layout.write_table(
        pa.Table.from_pylist(
            [
                {
                    "example_id": example_id,
                    "task": "animal",
                    "split": "dev",
                    "sentence": HOSTILE_SENTENCE,
                    "answer": "<b>cat</b>",
                    "spans": [HOSTILE_SPAN],
                }
            ]
        ),
        "ingest",
        "examples.parquet",
    )
    layout.write_table(
        pa.Table.from_pylist(
            [
                {
                    "example_id": example_id,
                    "task": "animal",
                    "split": "dev",
                    "span_index": 0,
                    "span_text": HOSTILE_SPAN,
                    "char_start": start,
                    "char_end": start + len(HOSTILE_SPAN),
                    "score": 0.9,
                }
            ],
            schema=SPANS_SCHEMA,
        ),
        "spans",
        "animal-dev.parquet",
    )
    layout.write_table(
        pa.Table.from_pylist(
            [{"example_id": example_id, "task": "animal", "split": "dev", "n_spans": 1}], schema=SAMPLE_SCHEMA
        ),
        "spans",
        "animal-dev.examples.parquet",
    )
    store = AudioStore(root)
    audio = "ab" * 16
    t = np.arange(16000) / 16000
    rows = []
    for c, freq in enumerate((440.0, 880.0)):
        path, checksum = store.put_audio(audio, c, pcm16(0.3 * np.sin(2 * np.pi * freq * t)[None]), 16000)[:2]
        rows.append(
            {
                "audio_id": audio,
                "candidate": c,
                "prompt": HOSTILE_SPAN + " sound",
                "clap_text": HOSTILE_SPAN,
                "seed": c,
                "clap_score": 0.1 + 0.3 * c,
                "clap_id": "fabricated",
                "audio_path": path,
                "duration_s": 1.0,
                "sample_rate": 16000,
                "channels": 1,
                "checksum": checksum,
                "shard": "part-x",
            }
        )
    store.write_manifest("part-x", rows)
    layout.write_table(pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA), "imagine", "candidates.parquet")
    layout.write_table(
        pa.Table.from_pylist(
            [
                {
                    "example_id": example_id,
                    "task": "animal",
                    "split": "dev",
                    "span_index": 0,
                    "span_text": HOSTILE_SPAN,
                    "prompt": HOSTILE_SPAN + " sound",
                    "clap_text": HOSTILE_SPAN,
                    "audio_id": audio,
                }
            ],
            schema=MAPPING_SCHEMA,
        ),
        "imagine",
        "mapping.parquet",
    )
    layout.write_table(
        pa.Table.from_pylist(
            [
                {
                    "example_id": example_id,
                    "task": "animal",
                    "split": "dev",
                    "span_index": 0,
                    "span_text": HOSTILE_SPAN,
                    "audio_id": audio,
                    "threshold": 0.3,
                    "candidate": 1,
                    "clap_score": 0.4,
                    "audio_path": store.url(rows[1]["audio_path"]),
                    "accepted": True,
                }
            ],
            schema=SELECTION_SCHEMA,
        ),
        "imagine",
        "selection.parquet",
    )
    layout.write_table(
        pa.Table.from_pylist(
            [
                {"task": "animal", "threshold": t, "occurrences": 1, "accepted": int(t <= 0.4), "rate": float(t <= 0.4)}
                for t in (0.0, 0.2, 0.4, 0.6, 0.8)
            ]
        ),
        "imagine",
        "acceptance.parquet",
    )
    return layout


def build_coincident_run(root: str, run_id: str) -> RunLayout:
    """The hostile run with series that coincide: both tasks' acceptance per threshold and their run
    thresholds are equal, and two training jobs have the same history."""
    layout = build_hostile_run(root, run_id)
    layout.write_table(
        pa.Table.from_pylist(
            [
                {"task": task, "threshold": t, "occurrences": 4, "accepted": a, "undetermined": 0, "rate": a / 4}
                for task in ("animal", "pitch")
                for t, a in zip((0.0, 0.2, 0.4, 0.6, 0.8), (4, 3, 2, 1, 0))
            ]
        ),
        "imagine",
        "acceptance.parquet",
    )
    history = [{"epoch": e, "dev_accuracy": 40.0 + 5 * e, "loss": 1.0 / (e + 1)} for e in range(4)]
    from ith_core.stages import fusion as fusion_stage

    for system in ("ith", "bert-text"):
        job = {
            "job": f"{system}-animal-seed42",
            "task": "animal",
            "model": system,
            "seed": 42,
            "steps": 8,
            "best_dev": 55.0,
            "best_epoch": 3,
            "seconds": 1.0,
            "world_size": 1,
            "history": history,
        }
        layout.write_json(
            {"key": "fabricated", "report": {"system": system, "seed": 42, "jobs": [job], "seconds": 1.0}},
            fusion_stage.train_stage_name(system, 42),
            "_DONE.json",
        )
    layout.write_json(
        {
            "profile": "tiny",
            "benchmark": "auditorybench",
            "device": "auto",
            "imagine": {"thresholds": {"animal": 0.4, "pitch": 0.4}},
        },
        "config.json",
    )
    layout.write_json(
        {
            "run_id": run_id,
            "profile": "tiny",
            "stages": {
                "imagine": {
                    "thresholds": {"animal": 0.4, "pitch": 0.4},
                    "accepted": 1,
                    "rejected": 0,
                    "occurrences": 1,
                    "unique_prompts": 1,
                    "seconds": 0.5,
                }
            },
        },
        "summary.json",
    )
    return layout
