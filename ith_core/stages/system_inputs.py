"""What every system's training and evaluation reads from the run folder, shared by the fusion stage
(imagined audio) and AudioBERT's stages (retrieved clips): the sampled examples, the spans table, the
selection table in `audio_features.read_selection`'s contract, and encoding a selection's audio into
feature shards.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ith_core.config import RunConfig
from ith_core.fusion.audio_features import precompute_audio_features, read_selection
from ith_core.models.profiles import load_audio_encoder
from ith_core.models.span_detector import resolve_device as resolve
from ith_core.stages.skeleton import layout_for
from storage import run_files
from storage.features import FeatureStore
from storage.layout import RunLayout

# Encoding batch and shard size: execution only (shard membership is fixed per run).
ENCODE_BATCH_SIZE = 16
FEATURE_SHARD_SIZE = 256


EXAMPLE_COLUMNS = ("example_id", "task", "split", "sentence", "spans", "answer", "options", "flags")


def resolve_device(cfg: RunConfig) -> str:
    return str(resolve(cfg.device))


# ---------------------------------------------------------------------------------------------
# Adapter: imagine/selection.parquet -> the fusion selection contract


def adapt_selection(selection: pa.Table, spans: pa.Table, candidates: pa.Table) -> tuple[pa.Table, dict]:
    """The imagination stage's selection in `read_selection`'s contract, and counts by reason.

    The imagine table differs from the contract in four ways, each handled here:
    - no `char_start`/`char_end`: joined from the spans tables on (example_id, span_index);
    - no `sample_rate`: joined from the stored candidates on (audio_id, candidate);
    - `audio_id` names the prompt (its 5 candidates share it) and is set even when no candidate
      passed CLAP (`accepted` false); tasks have different thresholds, so one prompt can have
      different chosen candidates. The contract's audio id names the waveform the LM hears, so
      it becomes `<audio_id>-c<candidate>` when accepted and null (with a null path) when not;
    - rows with `span_index` -1 (no span detected, fallback prompt "sound") are dropped: fusion
      rewrites span token states, and such an example has no span positions, so it trains and is
      scored as text (its examples stay in examples.parquet). Counted as `no_span_fallback`.
    """
    counts: Counter = Counter()
    offsets = {
        (r["example_id"], int(r["span_index"])): (int(r["char_start"]), int(r["char_end"]))
        for r in spans.select(["example_id", "span_index", "char_start", "char_end"]).to_pylist()
    }
    rates = {
        (a, int(c)): int(s)
        for a, c, s in zip(
            candidates["audio_id"].to_pylist(),
            candidates["candidate"].to_pylist(),
            candidates["sample_rate"].to_pylist(),
        )
    }
    rows = []
    for r in selection.to_pylist():
        if r["span_index"] < 0:
            counts["no_span_fallback"] += 1
            continue
        where = offsets.get((r["example_id"], int(r["span_index"])))
        if where is None:
            raise ValueError(
                f"selection row {r['example_id']}/{r['span_index']} has no span in the spans tables; "
                "the imagine stage and the spans stage of this run disagree: rerun imagine"
            )
        accepted = bool(r["accepted"]) and r["audio_path"] is not None
        counts["span_with_audio" if accepted else "span_without_audio"] += 1
        rows.append(
            {
                "example_id": r["example_id"],
                "task": r["task"],
                "split": r["split"],
                "span_index": int(r["span_index"]),
                "span_text": r["span_text"],
                "char_start": where[0],
                "char_end": where[1],
                "audio_id": f"{r['audio_id']}-c{int(r['candidate'])}" if accepted else None,
                "audio_path": r["audio_path"] if accepted else None,
                "sample_rate": rates[(r["audio_id"], int(r["candidate"]))] if accepted else None,
            }
        )
    rows.sort(key=lambda r: (r["task"], r["split"], r["example_id"], r["span_index"]))
    return pa.Table.from_pylist(rows, schema=run_files.FUSION_SELECTION_SCHEMA), dict(counts)


def sampled_examples(layout: RunLayout, cfg: RunConfig) -> pa.Table:
    """The examples the spans stage sampled, with the columns the LM and the scorer read."""
    ids: list[str] = []
    for task in cfg.data.tasks:
        for split in cfg.data.splits:
            ids += layout.read_table(*run_files.sampled_examples(task, split))["example_id"].to_pylist()
    table = layout.read_table(*run_files.EXAMPLES)
    table = table.filter(pc.is_in(table["example_id"], value_set=pa.array(ids, pa.string())))
    if table.num_rows != len(set(ids)):
        raise RuntimeError(
            f"ingest/examples.parquet holds {table.num_rows} of the {len(set(ids))} sampled examples; "
            "the run folder is inconsistent: rerun it from ingestion"
        )
    return table.select([c for c in EXAMPLE_COLUMNS if c in table.column_names]).sort_by("example_id")


def spans_table(layout: RunLayout, cfg: RunConfig) -> pa.Table:
    return pa.concat_tables(
        [layout.read_table(*run_files.spans_table(t, s)) for t in cfg.data.tasks for s in cfg.data.splits]
    )


def encode_selection(
    cfg: RunConfig,
    model_paths: dict[str, str],
    stage: str,
    examples: pa.Table,
    selection: pa.Table,
    *,
    trainable_encoder: bool,
    audio_tokens: int | None,
) -> dict:
    """Writes `<stage>/examples.parquet` and `selection.parquet` (read_selection's contract), then
    encodes every distinct selected audio once into `<stage>`'s feature shards and manifest.

    Returns the stage report's common part; the caller marks the stage done. Shared by the fusion
    stage (imagined audio) and AudioBERT's features stage (retrieved clips).
    """
    layout = layout_for(cfg)
    layout.write_table(examples, *run_files.inputs_examples(stage))
    layout.write_table(selection, *run_files.inputs_selection(stage))
    rows = read_selection(selection)  # the contract's own checks, before any encoding
    device = resolve_device(cfg)
    encoder, extractor = load_audio_encoder(model_paths["audio_encoder"])
    store = FeatureStore(layout, stage)
    encoded = precompute_audio_features(
        rows,
        encoder,
        extractor,
        store,
        trainable_encoder=trainable_encoder,
        audio_tokens=audio_tokens,
        batch_size=ENCODE_BATCH_SIZE,
        shard_size=FEATURE_SHARD_SIZE,
        device=device,
    )
    index = store.index()
    manifest = {
        "encoder": str(model_paths["audio_encoder"]),
        "train_audio_encoder": trainable_encoder,
        "audio_tokens": audio_tokens,
        "audios": index.num_rows,
        "shards": encoded["shards"],
        "dtype": "float16",
        "shape": [int(index["num_tokens"][0].as_py()), int(index["dim"][0].as_py())] if index.num_rows else None,
    }
    store.write_manifest(manifest)
    with_audio = {r["example_id"] for r in rows if r["audio_id"] is not None}
    return {
        "examples": examples.num_rows,
        "examples_with_audio": len(with_audio),
        "distinct_audios": encoded["audios"],
        "audios_encoded": encoded["audios_encoded"],
        "shards_written": encoded["shards_written"],
        "shards_skipped": encoded["shards_skipped"],
        "bytes_written": encoded["bytes_written"],
        "audios_per_s": encoded["audios_per_s"],
        "feature_shape": manifest["shape"],
        "device": device,
        "outputs": {
            name: layout.url(stage, name)
            for name in (run_files.EXAMPLES_FILE, run_files.SELECTION_FILE, run_files.FEATURES_MANIFEST)
        },
    }


def tasks_with_train_rows(examples_path: Path, cfg: RunConfig) -> list[str]:
    table = pq.read_table(examples_path, columns=["task", "split"])
    present = {(t, s) for t, s in zip(table["task"].to_pylist(), table["split"].to_pylist())}
    return [t for t in cfg.data.tasks if (t, "train") in present and (t, "dev") in present]
