"""Finished runs side by side (`ith compare`): one table of systems x tasks x splits with one
column per run, each run labelled by its run id and the generator that imagined its audio, and a
paired bootstrap of every later run against the first on the rows both scored.

    runs = [load_compared_run("runs", run) for run in ("tiny-synthetic-46d3a8d6d804", "runs/other-run")]
    comparison = compare_runs(runs)            # JSON-able
    print(comparison_markdown(comparison))

Each cell is the run's own accuracy (fusion/results.json's `over_seeds`: mean ± sd over seeds [95 %
interval of the seed-mean]). A difference is `run - first run` in points, over the rows both runs
scored (joined on example_id), from `scoring.paired_comparisons`: the hierarchical bootstrap, each
run's seeds drawn on their own, one draw of the benchmark's bootstrap units for both. Rows scored by
only one run are counted and named, never dropped silently. GLUE runs (`--benchmark glue`) keep
their scores in glue/: their table has a row per system, task and GLUE metric, and their differences
come from `glue_metrics.paired_bootstrap` (dev rows resampled, the same for both runs). Reads run
folders through `storage/` only; imports no stage.
"""

from __future__ import annotations

import math
import posixpath
from collections import defaultdict
from dataclasses import dataclass

from ith_core.evaluation import glue_metrics
from ith_core.evaluation.scoring import INTERVALS, UNIT_NAMES, bootstrap_units, paired_comparisons, seed_mean_table
from ith_core.fusion.systems import SYSTEMS
from ith_core.report.glue import LABELS as GLUE_LABELS
from ith_core.report.glue import TASK_LABELS as GLUE_TASKS
from ith_core.report.loading import PRIMARY_METRICS, RunData, _split_key, generator_label, generator_of
from ith_core.report.tables import Raw, Table, _md_table, md_escape
from storage import run_files
from storage.layout import DONE_MARKER, RunLayout, run_ids

# Rows left out of a difference are named in the Markdown up to this many per line (all of them in --json).
NAMED_ROWS = 12


class CompareError(ValueError):
    """Runs that cannot be compared: a missing or unfinished run, other benchmarks, fewer than two."""


@dataclass
class ComparedRun:
    run_id: str
    url: str
    benchmark: str
    generator: dict  # name, id, imagined (loading.generator_of)
    config: dict
    results: dict  # fusion/results.json (else the fusion stage's report); GLUE: glue/results.json
    predictions: list[dict]  # fusion/predictions.parquet (PREDICTION_SCHEMA); GLUE: GLUE_PREDICTION_SCHEMA
    units: dict  # example id -> bootstrap unit (scoring.bootstrap_units); empty: rows are the units

    @property
    def label(self) -> str:
        return f"{self.run_id} ({generator_label(self.generator)})"


def _layout(run_root: str, run: str) -> RunLayout:
    """A run id under `run_root`, or a path to a run folder (a run id holds no slash)."""
    if "/" in run.rstrip("/"):
        run = run.rstrip("/")
        return RunLayout(posixpath.dirname(run), posixpath.basename(run))
    return RunLayout(run_root, run)


def load_compared_run(run_root: str, run: str) -> ComparedRun:
    """What `compare_runs` needs of one finished run; CompareError when it is missing or unfinished."""
    layout = _layout(run_root, run)
    if not layout.exists(*run_files.CONFIG):
        if not layout.exists():
            there = run_ids(layout.run_root)
            known = f"; runs there: {', '.join(there[:10])}" + (" ..." if len(there) > 10 else "") if there else ""
            raise CompareError(f"no run {layout.run_id!r} under {layout.run_root} (missing {layout.url()}){known}")
        raise CompareError(f"{layout.url()} is not a run folder: it has no {run_files.CONFIG[-1]}")
    config = layout.read_json(*run_files.CONFIG)
    benchmark = str(config.get("benchmark") or "auditorybench")
    # A GLUE run keeps its scores in its own tables (glue/), not fusion/.
    glue = benchmark == "glue"
    stage = run_files.GLUE if glue else run_files.FUSION
    table, results_file = (
        (run_files.GLUE_PREDICTIONS, run_files.GLUE_RESULTS) if glue else (run_files.ALL_PREDICTIONS, run_files.RESULTS)
    )
    if not layout.exists(stage, DONE_MARKER) or not layout.exists(*table):
        raise CompareError(
            f"run {layout.run_id} has not finished: {layout.url(stage, DONE_MARKER)} is missing, so its results "
            "are not whole; finish it (`ith run` with the same settings reuses what it has) or compare finished runs"
        )
    marker = layout.read_json(stage, DONE_MARKER)
    recorded = (marker.get("report") or {}).get("results") if glue else marker.get("report")
    results = layout.read_json(*results_file) if layout.exists(*results_file) else recorded or {}
    summary = layout.read_json(*run_files.SUMMARY) if layout.exists(*run_files.SUMMARY) else None
    plan = layout.read_json(*run_files.PLAN) if layout.exists(*run_files.PLAN) else None
    data = RunData(layout=layout, summary=summary, config=config, plan=plan, markers={stage: marker})
    generator = results.get("generator") if isinstance(results.get("generator"), dict) else generator_of(data)
    units: dict = {}  # GLUE: its dev rows are the units (glue_metrics resamples rows)
    for parts in () if glue else (run_files.inputs_examples(run_files.FUSION_EXAMPLES), run_files.EXAMPLES):
        if layout.exists(*parts):
            units = bootstrap_units(layout.read_table(*parts).to_pylist(), benchmark)
            break
    return ComparedRun(
        run_id=layout.run_id,
        url=layout.url(),
        benchmark=benchmark,
        generator=generator,
        config=config,
        results=results,
        predictions=layout.read_table(*table).to_pylist(),
        units=units,
    )


