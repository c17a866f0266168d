"""The report's sections: one builder per section of the page (overview, accuracy, span detection,
imagination, training, compute) turns a loaded run (`loading.RunData`) into tables (`tables`), notes
and charts (`charts`). The case studies' section is built in `rendering`, being mostly markup.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from ith_core.evaluation.quantiles import ordered_quantiles
from ith_core.evaluation.scoring import (
    PAPER_RESULTS,  # the one copy of the published table
    unit_phrase,
)
from ith_core.fusion.systems import SYSTEMS
from ith_core.report.charts import _chart, chart_acceptance, chart_accuracy, chart_clap, chart_training
from ith_core.report.loading import (
    PRIMARY_METRICS,
    STAGES,
    TEXT_TWIN,
    RunData,
    _devices_used,
    _done_shards,
    _split_key,
    benchmark_of,
    generator_label,
    generator_of,
    profile_of,
    stage_device,
    stage_reused,
    stage_seconds,
    threshold_acceptance,
)
from ith_core.report.tables import Section, Table, _fmt
from storage import run_files

VARIANTS = (("ith", "ITH (imagined audio)"), (TEXT_TWIN, "BERT, fine-tuned text-only"))
PUBLISHED_ROWS = ("ITH", "AudioBERT", "BERT-base", "RoBERTa-base")


def _not_run(stage: str) -> str:
    return f"not run: the run folder has no outputs of stage '{stage}'"


def _stage_state(data: RunData, stage: str) -> str:
    if data.markers.get(stage) is not None:
        return "done"
    if data.layout.exists(stage):
        return "incomplete (no done-marker)"
    return "not run"


def _published() -> dict[str, dict[str, float]]:
    return PAPER_RESULTS


def _ours(data: RunData) -> dict[tuple[str, str, str], dict]:
    """(variant, task, split) -> accuracy over seeds of the primary metric, with its interval."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in data.fusion.results if data.fusion else []:
        if row.get("metric") in PRIMARY_METRICS and row.get("accuracy") is not None:
            groups[(str(row["variant"]), str(row["task"]), str(row["split"]))].append(row)
    out = {}
    for key, rows in groups.items():
        accs = [r["accuracy"] for r in rows]
        mean = sum(accs) / len(accs)
        if len(rows) == 1:
            lo, hi = rows[0].get("ci_low"), rows[0].get("ci_high")
            text = f"{mean:.2f} [{_fmt(lo)}, {_fmt(hi)}]"
        else:
            sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))  # sample sd (ddof 1)
            lo, hi = mean - sd, mean + sd
            text = f"{mean:.2f} ± {sd:.2f} sd ({len(rows)} seeds)"
        out[key] = {"mean": mean, "lo": lo, "hi": hi, "text": text, "n": rows[0].get("n"), "seeds": len(rows)}
    return out


def _reused_cell(data: RunData, stage: str, report: dict | None, yes: str, no: str) -> str | None:
    reused = stage_reused(data, stage)
    if reused is None:
        return (yes if report.get("cached") else no) if report else None
    return yes if reused else no


def section_overview(data: RunData) -> Section:
    s = Section("overview", "Run overview")
    summary, config = data.summary or {}, data.config or {}
    benchmark = benchmark_of(data)
    facts = [
        ["run id", data.layout.run_id],
        ["run folder", data.layout.url()],
        ["benchmark", benchmark],
        ["profile", profile_of(data)],
        ["generator (imagined audio)", generator_label(generator_of(data))],
        ["device setting", config.get("device")],
        ["devices used", ", ".join(_devices_used(data)) or None],
        ["settings fingerprint", (summary.get("fingerprint") or config.get("fingerprint") or "")[:16] or None],
        ["tasks", ", ".join((config.get("data") or {}).get("tasks") or []) or None],
        ["splits", ", ".join((config.get("data") or {}).get("splits") or []) or None],
        ["examples per task and split", (config.get("data") or {}).get("sample_limit", "all") or "all"],
        ["pipeline wall time (s)", summary.get("seconds")],
    ]
    s.tables.append(("table-run", Table(["", ""], facts)))
    rows = []
    for stage in (*STAGES, *(m for m in data.markers if m not in STAGES)):
        report = data.stage_report(stage) or {}
        rows.append(
            [
                stage,
                _stage_state(data, stage),
                _reused_cell(data, stage, report, "yes", "no"),
                stage_seconds(data, stage),
            ]
        )
    s.tables.append(
        (
            "table-stages",
            Table(
                ["stage", "state", "reused from an earlier run", "seconds"],
                rows,
                {3},
                caption="Stages (state from each stage's done-marker)",
            ),
        )
    )
    if data.summary is None:
        s.notes.append("summary.json is missing: the pipeline did not finish writing its summary.")
    return s


