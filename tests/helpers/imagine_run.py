"""The imagine stage run in one process on the tiny profile over span tables written here, and the
checks its tests share: final tables, equality up to score rounding, a consistent audio store.
Used by test_imagine and test_imagine_flow (and by the subprocesses they start)."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from ith_core.config import RunConfig
from ith_core.stages import imagine as stage
from storage.audio_store import AudioStore
from storage.layout import RunLayout

# Tiny settings: exact latents of 1 s, 3 steps, 2 candidates, lazy sampling (the default);
# thresholds inside the tiny CLAP's score range so that both accepted and rejected spans occur.
TINY_IMAGINE = {
    "num_inference_steps": 3,
    "duration_s": 1.0,
    "num_candidates": 2,
    "latent_length": "exact",
    "batch_size": 3,
    "shard_size": 4,
    "retries": 0,
    "thresholds": {"animal": 0.19, "pitch": 0.19},
}

# Span occurrences written as the spans stage would: dev rows with their gold spans, some rows
# without a span (fallback prompt), and test rows repeating dev spans (dedup across splits).
SPAN_TEXTS = {
    "animal": ["loud barking", "a soft purr", None, "Loud  Barking", "chirping", "a soft purr"],
    "pitch": [["a whistle", "a tuba"], ["a tuba", "thunder"], [], ["a flute", "a whistle"]],
}


def write_spans(run_root: str, run_id: str) -> None:
    from storage import run_files

    layout = RunLayout(run_root, run_id)
    for task in ("animal", "pitch"):
        for split in ("dev", "test"):
            spans, sample = [], []
            for i, entry in enumerate(SPAN_TEXTS[task]):
                texts = [] if entry is None else ([entry] if isinstance(entry, str) else entry)
                example = f"{task}/{split}/{i:05d}"
                for j, text in enumerate(texts):
                    spans.append(
                        {
                            "example_id": example,
                            "task": task,
                            "split": split,
                            "span_index": j,
                            "span_text": text,
                            "char_start": 0,
                            "char_end": len(text),
                            "score": 0.9,
                        }
                    )
                sample.append({"example_id": example, "task": task, "split": split, "n_spans": len(texts)})
            layout.write_table(
                pa.Table.from_pylist(spans, schema=run_files.SPANS_SCHEMA), *run_files.spans_table(task, split)
            )
            layout.write_table(
                pa.Table.from_pylist(sample, schema=run_files.SAMPLE_SCHEMA), *run_files.sampled_examples(task, split)
            )
    layout.mark_done("spans", "spans-key-for-tests", {})


def tiny_config(run_root: str, run_id: str, **imagine) -> RunConfig:
    return RunConfig.for_profile(
        "tiny",
        run_root=str(run_root),
        run_id=run_id,
        device="cpu",
        data={"tasks": ["animal", "pitch"], "splits": ["dev", "test"]},
        imagine={**TINY_IMAGINE, **imagine},
    )


def run_all(run_root: str, run_id: str, model_paths: dict[str, str], **imagine) -> dict:
    """The stage through its drivers, as the flow runs it but in one process."""
    cfg = tiny_config(run_root, run_id, **imagine)
    if not RunLayout(run_root, run_id).exists("spans", "_DONE.json"):
        write_spans(run_root, run_id)
    plan = stage.plan_imagine(cfg, model_paths)
    results = [stage.generate_candidates(cfg, model_paths, name, "cpu") for name in plan["shards"]]
    return {"plan": plan, "results": results, "report": stage.select_candidates(cfg)}


def final_tables(run_root: str, run_id: str) -> tuple[list, list]:
    layout = RunLayout(run_root, run_id)
    cands = layout.read_table("imagine", "candidates.parquet")
    cands = cands.select(["audio_id", "candidate", "seed", "checksum", "clap_score", "audio_path"])
    sel = layout.read_table("imagine", "selection.parquet").drop(["audio_path"])
    return (
        sorted(cands.to_pylist(), key=lambda r: (r["audio_id"], r["candidate"])),
        sorted(sel.to_pylist(), key=lambda r: (r["example_id"], r["span_index"])),
    )


def assert_same_tables(got: tuple[list, list], want: tuple[list, list], atol: float = 1e-5) -> None:
    """Same ids, seeds, bytes and selections; scores equal within `atol`."""
    for got_rows, want_rows in zip(got, want):
        assert len(got_rows) == len(want_rows)
        for g, w in zip(got_rows, want_rows):
            assert {k: v for k, v in g.items() if k != "clap_score"} == {
                k: v for k, v in w.items() if k != "clap_score"
            }
            assert (g["clap_score"] is None) == (w["clap_score"] is None)
            if g["clap_score"] is not None:
                assert abs(g["clap_score"] - w["clap_score"]) <= atol


def assert_store_consistent(run_root: str) -> None:
    """Every manifest row with audio points at a file whose bytes match its checksum; no duplicate rows."""
    store = AudioStore(run_root)
    rows = store.read_candidates()
    keys = list(zip(rows["audio_id"].to_pylist(), rows["candidate"].to_pylist()))
    assert len(keys) == len(set(keys))
    for path, checksum in zip(rows["audio_path"].to_pylist(), rows["checksum"].to_pylist()):
        assert (path is None) == (checksum is None), path
        if path is not None:
            assert hashlib.sha256(store.read_bytes(path)).hexdigest() == checksum, path