def _check_comparable(runs: list[ComparedRun]) -> None:
    if len(runs) < 2:
        raise CompareError(f"`ith compare` needs at least two runs, got {len(runs)}")
    seen: dict[str, str] = {}
    for run in runs:
        if run.url in seen:
            raise CompareError(f"run {run.run_id} is given twice ({run.url})")
        seen[run.url] = run.run_id
    benchmarks = {run.benchmark for run in runs}
    if len(benchmarks) > 1:
        named = ", ".join(f"{run.run_id}: {run.benchmark}" for run in runs)
        raise CompareError(
            f"the runs are of different benchmarks ({named}); accuracies of different benchmarks are not "
            "comparable, so compare runs of one benchmark"
        )
    # The same example id must be the same row in every run (a synthetic benchmark built with other
    # settings reuses ids for other rows): its gold answer is the cheap check.
    key = "label" if runs[0].benchmark == "glue" else "gold"
    gold = {p["example_id"]: p[key] for p in runs[0].predictions}
    for run in runs[1:]:
        for p in run.predictions:
            if p["example_id"] in gold and p[key] != gold[p["example_id"]]:
                raise CompareError(
                    f"runs {runs[0].run_id} and {run.run_id} hold different rows under one example id "
                    f"({p['example_id']}: gold {gold[p['example_id']]!r} in one, {p[key]!r} in the other): "
                    "they were built from different benchmark files"
                )


def _cells(run: ComparedRun) -> dict[tuple[str, str, str], dict]:
    """(system, task, split) -> the run's seed-mean row of the primary metric, as its results give it."""
    rows = run.results.get("over_seeds")
    if not rows:  # results from before `over_seeds`: the same table from the run's own predictions
        n_boot = int((run.config.get("fusion") or {}).get("bootstrap_samples") or 1000)
        rows = seed_mean_table(run.predictions, n_boot=n_boot, clusters=run.units or None)
    return {(r["model"], r["task"], r["split"]): r for r in rows if r["metric"] in PRIMARY_METRICS}


def _grouped(predictions: list[dict], system_key: str = "model") -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for p in predictions:
        groups[(p[system_key], p["task"], p["split"])].append(p)
    return groups


def _scored(predictions: list[dict]) -> tuple[set[str], set[str]]:
    """(rows scored by every seed, rows scored by some seed) of one system on one split."""
    by_seed: dict = defaultdict(set)
    for p in predictions:
        if p.get("correct", True) is not None:  # GLUE rows have no `correct`: each is scored by its metrics
            by_seed[p["seed"]].add(p["example_id"])
    if not by_seed:
        return set(), set()
    return set.intersection(*by_seed.values()), set.union(*by_seed.values())


def _training_seeds(predictions: list[dict]) -> list[int]:
    """The seeds of the run's trained systems (a zero-shot system's one evaluation carries a placeholder)."""
    trained = {p["seed"] for p in predictions if p.get("model") in SYSTEMS and SYSTEMS[p["model"]].trained}
    return sorted(trained or {p["seed"] for p in predictions})


def _label(system: str, glue: bool = False) -> str:
    if glue:
        return GLUE_LABELS.get(system, system)
    return SYSTEMS[system].label if system in SYSTEMS else system


def _system_order(name: str, glue: bool = False) -> tuple:
    names = list(GLUE_LABELS if glue else SYSTEMS)
    return (names.index(name) if name in names else len(names), name)