def _system_cell(row: dict | None) -> str:
    if row is None:
        return "–"
    text = f"{row['mean']:.2f}" + (f" ± {row['std']:.2f}" if row.get("seeds", 1) > 1 else "")
    if row.get("ci_low") is not None:
        text += f" [{_fmt(row['ci_low'], 1)}, {_fmt(row['ci_high'], 1)}]"
    return text + (f" ({row['seeds']} seeds)" if row.get("seeds", 1) > 1 else "")


def _seed_shown(row: dict) -> Any:
    """The seed cell of a result row: '–' for a zero-shot system (its stored seed is a placeholder)."""
    system = SYSTEMS.get(str(row.get("variant")))
    return "–" if system is not None and not system.trained else row.get("seed")


def section_accuracy(data: RunData) -> Section:
    s = Section("accuracy", "Accuracy: every system of the table, ours beside the published")
    synthetic = benchmark_of(data) == "synthetic"
    # Published numbers belong to AuditoryBench; on another benchmark they would mislead.
    published = {} if synthetic else _published()
    ours = _ours(data)
    summary = (data.fusion.summary if data.fusion else None) or {}
    over_seeds = {
        (r["model"], r["task"], r["split"]): r
        for r in summary.get("over_seeds") or []
        if r.get("metric") in PRIMARY_METRICS
    }
    systems = summary.get("systems") or [{"name": v, "label": label, "seeds": []} for v, label in VARIANTS]
    columns = sorted({k.split("/")[1] for row in _published().values() for k in row}, key=_split_key)
    tasks = ("animal", "pitch")
    keys = [(t, sp) for t in tasks for sp in columns]
    headers = ["system", "source"] + [f"{t} {sp}" for t, sp in keys]
    rows = []
    reproduced = set()
    for system in systems:
        cells = []
        for t, sp in keys:
            got = over_seeds.get((system["name"], t, sp))
            fallback = ours.get((system["name"], t, sp))
            cells.append(
                _system_cell(got)
                if got
                else fallback["text"]
                if fallback
                else ("not run" if data.fusion is None else "–")
            )
        rows.append([system["label"], "this run"] + cells)
        # Like with like: a published row right under the system of this run that reproduces it.
        name = system.get("published")
        if name in published:
            reproduced.add(name)
            rows.append([name, "published"] + [_fmt(published[name].get(f"{t}/{sp}")) for t, sp in keys])
    for a, b in (("ith", TEXT_TWIN), ("ith", "audiobert")):
        if any((a, t, sp) in over_seeds and (b, t, sp) in over_seeds for t, sp in keys):
            label = {TEXT_TWIN: "text-only", "audiobert": "AudioBERT"}[b]
            rows.append(
                [f"ITH − {label}", "this run"]
                + [
                    f"{over_seeds[(a, t, sp)]['mean'] - over_seeds[(b, t, sp)]['mean']:+.2f}"
                    if (a, t, sp) in over_seeds and (b, t, sp) in over_seeds
                    else "–"
                    for t, sp in keys
                ]
            )
    majority = summary.get("majority") or {}
    if majority:
        rows.append(
            ["one constant answer", "this run's gold labels"]
            + [_fmt((majority.get(f"{t}/{sp}") or {}).get("accuracy")) for t, sp in keys]
        )
    for name in () if synthetic else PUBLISHED_ROWS:
        if name not in reproduced:
            rows.append(
                [f"{name} (no system of this run reproduces it)", "published"]
                + [_fmt(published.get(name, {}).get(f"{t}/{sp}")) for t, sp in keys]
            )
    units = unit_phrase(summary.get("bootstrap_unit"))
    s.intro.append(
        "Accuracy in % (animal: exact match of every wordpiece; pitch: higher/lower). Ours: the dev-best "
        "checkpoint of each (system, seed), as mean ± sample standard deviation (ddof 1) over seeds with "
        "a 95% interval [low, high] of the seed-mean from a hierarchical bootstrap (seeds drawn with "
        f"replacement, then {units}: rows that share a sound resample together); zero-shot systems are "
        "one deterministic evaluation, so their interval is over units only. 'One constant answer': the "
        "share of the most frequent gold answer, what a model that ignores its input scores."
    )
    if synthetic:
        s.intro.append(
            "Synthetic benchmark: no published numbers exist for it. Text alone can only reach the "
            "constant-answer level; intervals are bootstrapped over source names, the independent unit."
        )
    else:
        s.intro.append(
            "Published: Yoo, Ok, Lee 2025 (AuditoryBench, full splits), each under the system of this run "
            "that reproduces it: BERT-base and RoBERTa-base are most likely zero-shot cloze (exact counts "
            "of one deterministic evaluation), so they stand under our zero-shot rows, not under the "
            "fine-tuned text-only ones."
        )
    s.tables.append(
        (
            "table-accuracy",
            Table(headers, rows, set(range(2, len(headers))), caption="Accuracy (%) per system, task and split"),
        )
    )
    paired = summary.get("paired") or []
    if paired:
        s.tables.append(
            (
                "table-paired",
                Table(
                    [
                        "comparison",
                        "task",
                        "split",
                        "rows",
                        "difference (points)",
                        "95% CI low",
                        "95% CI high",
                        "share of resamples where the first is not better",
                    ],
                    [
                        [
                            f"{p['a']} − {p['b']}",
                            p["task"],
                            p["split"],
                            p["n"],
                            p["difference"],
                            p["ci_low"],
                            p["ci_high"],
                            p["p_not_better"],
                        ]
                        for p in sorted(paired, key=lambda p: (p["a"], p["b"], p["task"], _split_key(p["split"])))
                    ],
                    {3, 4, 5, 6, 7},
                    caption="Paired hierarchical bootstrap on the rows both systems scored: each "
                    "system's seeds drawn with replacement, then the same units for both; the "
                    "last column is a one-sided bootstrap p-value under the same conditions",
                ),
            )
        )
    if data.fusion is None:
        s.notes.append(_not_run("fusion") + " (fusion/results.parquet); only published numbers are shown.")
        s.charts.append(("chart-accuracy", "Accuracy per split", None))
        return s
    # Rows with n = 0 (e.g. mc4_accuracy where no row had scorable options) carry no number.
    detail = sorted(
        [r for r in data.fusion.results if r.get("n") != 0],
        key=lambda r: (
            str(r.get("task")),
            _split_key(str(r.get("split"))),
            str(r.get("variant")),
            str(r.get("metric")),
            r.get("seed") or 0,
        ),
    )
    s.tables.append(
        (
            "table-accuracy-seeds",
            Table(
                ["task", "split", "variant", "metric", "seed", "n", "accuracy %", "95% CI low", "95% CI high"],
                [
                    [
                        r.get("task"),
                        r.get("split"),
                        r.get("variant"),
                        r.get("metric"),
                        _seed_shown(r),
                        r.get("n"),
                        r.get("accuracy"),
                        r.get("ci_low"),
                        r.get("ci_high"),
                    ]
                    for r in detail
                ],
                {4, 5, 6, 7, 8},
                caption="Every evaluated (task, split, variant, metric, seed); a zero-shot system is one "
                "deterministic evaluation, without a seed (–)",
            ),
        )
    )
    scoring = (data.fusion.summary or {}).get("scoring") or {}
    if scoring:
        s.tables.append(
            (
                "table-scoring",
                Table(
                    ["task/split", "rows", "scored", "windowed", "not scored (reason: rows)"],
                    [
                        [
                            name,
                            a.get("rows"),
                            a.get("scored"),
                            a.get("windowed"),
                            ", ".join(f"{k}: {v}" for k, v in (a.get("unscored") or {}).items()) or "–",
                        ]
                        for name, a in sorted(
                            scoring.items(), key=lambda kv: (kv[0].split("/")[0], _split_key(kv[0].split("/")[1]))
                        )
                    ],
                    {1, 2, 3},
                    caption="Rows of each evaluated split: scored (windowed: longer than max_length, the model saw "
                    "a window around the mask) or not scored, with the reason",
                ),
            )
        )
        unscored = sum(sum((a.get("unscored") or {}).values()) for a in scoring.values())
        if unscored:
            s.notes.append(
                f"{unscored} rows of the evaluated splits could not be scored (table above); accuracy "
                "counts only the scored rows."
            )
    if any(r.get("n") and r.get("split") in ("dev", "test", "wiki") for r in detail):
        s.notes.append(
            "n is the number of examples scored; published numbers use the full splits, a sampled "
            "run is not directly comparable."
        )
    points = {key: {"mean": r["mean"], "lo": r.get("ci_low"), "hi": r.get("ci_high")} for key, r in over_seeds.items()}
    points.update({key: v for key, v in ours.items() if key not in points})
    s.charts.append(
        (
            "chart-accuracy",
            "Accuracy per split: every system of this run with its 95% interval, each "
            "published row (hatched) beside the system that reproduces it",
            _chart(lambda: chart_accuracy(points, systems, published), "accuracy"),
        )
    )
    return s


