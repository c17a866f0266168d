"""Reading a run folder for the report: its summary, config, stage markers and outputs, training
logs, and what the report derives from them (stage times, devices and reuse; the case studies).

    data = load_run("runs", "tiny-0123456789ab")   # RunData

Reads through `storage.layout.RunLayout`, so any fsspec URL. A stage whose outputs are absent
leaves its fields empty; a file that exists but cannot be read is logged and recorded in
`RunData.problems`, never raised: the report never fails because a stage is missing or broken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from ith_core.fusion.systems import SYSTEMS, eval_stage_name, train_stage_name
from storage import run_files
from storage.layout import DONE_MARKER, RunLayout

logger = logging.getLogger(__name__)

STAGES = (
    run_files.INGEST,
    run_files.SPAN_DETECTOR,
    run_files.SPANS,
    run_files.IMAGINE,
    run_files.FUSION_EXAMPLES,
    run_files.FUSION_FEATURES,
    run_files.AUDIOBERT_RETRIEVAL,
    run_files.AUDIOBERT_FEATURES,
    run_files.FUSION,
)
# Stages with one folder per (system, seed): fusion_train/<system>-seed<seed>, fusion_eval/<system>[-seed<seed>].
PER_SYSTEM_STAGES = (run_files.FUSION_TRAIN, run_files.FUSION_EVAL)
SPLIT_ORDER = ("train", "dev", "test", "wiki")
# The case studies compare ITH with its text-only twin, the same LM fine-tuned without audio
# (system `bert-text`); every table and chart names a system as ith_core.evaluation.scoring does.
TEXT_TWIN = "bert-text"
PRIMARY_METRICS = ("exact_match", "accuracy")


@dataclass
class FusionOutputs:
    results: list[dict]  # task, split, variant, metric, seed, n, accuracy/ci_low/ci_high in %
    predictions: list[dict]  # example_id, task, split, variant, prediction, gold, correct, spans_used, audio_ids
    summary: dict | None


@dataclass
class RunData:
    layout: RunLayout
    summary: dict | None = None
    config: dict | None = None
    markers: dict[str, dict | None] = field(default_factory=dict)
    span_metrics: dict | None = None
    examples: dict[str, dict] = field(default_factory=dict)
    spans: dict[str, list[dict]] = field(default_factory=dict)  # example_id -> detected spans
    sampled: list[dict] = field(default_factory=list)  # sampled examples of the spans stage
    plan: dict | None = None
    shards: dict | None = None
    mapping: list[dict] | None = None
    candidates: list[dict] | None = None
    selection: list[dict] | None = None
    acceptance: list[dict] | None = None
    fusion: FusionOutputs | None = None
    training_logs: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read

    def stage_report(self, stage: str) -> dict | None:
        stages = (self.summary or {}).get("stages") or {}
        if isinstance(stages.get(stage), dict):
            return stages[stage]
        marker = self.markers.get(stage)
        return marker.get("report") if isinstance(marker, dict) else None


def _attempt(data: RunData, what: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except FileNotFoundError:
        return None
    except Exception as error:  # a broken file must not take the whole report down
        logger.warning("report: could not read %s: %s", what, error)
        data.problems.append(f"{what}: {type(error).__name__}: {error}")
        return None


def _table_rows(layout: RunLayout, *parts: str) -> list[dict] | None:
    if not layout.exists(*parts):
        return None
    return layout.read_table(*parts).to_pylist()


def _json(layout: RunLayout, *parts: str) -> Any:
    if not layout.exists(*parts):
        return None
    return layout.read_json(*parts)


def _percent_scale(rows: list[dict]) -> float:
    """Accuracies may come as fractions or as percentages; the report shows percentages."""
    values = [r.get(k) for r in rows for k in ("accuracy", "ci_high") if isinstance(r.get(k), (int, float))]
    return 100.0 if values and max(values) <= 1.0 else 1.0


def read_fusion(layout: RunLayout, summary: dict | None) -> FusionOutputs | None:
    """The fusion stage's outputs, or None when it has not run.

    Contract: `fusion/results.parquet` (one row per task/split/variant[/metric]/seed: accuracy,
    ci_low, ci_high, n), `fusion/predictions.parquet` (example_id, task, split, variant 'ith' or
    'bert-text', ..., prediction, gold, correct, spans_used, audio_ids) and a `fusion` entry in
    summary.json. `model` is read as a synonym of `variant` (ith_core.evaluation.scoring's name), a
    missing `metric` as the task's primary metric, fractions as percentages.
    """
    results = _table_rows(layout, *run_files.RESULTS_TABLE)
    predictions = _table_rows(layout, *run_files.ALL_PREDICTIONS)
    stage = ((summary or {}).get("stages") or {}).get("fusion")
    if results is None and predictions is None and stage is None:
        return None
    results = results or []
    scale = _percent_scale(results)
    for row in results:
        row.setdefault("variant", row.get("model"))
        row.setdefault("metric", "exact_match" if row.get("task") == "animal" else "accuracy")
        row.setdefault("seed", 0)
        for key in ("accuracy", "ci_low", "ci_high"):
            value = row.get(key)
            row[key] = None if value is None or (isinstance(value, float) and math.isnan(value)) else value * scale
    for row in predictions or []:
        row.setdefault("variant", row.get("model"))
    return FusionOutputs(results=results, predictions=predictions or [], summary=stage)


def _per_system_stages(layout: RunLayout) -> list[str]:
    """`fusion_train/<system>-seed<s>` and `fusion_eval/...` stages present in the run folder."""
    found = []
    for parent in PER_SYSTEM_STAGES:
        if layout.exists(parent):
            found += sorted(
                f"{parent}/{posixpath.basename(p.rstrip('/'))}"
                for p in layout.fs.ls(layout.path(parent), detail=False)
                if not posixpath.basename(p.rstrip("/")).startswith(".")
            )
    return found


def job_label(system: str, job: dict, fallback: str) -> str:
    """'bert-text animal seed 42': a training job named by its system, since the job folders of
    BERT's and RoBERTa's text-only training are both 'text-animal-seed42'."""
    if job.get("task") is not None and job.get("seed") is not None:
        return f"{system} {job['task']} seed {job['seed']}"
    return f"{system} {fallback}"


def _training_logs(data: RunData) -> list[dict]:
    """Per-job training histories: the `jobs` of every training stage report, then train_log.json
    files; `job` is the job's label (`job_label`)."""
    logs: dict[str, dict] = {}
    names = [n for n in data.markers if n.startswith("fusion_train/")]
    for stage in names:
        report = data.stage_report(stage) or {}
        system = str(report.get("system") or re.sub(r"-seed\d+$", "", stage.split("/", 1)[1]))
        entries = report.get("jobs")
        if isinstance(entries, dict):
            entries = list(entries.values())
        for entry in entries or []:
            if isinstance(entry, dict) and entry.get("history"):
                name = str(entry.get("job") or entry.get("name") or len(logs))
                logs.setdefault(job_label(system, entry, name), entry)
    layout = data.layout
    for path in sorted(layout.fs.glob(layout.path(run_files.FUSION_TRAIN, "*", "*", "train_log.json"))):
        with layout.fs.open(path, "rb") as handle:
            entry = json.load(handle)
        if entry.get("history"):
            folder = posixpath.dirname(path)
            system = re.sub(r"-seed\d+$", "", posixpath.basename(posixpath.dirname(folder)))
            logs.setdefault(job_label(system, entry, str(entry.get("job") or posixpath.basename(folder))), entry)
    return [logs[name] | {"job": name} for name in sorted(logs)]


def load_run(run_root: str, run_id: str) -> RunData:
    layout = RunLayout(run_root, run_id)
    data = RunData(layout=layout)
    data.summary = _attempt(data, "/".join(run_files.SUMMARY), lambda: _json(layout, *run_files.SUMMARY))
    data.config = _attempt(data, "/".join(run_files.CONFIG), lambda: _json(layout, *run_files.CONFIG))
    for stage in (*STAGES, *(_attempt(data, "per-system stages", lambda: _per_system_stages(layout)) or [])):
        data.markers[stage] = _attempt(data, f"{stage}/{DONE_MARKER}", lambda s=stage: _json(layout, s, DONE_MARKER))
    data.span_metrics = _attempt(data, "/".join(run_files.SPAN_METRICS), lambda: _json(layout, *run_files.SPAN_METRICS))

    def spans() -> None:
        if not layout.exists(run_files.SPANS):
            return
        for path in sorted(layout.fs.glob(layout.path(run_files.SPANS, "*.parquet"))):
            name = posixpath.basename(path)
            if name.startswith(".tmp-"):
                continue
            rows = layout.read_table(run_files.SPANS, name).to_pylist()
            if name.endswith(".examples.parquet"):
                data.sampled.extend(rows)
            else:
                for row in rows:
                    data.spans.setdefault(row["example_id"], []).append(row)
        for rows in data.spans.values():
            rows.sort(key=lambda r: r["span_index"])

    _attempt(data, "spans/*.parquet", spans)
    data.plan = _attempt(data, "/".join(run_files.PLAN), lambda: _json(layout, *run_files.PLAN))
    data.shards = _attempt(data, "/".join(run_files.SHARD_STATUS), lambda: _json(layout, *run_files.SHARD_STATUS))
    for name, parts in (
        ("mapping", run_files.MAPPING),
        ("candidates", run_files.CANDIDATES),
        ("selection", run_files.SELECTION),
        ("acceptance", run_files.ACCEPTANCE),
    ):
        setattr(data, name, _attempt(data, "/".join(parts), lambda p=parts: _table_rows(layout, *p)))
    data.fusion = _attempt(data, "fusion outputs", lambda: read_fusion(layout, data.summary))
    data.training_logs = _attempt(data, "training logs", lambda: _training_logs(data)) or []

    def examples() -> None:
        # Only the rows the case studies can show: the sampled examples of the spans stage.
        if not layout.exists(*run_files.EXAMPLES):
            return
        table = layout.read_table(*run_files.EXAMPLES)
        wanted = {r["example_id"] for r in data.sampled} | set(data.spans)
        if wanted:
            table = table.filter(pc.is_in(table["example_id"], value_set=pa.array(sorted(wanted), pa.string())))
        cols = [c for c in ("example_id", "task", "split", "sentence", "answer", "spans") if c in table.column_names]
        data.examples = {r["example_id"]: r for r in table.select(cols).to_pylist()}

    _attempt(data, "/".join(run_files.EXAMPLES), examples)
    return data


# ---------------------------------------------------------------------------------------------
# What the report derives from the run


def _split_key(name: str) -> tuple:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def benchmark_of(data: RunData) -> str:
    return str((data.config or {}).get("benchmark") or "auditorybench")


def profile_of(data: RunData) -> str | None:
    """The run's profile, or `rehearsal` for a paper run on rehearsal checkpoints (random weights at paper size)."""
    if (data.config or {}).get("rehearsal"):
        return "rehearsal"
    return (data.summary or {}).get("profile") or (data.config or {}).get("profile")


def generator_of(data: RunData) -> dict:
    """Which generator imagined the run's audio: name (`imagine.generator`), id (its identity, which
    enters every audio id) and whether any system heard imagined audio, as the fusion stage recorded
    it (summary.json, else the fusion marker); a run from before that: config.json and plan.json."""
    marker = data.markers.get(run_files.FUSION)
    for report in (data.stage_report(run_files.FUSION), marker.get("report") if isinstance(marker, dict) else None):
        if isinstance((report or {}).get("generator"), dict):
            return report["generator"]
    settings = (data.plan or {}).get("settings") or {}
    return {
        "name": ((data.config or {}).get("imagine") or {}).get("generator"),
        "id": settings.get("generator_id"),
        "imagined": None if data.plan is None else True,
    }


def generator_label(generator: dict) -> str:
    """'tone (tiny-0123abcd)', or what the run says of its generator when it imagined nothing."""
    name = generator.get("name") or "unknown generator"
    if generator.get("imagined") is False:
        return f"{name} (no system heard imagined audio)"
    return f"{name} ({generator['id']})" if generator.get("id") else name


def threshold_acceptance(report: dict, selection: list[dict] | None) -> list[dict]:
    """Per task: the threshold the run used and how many span occurrences it gave audio to."""
    recorded = report.get("acceptance_at_threshold")
    if recorded:
        return sorted(recorded, key=lambda r: r["task"])
    counts: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0, 0])
    for row in selection or []:
        if row.get("threshold") is None:
            continue
        entry = counts[(row["task"], round(float(row["threshold"]), 6))]
        entry[0] += bool(row.get("accepted"))
        entry[1] += 1
    return [
        {"task": task, "threshold": threshold, "accepted": a, "occurrences": n, "rate": a / n if n else 0.0}
        for (task, threshold), (a, n) in sorted(counts.items())
    ]


