"""The GLUE table of a `--benchmark glue` run: GLUE's metrics per task and system on the dev sets,
with bootstrap intervals, and ITH minus BERT on the same rows (paired bootstrap).

Read from `glue/results.json` (written by `ith_core.stages.glue.summarise_glue`); the same table is
the run report's GLUE section, the Prefect artifact `ith-glue-<run id>` and what `ith run` prints.
"""

from __future__ import annotations

import math

from ith_core.data import glue as glue_data
from ith_core.report.loading import RunData
from ith_core.report.tables import Raw, Section, Table, _md_table
from storage import run_files

LABELS = {"bert": "BERT (fine-tuned, no audio)", "ith": "ITH (imagined audio fused)"}
# GLUE's own names (its folders), in GLUE's order; MNLI is scored on its matched dev set.
TASK_LABELS = {name: "MNLI-m" if name == "mnli" else task.folder for name, task in glue_data.TASKS.items()}
METRIC_LABELS = {"accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman", "matthews": "MCC"}

MEANING = (
    "GLUE dev sets (GLUE's test labels are not public). Each system is fine-tuned on the run's train rows of each "
    "task and scored once, with its last epoch's weights (no selection on dev). Metrics as GLUE defines them, x 100; "
    "intervals: 95 % bootstrap over the dev rows; ITH - BERT: paired bootstrap on the rows both scored. The question "
    "is whether fusing imagined audio costs language understanding: a difference whose interval holds 0 shows no cost "
    "at this sample size, not equality."
)


def _ordered(tasks: dict) -> list:
    """(task, entry) in GLUE's order."""
    order = list(TASK_LABELS)
    return sorted(tasks.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def _cell(entry: dict | None) -> Raw:
    """A metric x 100 with its interval: numbers only, so already inert Markdown."""
    if not entry or entry.get("value") is None or math.isnan(entry["value"]):
        return Raw("–")
    return Raw(f"{100 * entry['value']:.1f} [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]")


def _diff(entry: dict | None) -> Raw:
    if not entry or entry.get("difference") is None or math.isnan(entry["difference"]):
        return Raw("–")
    return Raw(f"{100 * entry['difference']:+.1f} [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}]")


def results_table(results: dict) -> Table:
    """One row per (task, metric): each system's value with its interval, ITH - BERT, rows scored."""
    systems = list(results.get("systems") or [])
    paired = all(s in systems for s in ("bert", "ith"))
    headers = ["task", "metric", *(LABELS.get(s, s) for s in systems), *(["ITH - BERT"] if paired else []), "dev rows"]
    rows = []
    for task, entry in _ordered(results.get("tasks") or {}):
        for metric in entry["metrics"]:
            cells = [_cell((entry["systems"].get(s) or {}).get(metric)) for s in systems]
            if paired:
                cells.append(_diff((entry.get("paired") or {}).get(metric)))
            n = max((v.get("rows", 0) for v in entry["systems"].values()), default=0)
            rows.append([TASK_LABELS.get(task, task), METRIC_LABELS.get(metric, metric), *cells, n])
    return Table(headers, rows, {len(headers) - 1}, caption="GLUE dev metrics (x 100)")


def results_markdown(results: dict | None, statement: str = "") -> str:
    """The GLUE table as Markdown: the Prefect artifact, and what `ith run` prints."""
    if not results:
        return "No GLUE results: the summarise-glue stage has not finished."
    lines = [statement, "", MEANING, ""] if statement else [MEANING, ""]
    return "\n".join([*lines, _md_table(results_table(results))]) + "\n"


def load_results(data: RunData) -> dict | None:
    if not data.layout.exists(*run_files.GLUE_RESULTS):
        return None
    return data.layout.read_json(*run_files.GLUE_RESULTS)


def section_glue(data: RunData) -> Section:
    s = Section("glue", "GLUE: does fusing audio cost language understanding?")
    results = load_results(data)
    if results is None:
        s.intro.append("The GLUE stages have not finished: no results yet.")
        return s
    s.intro.append(MEANING)
    generator = results.get("generator") or {}
    if generator.get("imagined"):
        s.intro.append(
            f"Imagined audio: generator {generator.get('name')} ({generator.get('id') or 'identity not recorded'})."
        )
    s.tables.append(("table-glue", results_table(results)))
    fused = []
    for task, entry in _ordered(results.get("tasks") or {}):
        ith = entry["systems"].get("ith")
        if ith:
            fused.append(f"{TASK_LABELS.get(task, task)} {ith.get('spans_fused_rows', 0)} of {ith.get('rows', 0)}")
    if fused:
        s.notes.append(
            "Dev rows where ITH heard at least one imagined clip (the others have no detected span with "
            "accepted audio, and ITH reads them as BERT does): " + ", ".join(fused) + "."
        )
    return s
