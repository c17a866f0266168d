"""Stage drivers of stages 4-5 (audio encoding, fusion LM training, evaluation); no Prefect here.

    precompute_stage(cfg, model_paths)            selection -> AST features once per selected audio
    train_stage(cfg, model_paths, variant)        `accelerate launch -m ith_core.train_fusion` for
                                                  every task x seed of one variant ("ith" | "text")
    evaluate_stage(cfg, model_paths)              dev-best models -> predictions, accuracy with 95 %
                                                  bootstrap intervals, ours vs paper

Files in the run folder (`<run_root>/<run_id>/`):

    fusion_features/   examples.parquet   the run's sampled examples (ingest columns the LM reads)
                       selection.parquet  the imagine selection adapted to `read_selection`'s contract
                       part-*.safetensors/.parquet, features.json   (storage.features)
    fusion_train_ith/  spec.json, train.log, <job>/best/, <job>/DONE.json   (ith_core.train_fusion)
    fusion_train_text/ the same for the text-only baseline
    fusion/            results.parquet, predictions.parquet, results.json
    <stage>/_DONE.json written last (storage.layout)

Which examples: the examples the spans stage sampled (`data.sample_limit` per task and split).
Training uses the sampled train split, the dev-best epoch is picked on the sampled dev split,
and dev/test/wiki (those in `data.splits`) are scored. Examples without an accepted audio, or
without any detected span, are trained and scored too, just without fusion. Fusion needs
`train` and `dev` in `data.splits`; otherwise `skip_reason` says why and the flow skips it.

Unlike the earlier stages, a fusion stage without its marker is NOT cleared before it runs:
feature shards and training states are the resume points (a crashed or retried task picks up
from the last whole shard / last saved epoch). The stage key is written first (`_KEY.json`); a
leftover folder with another key is cleared, so a resume never mixes settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ith_core.config import ConfigError, RunConfig
from storage.layout import DONE_MARKER, RunLayout

logger = logging.getLogger(__name__)

FEATURES = "fusion_features"
TRAIN = {"ith": "fusion_train_ith", "text": "fusion_train_text"}
EVALUATE = "fusion"
VARIANTS = ("ith", "text")
EVAL_SPLITS = ("dev", "test", "wiki")
KEY_FILE = "_KEY.json"
# Bump when this module changes what a stage writes for the same inputs.
FUSION_VERSION = 3  # 2: sentences longer than max_length are windowed; 3: the paper recipe
# Encoding batch and shard size: execution only (shard membership is fixed per run).
ENCODE_BATCH_SIZE = 16
FEATURE_SHARD_SIZE = 256

# The adapted selection table: exactly the columns `audio_encoding.read_selection` requires.
FUSION_SELECTION_SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("span_index", pa.int64()),
    ("span_text", pa.string()),
    ("char_start", pa.int64()),
    ("char_end", pa.int64()),
    ("audio_id", pa.string()),  # "<imagine audio id>-c<candidate>": the chosen waveform, not the prompt
    ("audio_path", pa.string()),
    ("sample_rate", pa.int64()),
])

EXAMPLE_COLUMNS = ("example_id", "task", "split", "sentence", "spans", "answer", "options", "flags")


def layout_for(cfg: RunConfig) -> RunLayout:
    return RunLayout(cfg.run_root, cfg.effective_run_id)


def _key(*parts: Any) -> str:
    blob = json.dumps([FUSION_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _open_stage(layout: RunLayout, stage: str, key: str) -> dict | None:
    """The recorded report if the stage finished with `key`; else prepares the folder for (re)work.

    A folder left by an interrupted attempt with the same key is kept (its shards / training
    states are resumed from); one with another key, or without a key, is cleared.
    """
    report = layout.stage_done(stage, key)
    if report is not None:
        logger.info("stage %s: finished earlier in %s, reusing it", stage, layout.url(stage))
        return {**report, "cached": True}
    if layout.exists(stage):
        previous = layout.read_json(stage, KEY_FILE).get("key") if layout.exists(stage, KEY_FILE) else None
        if previous != key:
            layout.fs.rm(layout.path(stage), recursive=True)
    layout.write_json({"key": key}, stage, KEY_FILE)
    return None


def skip_reason(cfg: RunConfig) -> str | None:
    """Why the fusion stages cannot run on this run's splits (None: they can)."""
    missing = [s for s in ("train", "dev") if s not in cfg.data.splits]
    if missing:
        return (f"fusion needs the train and dev splits (train to learn, dev to pick the best epoch); "
                f"data.splits is {list(cfg.data.splits)}, missing {missing}")
    return None