def _done_shards(data: RunData) -> list[dict]:
    return [r for r in ((data.shards or {}).get("shards") or []) if r.get("status") == "done"]


# summary.json's fusion section records reuse per prepared stage under these names.
_PREPARED = {
    "fusion_examples": "examples",
    "fusion_features": "features",
    "audiobert_retrieval": "audiobert_retrieval",
    "audiobert_features": "audiobert_features",
}


def stage_reused(data: RunData, stage: str) -> bool | None:
    """Whether the pipeline run that wrote summary.json reused the stage (its seconds are then those
    of the run that computed it); None where the summary does not say."""
    stages = (data.summary or {}).get("stages") or {}
    own = stages.get(stage)
    if stage != "fusion" and isinstance(own, dict) and "cached" in own:
        return bool(own["cached"])
    fusion = stages.get("fusion") if isinstance(stages.get("fusion"), dict) else {}
    if stage == "fusion":
        entry = fusion.get("summarise")
        return bool(entry.get("cached")) if isinstance(entry, dict) and "cached" in entry else None
    if stage in _PREPARED:
        entry = (fusion.get("prepared") or {}).get(_PREPARED[stage])
        return bool(entry.get("cached")) if isinstance(entry, dict) and "cached" in entry else None
    for kind, name_of in (("train", train_stage_name), ("evaluate", eval_stage_name)):
        for entry in fusion.get(kind) or []:
            if (
                isinstance(entry, dict)
                and entry.get("system") in SYSTEMS
                and "cached" in entry
                and name_of(entry["system"], entry.get("seed")) == stage
            ):
                return bool(entry["cached"])
    return None