def _pairs(runs: list[ComparedRun], groups: list[dict], keys: list[tuple], not_compared: list[dict]):
    """Per key (system, task, split) and later run: (index of the run, rows both scored by every
    seed, the rows left out and why). A key only one of the two runs has goes to `not_compared`."""
    first = runs[0]
    for key in keys:
        base_all, base_any = _scored(groups[0][key])
        for index, run in enumerate(runs[1:], start=1):
            run_all, run_any = _scored(groups[index][key])
            if not base_any and not run_any:
                continue
            if not base_any or not run_any:
                reason = f"only in {run.run_id if run_any else first.run_id}"
                not_compared.append(dict(zip(("system", "task", "split"), key)) | {"run": index, "reason": reason})
                continue
            common = base_all & run_all
            left_out = {
                "only_in_first": sorted(base_any - run_any),
                "only_in_run": sorted(run_any - base_any),
                "not_every_seed": sorted((base_any & run_any) - common),
            }
            yield key, index, common, left_out


def _runs_entries(runs: list[ComparedRun], system_key: str) -> list[dict]:
    return [
        {
            "run_id": run.run_id,
            "run_dir": run.url,
            "generator": run.generator,
            "label": run.label,
            "systems": sorted(
                {p[system_key] for p in run.predictions}, key=lambda name: _system_order(name, system_key == "system")
            ),
            "seeds": _training_seeds(run.predictions),
        }
        for run in runs
    ]


def compare_runs(runs: list[ComparedRun], n_boot: int | None = None, seed: int = 0) -> dict:
    """The comparison of finished runs of one benchmark, JSON-able: `runs`, `table` (one cell per run
    of each system, task and split), `paired` (each later run minus the first), `not_compared`."""
    _check_comparable(runs)
    first = runs[0]
    if first.benchmark == "glue":
        return _compare_glue(runs, n_boot, seed)
    if n_boot is None:
        n_boot = int((first.config.get("fusion") or {}).get("bootstrap_samples") or 1000)
    cells = [_cells(run) for run in runs]
    keys = sorted(
        {k for c in cells for k in c} | {(p["model"], p["task"], p["split"]) for r in runs for p in r.predictions},
        key=lambda k: (k[1], _split_key(k[2]), _system_order(k[0])),
    )
    table = [
        {
            "system": system,
            "label": _label(system),
            "task": task,
            "split": split,
            "cells": [c.get((system, task, split)) for c in cells],
        }
        for system, task, split in keys
    ]
    units = {}
    for run in reversed(runs):  # the first run's units win; the same rows give the same units
        units.update(run.units)
    groups = [_grouped(run.predictions) for run in runs]
    paired, not_compared = [], []
    for key, index, common, left_out in _pairs(runs, groups, keys, not_compared):
        rows = [
            p | {"model": name}
            for name, source in (("run", groups[index]), ("first", groups[0]))
            for p in source[key]
            if p["example_id"] in common
        ]
        clusters = {i: units[i] for i in common} if common and all(i in units for i in common) else None
        found = paired_comparisons(rows, [("run", "first")], n_boot=n_boot, clusters=clusters, seed=seed)
        entry = dict(zip(("system", "task", "split"), key)) | {"run": index, **left_out}
        if found:
            row = found[0]
            entry |= {k: row[k] for k in ("n", "units", "difference", "ci_low", "ci_high", "p_not_better")}
            entry |= {"seeds_run": row["seeds_a"], "seeds_first": row["seeds_b"]}
        else:
            entry |= {"n": 0, "difference": None, "ci_low": None, "ci_high": None}
        entry["units_kind"] = "bootstrap units" if clusters is not None else "rows"
        paired.append(entry)
    return {
        "benchmark": first.benchmark,
        "runs": _runs_entries(runs, "model"),
        "table": table,
        "paired": paired,
        "not_compared": not_compared,
        "bootstrap_samples": n_boot,
        "bootstrap_unit": UNIT_NAMES.get(first.benchmark),
        "intervals": {"cells": INTERVALS["over_seeds"], "paired": INTERVALS["paired"]},
    }


# ---------------------------------------------------------------------------------------------
# GLUE: its own metrics per task (accuracy, F1, Matthews, Pearson, ...), on the dev rows


def _glue_cell(results: dict, task: str, system: str, metric: str) -> dict | None:
    """A run's recorded value of one GLUE metric, x 100 as the report shows it; None where it has none
    (or the metric is undefined, e.g. Matthews' correlation of a constant prediction)."""
    entry = (((results.get("tasks") or {}).get(task) or {}).get("systems") or {}).get(system) or {}
    value = entry.get(metric) or {}
    if any(not isinstance(value.get(k), (int, float)) or math.isnan(value[k]) for k in ("value", "low", "high")):
        return None
    cell = {k: round(100 * float(value[v]), 2) for k, v in (("mean", "value"), ("ci_low", "low"), ("ci_high", "high"))}
    return cell | {"seeds": entry.get("seeds", 1), "n": entry.get("rows")}