def resolve_device(cfg: RunConfig) -> str:
    from ith_core.spans import resolve_device as resolve

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
    offsets = {(r["example_id"], int(r["span_index"])): (int(r["char_start"]), int(r["char_end"]))
               for r in spans.select(["example_id", "span_index", "char_start", "char_end"]).to_pylist()}
    rates = {(a, int(c)): int(s) for a, c, s in zip(candidates["audio_id"].to_pylist(),
                                                    candidates["candidate"].to_pylist(),
                                                    candidates["sample_rate"].to_pylist())}
    rows = []
    for r in selection.to_pylist():
        if r["span_index"] < 0:
            counts["no_span_fallback"] += 1
            continue
        where = offsets.get((r["example_id"], int(r["span_index"])))
        if where is None:
            raise ValueError(f"selection row {r['example_id']}/{r['span_index']} has no span in the spans tables; "
                             "the imagine stage and the spans stage of this run disagree: rerun imagine")
        accepted = bool(r["accepted"]) and r["audio_path"] is not None
        counts["span_with_audio" if accepted else "span_without_audio"] += 1
        rows.append({
            "example_id": r["example_id"], "task": r["task"], "split": r["split"], "span_index": int(r["span_index"]),
            "span_text": r["span_text"], "char_start": where[0], "char_end": where[1],
            "audio_id": f"{r['audio_id']}-c{int(r['candidate'])}" if accepted else None,
            "audio_path": r["audio_path"] if accepted else None,
            "sample_rate": rates[(r["audio_id"], int(r["candidate"]))] if accepted else None,
        })
    rows.sort(key=lambda r: (r["task"], r["split"], r["example_id"], r["span_index"]))
    return pa.Table.from_pylist(rows, schema=FUSION_SELECTION_SCHEMA), dict(counts)


def sampled_examples(layout: RunLayout, cfg: RunConfig) -> pa.Table:
    """The examples the spans stage sampled, with the columns the LM and the scorer read."""
    ids: list[str] = []
    for task in cfg.data.tasks:
        for split in cfg.data.splits:
            ids += layout.read_table("spans", f"{task}-{split}.examples.parquet")["example_id"].to_pylist()
    table = layout.read_table("ingest", "examples.parquet")
    table = table.filter(pc.is_in(table["example_id"], value_set=pa.array(ids, pa.string())))
    if table.num_rows != len(set(ids)):
        raise RuntimeError(f"ingest/examples.parquet holds {table.num_rows} of the {len(set(ids))} sampled examples; "
                           "the run folder is inconsistent: rerun it from ingestion")
    return table.select([c for c in EXAMPLE_COLUMNS if c in table.column_names]).sort_by("example_id")


def _spans_table(layout: RunLayout, cfg: RunConfig) -> pa.Table:
    return pa.concat_tables([layout.read_table("spans", f"{t}-{s}.parquet")
                             for t in cfg.data.tasks for s in cfg.data.splits])


# ---------------------------------------------------------------------------------------------
# Stage 4: audio features


def _features_key(layout: RunLayout, cfg: RunConfig, model_paths: dict[str, str]) -> str:
    f = cfg.fusion
    return _key(FEATURES, {s: layout.finished_key(s) for s in ("ingest", "spans", "imagine")},
                cfg.data.tasks, cfg.data.splits, str(model_paths["audio_encoder"]), f.train_audio_encoder,
                f.audio_tokens)