def stage_seconds(data: RunData, stage: str) -> float | None:
    """A stage's seconds as it recorded them when it was computed (a rerun that reuses it keeps
    them); one number for both tables of the report.

    Imagine records the wall time of the flow run that finished it, plan and shards included
    (`seconds_total`); a run folder from before that gets plan + shards + selection.
    """
    report = data.stage_report(stage)
    if report is None:
        return None
    if stage != "imagine":
        # summary.json's fusion section counts the seconds its run spent; the stage `fusion` itself
        # (the results) recorded its own in its marker.
        if (stage == "fusion" or report.get("seconds") is None) and isinstance(data.markers.get(stage), dict):
            return (data.markers[stage].get("report") or {}).get("seconds")
        return report.get("seconds")
    if report.get("seconds_total") is not None:
        return float(report["seconds_total"])
    shards = sum(float(r.get("seconds") or 0) for r in _done_shards(data))
    return round(float((data.plan or {}).get("seconds") or 0) + shards + float(report.get("seconds") or 0), 3)


def stage_device(data: RunData, stage: str) -> str | None:
    """The device a stage ran on, as it recorded it; None where it recorded none (CPU-only work, older runs)."""
    # Imagine records the devices its shards ran on when it was computed (a rerun skips them all);
    # a run folder from before that: the shards the last flow run generated.
    device = (data.stage_report(stage) or {}).get("device")
    if not device and stage == "imagine":
        device = ", ".join(sorted({str(r.get("device")) for r in _done_shards(data) if r.get("device")}))
    return str(device) if device else None


