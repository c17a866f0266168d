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
only one run are counted and named, never dropped silently. Reads run folders through `storage/`
only; imports no stage.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from dataclasses import dataclass

from ith_core.evaluation.scoring import INTERVALS, UNIT_NAMES, bootstrap_units, paired_comparisons, seed_mean_table
from ith_core.fusion.systems import SYSTEMS
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
    results: dict  # fusion/results.json (else the fusion stage's report)
    predictions: list[dict]  # fusion/predictions.parquet (PREDICTION_SCHEMA)
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
    if benchmark == "glue":
        raise CompareError(
            f"run {layout.run_id} is a GLUE run: GLUE runs are compared by their report's GLUE table for now; "
            f"`ith compare` reads {'/'.join(run_files.ALL_PREDICTIONS)}, which GLUE runs do not write"
        )
    if not layout.exists(run_files.FUSION, DONE_MARKER) or not layout.exists(*run_files.ALL_PREDICTIONS):
        raise CompareError(
            f"run {layout.run_id} has not finished: {layout.url(run_files.FUSION, DONE_MARKER)} is missing, so its "
            "results are not whole; finish it (`ith run` with the same settings reuses what it has) or compare "
            "finished runs"
        )
    marker = layout.read_json(run_files.FUSION, DONE_MARKER)
    results = layout.read_json(*run_files.RESULTS) if layout.exists(*run_files.RESULTS) else marker.get("report") or {}
    summary = layout.read_json(*run_files.SUMMARY) if layout.exists(*run_files.SUMMARY) else None
    plan = layout.read_json(*run_files.PLAN) if layout.exists(*run_files.PLAN) else None
    data = RunData(layout=layout, summary=summary, config=config, plan=plan, markers={run_files.FUSION: marker})
    generator = results.get("generator") if isinstance(results.get("generator"), dict) else generator_of(data)
    units: dict = {}
    for parts in (run_files.inputs_examples(run_files.FUSION_EXAMPLES), run_files.EXAMPLES):
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
        predictions=layout.read_table(*run_files.ALL_PREDICTIONS).to_pylist(),
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
    gold = {p["example_id"]: p["gold"] for p in runs[0].predictions}
    for run in runs[1:]:
        for p in run.predictions:
            if p["example_id"] in gold and p["gold"] != gold[p["example_id"]]:
                raise CompareError(
                    f"runs {runs[0].run_id} and {run.run_id} hold different rows under one example id "
                    f"({p['example_id']}: gold {gold[p['example_id']]!r} in one, {p['gold']!r} in the other): "
                    "they were built from different benchmark files"
                )


def _cells(run: ComparedRun) -> dict[tuple[str, str, str], dict]:
    """(system, task, split) -> the run's seed-mean row of the primary metric, as its results give it."""
    rows = run.results.get("over_seeds")
    if not rows:  # results from before `over_seeds`: the same table from the run's own predictions
        n_boot = int((run.config.get("fusion") or {}).get("bootstrap_samples") or 1000)
        rows = seed_mean_table(run.predictions, n_boot=n_boot, clusters=run.units or None)
    return {(r["model"], r["task"], r["split"]): r for r in rows if r["metric"] in PRIMARY_METRICS}


def _grouped(predictions: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for p in predictions:
        groups[(p["model"], p["task"], p["split"])].append(p)
    return groups


def _scored(predictions: list[dict]) -> tuple[set[str], set[str]]:
    """(rows scored by every seed, rows scored by some seed) of one system on one split."""
    by_seed: dict = defaultdict(set)
    for p in predictions:
        if p["correct"] is not None:
            by_seed[p["seed"]].add(p["example_id"])
    if not by_seed:
        return set(), set()
    return set.intersection(*by_seed.values()), set.union(*by_seed.values())


def _training_seeds(predictions: list[dict]) -> list[int]:
    """The seeds of the run's trained systems (a zero-shot system's one evaluation carries a placeholder)."""
    trained = {p["seed"] for p in predictions if p["model"] in SYSTEMS and SYSTEMS[p["model"]].trained}
    return sorted(trained or {p["seed"] for p in predictions})


def _label(system: str) -> str:
    return SYSTEMS[system].label if system in SYSTEMS else system


def _system_order(name: str) -> tuple:
    names = list(SYSTEMS)
    return (names.index(name) if name in names else len(names), name)


def compare_runs(runs: list[ComparedRun], n_boot: int | None = None, seed: int = 0) -> dict:
    """The comparison of finished runs of one benchmark, JSON-able: `runs`, `table` (one cell per run
    of each system, task and split), `paired` (each later run minus the first), `not_compared`."""
    _check_comparable(runs)
    first = runs[0]
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
    for system, task, split in keys:
        base_all, base_any = _scored(groups[0][(system, task, split)])
        for index, run in enumerate(runs[1:], start=1):
            run_all, run_any = _scored(groups[index][(system, task, split)])
            if not base_any and not run_any:
                continue
            if not base_any or not run_any:
                not_compared.append(
                    {
                        "system": system,
                        "task": task,
                        "split": split,
                        "run": index,
                        "reason": f"only in {run.run_id if run_any else first.run_id}",
                    }
                )
                continue
            common = base_all & run_all
            left_out = {
                "only_in_first": sorted(base_any - run_any),
                "only_in_run": sorted(run_any - base_any),
                "not_every_seed": sorted((base_any & run_any) - common),
            }
            rows = [
                p | {"model": name}
                for name, source in (("run", groups[index]), ("first", groups[0]))
                for p in source[(system, task, split)]
                if p["example_id"] in common
            ]
            clusters = {i: units[i] for i in common} if common and all(i in units for i in common) else None
            found = paired_comparisons(rows, [("run", "first")], n_boot=n_boot, clusters=clusters, seed=seed)
            entry = {"system": system, "task": task, "split": split, "run": index, **left_out}
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
        "runs": [
            {
                "run_id": run.run_id,
                "run_dir": run.url,
                "generator": run.generator,
                "label": run.label,
                "systems": sorted({p["model"] for p in run.predictions}, key=_system_order),
                "seeds": _training_seeds(run.predictions),
            }
            for run in runs
        ],
        "table": table,
        "paired": paired,
        "not_compared": not_compared,
        "bootstrap_samples": n_boot,
        "bootstrap_unit": UNIT_NAMES.get(first.benchmark),
        "intervals": {"cells": INTERVALS["over_seeds"], "paired": INTERVALS["paired"]},
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


def comparison_markdown(comparison: dict) -> str:
    """The comparison as Markdown: the runs, the one table (a column per run), the paired differences."""
    runs = comparison["runs"]
    first = runs[0]["run_id"]
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
            f"Paired differences against the first run, {md_escape(first)}: accuracy of the run minus the first's, "
            "in points, on the rows both scored (joined on example id), with its 95 % interval (hierarchical "
            f"bootstrap, {comparison['bootstrap_samples']} resamples: each run's seeds drawn on their own, then one "
            "draw of the shared units for both) and the share of resamples where the run is not better.",
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
    left_out = []
    for p in comparison["paired"]:
        where = f"{_label(p['system'])}, {p['task']} {p['split']}"
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
            f"- {md_escape(_label(entry['system']))}, {md_escape(entry['task'])} {md_escape(entry['split'])}: "
            "not compared "
            f"with {md_escape(runs[entry['run']]['run_id'])}, {md_escape(entry['reason'])}"
        )
    lines += [
        "",
        "Rows left out of the differences:" if left_out else "Every difference is over all rows of both runs.",
    ]
    if left_out:
        lines += [""] + left_out
    return "\n".join(lines) + "\n"