def section_spans(data: RunData) -> Section:
    s = Section("spans", "Stage 1: auditory span detection")
    metrics = data.span_metrics
    if metrics is None:
        s.notes.append(_not_run("span_detector") + " (span_detector/metrics.json)")
    else:
        rows = []
        for name, label in (("dev_untrained", "before training"), ("dev_trained", "after training")):
            m = metrics.get(name) or {}
            rows.append(
                [label]
                + [
                    m.get(k)
                    for k in ("token_precision", "token_recall", "token_f1", "span_precision", "span_recall", "span_f1")
                ]
            )
        s.tables.append(
            (
                "table-span-metrics",
                Table(
                    ["dev", "token P", "token R", "token F1", "span P", "span R", "span F1"],
                    rows,
                    {1, 2, 3, 4, 5, 6},
                    caption="Span detector on the dev splits",
                ),
            )
        )
        training = metrics.get("training") or {}
        if training:
            s.intro.append(
                f"Trained on {training.get('train_examples', '?')} examples for "
                f"{training.get('steps', '?')} steps ({training.get('epochs_run', '?')} epochs)."
            )
    per_split = (data.stage_report("spans") or {}).get("per_split") or {}
    if per_split:
        rows = [
            [name, v.get("examples"), v.get("examples_with_spans"), v.get("examples_without_spans"), v.get("spans")]
            for name, v in sorted(
                per_split.items(), key=lambda kv: (kv[0].split("/")[0], _split_key(kv[0].split("/")[-1]))
            )
        ]
        s.tables.append(
            (
                "table-span-counts",
                Table(
                    ["task/split", "examples", "with spans", "without spans", "spans"],
                    rows,
                    {1, 2, 3, 4},
                    caption="Detected spans per task and split (sampled examples)",
                ),
            )
        )
    elif data.markers.get("spans") is None:
        s.notes.append(_not_run("spans"))
    return s