def precompute_stage(cfg: RunConfig, model_paths: dict[str, str]) -> dict:
    """Adapts the selection, then encodes every distinct chosen waveform once into feature shards.

    Features live in the run folder, not in a store shared by runs: `storage.features` names
    shards by position in the run's sorted id list, so two runs with different selections would
    write different content under the same shard name. Within a run each waveform is encoded
    once however many examples (or tasks) use it, and finished shards are skipped on a rerun.
    """
    layout = layout_for(cfg)
    key = _features_key(layout, cfg, model_paths)
    if (report := _open_stage(layout, FEATURES, key)) is not None:
        return report
    started = time.perf_counter()
    imagined = layout.read_table("imagine", "selection.parquet")
    # Only this run's tasks and splits (the imagine stage covers exactly those; a copied folder may not).
    imagined = imagined.filter(pc.and_(pc.is_in(imagined["task"], value_set=pa.array(list(cfg.data.tasks))),
                                       pc.is_in(imagined["split"], value_set=pa.array(list(cfg.data.splits)))))
    selection, counts = adapt_selection(imagined, _spans_table(layout, cfg),
                                        layout.read_table("imagine", "candidates.parquet"))
    report = encode_selection(cfg, model_paths, FEATURES, sampled_examples(layout, cfg), selection,
                              trainable_encoder=cfg.fusion.train_audio_encoder, audio_tokens=cfg.fusion.audio_tokens)
    report = {**report, "span_rows": counts, "seconds": round(time.perf_counter() - started, 3)}
    layout.mark_done(FEATURES, key, report)
    return {**report, "cached": False}


def encode_selection(cfg: RunConfig, model_paths: dict[str, str], stage: str, examples: pa.Table,
                     selection: pa.Table, *, trainable_encoder: bool, audio_tokens: int | None) -> dict:
    """Writes `<stage>/examples.parquet` and `selection.parquet` (read_selection's contract), then
    encodes every distinct selected audio once into `<stage>`'s feature shards and manifest.

    Returns the stage report's common part; the caller marks the stage done. Shared by the fusion
    stage (imagined audio) and AudioBERT's features stage (retrieved clips).
    """
    from ith_core.audio_encoding import precompute_audio_features, read_selection
    from ith_core.profiles import load_audio_encoder
    from storage.features import FeatureStore

    layout = layout_for(cfg)
    layout.write_table(examples, stage, "examples.parquet")
    layout.write_table(selection, stage, "selection.parquet")
    rows = read_selection(selection)  # the contract's own checks, before any encoding
    device = resolve_device(cfg)
    encoder, extractor = load_audio_encoder(model_paths["audio_encoder"])
    store = FeatureStore(layout, stage)
    encoded = precompute_audio_features(rows, encoder, extractor, store, trainable_encoder=trainable_encoder,
                                        audio_tokens=audio_tokens, batch_size=ENCODE_BATCH_SIZE,
                                        shard_size=FEATURE_SHARD_SIZE, device=device)
    index = store.index()
    manifest = {"encoder": str(model_paths["audio_encoder"]), "train_audio_encoder": trainable_encoder,
                "audio_tokens": audio_tokens, "audios": index.num_rows,
                "shards": encoded["shards"], "dtype": "float16",
                "shape": [int(index["num_tokens"][0].as_py()), int(index["dim"][0].as_py())] if index.num_rows else None}
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
        "outputs": {name: layout.url(stage, name) for name in ("examples.parquet", "selection.parquet", "features.json")},
    }


# ---------------------------------------------------------------------------------------------
# Stage 5: training


def _training_settings(cfg: RunConfig) -> dict:
    # Everything in FusionConfig changes the trained weights except how many processes share the
    # global batch and how many bootstrap samples the scorer draws.
    settings = cfg.fusion.model_dump(mode="json")
    for name in ("num_processes", "bootstrap_samples"):
        settings.pop(name)
    return settings


def _train_key(layout: RunLayout, cfg: RunConfig, model_paths: dict[str, str], variant: str) -> str:
    features = layout.read_json(FEATURES, DONE_MARKER)["key"] if layout.exists(FEATURES, DONE_MARKER) else None
    if features is None:
        raise RuntimeError(f"stage '{FEATURES}' of run {layout.url()} has not finished; run precompute_stage first")
    return _key(TRAIN[variant], features, str(model_paths["lm"]), _training_settings(cfg))


def _local_work_dir(layout: RunLayout, stage: str, key: str) -> Path:
    """Where the trainer writes: the stage folder itself on local disk, else a local working folder
    (per run root and run id, see `RunLayout.work_dir`) that is reused only for the same stage key."""
    out = layout.work_dir(stage)
    if not layout.is_local:
        marker = out / KEY_FILE
        if out.exists() and (not marker.is_file() or json.loads(marker.read_text()).get("key") != key):
            shutil.rmtree(out)  # left by other settings: its states must not be resumed from
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"key": key}))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What `accelerate launch` runs: the training entry point (a module), then its arguments.
TRAIN_ENTRY = ("-m", "ith_core.train_fusion")


