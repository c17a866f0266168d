"""A run folder up to the fusion stages, built the way the real stages build it: the real ingestion
of the benchmark copy, spans tables in the spans stage's schemas (gold spans located in the
sentence, every fifth example left without a span), sine-wave candidates written through the real
audio store and a selection made by the imagine stage's own `select`. Used by test_fusion_stage,
test_fusion_trainable and test_audiobert."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from ith_core.config import RunConfig

RATE = 22050


def fabricate_upstream(cfg: RunConfig) -> dict:
    """ingest (real), spans, imagine (fabricated with the real schemas and the real selection rule)."""
    from ith_core.imagination.selection import select
    from ith_core.stages import ingest as ingest_stage
    from ith_core.stages import skeleton
    from ith_core.stages import spans as spans_stage
    from storage import run_files
    from storage.audio_store import CANDIDATES_SCHEMA, AudioStore, pcm16

    layout = skeleton.layout_for(cfg)
    ingest_stage.ingest_auditorybench(cfg)
    examples = ingest_stage.examples_of(layout, cfg, cfg.data.splits)
    store = AudioStore(cfg.run_root)
    mapping, candidates, counts = [], {}, {"no_span": 0, "spans": 0}
    for task in cfg.data.tasks:
        for split in cfg.data.splits:
            part = spans_stage.sample_rows(
                [r for r in examples if r["task"] == task and r["split"] == split],
                cfg.data.sample_limit,
                cfg.data.sample_seed,
            )
            spans, sample = [], []
            for n, row in enumerate(part):
                found = []
                if n % 5 != 4:  # every fifth example: no span detected (fallback prompt)
                    for text in row["spans"]:
                        at = row["sentence"].lower().find(text.lower())
                        if at >= 0 and text.strip():
                            found.append((at, at + len(text), row["sentence"][at : at + len(text)]))
                for i, (start, end, text) in enumerate(found):
                    spans.append(
                        {
                            "example_id": row["example_id"],
                            "task": task,
                            "split": split,
                            "span_index": i,
                            "span_text": text,
                            "char_start": start,
                            "char_end": end,
                            "score": 0.9,
                        }
                    )
                sample.append({"example_id": row["example_id"], "task": task, "split": split, "n_spans": len(found)})
                occurrences = [(i, t) for i, (_, _, t) in enumerate(found)] or [(-1, None)]
                for i, text in occurrences:
                    prompt = f"{text.lower()} sound" if text else "sound"
                    audio_id = hashlib.sha256(prompt.encode()).hexdigest()[:16]
                    mapping.append(
                        {
                            "example_id": row["example_id"],
                            "task": task,
                            "split": split,
                            "span_index": i,
                            "span_text": text,
                            "prompt": prompt,
                            "clap_text": text or "sound",
                            "audio_id": audio_id,
                        }
                    )
                    candidates.setdefault(audio_id, prompt)
                counts["no_span" if not found else "spans"] += 1
            layout.write_table(
                pa.Table.from_pylist(spans, schema=run_files.SPANS_SCHEMA), *run_files.spans_table(task, split)
            )
            layout.write_table(
                pa.Table.from_pylist(sample, schema=run_files.SAMPLE_SCHEMA), *run_files.sampled_examples(task, split)
            )
    layout.mark_done("spans", "fabricated-spans", {})
    rows = []
    for audio_id, prompt in sorted(candidates.items()):
        digest = int(audio_id[:8], 16)
        for c in range(2):
            t = np.arange(RATE) / RATE  # 1 s
            tone = 0.4 * np.sin(2 * np.pi * (200 + digest % 1800 + 300 * c) * t)
            path, checksum = store.put_audio(audio_id, c, pcm16(np.stack([tone, tone])), RATE)[:2]
            # Scores: some prompts pass with candidate 0, some with 1, some never (no audio).
            score = [0.5, 0.1, 0.1][digest % 3] if c == 0 else [0.5, 0.5, 0.1][digest % 3]
            rows.append(
                {
                    "audio_id": audio_id,
                    "candidate": c,
                    "prompt": prompt,
                    "clap_text": prompt,
                    "seed": c,
                    "clap_score": score,
                    "clap_id": "fabricated",
                    "audio_path": path,
                    "duration_s": 1.0,
                    "sample_rate": RATE,
                    "channels": 2,
                    "checksum": checksum,
                    "shard": "part-fabricated",
                }
            )
    store.write_manifest("part-fabricated", rows)
    mapping_t = pa.Table.from_pylist(mapping, schema=run_files.MAPPING_SCHEMA)
    candidates_t = pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA)
    selection = select(mapping_t, candidates_t, {"animal": 0.3, "pitch": 0.3}, store.url, 2)
    layout.write_table(mapping_t, *run_files.MAPPING)
    layout.write_table(candidates_t, *run_files.CANDIDATES)
    layout.write_table(selection, *run_files.SELECTION)
    layout.mark_done("imagine", "fabricated-imagine", {})
    return {"counts": counts, "selection": selection}