def _devices_used(data: RunData) -> list[str]:
    found = {stage_device(data, stage) for stage in (*STAGES, *data.markers)}
    return sorted({d for text in found if text for d in text.split(", ")})


# ---------------------------------------------------------------------------------------------
# Case studies: which examples represent the run


# The kinds of example a case study can be, in the order they are shown.
CASE_KINDS = (
    ("ith_only", "ITH right, text-only wrong"),
    ("text_only", "ITH wrong, text-only right"),
    ("both_right", "both right"),
    ("both_wrong", "both wrong"),
    ("unscored", "no predictions"),
)


def _case_kind(predictions: dict[str, dict]) -> str:
    ith, text = (predictions.get("ith") or {}).get("correct"), (predictions.get(TEXT_TWIN) or {}).get("correct")
    if ith is None or text is None:
        return "unscored"
    return {(True, False): "ith_only", (False, True): "text_only", (True, True): "both_right"}.get(
        (bool(ith), bool(text)), "both_wrong"
    )


def _first_seed_predictions(data: RunData) -> tuple[dict[str, dict[str, dict]], Any]:
    """example id -> variant -> prediction, of one seed (the smallest) so ITH and text-only are a pair."""
    rows = [r for r in (data.fusion.predictions if data.fusion else []) if r.get("variant") in ("ith", TEXT_TWIN)]
    seed = min((r.get("seed") or 0 for r in rows), default=None)
    preds: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        if (row.get("seed") or 0) == seed:
            preds[row["example_id"]].setdefault(row["variant"], row)
    return preds, seed