def section_imagine(data: RunData) -> Section:
    s = Section("imagine", "Stages 2-3: imagination and CLAP selection")
    report = data.stage_report("imagine") or {}
    plan = data.plan or {}
    if not plan and not report and data.candidates is None:
        s.notes.append(_not_run("imagine"))
        s.charts += [
            ("chart-clap", "CLAP score distribution", None),
            ("chart-acceptance", "Acceptance per threshold", None),
        ]
        return s
    occ = plan.get("occurrences", report.get("occurrences"))
    unique = plan.get("unique_prompts", report.get("unique_prompts"))
    ratio = plan.get("dedup_ratio", report.get("dedup_ratio"))
    settings = plan.get("settings") or {}
    rows = [
        ["span occurrences (incl. examples without a span)", occ],
        ["unique prompts generated", unique],
        ["dedup ratio (occurrences / unique prompts)", f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else None],
        ["already in the audio store when planned", plan.get("already_in_store")],
        [
            "planned shards finished before the last flow run (skipped by it)",
            (data.shards or {}).get("counts", {}).get("skipped") if data.shards else None,
        ],
        ["shards planned", len(plan["shards"]) if "shards" in plan else report.get("shards")],
        ["candidates per prompt", settings.get("num_candidates")],
        ["clip length (s)", settings.get("duration_s")],
        ["inference steps", settings.get("num_inference_steps")],
        ["generator", settings.get("generator_id")],
        ["CLAP", plan.get("clap_id")],
        [
            "span occurrences with audio / without",
            f"{report['accepted']} / {report['rejected']}" if "accepted" in report else None,
        ],
    ]
    s.tables.append(("table-imagine", Table(["", ""], rows, caption="Generation and deduplication")))
    used = threshold_acceptance(report, data.selection)
    if used:
        s.tables.append(
            (
                "table-threshold-used",
                Table(
                    ["task", "threshold used", "accepted", "occurrences", "rate %"],
                    [
                        [r["task"], f"{r['threshold']:g}", r["accepted"], r["occurrences"], 100 * r["rate"]]
                        for r in used
                    ],
                    {1, 2, 3, 4},
                    caption="The run's own CLAP threshold per task and the span occurrences it gave audio to",
                ),
            )
        )
    if data.acceptance:
        s.tables.append(
            (
                "table-acceptance",
                Table(
                    ["task", "threshold", "accepted", "occurrences", "rate %"],
                    [
                        [r["task"], f"{r['threshold']:.2f}", r["accepted"], r["occurrences"], 100 * r["rate"]]
                        for r in sorted(data.acceptance, key=lambda r: (r["task"], r["threshold"]))
                    ],
                    {1, 2, 3, 4},
                    caption="Span occurrences that get audio at each CLAP threshold (first-passing rule)",
                ),
            )
        )
    quantiles = ordered_quantiles(report.get("clap_score_quantiles"))
    if quantiles:
        s.tables.append(
            (
                "table-clap-quantiles",
                Table(
                    [k for k, _ in quantiles],
                    [[float(v) for _, v in quantiles]],
                    set(range(len(quantiles))),
                    caption="CLAP score quantiles (all candidates)",
                ),
            )
        )
    thresholds = report.get("thresholds") or {}
    s.charts.append(
        (
            "chart-clap",
            "CLAP score of every candidate, per task, with the run's thresholds",
            _chart(lambda: chart_clap(data, thresholds), "clap") if data.candidates else None,
        )
    )
    s.charts.append(
        (
            "chart-acceptance",
            "Share of span occurrences with audio per CLAP threshold",
            _chart(lambda: chart_acceptance(data.acceptance, thresholds), "acceptance") if data.acceptance else None,
        )
    )
    if data.candidates is None:
        s.notes.append("imagine/candidates.parquet is missing: the selection step has not finished.")
    return s