def _points(value: float) -> float | None:
    return round(100 * float(value), 2) if math.isfinite(value) else None


def _compare_glue(runs: list[ComparedRun], n_boot: int | None, seed: int) -> dict:
    """As `compare_runs`, with GLUE's metrics: each cell the run's own value [95 % interval] from
    glue/results.json; each difference `glue_metrics.paired_bootstrap` (the run minus the first, the
    same resampled dev rows for both, seeds averaged), in points (metric x 100)."""
    first = runs[0]
    if n_boot is None:
        n_boot = int((first.config.get("glue") or {}).get("bootstrap") or 1000)
    groups = [_grouped(run.predictions, "system") for run in runs]
    keys = sorted({k for g in groups for k in g}, key=lambda k: (k[1], _split_key(k[2]), _system_order(k[0], True)))
    table = []
    for system, task, split in keys:
        for metric in glue_metrics.METRICS.get(task, ()):
            cells = [_glue_cell(run.results, task, system, metric) for run in runs]
            table.append(
                {
                    "system": system,
                    "label": _label(system, glue=True),
                    "task": task,
                    "split": split,
                    "metric": metric,
                    "cells": cells,
                }
            )
    paired, not_compared = [], []
    for key, index, common, left_out in _pairs(runs, groups, keys, not_compared):
        system, task, split = key
        entry = {"system": system, "task": task, "split": split, "run": index, **left_out, "n": len(common)}
        ids = sorted(common)
        if ids and task in glue_metrics.METRICS:
            _, pred_first, labels = glue_metrics.aligned(groups[0][key], ids)
            _, pred_run, _ = glue_metrics.aligned(groups[index][key], ids)
            found = glue_metrics.paired_bootstrap(task, pred_first, pred_run, labels, n_boot=n_boot, seed=seed)
            # A metric undefined on a resample (a correlation of constant predictions) has no interval.
            entry["metrics"] = {
                metric: {
                    k: _points(d[v]) for k, v in (("difference", "difference"), ("ci_low", "low"), ("ci_high", "high"))
                }
                for metric, d in found.items()
            }
            entry |= {"seeds_run": len(pred_run), "seeds_first": len(pred_first)}
        else:
            entry["metrics"] = {}
        entry["units_kind"] = "rows"
        paired.append(entry)
    return {
        "benchmark": "glue",
        "runs": _runs_entries(runs, "system"),
        "table": table,
        "paired": paired,
        "not_compared": not_compared,
        "bootstrap_samples": n_boot,
        "bootstrap_unit": "dev row",
        "intervals": {
            "cells": "95 % percentile bootstrap over the dev rows, as the run's glue/results.json gives it",
            "paired": "difference run - first of the seed-mean metric on the dev rows both scored; the same "
            "resampled rows for both runs",
        },
    }


def _cell(row: dict | None) -> Raw:
    """A run's accuracy cell: numbers only, so already inert Markdown."""
    if row is None:
        return Raw("-")
    text = f"{row['mean']:.2f}"
    if row.get("seeds", 1) > 1 and row.get("std") is not None:
        text += f" ± {row['std']:.2f}"
    if row.get("ci_low") is not None:
        text += f" [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
    return Raw(text)


def _named(ids: list[str]) -> str:
    shown = ", ".join(ids[:NAMED_ROWS])
    return shown + (f" and {len(ids) - NAMED_ROWS} more (all of them in --json)" if len(ids) > NAMED_ROWS else "")