def launch_command(spec_path: str, num_processes: int, mixed_precision: str, cuda: bool) -> list[str]:
    """`accelerate launch ... -m ith_core.train_fusion --config spec`.

    `--cpu --num_processes N` silently runs ONE process, so N > 1 always goes through
    `--multi_gpu`, which without GPUs starts N processes over gloo (the entry point builds its
    Accelerator with cpu=True there).
    """
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--num_machines", "1", "--num_processes", str(num_processes), "--mixed_precision", mixed_precision,
            "--dynamo_backend", "no"]
    if num_processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", str(_free_port())]
    elif not cuda:
        cmd += ["--cpu"]
    return cmd + [*TRAIN_ENTRY, "--config", spec_path]


def _run_streaming(cmd: list[str], log_path: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Runs `cmd`, sending each output line to this module's log and to `log_path` as it comes."""
    tail: list[str] = []
    with open(log_path, "a", encoding="utf-8") as log, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1) as proc:
        log.write(f"$ {' '.join(cmd)}\n")
        for line in proc.stdout:
            log.write(line)
            log.flush()
            logger.info("train: %s", line.rstrip())
            tail = (tail + [line.rstrip()])[-40:]
        rc = proc.wait()
    return rc, tail


def train_stage(cfg: RunConfig, model_paths: dict[str, str], variant: str) -> dict:
    """Trains one variant ("ith": fusion; "text": same LM and training, no fusion) for every task
    and seed, in one `accelerate launch` whose jobs run one after another.

    Resumable: the entry point skips finished jobs (DONE.json) and resumes an interrupted one from
    its last saved epoch, so a crash or a task retry only redoes the unfinished epoch.
    """
    from ith_core.train_fusion import TrainJob, TrainSpec, resolve_mixed_precision

    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {VARIANTS}, got {variant!r}")
    layout = layout_for(cfg)
    stage = TRAIN[variant]
    key = _train_key(layout, cfg, model_paths, variant)
    if (report := _open_stage(layout, stage, key)) is not None:
        return report
    started = time.perf_counter()
    inputs = layout.local_dir(FEATURES)
    out = _local_work_dir(layout, stage, key)
    out.mkdir(parents=True, exist_ok=True)
    train_tasks = _tasks_with_train_rows(inputs / "examples.parquet", cfg)
    if not train_tasks:
        raise RuntimeError(f"run {layout.url()}: no sampled train examples for tasks {list(cfg.data.tasks)}")
    if variant == "ith" and not any(inputs.glob("part-*.parquet")):
        raise RuntimeError(f"run {layout.url()}: no span got an accepted audio (thresholds "
                           f"{dict(cfg.imagine.thresholds)}), so ITH has nothing to fuse; lower imagine.thresholds "
                           "or sample more examples")
    spec = TrainSpec(
        lm_path=str(model_paths["lm"]), examples_path=str(inputs / "examples.parquet"), output_dir=str(out),
        selection_path=str(inputs / "selection.parquet"), features_dir=str(inputs),
        audio_encoder_path=str(model_paths["audio_encoder"]) if cfg.fusion.train_audio_encoder else None,
        fusion=cfg.fusion.model_dump(mode="json"),
        jobs=tuple(TrainJob(task, variant, seed) for task in train_tasks for seed in cfg.fusion.seeds))
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec.to_json(), indent=2))
    import torch

    cuda = torch.cuda.is_available() and resolve_device(cfg) != "cpu"
    cmd = launch_command(str(spec_path), cfg.fusion.num_processes, resolve_mixed_precision(cfg.fusion.mixed_precision),
                         cuda)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                     os.environ.get("PYTHONPATH")) if p)}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    rc, tail = _run_streaming(cmd, out / "train.log", env)
    if rc < 0:  # killed by a signal (e.g. for memory): not the inputs' fault, so a retry may succeed
        raise ChildProcessError(f"training ({variant}) was killed by signal {-rc}; the next attempt resumes from "
                                "the last saved epoch. Last output:\n" + "\n".join(tail[-15:]))
    if rc != 0:
        raise RuntimeError(f"training ({variant}) exited with status {rc}; the next attempt resumes from the last "
                           f"saved epoch. Last output:\n" + "\n".join(tail[-15:]))
    jobs = []
    for job in spec.jobs:
        done = out / job.name / "DONE.json"
        if not done.is_file():
            raise RuntimeError(f"training ({variant}) ended without {done}; see {out / 'train.log'}")
        jobs.append(json.loads(done.read_text()))
        # The resume states (optimizer included) are only needed until the job is done.
        shutil.rmtree(out / job.name / "states", ignore_errors=True)
    if not layout.is_local:
        layout.put_dir(out, stage)
        layout.write_json({"key": key}, stage, KEY_FILE)
    report = {
        "variant": variant,
        "launch": " ".join(cmd),
        "num_processes": cfg.fusion.num_processes,
        "jobs": [{k: j.get(k) for k in ("job", "task", "seed", "steps", "best_dev", "best_epoch", "history",
                                        "resumed_from", "seconds", "train_samples_per_s", "world_size", "data")}
                 for j in jobs],
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {"models": layout.url(stage), "log": layout.url(stage, "train.log")},
    }
    layout.mark_done(stage, key, report)
    return {**report, "cached": False}