def _cases(data: RunData, per_task: int) -> tuple[list[dict], dict]:
    """Examples that represent the run: per task, one of each kind in turn (ITH right and text-only
    wrong, the reverse, both right, both wrong), so wins are shown next to losses.

    Within a kind, an example whose spans got audio comes first (it has more to show), then a
    fixed order (a hash of the example id), never the accuracy. Returns the cases and, per task,
    how many examples of each kind the run has and how many are shown.
    """
    preds, seed = _first_seed_predictions(data)
    selection: dict[str, list[dict]] = defaultdict(list)
    for row in data.selection or []:
        selection[row["example_id"]].append(row)
    ids = sorted(set(r["example_id"] for r in data.sampled) or set(data.spans) | set(selection))

    def order(example_id: str) -> tuple:
        with_audio = any(r.get("accepted") for r in selection.get(example_id, []))
        return (not with_audio, not data.spans.get(example_id), hashlib.sha256(example_id.encode()).hexdigest())

    pools: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    unscored = 0
    for example_id in sorted(ids, key=order):
        kind = _case_kind(preds.get(example_id, {}))
        if kind == "unscored" and preds:  # a split fusion did not evaluate (train): nothing to compare
            unscored += 1
            continue
        pools[example_id.split("/")[0]][kind].append(example_id)
    chosen: list[tuple[str, str]] = []
    strata: dict[str, dict] = {}
    for task in sorted(pools):
        kinds = [k for k, _ in CASE_KINDS if pools[task].get(k)]
        taken = {k: 0 for k in kinds}
        while sum(taken.values()) < per_task and any(taken[k] < len(pools[task][k]) for k in kinds):
            for kind in kinds:
                if sum(taken.values()) < per_task and taken[kind] < len(pools[task][kind]):
                    chosen.append((pools[task][kind][taken[kind]], kind))
                    taken[kind] += 1
        strata[task] = {
            k: {"examples": len(pools[task].get(k, [])), "shown": taken.get(k, 0)}
            for k, _ in CASE_KINDS
            if pools[task].get(k)
        }
    cands: dict[str, list[dict]] = defaultdict(list)
    for row in data.candidates or []:
        cands[row["audio_id"]].append(row)
    cases = []
    for example_id, kind in chosen:
        example = data.examples.get(example_id, {})
        spans_out = []
        sel_rows = sorted(selection.get(example_id, []), key=lambda r: r["span_index"])
        detected = {r["span_index"]: r for r in data.spans.get(example_id, [])}
        for sel in sel_rows or [{"span_index": i, "span_text": d["span_text"]} for i, d in sorted(detected.items())]:
            spans_out.append(
                {
                    "span_index": sel["span_index"],
                    "span_text": sel.get("span_text"),
                    "threshold": sel.get("threshold"),
                    "chosen": sel.get("candidate"),
                    "accepted": sel.get("accepted"),
                    "candidates": sorted(cands.get(sel.get("audio_id"), []), key=lambda r: r["candidate"]),
                    "imagined": "audio_id" in sel,
                }
            )
        cases.append(
            {
                "example_id": example_id,
                "task": example_id.split("/")[0],
                "sentence": example.get("sentence"),
                "gold": example.get("answer"),
                "detected": list(detected.values()),
                "spans": spans_out,
                "predictions": preds.get(example_id, {}),
                "kind": kind,
            }
        )
    return cases, {"per_task": strata, "seed": seed, "left_out_unscored": unscored}