def section_training(data: RunData) -> Section:
    s = Section("training", "Training curves")
    span_losses = ((data.span_metrics or {}).get("training") or {}).get("epoch_mean_loss") or []
    if not span_losses and not data.training_logs:
        s.notes.append("no training history in this run (span_detector/metrics.json, fusion training logs)")
        s.charts.append(("chart-training", "Training curves", None))
        return s
    if data.training_logs:
        s.tables.append(
            (
                "table-training",
                Table(
                    ["job", "steps", "best dev %", "best epoch", "seconds", "world size"],
                    [
                        [
                            j["job"],
                            j.get("steps"),
                            j.get("best_dev"),
                            None
                            if j.get("best_epoch") is None
                            else j["best_epoch"] + 1,  # epochs count from 1, as in the chart
                            j.get("seconds"),
                            j.get("world_size"),
                        ]
                        for j in data.training_logs
                    ],
                    {1, 2, 3, 4, 5},
                    caption="Fusion LM training jobs",
                ),
            )
        )
    elif data.fusion is None:
        s.notes.append(_not_run("fusion") + ": only the span detector's curve is shown.")
    s.charts.append(
        (
            "chart-training",
            "Training loss and dev accuracy per epoch",
            _chart(lambda: chart_training(span_losses, data.training_logs), "training"),
        )
    )
    return s