def _tasks_with_train_rows(examples_path: Path, cfg: RunConfig) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(examples_path, columns=["task", "split"])
    present = {(t, s) for t, s in zip(table["task"].to_pylist(), table["split"].to_pylist())}
    return [t for t in cfg.data.tasks if (t, "train") in present and (t, "dev") in present]


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate_stage(cfg: RunConfig, model_paths: dict[str, str] | None = None) -> dict:
    """Scores every dev-best model on the run's sampled dev/test/wiki examples.

    Writes `fusion/predictions.parquet` (one row per example, variant and seed: prediction,
    gold, spans used, audio ids), `fusion/results.parquet` (accuracy per model, seed, task,
    split and metric with 95 % bootstrap intervals) and `fusion/results.json` (ours vs paper,
    mean and spread over seeds). Every row of an evaluated split is scored (a sentence longer
    than `max_length` is windowed around its mask) or counted in `scoring` with its reason:
    `scoring["task/split"]` = rows, scored, windowed, unscored {reason: rows}, rows = scored +
    unscored, checked here. `model_paths` is unused (the checkpoints name their LM); it is
    accepted so every fusion driver has the same call shape.
    """
    import torch

    from ith_core.audio_encoding import read_selection
    from ith_core.evaluate import PREDICTION_SCHEMA, accuracy_table, majority_baseline, predict, results_dict
    from ith_core.lm_data import ROW_DROP_REASONS, FusionCollator, encode_examples, spans_from_selection
    from ith_core.train_fusion import load_best
    from storage.features import FeatureStore

    layout = layout_for(cfg)
    train_keys = {}
    for variant in VARIANTS:
        if not layout.exists(TRAIN[variant], DONE_MARKER):
            raise RuntimeError(f"stage '{TRAIN[variant]}' of run {layout.url()} has not finished; train first")
        train_keys[variant] = layout.read_json(TRAIN[variant], DONE_MARKER)["key"]
    key = _key(EVALUATE, train_keys, cfg.fusion.bootstrap_samples, cfg.fusion.max_length)
    if (report := _open_stage(layout, EVALUATE, key)) is not None:
        return report
    started = time.perf_counter()
    inputs = layout.local_dir(FEATURES)
    examples = layout.read_table(FEATURES, "examples.parquet").to_pylist()
    by_id = {r["example_id"]: r for r in examples}
    spans = spans_from_selection(read_selection(str(inputs / "selection.parquet")))
    features = FeatureStore(layout, FEATURES).reader()
    splits = [s for s in EVAL_SPLITS if s in cfg.data.splits]
    device = resolve_device(cfg)
    predictions: list[dict] = []
    dropped: dict[str, dict] = {}
    scoring: dict[str, dict] = {}
    for variant in VARIANTS:
        models = layout.local_dir(TRAIN[variant])
        for job in layout.read_json(TRAIN[variant], DONE_MARKER)["report"]["jobs"]:
            model, tokenizer, _ = load_best(models / job["job"], device)
            items, counts = [], Counter()
            for split in splits:
                rows = [r for r in examples if r["task"] == job["task"] and r["split"] == split]
                part, part_counts = encode_examples(tokenizer, rows, spans, cfg.fusion.max_length,
                                                    use_audio=variant == "ith", mc=True)
                gold = [i for i in part if i.variant == "gold"]
                account = {"rows": len(rows), "scored": len(gold), "windowed": sum(i.windowed for i in gold),
                           "unscored": {r: part_counts[r] for r in ROW_DROP_REASONS if part_counts.get(r)}}
                if account["rows"] != account["scored"] + sum(account["unscored"].values()):
                    raise RuntimeError(f"{job['job']} {split}: {account['rows']} rows but {account['scored']} scored "
                                       f"and {account['unscored']} unscored")
                # Whether a row can be scored depends on its sentence and the LM's tokenizer only, so
                # every job of a task must agree.
                if scoring.setdefault(f"{job['task']}/{split}", account) != account:
                    raise RuntimeError(f"{job['job']} {split}: scoring {account} differs from another job's "
                                       f"{scoring[job['task'] + '/' + split]}")
                items += part
                counts.update(part_counts)
            counts.pop("windowed", None)
            dropped[job["job"]] = dict(counts)
            collator = FusionCollator(tokenizer.pad_token_id, features if variant == "ith" else None)
            with torch.no_grad():
                preds = predict(model, tokenizer, items, collator, by_id, device=device, model_name=variant,
                                seed=job["seed"])
            encoded = {i.example_id for i in items if i.variant == "gold"}
            if sorted(p["example_id"] for p in preds) != sorted(encoded):
                raise RuntimeError(f"{job['job']}: {len(preds)} predictions for {len(encoded)} encoded examples")
            predictions += preds
            del model
    clusters = None
    if cfg.benchmark == "synthetic":
        # Rows of one source name share its audio and answer: the name is the independent unit.
        from ith_core.synthetic import bootstrap_unit

        clusters = {r["example_id"]: bootstrap_unit(r) for r in examples}
    table = accuracy_table(predictions, n_boot=cfg.fusion.bootstrap_samples, clusters=clusters)
    results = results_dict(table, cfg.benchmark)
    results["benchmark"] = cfg.benchmark
    results["bootstrap_unit"] = "source name" if clusters is not None else "example"
    results["majority"] = majority_baseline(examples, splits)
    layout.write_table(pa.Table.from_pylist(predictions, schema=PREDICTION_SCHEMA), EVALUATE, "predictions.parquet")
    layout.write_table(pa.Table.from_pylist(table), EVALUATE, "results.parquet")
    layout.write_json(results, EVALUATE, "results.json")
    per_variant = Counter(p["model"] for p in predictions)
    report = {
        "splits": splits,
        "predictions": dict(per_variant),
        "evaluated_examples": len({p["example_id"] for p in predictions}),
        "dropped_by_job": {k: v for k, v in dropped.items() if v},
        "scoring": scoring,
        "unscored_rows": sum(sum(a["unscored"].values()) for a in scoring.values()),
        "ith_examples_fused": sum(1 for p in predictions if p["model"] == "ith" and p["audio_ids"]),
        "ours_vs_paper": results["ours_vs_paper"],
        "per_seed": results["per_seed"],
        "benchmark": cfg.benchmark,
        "bootstrap_unit": results["bootstrap_unit"],
        "majority": results["majority"],
        "device": device,
        "seconds": round(time.perf_counter() - started, 3),
        "outputs": {name: layout.url(EVALUATE, f"{name}") for name in ("results.parquet", "predictions.parquet",
                                                                      "results.json")},
    }
    layout.mark_done(EVALUATE, key, report)
    return {**report, "cached": False}