def _accuracy_tables(comparison: dict) -> list[str]:
    runs = comparison["runs"]
    lines = [
        "Accuracy (%) of each run as its own results give it: mean ± sample sd over seeds [95 % interval of the "
        "seed-mean: hierarchical bootstrap over seeds, then the benchmark's units]; - where the run has no such row.",
        "",
        _md_table(
            Table(
                ["system", "task", "split", *(r["label"] for r in runs)],
                [[row["label"], row["task"], row["split"], *map(_cell, row["cells"])] for row in comparison["table"]],
            )
        ),
    ]
    if comparison["paired"]:
        lines += [
            "",
            f"Paired differences against the first run, {md_escape(runs[0]['run_id'])}: accuracy of the run minus "
            "the first's, in points, on the rows both scored (joined on example id), with its 95 % interval "
            f"(hierarchical bootstrap, {comparison['bootstrap_samples']} resamples: each run's seeds drawn on their "
            "own, then one draw of the shared units for both) and the share of resamples where the run is not better.",
            "",
            _md_table(
                Table(
                    ["system", "task", "split", "run", "difference", "95 % interval", "rows", "units", "not better"],
                    [
                        [
                            _label(p["system"]),
                            p["task"],
                            p["split"],
                            runs[p["run"]]["run_id"],
                            "-" if p["difference"] is None else f"{p['difference']:+.2f}",
                            Raw("-" if p["ci_low"] is None else f"[{p['ci_low']:+.1f}, {p['ci_high']:+.1f}]"),
                            p["n"],
                            p.get("units", "-") if p["units_kind"] != "rows" else f"{p['n']} (rows)",
                            "-" if p.get("p_not_better") is None else f"{p['p_not_better']:.3f}",
                        ]
                        for p in comparison["paired"]
                    ],
                    numeric={4, 6, 7, 8},
                )
            ),
        ]
    return lines


def _glue_tables(comparison: dict) -> list[str]:
    runs = comparison["runs"]
    lines = [
        "GLUE's metrics on the dev sets (x 100) of each run as its glue/results.json gives them: seed-mean "
        "[95 % bootstrap interval over the dev rows]; - where the run has no such row.",
        "",
        _md_table(
            Table(
                ["system", "task", "metric", *(r["label"] for r in runs)],
                [
                    [row["label"], GLUE_TASKS.get(row["task"], row["task"]), row["metric"], *map(_cell, row["cells"])]
                    for row in comparison["table"]
                ],
            )
        ),
    ]
    rows = [
        [
            _label(p["system"], glue=True),
            GLUE_TASKS.get(p["task"], p["task"]),
            metric,
            runs[p["run"]]["run_id"],
            "-" if d["difference"] is None else f"{d['difference']:+.2f}",
            Raw("-" if d["ci_low"] is None or d["ci_high"] is None else f"[{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"),
            p["n"],
        ]
        for p in comparison["paired"]
        for metric, d in p["metrics"].items()
    ]
    if rows:
        lines += [
            "",
            f"Paired differences against the first run, {md_escape(runs[0]['run_id'])}: the run's metric minus the "
            "first's, in points, on the dev rows both scored (joined on example id), seeds averaged, with its 95 % "
            f"interval ({comparison['bootstrap_samples']} resamples of those rows, the same for both runs).",
            "",
            _md_table(
                Table(["system", "task", "metric", "run", "difference", "95 % interval", "rows"], rows, numeric={4, 6})
            ),
        ]
    return lines


def comparison_markdown(comparison: dict) -> str:
    """The comparison as Markdown: the runs, the one table (a column per run), the paired differences."""
    runs = comparison["runs"]
    first = runs[0]["run_id"]
    glue = comparison["benchmark"] == "glue"
    lines = [
        f"# Runs compared ({md_escape(comparison['benchmark'])})",
        "",
        _md_table(
            Table(
                ["run", "generator (imagined audio)", "systems", "seeds", "run folder"],
                [
                    [
                        r["run_id"],
                        generator_label(r["generator"]),
                        ", ".join(r["systems"]),
                        ", ".join(map(str, r["seeds"])),
                        r["run_dir"],
                    ]
                    for r in runs
                ],
            )
        ),
        "",
        *(_glue_tables(comparison) if glue else _accuracy_tables(comparison)),
    ]
    left_out = []
    for p in comparison["paired"]:
        where = f"{_label(p['system'], glue)}, {p['task']} {p['split']}"
        for key, said in (
            ("only_in_first", f"scored by {first} only"),
            ("only_in_run", f"scored by {runs[p['run']]['run_id']} only"),
            ("not_every_seed", f"not scored by every seed of {first} and {runs[p['run']]['run_id']}"),
        ):
            if p[key]:
                count = f"{len(p[key])} row{'s' if len(p[key]) > 1 else ''}"
                left_out.append(f"- {md_escape(where)}: {count} {md_escape(said)}: {md_escape(_named(p[key]))}")
    for entry in comparison["not_compared"]:
        left_out.append(
            f"- {md_escape(_label(entry['system'], glue))}, {md_escape(entry['task'])} {md_escape(entry['split'])}: "
            f"not compared with {md_escape(runs[entry['run']]['run_id'])}, {md_escape(entry['reason'])}"
        )
    lines += [
        "",
        "Rows left out of the differences:" if left_out else "Every difference is over all rows of both runs.",
    ]
    if left_out:
        lines += [""] + left_out
    return "\n".join(lines) + "\n"
