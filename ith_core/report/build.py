"""The run report: one self-contained HTML page (and the same tables in Markdown) per run.

    from ith_core.report.build import write_report
    paths = write_report("runs", "tiny-0123456789ab")   # {"html": ..., "markdown": ...}

Reads whatever the run folder holds (through `storage.layout.RunLayout`, so any fsspec URL) and
writes `<run>/report/report.html` and `<run>/report/report.md`, each atomically. Every section
stands alone: a stage whose outputs are absent is reported as "not run", an unreadable file as
the error it raised; the report itself never fails because a stage is missing.

The HTML page needs nothing from the network: charts are inline SVG (matplotlib, Agg), styles
are inline, there is no script. Audio players link the shared audio store by relative paths
(`../../_imagine/audio/...` from `<run>/report/`), so the page plays the clips when opened from
the run root on disk, or from a copy of the run root that keeps `_imagine/` beside the run.
Everything taken from data (sentences, spans, predictions) is escaped: span text is untrusted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import io
import json
import logging
import math
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

from storage.audio_store import STORE_DIR
from storage.layout import DONE_MARKER, RunLayout

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
STAGES = ("ingest", "span_detector", "spans", "imagine", "fusion_examples", "fusion_features", "audiobert_retrieval",
          "audiobert_features", "fusion")
# Stages with one folder per (system, seed): fusion_train/<system>-seed<seed>, fusion_eval/<system>[-seed<seed>].
PER_SYSTEM_STAGES = ("fusion_train", "fusion_eval")
SPLIT_ORDER = ("train", "dev", "test", "wiki")
# The case studies compare ITH with its text-only twin, the same LM fine-tuned without audio
# (system `bert-text`); every table and chart names a system as ith_core.evaluation.scoring does.
TEXT_TWIN = "bert-text"
VARIANTS = (("ith", "ITH (imagined audio)"), (TEXT_TWIN, "BERT, fine-tuned text-only"))
PUBLISHED_ROWS = ("ITH", "AudioBERT", "BERT-base", "RoBERTa-base")
PRIMARY_METRICS = ("exact_match", "accuracy")
# From <run_root>/<run_id>/report/ up to the run root, where the audio store lives.
STORE_FROM_REPORT = f"../../{STORE_DIR}/"


# ---------------------------------------------------------------------------------------------
# Reading the run folder


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
    results = _table_rows(layout, "fusion", "results.parquet")
    predictions = _table_rows(layout, "fusion", "predictions.parquet")
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
            found += sorted(f"{parent}/{posixpath.basename(p.rstrip('/'))}"
                            for p in layout.fs.ls(layout.path(parent), detail=False)
                            if not posixpath.basename(p.rstrip("/")).startswith("."))
    return found


def _seed_shown(row: dict) -> Any:
    """The seed cell of a result row: '–' for a zero-shot system (its stored seed is a placeholder)."""
    from ith_core.stages.fusion import SYSTEMS

    system = SYSTEMS.get(str(row.get("variant")))
    return "–" if system is not None and not system.trained else row.get("seed")


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
    for path in sorted(layout.fs.glob(layout.path("fusion_train", "*", "*", "train_log.json"))):
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
    data.summary = _attempt(data, "summary.json", lambda: _json(layout, "summary.json"))
    data.config = _attempt(data, "config.json", lambda: _json(layout, "config.json"))
    for stage in (*STAGES, *(_attempt(data, "per-system stages", lambda: _per_system_stages(layout)) or [])):
        data.markers[stage] = _attempt(data, f"{stage}/{DONE_MARKER}", lambda s=stage: _json(layout, s, DONE_MARKER))
    data.span_metrics = _attempt(data, "span_detector/metrics.json",
                                 lambda: _json(layout, "span_detector", "metrics.json"))

    def spans() -> None:
        if not layout.exists("spans"):
            return
        for path in sorted(layout.fs.glob(layout.path("spans", "*.parquet"))):
            name = posixpath.basename(path)
            if name.startswith(".tmp-"):
                continue
            rows = layout.read_table("spans", name).to_pylist()
            if name.endswith(".examples.parquet"):
                data.sampled.extend(rows)
            else:
                for row in rows:
                    data.spans.setdefault(row["example_id"], []).append(row)
        for rows in data.spans.values():
            rows.sort(key=lambda r: r["span_index"])

    _attempt(data, "spans/*.parquet", spans)
    data.plan = _attempt(data, "imagine/plan.json", lambda: _json(layout, "imagine", "plan.json"))
    data.shards = _attempt(data, "imagine/shards.json", lambda: _json(layout, "imagine", "shards.json"))
    for name in ("mapping", "candidates", "selection", "acceptance"):
        setattr(data, name, _attempt(data, f"imagine/{name}.parquet",
                                     lambda n=name: _table_rows(layout, "imagine", f"{n}.parquet")))
    data.fusion = _attempt(data, "fusion outputs", lambda: read_fusion(layout, data.summary))
    data.training_logs = _attempt(data, "training logs", lambda: _training_logs(data)) or []

    def examples() -> None:
        # Only the rows the case studies can show: the sampled examples of the spans stage.
        if not layout.exists("ingest", "examples.parquet"):
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        table = layout.read_table("ingest", "examples.parquet")
        wanted = {r["example_id"] for r in data.sampled} | set(data.spans)
        if wanted:
            table = table.filter(pc.is_in(table["example_id"], value_set=pa.array(sorted(wanted), pa.string())))
        cols = [c for c in ("example_id", "task", "split", "sentence", "answer", "spans") if c in table.column_names]
        data.examples = {r["example_id"]: r for r in table.select(cols).to_pylist()}

    _attempt(data, "ingest/examples.parquet", examples)
    return data


# ---------------------------------------------------------------------------------------------
# Tables: plain strings in, rendered escaped as HTML or Markdown


class Raw(str):
    """A table cell already in the output's markup (built from escaped pieces)."""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns
    caption: str = ""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _html_cell(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(_fmt(value))


def _html_table(table: Table, css: str = "") -> str:
    head = "".join(f'<th{" class=num" if i in table.numeric else ""}>{html.escape(h)}</th>'
                   for i, h in enumerate(table.headers))
    body = []
    for row in table.rows:
        cells = "".join(f'<td{" class=num" if i in table.numeric else ""}>{_html_cell(v)}</td>'
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    thead = f"<thead><tr>{head}</tr></thead>" if any(table.headers) else ""  # key-value tables have none
    css = f"{css} keyvalue" if not any(table.headers) else css
    return (f'<table class="{css}">{caption}{thead}'
            f'<tbody>{"".join(body)}</tbody></table>')


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: Any) -> str:
    """Text from data as inert Markdown: no markup, no raw HTML, no broken table cells."""
    value = _fmt(text)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", " ".join(value.split()))


def _md_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines += [f"*{md_escape(table.caption)}*", ""]
    lines.append("| " + " | ".join(md_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---:" if i in table.numeric else "---" for i in range(len(table.headers))) + "|")
    lines += ["| " + " | ".join(v if isinstance(v, Raw) else md_escape(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Sections (shared by the HTML and the Markdown output)


@dataclass
class Section:
    anchor: str
    title: str
    intro: list[str] = field(default_factory=list)  # paragraphs of plain text
    tables: list[tuple[str, Table]] = field(default_factory=list)  # (id, table)
    charts: list[tuple[str, str, str | None]] = field(default_factory=list)  # (id, caption, svg or None)
    notes: list[str] = field(default_factory=list)
    raw_html: str = ""  # case studies: built from escaped pieces


def _not_run(stage: str) -> str:
    return f"not run: the run folder has no outputs of stage '{stage}'"


def _stage_state(data: RunData, stage: str) -> str:
    if data.markers.get(stage) is not None:
        return "done"
    if data.layout.exists(stage):
        return "incomplete (no done-marker)"
    return "not run"


def _split_key(name: str) -> tuple:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def _published() -> dict[str, dict[str, float]]:
    from ith_core.evaluation.scoring import PAPER_RESULTS  # the one copy of the published table

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


def benchmark_of(data: RunData) -> str:
    return str((data.config or {}).get("benchmark") or "auditorybench")


BENCHMARK_MEANING = {
    "auditorybench": "AuditoryBench (Ok, Yoo, Lee 2024), the benchmark of the published table.",
    "synthetic": ("the planted-signal benchmark (ith_core.data.synthetic): AuditoryBench's layout and schemas, made-up "
                  "source names unknown to the LM, answers that depend only on each source's hidden tone, which "
                  "the `tone` generator renders (a check, not a text-to-audio model). ITH above text-only here "
                  "proves that the audio path carries information from generation to the answer; it says nothing "
                  "about real sounds or about the published numbers. Intervals are bootstrapped by source name."),
}


def profile_of(data: RunData) -> str | None:
    return (data.summary or {}).get("profile") or (data.config or {}).get("profile")


def profile_statement(profile: str | None, benchmark: str = "auditorybench") -> str:
    """What a run's numbers can mean, given its profile: the first thing the report and artifacts say."""
    if profile == "tiny":
        if benchmark == "synthetic":
            return ("Profile tiny on the planted-signal benchmark: the LM, CLAP and audio encoder have random weights "
                    "and the generator renders each source's hidden tone, so the accuracies say nothing about the "
                    "method on real sounds; ITH above text-only shows that the audio path carries information from "
                    "generation to the answer.")
        return ("Profile tiny: every model has random weights (small configs built offline), so the accuracies show "
                "that the machinery works end to end and nothing about the method.")
    if profile == "paper":
        if benchmark == "synthetic":
            return ("Profile paper on the planted-signal benchmark: the method's checkpoints, with the tone generator "
                    "in place of Stable Audio; ITH above text-only shows that the audio path carries information, "
                    "not how the method does on real sounds.")
        return ("Profile paper: the published checkpoints and the method's settings, with the differences from the "
                "reference code that the README lists (bugs fixed, the text's recipe where text and code disagree), "
                "so the accuracies measure this implementation of the method on this run's examples, not the "
                "reference release; comparable with the published numbers only on the full splits.")
    return f"Profile {profile or 'unknown'}: not recorded in this run folder; read its numbers with care."


def run_statements(data: RunData) -> list[str]:
    """Profile first, then the benchmark."""
    benchmark = benchmark_of(data)
    return [profile_statement(profile_of(data), benchmark),
            f"Benchmark: {BENCHMARK_MEANING.get(benchmark, benchmark)}"]


def section_overview(data: RunData) -> Section:
    s = Section("overview", "Run overview")
    summary, config = data.summary or {}, data.config or {}
    benchmark = benchmark_of(data)
    facts = [
        ["run id", data.layout.run_id],
        ["run folder", data.layout.url()],
        ["benchmark", benchmark],
        ["profile", profile_of(data)],
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
        rows.append([stage, _stage_state(data, stage), _reused_cell(data, stage, report, "yes", "no"),
                     stage_seconds(data, stage)])
    s.tables.append(("table-stages", Table(["stage", "state", "reused from an earlier run", "seconds"], rows, {3},
                                           caption="Stages (state from each stage's done-marker)")))
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


def section_accuracy(data: RunData) -> Section:
    s = Section("accuracy", "Accuracy: every system of the table, ours beside the published")
    synthetic = benchmark_of(data) == "synthetic"
    # Published numbers belong to AuditoryBench; on another benchmark they would mislead.
    published = {} if synthetic else _published()
    ours = _ours(data)
    summary = (data.fusion.summary if data.fusion else None) or {}
    over_seeds = {(r["model"], r["task"], r["split"]): r for r in summary.get("over_seeds") or []
                  if r.get("metric") in PRIMARY_METRICS}
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
            cells.append(_system_cell(got) if got else fallback["text"] if fallback else
                         ("not run" if data.fusion is None else "–"))
        rows.append([system["label"], "this run"] + cells)
        # Like with like: a published row right under the system of this run that reproduces it.
        name = system.get("published")
        if name in published:
            reproduced.add(name)
            rows.append([name, "published"] + [_fmt(published[name].get(f"{t}/{sp}")) for t, sp in keys])
    for a, b in (("ith", TEXT_TWIN), ("ith", "audiobert")):
        if any((a, t, sp) in over_seeds and (b, t, sp) in over_seeds for t, sp in keys):
            label = {TEXT_TWIN: "text-only", "audiobert": "AudioBERT"}[b]
            rows.append([f"ITH − {label}", "this run"] + [
                f"{over_seeds[(a, t, sp)]['mean'] - over_seeds[(b, t, sp)]['mean']:+.2f}"
                if (a, t, sp) in over_seeds and (b, t, sp) in over_seeds else "–" for t, sp in keys])
    majority = summary.get("majority") or {}
    if majority:
        rows.append(["one constant answer", "this run's gold labels"]
                    + [_fmt((majority.get(f"{t}/{sp}") or {}).get("accuracy")) for t, sp in keys])
    for name in () if synthetic else PUBLISHED_ROWS:
        if name not in reproduced:
            rows.append([f"{name} (no system of this run reproduces it)", "published"]
                        + [_fmt(published.get(name, {}).get(f"{t}/{sp}")) for t, sp in keys])
    from ith_core.evaluation.scoring import unit_phrase

    units = unit_phrase(summary.get("bootstrap_unit"))
    s.intro.append("Accuracy in % (animal: exact match of every wordpiece; pitch: higher/lower). Ours: the dev-best "
                   "checkpoint of each (system, seed), as mean ± sample standard deviation (ddof 1) over seeds with "
                   "a 95% interval [low, high] of the seed-mean from a hierarchical bootstrap (seeds drawn with "
                   f"replacement, then {units}: rows that share a sound resample together); zero-shot systems are "
                   "one deterministic evaluation, so their interval is over units only. 'One constant answer': the "
                   "share of the most frequent gold answer, what a model that ignores its input scores.")
    if synthetic:
        s.intro.append("Synthetic benchmark: no published numbers exist for it. Text alone can only reach the "
                       "constant-answer level; intervals are bootstrapped over source names, the independent unit.")
    else:
        s.intro.append("Published: Yoo, Ok, Lee 2025 (AuditoryBench, full splits), each under the system of this run "
                       "that reproduces it: BERT-base and RoBERTa-base are most likely zero-shot cloze (exact counts "
                       "of one deterministic evaluation), so they stand under our zero-shot rows, not under the "
                       "fine-tuned text-only ones.")
    s.tables.append(("table-accuracy", Table(headers, rows, set(range(2, len(headers))),
                                             caption="Accuracy (%) per system, task and split")))
    paired = summary.get("paired") or []
    if paired:
        s.tables.append(("table-paired", Table(
            ["comparison", "task", "split", "rows", "difference (points)", "95% CI low", "95% CI high",
             "share of resamples where the first is not better"],
            [[f"{p['a']} − {p['b']}", p["task"], p["split"], p["n"], p["difference"], p["ci_low"], p["ci_high"],
              p["p_not_better"]] for p in sorted(paired, key=lambda p: (p["a"], p["b"], p["task"],
                                                                         _split_key(p["split"])))],
            {3, 4, 5, 6, 7}, caption="Paired hierarchical bootstrap on the rows both systems scored: each "
                                     "system's seeds drawn with replacement, then the same units for both; the "
                                     "last column is a one-sided bootstrap p-value under the same conditions")))
    if data.fusion is None:
        s.notes.append(_not_run("fusion") + " (fusion/results.parquet); only published numbers are shown.")
        s.charts.append(("chart-accuracy", "Accuracy per split", None))
        return s
    # Rows with n = 0 (e.g. mc4_accuracy where no row had scorable options) carry no number.
    detail = sorted([r for r in data.fusion.results if r.get("n") != 0], key=lambda r: (str(r.get("task")), _split_key(str(r.get("split"))),
                                                         str(r.get("variant")), str(r.get("metric")),
                                                         r.get("seed") or 0))
    s.tables.append(("table-accuracy-seeds", Table(
        ["task", "split", "variant", "metric", "seed", "n", "accuracy %", "95% CI low", "95% CI high"],
        [[r.get("task"), r.get("split"), r.get("variant"), r.get("metric"), _seed_shown(r), r.get("n"),
          r.get("accuracy"), r.get("ci_low"), r.get("ci_high")] for r in detail], {4, 5, 6, 7, 8},
        caption="Every evaluated (task, split, variant, metric, seed); a zero-shot system is one "
                "deterministic evaluation, without a seed (–)")))
    scoring = (data.fusion.summary or {}).get("scoring") or {}
    if scoring:
        s.tables.append(("table-scoring", Table(
            ["task/split", "rows", "scored", "windowed", "not scored (reason: rows)"],
            [[name, a.get("rows"), a.get("scored"), a.get("windowed"),
              ", ".join(f"{k}: {v}" for k, v in (a.get("unscored") or {}).items()) or "–"]
             for name, a in sorted(scoring.items(), key=lambda kv: (kv[0].split("/")[0], _split_key(kv[0].split("/")[1])))],
            {1, 2, 3}, caption="Rows of each evaluated split: scored (windowed: longer than max_length, the model saw "
                               "a window around the mask) or not scored, with the reason")))
        unscored = sum(sum((a.get("unscored") or {}).values()) for a in scoring.values())
        if unscored:
            s.notes.append(f"{unscored} rows of the evaluated splits could not be scored (table above); accuracy "
                           "counts only the scored rows.")
    if any(r.get("n") and r.get("split") in ("dev", "test", "wiki") for r in detail):
        s.notes.append("n is the number of examples scored; published numbers use the full splits, a sampled "
                       "run is not directly comparable.")
    points = {key: {"mean": r["mean"], "lo": r.get("ci_low"), "hi": r.get("ci_high")} for key, r in over_seeds.items()}
    points.update({key: v for key, v in ours.items() if key not in points})
    s.charts.append(("chart-accuracy", "Accuracy per split: every system of this run with its 95% interval, each "
                                       "published row (hatched) beside the system that reproduces it",
                     _chart(lambda: chart_accuracy(points, systems, published), "accuracy")))
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
            rows.append([label] + [m.get(k) for k in ("token_precision", "token_recall", "token_f1",
                                                       "span_precision", "span_recall", "span_f1")])
        s.tables.append(("table-span-metrics", Table(
            ["dev", "token P", "token R", "token F1", "span P", "span R", "span F1"], rows, {1, 2, 3, 4, 5, 6},
            caption="Span detector on the dev splits")))
        training = metrics.get("training") or {}
        if training:
            s.intro.append(f"Trained on {training.get('train_examples', '?')} examples for "
                           f"{training.get('steps', '?')} steps ({training.get('epochs_run', '?')} epochs).")
    per_split = (data.stage_report("spans") or {}).get("per_split") or {}
    if per_split:
        rows = [[name, v.get("examples"), v.get("examples_with_spans"), v.get("examples_without_spans"),
                 v.get("spans")] for name, v in sorted(per_split.items(), key=lambda kv: (
                     kv[0].split("/")[0], _split_key(kv[0].split("/")[-1])))]
        s.tables.append(("table-span-counts", Table(
            ["task/split", "examples", "with spans", "without spans", "spans"], rows, {1, 2, 3, 4},
            caption="Detected spans per task and split (sampled examples)")))
    elif data.markers.get("spans") is None:
        s.notes.append(_not_run("spans"))
    return s


def ordered_quantiles(quantiles: dict | None) -> list[tuple[str, float]]:
    """CLAP score quantiles `q00, q10, q25, ..., q100` in numeric order (JSON files sort q100 before q25)."""
    def level(name: str) -> float:
        try:
            return float(name.lstrip("q"))
        except ValueError:
            return math.inf

    return sorted((quantiles or {}).items(), key=lambda kv: level(kv[0]))


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
    return [{"task": task, "threshold": threshold, "accepted": a, "occurrences": n, "rate": a / n if n else 0.0}
            for (task, threshold), (a, n) in sorted(counts.items())]


def section_imagine(data: RunData) -> Section:
    s = Section("imagine", "Stages 2-3: imagination and CLAP selection")
    report = data.stage_report("imagine") or {}
    plan = data.plan or {}
    if not plan and not report and data.candidates is None:
        s.notes.append(_not_run("imagine"))
        s.charts += [("chart-clap", "CLAP score distribution", None),
                     ("chart-acceptance", "Acceptance per threshold", None)]
        return s
    occ = plan.get("occurrences", report.get("occurrences"))
    unique = plan.get("unique_prompts", report.get("unique_prompts"))
    ratio = plan.get("dedup_ratio", report.get("dedup_ratio"))
    settings = plan.get("settings") or {}
    rows = [["span occurrences (incl. examples without a span)", occ],
            ["unique prompts generated", unique],
            ["dedup ratio (occurrences / unique prompts)", f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else None],
            ["already in the audio store when planned", plan.get("already_in_store")],
            ["planned shards finished before the last flow run (skipped by it)",
             (data.shards or {}).get("counts", {}).get("skipped") if data.shards else None],
            ["shards planned", len(plan["shards"]) if "shards" in plan else report.get("shards")],
            ["candidates per prompt", settings.get("num_candidates")],
            ["clip length (s)", settings.get("duration_s")],
            ["inference steps", settings.get("num_inference_steps")],
            ["generator", settings.get("generator_id")],
            ["CLAP", plan.get("clap_id")],
            ["span occurrences with audio / without", f"{report['accepted']} / {report['rejected']}"
             if "accepted" in report else None]]
    s.tables.append(("table-imagine", Table(["", ""], rows, caption="Generation and deduplication")))
    used = threshold_acceptance(report, data.selection)
    if used:
        s.tables.append(("table-threshold-used", Table(
            ["task", "threshold used", "accepted", "occurrences", "rate %"],
            [[r["task"], f"{r['threshold']:g}", r["accepted"], r["occurrences"], 100 * r["rate"]] for r in used],
            {1, 2, 3, 4}, caption="The run's own CLAP threshold per task and the span occurrences it gave audio to")))
    if data.acceptance:
        s.tables.append(("table-acceptance", Table(
            ["task", "threshold", "accepted", "occurrences", "rate %"],
            [[r["task"], f"{r['threshold']:.2f}", r["accepted"], r["occurrences"], 100 * r["rate"]]
             for r in sorted(data.acceptance, key=lambda r: (r["task"], r["threshold"]))], {1, 2, 3, 4},
            caption="Span occurrences that get audio at each CLAP threshold (first-passing rule)")))
    quantiles = ordered_quantiles(report.get("clap_score_quantiles"))
    if quantiles:
        s.tables.append(("table-clap-quantiles", Table([k for k, _ in quantiles], [[float(v) for _, v in quantiles]],
                                                       set(range(len(quantiles))),
                                                       caption="CLAP score quantiles (all candidates)")))
    thresholds = report.get("thresholds") or {}
    s.charts.append(("chart-clap", "CLAP score of every candidate, per task, with the run's thresholds",
                     _chart(lambda: chart_clap(data, thresholds), "clap") if data.candidates else None))
    s.charts.append(("chart-acceptance", "Share of span occurrences with audio per CLAP threshold",
                     _chart(lambda: chart_acceptance(data.acceptance, thresholds), "acceptance")
                     if data.acceptance else None))
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
        s.tables.append(("table-training", Table(
            ["job", "steps", "best dev %", "best epoch", "seconds", "world size"],
            [[j["job"], j.get("steps"), j.get("best_dev"),
              None if j.get("best_epoch") is None else j["best_epoch"] + 1,  # epochs count from 1, as in the chart
              j.get("seconds"), j.get("world_size")]
             for j in data.training_logs], {1, 2, 3, 4, 5}, caption="Fusion LM training jobs")))
    elif data.fusion is None:
        s.notes.append(_not_run("fusion") + ": only the span detector's curve is shown.")
    s.charts.append(("chart-training", "Training loss and dev accuracy per epoch",
                     _chart(lambda: chart_training(span_losses, data.training_logs), "training")))
    return s


def _done_shards(data: RunData) -> list[dict]:
    return [r for r in ((data.shards or {}).get("shards") or []) if r.get("status") == "done"]


# summary.json's fusion section records reuse per prepared stage under these names.
_PREPARED = {"fusion_examples": "examples", "fusion_features": "features",
             "audiobert_retrieval": "audiobert_retrieval", "audiobert_features": "audiobert_features"}


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
    from ith_core.stages.fusion import SYSTEMS, eval_stage_name, train_stage_name

    for kind, name_of in (("train", train_stage_name), ("evaluate", eval_stage_name)):
        for entry in fusion.get(kind) or []:
            if isinstance(entry, dict) and entry.get("system") in SYSTEMS and "cached" in entry \
                    and name_of(entry["system"], entry.get("seed")) == stage:
                return bool(entry["cached"])
    return None


def _reused_cell(data: RunData, stage: str, report: dict | None, yes: str, no: str) -> str | None:
    reused = stage_reused(data, stage)
    if reused is None:
        return (yes if report.get("cached") else no) if report else None
    return yes if reused else no


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
            on_gpu = [float(r.get("seconds") or 0) for r in _done_shards(data) if str(r.get("device")).startswith("cuda")]
            gpu = round(sum(on_gpu), 3) if on_gpu else None
        elif gpu is None and str(device or "").startswith("cuda") and wall is not None:
            gpu = round(float(wall) * int(report.get("num_processes") or 1), 3)
        rows.append([stage, _reused_cell(data, stage, report, "reused", "computed"), device or "–", wall, gpu])
    s.tables.append(("table-compute", Table(["stage", "this run", "device", "seconds", "GPU-seconds"], rows, {3, 4},
                                            caption="Time per stage")))
    s.intro.append("Seconds as recorded by each stage when it ran (a stage reused from an earlier run keeps its "
                   "original time; imagine: the flow run that finished it, plan and shards included, the same number "
                   "as in the stage table). Device: the device each stage recorded using ('–': none recorded, e.g. "
                   "ingestion, which needs no accelerator). GPU-seconds: imagine shards run on a CUDA device in the "
                   "last flow run (from imagine/shards.json), the wall time of a stage that records a CUDA device "
                   "(times its processes), or a stage's own gpu_seconds.")
    return s


# ---------------------------------------------------------------------------------------------
# Case studies


def _audio_src(data: RunData, audio_path: str) -> tuple[str, bool]:
    """(src relative to the report file, whether the file exists); non-local stores are not checked."""
    src = STORE_FROM_REPORT + quote(audio_path, safe="/")
    if not data.layout.is_local:
        return src, True
    root = posixpath.dirname(data.layout.path())
    return src, data.layout.fs.exists(posixpath.join(root, STORE_DIR, audio_path))


def _word_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to whole words: a span from word pieces may begin or end inside a word."""
    def inside(i: int) -> bool:  # between two word characters
        return 0 < i < len(sentence) and sentence[i - 1].isalnum() and sentence[i].isalnum()

    while inside(start):
        start -= 1
    while inside(end):
        end += 1
    return start, end


def _highlight(sentence: str, spans: list[dict]) -> str:
    """The sentence with detected spans marked, each widened to whole words (overlaps merged); every
    piece escaped separately."""
    marks: list[list[int]] = []
    for span in sorted(spans, key=lambda r: (r.get("char_start") or 0)):
        start, end = span.get("char_start"), span.get("char_end")
        if not isinstance(start, int) or not isinstance(end, int) or start < 0 or end > len(sentence) or end <= start:
            continue
        start, end = _word_bounds(sentence, start, end)
        if marks and start <= marks[-1][1]:
            marks[-1][1] = max(marks[-1][1], end)
        else:
            marks.append([start, end])
    out, at = [], 0
    for start, end in marks:
        out.append(html.escape(sentence[at:start]))
        out.append(f"<mark>{html.escape(sentence[start:end])}</mark>")
        at = end
    out.append(html.escape(sentence[at:]))
    return "".join(out)


# The kinds of example a case study can be, in the order they are shown.
CASE_KINDS = (("ith_only", "ITH right, text-only wrong"), ("text_only", "ITH wrong, text-only right"),
              ("both_right", "both right"), ("both_wrong", "both wrong"), ("unscored", "no predictions"))


def _case_kind(predictions: dict[str, dict]) -> str:
    ith, text = (predictions.get("ith") or {}).get("correct"), (predictions.get(TEXT_TWIN) or {}).get("correct")
    if ith is None or text is None:
        return "unscored"
    return {(True, False): "ith_only", (False, True): "text_only", (True, True): "both_right"}.get(
        (bool(ith), bool(text)), "both_wrong")


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
        return (not with_audio, not data.spans.get(example_id),
                hashlib.sha256(example_id.encode()).hexdigest())

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
        strata[task] = {k: {"examples": len(pools[task].get(k, [])), "shown": taken.get(k, 0)}
                        for k, _ in CASE_KINDS if pools[task].get(k)}
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
            spans_out.append({
                "span_index": sel["span_index"], "span_text": sel.get("span_text"),
                "threshold": sel.get("threshold"), "chosen": sel.get("candidate"), "accepted": sel.get("accepted"),
                "candidates": sorted(cands.get(sel.get("audio_id"), []), key=lambda r: r["candidate"]),
                "imagined": "audio_id" in sel,
            })
        cases.append({"example_id": example_id, "task": example_id.split("/")[0], "sentence": example.get("sentence"),
                      "gold": example.get("answer"), "detected": list(detected.values()), "spans": spans_out,
                      "predictions": preds.get(example_id, {}), "kind": kind})
    return cases, {"per_task": strata, "seed": seed, "left_out_unscored": unscored}


def section_cases(data: RunData, per_task: int) -> tuple[Section, list[dict]]:
    s = Section("cases", "Case studies")
    if not data.sampled and not data.spans:
        s.notes.append(_not_run("spans"))
        return s, []
    cases, strata = _cases(data, per_task)
    labels = dict(CASE_KINDS)
    s.intro.append("How they are chosen: per task, one example of each kind in turn (ITH right and text-only wrong, "
                   "the reverse, both right, both wrong), so the run's losses are shown beside its wins; within a "
                   "kind, examples whose spans got audio first, then a fixed order (a hash of the example id), never "
                   "by accuracy." + (f" Predictions of seed {strata['seed']}." if strata["seed"] is not None else ""))
    for task, kinds in strata["per_task"].items():
        s.intro.append(f"{task}: " + "; ".join(f"{labels[k]}: {v['shown']} shown of {v['examples']}"
                                               for k, v in kinds.items()) + ".")
    if strata["left_out_unscored"]:
        s.intro.append(f"{strata['left_out_unscored']} sampled examples of splits fusion did not evaluate (no "
                       "predictions to compare) are not candidates.")
    s.intro.append("Each case: the sentence with the detected spans marked (widened to whole words), every generated "
                   "candidate of each span with its CLAP score (the chosen one highlighted: the first candidate, in "
                   "index order, at or above the threshold), and the predictions of the text-only LM and of ITH.")
    if not data.layout.is_local:
        s.notes.append(f"The run folder is not on local disk ({data.layout.url()}): the audio links are relative "
                       f"to the run root and play only from a local copy of it (copy both {data.layout.run_id}/ and "
                       f"{STORE_DIR}/ from {data.layout.run_root}).")
    if data.selection is None:
        s.notes.append(_not_run("imagine") + ": no audio to show.")
    if data.fusion is None:
        s.notes.append(_not_run("fusion") + ": no predictions to show.")
    parts = []
    for case in cases:
        e = html.escape
        pred_html = ""
        if case["predictions"]:
            cells = []
            for variant, label in ((TEXT_TWIN, "BERT text-only"), ("ith", "ITH")):
                p = case["predictions"].get(variant)
                if p is None:
                    cells.append(f"<td>{label}</td><td>–</td><td></td>")
                    continue
                ok = p.get("correct")
                mark = '<span class="ok">correct</span>' if ok else '<span class="bad">wrong</span>'
                cells.append(f"<td>{label}</td><td><q>{e(_fmt(p.get('prediction')))}</q></td><td>{mark}</td>")
            pred_html = ('<table class="predictions"><thead><tr><th>model</th><th>prediction</th><th></th></tr></thead>'
                         f'<tbody>{"".join(f"<tr>{c}</tr>" for c in cells)}</tbody></table>')
        span_parts = []
        for span in case["spans"]:
            label = e(_fmt(span["span_text"])) if span["span_index"] >= 0 else "<em>no span: fallback prompt</em>"
            if not span["imagined"]:
                span_parts.append(f'<div class="span"><h4>span: <q>{label}</q></h4><p class="note">no audio: '
                                  f'imagine stage not run</p></div>')
                continue
            rows = []
            for cand in span["candidates"]:
                chosen = cand["candidate"] == span["chosen"]
                if cand["audio_path"] is None:
                    player = '<span class="note">audio not kept (imagine.keep_audio=selected)</span>'
                else:
                    src, exists = _audio_src(data, cand["audio_path"])
                    player = (f'<audio controls preload="metadata" src="{e(src)}"></audio>' if exists
                              else f'<span class="bad">file missing: {e(src)}</span>')
                passes = span["threshold"] is not None and cand["clap_score"] >= span["threshold"]
                rows.append(f'<tr class="{"chosen" if chosen else ""}"><td class=num>{cand["candidate"]}</td>'
                            f'<td>{player}</td><td class="num{"" if passes else " below"}">{cand["clap_score"]:.3f}</td>'
                            f'<td>{"chosen" if chosen else ""}</td></tr>')
            verdict = (f'candidate {span["chosen"]} chosen' if span["accepted"] else
                       "no candidate reached the threshold: this span is not fused")
            span_parts.append(
                f'<div class="span"><h4>span: <q>{label}</q> <small>threshold {_fmt(span["threshold"], 3)}; '
                f'{e(verdict)}</small></h4><table class="candidates"><thead><tr><th>#</th><th>audio</th>'
                f'<th class=num>CLAP</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
        sentence = _highlight(case["sentence"], case["detected"]) if case["sentence"] else "<em>sentence not found</em>"
        parts.append(
            f'<article class="case" id="case-{e(re.sub(r"[^A-Za-z0-9_-]", "-", case["example_id"]))}">'
            f'<h3>{e(case["task"])}: <code>{e(case["example_id"])}</code> <small class="kind">'
            f'{e(labels[case["kind"]])}</small></h3>'
            f'<p class="sentence">{sentence}</p><p>gold answer: <strong>{e(_fmt(case["gold"]))}</strong>; '
            f'detected spans: {len(case["detected"])}</p>{pred_html}<div class="spans">{"".join(span_parts)}</div>'
            f'</article>')
    s.raw_html = "".join(parts) or '<p class="note">no examples to show</p>'
    return s, cases


# ---------------------------------------------------------------------------------------------
# Charts (matplotlib, Agg, inline SVG)

COLORS = {"ith": "#1f77b4", "bert-text": "#ff7f0e", "bert-zero-shot": "#fdae6b", "roberta-text": "#d62728",
          "roberta-zero-shot": "#f4a3a3", "audiobert": "#8c564b", "animal": "#2ca02c", "pitch": "#9467bd"}
# A published row is drawn in its reproducing system's colour, hatched.


STYLE = {"font.family": "sans-serif", "font.size": 10, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none", "svg.hashsalt": None}


def _chart(build: Callable[[], Any], name: str) -> str | None:
    import matplotlib

    try:
        # A salt per chart keeps element ids unique across the SVGs inlined in one page.
        with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"ith-{name}"}):
            figure = build()
            return _svg(figure, name)
    except Exception as error:
        logger.warning("report: chart %s failed: %s", name, error)
        return f"<p class=\"note\">chart could not be drawn: {html.escape(f'{type(error).__name__}: {error}')}</p>"


def _svg(figure, name: str) -> str:
    sink = io.StringIO()
    figure.savefig(sink, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = sink.getvalue()
    text = text[text.index("<svg"):]
    # matplotlib's RDF metadata block only names namespaces; the page does not need it.
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(name)} chart" class="chart-svg" ', 1)


def _figure(width: float, height: float, ncols: int = 1):
    """A Figure without pyplot: no global backend or figure registry is touched (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols, squeeze=False)


def chart_accuracy(points: dict, systems: list[dict], published: dict):
    """Bars per split: every system of the run (`points`: (system, task, split) -> mean, lo, hi)
    with its interval; after each, the published row it reproduces, hatched, in its colour."""
    tasks = [t for t in ("animal", "pitch") if any(k[1] == t for k in points)]
    fig, axes = _figure(5.2 * len(tasks), 3.6, len(tasks))
    series = []
    for system in systems:
        series.append((system["name"], system["label"], "ours", system["name"]))
        if system.get("published") in published:
            series.append((system["published"], f"{system['published']} (published)", "paper", system["name"]))
    for ax, task in zip(axes[0], tasks):
        splits = sorted({k[2] for k in points if k[1] == task}, key=_split_key)
        width = 0.8 / len(series)
        for i, (key, label, source, colour) in enumerate(series):
            xs, ys, errs = [], [], [[], []]
            for j, split in enumerate(splits):
                if source == "ours":
                    got = points.get((key, task, split))
                    if not got:
                        continue
                    y, lo, hi = got["mean"], got["lo"], got["hi"]
                else:
                    y = published.get(key, {}).get(f"{task}/{split}")
                    if y is None:
                        continue
                    lo = hi = y
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                ys.append(y)
                errs[0].append(max(0.0, y - lo) if lo is not None else 0.0)
                errs[1].append(max(0.0, hi - y) if hi is not None else 0.0)
            if xs:
                ax.bar(xs, ys, width, label=label, color=COLORS.get(colour, "#999999"),
                       yerr=errs if source == "ours" else None, capsize=3,
                       hatch="//" if source == "paper" else None, edgecolor="white" if source == "ours" else "#777")
        ax.set_xticks(range(len(splits)), splits)
        ax.set_title(f"{task}")
        ax.set_xlabel("split")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def chart_clap(data: RunData, thresholds: dict):
    tasks_of: dict[str, set] = defaultdict(set)
    for row in data.mapping or []:
        tasks_of[row["audio_id"]].add(row["task"])
    scores: dict[str, list[float]] = defaultdict(list)
    for row in data.candidates:
        for task in sorted(tasks_of.get(row["audio_id"]) or {"all"}):
            scores[task].append(float(row["clap_score"]))
    fig, axes = _figure(7.5, 3.4)
    ax = axes[0][0]
    values = [v for vs in scores.values() for v in vs]
    lo, hi = min(values + list(thresholds.values())), max(values + list(thresholds.values()))
    pad = max(1e-3, (hi - lo) * 0.05)
    bins = [lo - pad + i * (hi - lo + 2 * pad) / 30 for i in range(31)]
    for task in sorted(scores):
        ax.hist(scores[task], bins=bins, alpha=0.55, label=f"{task} ({len(scores[task])} candidates)",
                color=COLORS.get(task, "#7f7f7f"))
    _threshold_lines(ax, thresholds, "threshold", "clap")
    ax.set_xlabel("CLAP score (cosine similarity of span text and audio)")
    ax.set_ylabel("candidates")
    ax.legend(frameon=False, fontsize=9)
    return fig


# Series drawn over each other stay visible where they coincide: each later one is thinner,
# dashed, with a smaller marker, on top of a wide solid line with a large hollow marker.
SERIES_STYLES = (
    {"linestyle": "-", "linewidth": 2.6, "marker": "o", "markersize": 10, "markerfacecolor": "none",
     "markeredgewidth": 2.0},
    {"linestyle": (0, (4, 3)), "linewidth": 1.6, "marker": "s", "markersize": 4.5},
    {"linestyle": (0, (1, 2)), "linewidth": 1.6, "marker": "^", "markersize": 7, "markerfacecolor": "none",
     "markeredgewidth": 1.4},
    {"linestyle": (0, (6, 2, 1, 2)), "linewidth": 1.2, "marker": "D", "markersize": 3},
)


def series_style(index: int) -> dict:
    """The index-th series' style; later series are drawn above the earlier ones."""
    return {**SERIES_STYLES[index % len(SERIES_STYLES)], "zorder": 3 + index}


def _threshold_lines(ax, thresholds: dict, label: str, chart: str) -> None:
    """Dashed verticals whose dash patterns interleave, so two tasks' equal thresholds show both colours:
    with n lines, each draws a 4-point dash every 4n points, the i-th shifted by 4i."""
    n = max(len(thresholds), 1)
    for i, (task, value) in enumerate(sorted(thresholds.items())):
        line = ax.axvline(value, color=COLORS.get(task, "#333"), linewidth=1.5, label=f"{task} {label} {value:g}",
                          linestyle=(4 * i, (4, 4 * (n - 1))) if n > 1 else "--")
        line.set_gid(f"series-{chart}-threshold-{task}")


def chart_acceptance(acceptance: list[dict], thresholds: dict):
    fig, axes = _figure(7.5, 3.4)
    ax = axes[0][0]
    by_task: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in acceptance:
        by_task[row["task"]].append((float(row["threshold"]), 100 * float(row["rate"])))
    for i, (task, points) in enumerate(sorted(by_task.items())):
        points.sort()
        (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], label=task, color=COLORS.get(task),
                          **series_style(i))
        line.set_gid(f"series-acceptance-{task}")
    _threshold_lines(ax, {t: v for t, v in thresholds.items() if t in by_task}, "run threshold", "acceptance")
    ax.set_xlabel("CLAP threshold")
    ax.set_ylabel("span occurrences with audio (%)")
    ax.set_ylim(-2, 102)
    ax.legend(frameon=False, fontsize=9)
    return fig


def chart_training(span_losses: list[float], jobs: list[dict]):
    from matplotlib.ticker import MaxNLocator

    panels = (["span"] if span_losses else []) + (["loss", "dev"] if jobs else [])
    fig, axes = _figure(4.2 * len(panels), 3.3, len(panels))
    for ax, panel in zip(axes[0], panels):
        if panel == "span":
            ax.plot(range(1, len(span_losses) + 1), span_losses, marker="o", color="#2ca02c")
            ax.set_title("span detector")
            ax.set_ylabel("mean training loss")
        else:
            for i, job in enumerate(jobs):
                history = job["history"]
                key = "loss" if panel == "loss" else "dev_accuracy"
                points = [(h["epoch"] + 1, h[key]) for h in history if h.get(key) is not None]
                (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], label=job["job"],
                                  color=COLORS.get(str(job.get("model")), None), **series_style(i))
                line.set_gid(f"series-{panel}-{re.sub(r'[^A-Za-z0-9_-]', '-', str(job['job']))}")
            ax.set_title("fusion LM: " + ("training loss (epoch mean)" if panel == "loss" else "dev accuracy"))
            ax.set_ylabel("loss" if panel == "loss" else "dev accuracy (%)")
            ax.legend(frameon=False, fontsize=8)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Rendering

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       margin: 0; color: #1b1f24; background: #fafbfc; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
header { border-bottom: 2px solid #1f77b4; margin-bottom: 16px; }
h1 { font-size: 1.7em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 0.4em 0; }
h3 small.kind { font-weight: normal; color: #57606a; margin-left: 8px; }
h4 { font-size: 0.95em; margin: 0.8em 0 0.3em; font-weight: 600; }
h4 small { font-weight: normal; color: #57606a; }
nav { font-size: 0.92em; } nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
.meta { color: #57606a; font-size: 0.9em; }
p.profile { font-weight: 600; background: #ddf4ff; border-left: 4px solid #0969da; padding: 8px 12px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.88em; }
caption { text-align: left; font-weight: 600; padding: 4px 0; color: #24292f; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; vertical-align: middle; }
th { background: #f0f3f6; text-align: left; }
tbody tr:nth-child(even) { background: #f8f9fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.accuracy td:first-child { font-weight: 600; white-space: nowrap; }
figure { margin: 12px 0 24px; } figcaption { font-size: 0.9em; color: #57606a; }
figure svg { max-width: 100%; height: auto; }
.note { color: #8a6100; background: #fff8e5; border-left: 3px solid #d4a72c; padding: 6px 10px; }
.problem { color: #82071e; background: #ffebe9; border-left: 3px solid #cf222e; padding: 6px 10px; }
article.case { border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 16px; margin: 14px 0; }
.sentence { font-size: 1.05em; }
.spans { display: flex; flex-wrap: wrap; gap: 0 28px; }
table.keyvalue td:first-child { color: #57606a; }
mark { background: #fff3a3; padding: 0 2px; border-radius: 2px; }
tr.chosen { background: #dafbe1 !important; font-weight: 600; }
td.below { color: #8c959f; }
audio { height: 30px; width: 260px; vertical-align: middle; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
code { font-size: 0.92em; }
"""


def _section_html(s: Section) -> str:
    parts = [f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>']
    parts += [f"<p>{html.escape(p)}</p>" for p in s.intro]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in s.notes]
    for table_id, table in s.tables:
        css = "accuracy" if table_id == "table-accuracy" else ""
        parts.append(f'<div id="{table_id}">{_html_table(table, css)}</div>')
    for chart_id, caption, svg in s.charts:
        if svg is None:
            parts.append(f'<figure id="{chart_id}" class="chart missing"><p class="note">{html.escape(caption)}: '
                         f'no data (stage not run)</p></figure>')
        else:
            parts.append(f'<figure id="{chart_id}" class="chart">{svg}<figcaption>{html.escape(caption)}'
                         f'</figcaption></figure>')
    parts.append(s.raw_html)
    parts.append("</section>")
    return "".join(parts)


def render_html(data: RunData, sections: list[Section], generated: str) -> str:
    title = f"Imagine to Hear: run {data.layout.run_id}"
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    problems = "".join(f'<p class="problem">could not read {html.escape(p)}</p>' for p in data.problems)
    profile, benchmark = run_statements(data)
    # The profile first: what the numbers below can mean.
    statements = (f'<p class="profile" id="profile-statement">{html.escape(profile)}</p>'
                  f'<p class="benchmark" id="benchmark-statement">{html.escape(benchmark)}</p>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # No favicon request: the page loads nothing it does not hold, apart from its audio files.
        "<link rel=\"icon\" href=\"data:,\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{html.escape(title)}</h1>{statements}"
        f"<p class=\"meta\">Report generated {html.escape(generated)} from "
        f"<code>{html.escape(data.layout.url())}</code>. Method: Yoo, Ok, Lee 2025 (arXiv 2503.16853).</p>"
        f"<nav>{nav}</nav></header>{problems}"
        + "".join(_section_html(s) for s in sections)
        + "</main></body></html>\n"
    )


def render_markdown(data: RunData, sections: list[Section], cases: list[dict], generated: str) -> str:
    profile, benchmark = run_statements(data)
    lines = [f"# Imagine to Hear: run {md_escape(data.layout.run_id)}", "", f"**{md_escape(profile)}**", "",
             md_escape(benchmark)]
    lines += ["", f"Report generated {generated} from `{data.layout.url()}`. Charts and audio players: report.html.", ""]
    lines += [f"- could not read {md_escape(p)}" for p in data.problems]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [md_escape(p) + "\n" for p in s.intro]
        lines += [f"> {md_escape(n)}\n" for n in s.notes]
        for _, table in s.tables:
            lines += [_md_table(table), ""]
        if s.anchor == "cases":
            for case in cases:
                lines += [f"### {md_escape(case['task'])}: {md_escape(case['example_id'])} "
                          f"({md_escape(dict(CASE_KINDS)[case['kind']])})", "",
                          f"Sentence: {md_escape(case['sentence'])}", "",
                          f"Gold answer: **{md_escape(case['gold'])}**; detected spans: "
                          + (", ".join(f"“{md_escape(d['span_text'])}”" for d in case["detected"]) or "none"), ""]
                if case["predictions"]:
                    lines += [_md_table(Table(["model", "prediction", "correct"], [
                        [label, (case["predictions"].get(v) or {}).get("prediction"),
                         (case["predictions"].get(v) or {}).get("correct")]
                        for v, label in ((TEXT_TWIN, "BERT text-only"), ("ith", "ITH"))])), ""]
                rows = []
                for span in case["spans"]:
                    for cand in span["candidates"]:
                        src = _audio_src(data, cand["audio_path"])[0] if cand["audio_path"] else None
                        rows.append([span["span_text"] if span["span_index"] >= 0 else "(fallback prompt)",
                                     cand["candidate"], f"{cand['clap_score']:.3f}",
                                     "chosen" if cand["candidate"] == span["chosen"] else "",
                                     # src: a quoted relative path of hex ids
                                     Raw(f"[{src.rsplit('.', 1)[-1]}](<{src}>)") if src else "not kept"])
                if rows:
                    lines += [_md_table(Table(["span", "candidate", "CLAP", "", "audio"], rows, {1, 2})), ""]
    return "\n".join(lines) + "\n"


def write_report(run_root: str, run_id: str, cases_per_task: int = 4) -> dict[str, str]:
    """Writes `<run>/report/report.html` and `report.md` from what the run folder holds; returns their URLs."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(run_root)
    if not fs.exists(posixpath.join(root.rstrip("/") or "/", run_id)):
        raise FileNotFoundError(f"no run {run_id!r} under {run_root}: nothing to report on")
    data = load_run(run_root, run_id)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cases_section, cases = section_cases(data, cases_per_task)
    sections = [section_overview(data), section_accuracy(data), section_spans(data), section_imagine(data),
                section_training(data), section_compute(data), cases_section]
    page = render_html(data, sections, generated)
    markdown = render_markdown(data, sections, cases, generated)
    data.layout.write_bytes(page.encode("utf-8"), REPORT_DIR, "report.html")
    data.layout.write_bytes(markdown.encode("utf-8"), REPORT_DIR, "report.md")
    logger.info("report: %s", data.layout.url(REPORT_DIR, "report.html"))
    return {"html": data.layout.url(REPORT_DIR, "report.html"), "markdown": data.layout.url(REPORT_DIR, "report.md"),
            "dir": data.layout.url(REPORT_DIR), "headline": headline_markdown(data)}


def headline_markdown(data: RunData) -> str:
    """The profile statement, then the run's headline numbers: the report artifact's description."""
    profile, benchmark = run_statements(data)
    lines = [f"**{md_escape(profile)}**", "", md_escape(benchmark)]
    rows: list[tuple[str, str]] = []
    ingest = data.stage_report("ingest") or {}
    if "accepted" in ingest:
        rows.append(("benchmark rows", f"{ingest.get('rows_in')} read: {ingest['accepted']} accepted, "
                                       f"{ingest.get('rejected')} rejected"))
    detector = data.stage_report("span_detector") or {}
    if "dev_span_f1" in detector:
        rows.append(("span detector, dev span F1", f"{detector.get('dev_span_f1_untrained', 0):.3f} untrained -> "
                                                   f"{detector['dev_span_f1']:.3f} trained"))
    imagine = data.stage_report("imagine") or {}
    for row in threshold_acceptance(imagine, data.selection):
        rows.append((f"{row['task']}: span occurrences with audio at threshold {row['threshold']:g}",
                     f"{row['accepted']} of {row['occurrences']} ({100 * row['rate']:.1f} %)"))
    ours = _ours(data) if data.fusion else {}
    for task, split in sorted({(k[1], k[2]) for k in ours}, key=lambda ts: (ts[0], _split_key(ts[1]))):
        cells = [f"{label} {ours[(v, task, split)]['text']}" for v, label in (("ith", "ITH"), (TEXT_TWIN, "BERT text-only"))
                 if (v, task, split) in ours]
        rows.append((f"accuracy % {task} {split}", "; ".join(cells)))
    seconds = (data.summary or {}).get("seconds")
    if seconds is not None:
        rows.append(("pipeline wall time", f"{seconds:.0f} s"))
    if rows:
        lines += ["", "| | |", "|---|---|"] + [f"| {md_escape(k)} | {md_escape(v)} |" for k, v in rows]
    return "\n".join(lines) + "\n"