# ---------------------------------------------------------------------------------------------
# Markdown summaries (the flow publishes them as Prefect artifacts)


def _fmt(row: dict | None) -> str:
    if row is None:
        return "-"
    if row["seeds"] == 1 and row.get("ci") is not None:
        return f"{row['mean']:.2f} [{row['ci'][0]:.1f}, {row['ci'][1]:.1f}]"
    return f"{row['mean']:.2f} ± {row['std']:.2f} ({row['seeds']} seeds)"


def results_markdown(run_id: str, report: dict) -> str:
    """Accuracy per task and split: ours (ITH, text-only) with 95 % bootstrap intervals vs the paper."""
    ci = {(r["model"], r["task"], r["split"], r["metric"]): (r["ci_low"], r["ci_high"], r["n"])
          for r in report["per_seed"]}
    rows: dict[tuple, dict] = {}
    for r in report["ours_vs_paper"]:
        one = ci.get((r["model"], r["task"], r["split"], r["metric"]))
        rows.setdefault((r["task"], r["metric"], r["split"]), {})[r["model"]] = {
            **r, "ci": one[:2] if one else None, "n": one[2] if one else None}
    lines = [f"# ith-fusion: run `{run_id}`", "",
             "Accuracy (%) on the run's sampled examples; one seed: mean [95 % bootstrap interval], several seeds: "
             "mean ± sd over seeds (per-seed intervals in fusion/results.parquet). Paper: published AuditoryBench "
             "numbers on the full splits (ITH; BERT-base for text-only).", "",
             "| task | split | metric | n | ITH (ours) | text-only (ours) | ITH (paper) | BERT-base (paper) |",
             "|---|---|---|---|---|---|---|---|"]
    order = {s: i for i, s in enumerate(EVAL_SPLITS)}
    for (task, metric, split), by_model in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 9))):
        ith, text = by_model.get("ith"), by_model.get("text")
        n = (ith or text or {}).get("n")
        paper_ith = ith.get("paper") if ith else None
        paper_text = text.get("paper") if text else None
        lines.append(f"| {task} | {split} | {metric} | {n} | {_fmt(ith)} | {_fmt(text)} | "
                     f"{'-' if paper_ith is None else paper_ith} | {'-' if paper_text is None else paper_text} |")
    return "\n".join(lines) + "\n"