def section_compute(data: RunData) -> Section:
    s = Section("compute", "Compute per stage")
    rows = []
    per_system = [m for m in data.markers if m not in STAGES]
    extra = sorted(set((data.summary or {}).get("stages") or {}) - set(STAGES) - set(per_system))
    for stage in (*STAGES, *per_system, *extra):
        report = data.stage_report(stage)
        if report is None and data.markers.get(stage) is None:
            rows.append([stage, "not run", None, None, None])
            continue
        report = report or {}
        device = stage_device(data, stage)
        gpu = report.get("gpu_seconds")
        wall = stage_seconds(data, stage)
        if stage == "imagine":
            on_gpu = [
                float(r.get("seconds") or 0) for r in _done_shards(data) if str(r.get("device")).startswith("cuda")
            ]
            gpu = round(sum(on_gpu), 3) if on_gpu else None
        elif gpu is None and str(device or "").startswith("cuda") and wall is not None:
            gpu = round(float(wall) * int(report.get("num_processes") or 1), 3)
        rows.append([stage, _reused_cell(data, stage, report, "reused", "computed"), device or "–", wall, gpu])
    s.tables.append(
        (
            "table-compute",
            Table(["stage", "this run", "device", "seconds", "GPU-seconds"], rows, {3, 4}, caption="Time per stage"),
        )
    )
    s.intro.append(
        "Seconds as recorded by each stage when it ran (a stage reused from an earlier run keeps its "
        "original time; imagine: the flow run that finished it, plan and shards included, the same number "
        "as in the stage table). Device: the device each stage recorded using ('–': none recorded, e.g. "
        "ingestion, which needs no accelerator). GPU-seconds: imagine shards run on a CUDA device in the "
        "last flow run (from imagine/shards.json), the wall time of a stage that records a CUDA device "
        "(times its processes), or a stage's own gpu_seconds."
    )
    return s


def section_rehearsal(data: RunData) -> Section | None:
    """A rehearsal's own section (`ith rehearse` writes rehearsal.json): what it is, the size knobs it
    reduced, each stage's cost and the projection; None for every other run."""
    if not data.layout.exists(*run_files.REHEARSAL):
        return None
    r = data.layout.read_json(*run_files.REHEARSAL)
    s = Section("rehearsal", "Rehearsal: random weights at paper size")
    s.intro.append(
        f"{r['what']}. Size {r['size']}; the size knobs reduced from the paper profile (every other setting is "
        f"the profile's, as config.json holds it): {r['reduced_knobs']}."
    )

    def gib(n):
        return None if n is None else round(n / 2**30, 2)

    s.tables.append(
        (
            "table-rehearsal-stages",
            Table(
                [
                    "stage (Prefect task)",
                    "runs",
                    "seconds",
                    "flow RSS GiB",
                    "+ trainers GiB",
                    "peak CUDA GiB",
                    "written GiB",
                ],
                [
                    [
                        x["stage"],
                        x["runs"],
                        x["seconds"],
                        gib(x["peak_rss_bytes"]),
                        gib(x.get("peak_total_rss_bytes")),
                        gib(x["peak_cuda_bytes"]),
                        gib(x["bytes_written"]),
                    ]
                    for x in r["stages"]
                ],
                numeric={1, 2, 3, 4, 5, 6},
            ),
        )
    )
    s.tables.append(
        (
            "table-rehearsal-units",
            Table(
                ["unit cost", "seconds", "measured as"],
                [[k, u["value"], u["from"]] for k, u in r["unit_costs"].items()],
                numeric={1},
            ),
        )
    )
    total = r["projection"]["total_hours"]
    s.notes.append(
        f"Projected whole paper run on this machine: {total['one_candidate']} to {total['all_candidates']} hours "
        "(1 to 5 candidates per prompt); every count is in rehearsal.json."
    )
    return s