def curves_markdown(run_id: str, train_reports: dict[str, dict]) -> str:
    """Dev accuracy per epoch of every training job (the training curves)."""
    jobs = [j for v in VARIANTS for j in train_reports.get(v, {}).get("jobs", [])]
    epochs = max((len(j["history"] or []) for j in jobs), default=0)
    lines = [f"# ith-fusion training curves: run `{run_id}`", "", "Dev accuracy (%) after each epoch; "
             "the bold epoch is the dev-best checkpoint that is scored.", "",
             "| job | " + " | ".join(f"epoch {e}" for e in range(epochs)) + " | samples/s |",
             "|---|" + "---|" * (epochs + 1)]
    for j in jobs:
        cells = []
        for e in range(epochs):
            h = (j["history"] or [])[e] if e < len(j["history"] or []) else None
            cell = "-" if h is None else f"{h['dev_accuracy']:.1f}"
            cells.append(f"**{cell}**" if h is not None and e == j["best_epoch"] else cell)
        lines.append(f"| {j['job']} | " + " | ".join(cells) + f" | {j.get('train_samples_per_s')} |")
    return "\n".join(lines) + "\n"


def fusion_summary(train_reports: dict[str, dict], evaluate_report: dict, features_report: dict) -> dict:
    """The compact fusion section of summary.json."""
    return {
        "features": {k: features_report.get(k) for k in ("distinct_audios", "audios_encoded", "examples_with_audio",
                                                          "span_rows", "seconds", "cached")},
        "train": {v: {"seconds": r.get("seconds"), "cached": r.get("cached"),
                      "best_dev": {j["job"]: j["best_dev"] for j in r.get("jobs", [])}} for v, r in train_reports.items()},
        "evaluate": {k: evaluate_report.get(k) for k in ("seconds", "cached")},
        "ours_vs_paper": evaluate_report.get("ours_vs_paper"),
        "benchmark": evaluate_report.get("benchmark"),
        "bootstrap_unit": evaluate_report.get("bootstrap_unit"),
        "majority": evaluate_report.get("majority"),
        "scoring": evaluate_report.get("scoring"),
        "unscored_rows": evaluate_report.get("unscored_rows"),
        "outputs": evaluate_report.get("outputs"),
        "seconds": round(sum(r.get("seconds", 0) for r in (features_report, evaluate_report, *train_reports.values())), 3),
    }

