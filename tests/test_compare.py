"""`ith compare`: finished runs side by side, one column per run labelled with its generator, and
paired differences on the rows both runs scored.

Most tests write small run folders with exactly the files compare reads (config.json from a real
RunConfig, fusion/predictions.parquet in PREDICTION_SCHEMA, results.json and the fusion marker from
the real scoring functions) through storage/, so the outcomes of every row are known and the
difference can be computed by hand. The slow test compares two runs the pipeline wrote
(`ith run --benchmark synthetic`, a few names per split) through the `ith compare` entry point.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers.ith_process import run_ith_json

from cli.main import main
from ith_core.config import RunConfig
from ith_core.evaluation import glue_metrics
from ith_core.evaluation.scoring import accuracy_table, results_dict, seed_mean_table
from ith_core.report.compare import CompareError, compare_runs, load_compared_run
from ith_core.report.tables import md_escape
from ith_core.stages import skeleton
from storage import run_files
from storage.layout import RunLayout

N_BOOT = 200


def write_run(
    root: Path,
    run_id: str,
    outcomes: dict[tuple[str, str, str], dict[str, list[bool]]],
    benchmark: str = "synthetic",
    generator: dict | None = None,
    finished: bool = True,
    examples: list[dict] | None = None,
) -> str:
    """A finished run folder: `outcomes[(system, task, split)][example_id]` is the row's correctness
    per seed (seeds 42, 43, ...); gold answers are the example id's last part."""
    cfg = RunConfig.for_profile(
        "tiny", benchmark=benchmark, run_root=str(root), run_id=run_id, fusion={"bootstrap_samples": N_BOOT}
    )
    skeleton.write_config(cfg)
    layout = RunLayout(str(root), run_id)
    predictions = [
        {
            "example_id": example_id,
            "task": task,
            "split": split,
            "model": system,
            "seed": 42 + k,
            "prediction": example_id.rsplit("/", 1)[-1] if correct else "wrong",
            "gold": example_id.rsplit("/", 1)[-1],
            "correct": correct,
            "mc_prediction": None,
            "mc_correct": None,
            "spans_used": [],
            "audio_ids": [],
        }
        for (system, task, split), rows in outcomes.items()
        for example_id, per_seed in rows.items()
        for k, correct in enumerate(per_seed)
    ]
    layout.write_table(
        pa.Table.from_pylist(predictions, schema=run_files.PREDICTION_SCHEMA), *run_files.ALL_PREDICTIONS
    )
    if examples is not None:
        layout.write_table(pa.Table.from_pylist(examples), *run_files.inputs_examples(run_files.FUSION_EXAMPLES))
    results = results_dict(accuracy_table(predictions, n_boot=N_BOOT), benchmark)
    results["over_seeds"] = seed_mean_table(predictions, n_boot=N_BOOT)
    results["generator"] = generator or {"name": cfg.imagine.generator, "id": f"id-of-{run_id}", "imagined": True}
    layout.write_json(results, *run_files.RESULTS)
    if finished:
        layout.mark_done(run_files.FUSION, "constructed", results)
    return run_id


def rows(task: str, split: str, correct: list[int]) -> dict[str, list[bool]]:
    """One seed's outcomes of rows 1..n of one split: `<task>/<split>/<i>`."""
    return {f"{task}/{split}/{i + 1}": [bool(c)] for i, c in enumerate(correct)}


def compare(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args, "--run-root", str(root)])
    out, err = capsys.readouterr()
    return code, out, err


def shown_table(markdown: str) -> list[list[str]]:
    """The cells of the table whose header starts with `system`, `task`, `split`, header row first."""
    lines = markdown.splitlines()
    start = next(i for i, li in enumerate(lines) if li.startswith("| system | task | split | "))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in li.strip("|").split(" | ")] for i, li in enumerate(lines[start:end]) if i != 1]


def test_the_table_has_one_column_per_run_labelled_by_run_id_and_generator(tmp_path, capsys):
    tone = {"name": "tone", "id": "tiny-tone-0a1b", "imagined": True}
    stable = {"name": "stable-audio", "id": "stabilityai/stable-audio-open-1.0@abc123", "imagined": True}
    text_only = {"name": "stable-audio", "id": None, "imagined": False}
    write_run(tmp_path, "run-a", {("ith", "animal", "test"): rows("animal", "test", [1, 1, 0, 0])}, generator=tone)
    write_run(tmp_path, "run-b", {("ith", "animal", "test"): rows("animal", "test", [1, 1, 1, 0])}, generator=stable)
    write_run(
        tmp_path, "run-c", {("bert-text", "animal", "test"): rows("animal", "test", [1, 0, 0, 0])}, generator=text_only
    )
    out_file = tmp_path / "compare.md"
    code, out, err = compare(capsys, tmp_path, "run-a", "run-b", "run-c", "--out", str(out_file))
    assert code == 0, err
    assert out_file.read_text(encoding="utf-8") == out
    header, *body = shown_table(out)
    assert header[3:] == [
        r"run-a (tone (tiny-tone-0a1b))",
        r"run-b (stable-audio (stabilityai/stable-audio-open-1.0@abc123))",
        r"run-c (stable-audio (no system heard imagined audio))",
    ]
    # One row per system, task and split; a run without the system shows '-' in its column.
    assert [row[:3] for row in body] == [
        ["BERT, fine-tuned text-only", "animal", "test"],
        ["ITH (imagined audio)", "animal", "test"],
    ]
    text, ith = body
    assert text[3:5] == ["-", "-"] and text[5].startswith("25.00 [")
    assert ith[3].startswith("50.00 [") and ith[4].startswith("75.00 [") and ith[5] == "-"
    # The pair without a shared system is named, not dropped.
    assert "not compared with run-c, only in run-a" in out
    assert "not compared with run-c, only in run-c" in out


def test_paired_difference_equals_the_hand_computation(tmp_path, capsys):
    # Run A right on rows 1-4, run B on rows 1-2: B - A = 50 % - 100 % = -50 points.
    write_run(tmp_path, "a", {("ith", "pitch", "test"): rows("pitch", "test", [1, 1, 1, 1])})
    write_run(tmp_path, "b", {("ith", "pitch", "test"): rows("pitch", "test", [1, 1, 0, 0])})
    code, out, err = compare(capsys, tmp_path, "a", "b", "--json")
    assert code == 0, err
    comparison = json.loads(out)
    [pair] = comparison["paired"]
    assert pair["difference"] == -50.0 and pair["n"] == 4 and pair["units_kind"] == "rows"
    # The interval by hand: scoring.paired_comparisons' draws in its order (run B's one seed, run A's
    # one seed, then the four rows with replacement), the B - A mean over the drawn rows.
    rng = np.random.default_rng(0)
    rng.multinomial(1, [1.0], size=N_BOOT), rng.multinomial(1, [1.0], size=N_BOOT)
    counts = rng.multinomial(4, [0.25] * 4, size=N_BOOT)
    boot = (counts * np.array([0, 0, -1, -1])).sum(axis=1) / counts.sum(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert (pair["ci_low"], pair["ci_high"]) == (round(100 * lo, 2), round(100 * hi, 2))
    assert pair["ci_low"] <= pair["difference"] <= pair["ci_high"] <= 0
    assert pair["p_not_better"] == 1.0  # B never beats A: it is right on a subset of A's rows
    assert pair["only_in_first"] == pair["only_in_run"] == []
    # The other direction is the negative difference.
    capsys.readouterr()
    code, out, _ = compare(capsys, tmp_path, "b", "a", "--json")
    assert json.loads(out)["paired"][0]["difference"] == 50.0


def test_seeds_are_averaged_per_row_before_the_difference(tmp_path):
    # Run A: two seeds, row 1 right in both, row 2 in one; run B: one seed, both right.
    write_run(tmp_path, "a", {("ith", "animal", "dev"): {"animal/dev/1": [True, True], "animal/dev/2": [True, False]}})
    write_run(tmp_path, "b", {("ith", "animal", "dev"): {"animal/dev/1": [True], "animal/dev/2": [True]}})
    runs = [load_compared_run(str(tmp_path), r) for r in ("a", "b")]
    [pair] = compare_runs(runs)["paired"]
    assert pair["difference"] == 100 * (1.0 - 0.75) and pair["seeds_run"] == 1 and pair["seeds_first"] == 2


def test_rows_scored_by_one_run_only_are_counted_and_named(tmp_path, capsys):
    write_run(tmp_path, "a", {("ith", "animal", "test"): rows("animal", "test", [1, 1, 0, 0, 1])})
    b = rows("animal", "test", [1, 0, 0, 1])
    b["animal/test/6"] = [True]
    write_run(tmp_path, "b", {("ith", "animal", "test"): b})
    code, out, err = compare(capsys, tmp_path, "a", "b")
    assert code == 0, err
    assert "ITH (imagined audio), animal test: 1 row scored by a only: animal/test/5" in out
    assert "ITH (imagined audio), animal test: 1 row scored by b only: animal/test/6" in out
    runs = [load_compared_run(str(tmp_path), r) for r in ("a", "b")]
    [pair] = compare_runs(runs)["paired"]
    assert pair["n"] == 4 and pair["only_in_first"] == ["animal/test/5"] and pair["only_in_run"] == ["animal/test/6"]
    # Over rows 1-4 only: A 2 of 4, B 2 of 4 (rows 1 and 4).
    assert pair["difference"] == 0.0


def test_bootstrap_units_of_the_benchmark_are_resampled(tmp_path):
    # Synthetic rows are grouped by source name (the first gold span): 6 rows, 2 names.
    examples = [
        {"example_id": f"animal/test/{i}", "task": "animal", "split": "test", "spans": [f"name{i % 2}"]}
        for i in range(1, 7)
    ]
    outcome = {("ith", "animal", "test"): rows("animal", "test", [1] * 6)}
    write_run(tmp_path, "a", outcome, examples=examples)
    write_run(tmp_path, "b", {("ith", "animal", "test"): rows("animal", "test", [1, 0, 1, 0, 1, 0])})
    [pair] = compare_runs([load_compared_run(str(tmp_path), r) for r in ("a", "b")])["paired"]
    assert pair["units_kind"] == "bootstrap units" and pair["units"] == 2 and pair["n"] == 6
    # Row 1, 3, 5 (name1) right in both, rows 2, 4, 6 (name0) right in A only: a resample holds
    # each name 0, 1 or 2 times, so the difference takes only the values -100, -50, 0.
    assert pair["difference"] == -50.0 and {pair["ci_low"], pair["ci_high"]} <= {-100.0, -50.0, 0.0}


def ith_error(capsys, root: Path, *args: str) -> str:
    code, out, err = compare(capsys, root, *args)
    assert code == 1 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ith: "), err
    return lines[0]


def test_refuses_runs_of_different_benchmarks(tmp_path, capsys):
    write_run(tmp_path, "bench", {("ith", "animal", "test"): rows("animal", "test", [1])}, benchmark="auditorybench")
    write_run(tmp_path, "synth", {("ith", "animal", "test"): rows("animal", "test", [1])})
    line = ith_error(capsys, tmp_path, "bench", "synth")
    assert "different benchmarks" in line and "bench: auditorybench" in line and "synth: synthetic" in line


def test_refuses_a_missing_an_unfinished_and_a_single_run(tmp_path, capsys):
    write_run(tmp_path, "done", {("ith", "animal", "test"): rows("animal", "test", [1])})
    write_run(tmp_path, "half", {("ith", "animal", "test"): rows("animal", "test", [1])}, finished=False)
    line = ith_error(capsys, tmp_path, "done", "nowhere")
    assert f"no run 'nowhere' under {tmp_path} (missing " in line and "runs there: done, half" in line
    assert "has not finished" in ith_error(capsys, tmp_path, "done", "half")
    assert "at least two runs, got 1" in ith_error(capsys, tmp_path, "done")
    assert "given twice" in ith_error(capsys, tmp_path, "done", str(tmp_path / "done"))
    glue = RunConfig.for_profile("tiny", benchmark="glue", run_root=str(tmp_path), run_id="glue-run")
    skeleton.write_config(glue)  # a GLUE run is finished by its own stage, glue/
    assert "glue/_DONE.json is missing" in ith_error(capsys, tmp_path, "glue-run", "done")
    with pytest.raises(CompareError, match="at least two runs"):
        compare_runs([load_compared_run(str(tmp_path), "done")])


def test_refuses_runs_whose_rows_differ_under_one_example_id(tmp_path, capsys):
    write_run(tmp_path, "a", {("ith", "animal", "test"): rows("animal", "test", [1])})
    write_run(tmp_path, "b", {("ith", "animal", "test"): {"animal/test/1": [True]}})
    layout = RunLayout(str(tmp_path), "b")
    table = layout.read_table(*run_files.ALL_PREDICTIONS).to_pylist()
    table[0]["gold"] = "another answer"
    layout.write_table(pa.Table.from_pylist(table, schema=run_files.PREDICTION_SCHEMA), *run_files.ALL_PREDICTIONS)
    assert "different benchmark files" in ith_error(capsys, tmp_path, "a", "b")


def write_glue_run(root: Path, run_id: str, outcomes: dict[tuple[str, str], dict[str, list[int]]]) -> str:
    """A finished GLUE run: `outcomes[(system, task)][example_id]` is the predicted class per seed;
    every label is 1. Its glue/results.json as the GLUE stage writes it (glue_metrics.bootstrap_metrics)."""
    cfg = RunConfig.for_profile("tiny", benchmark="glue", run_root=str(root), run_id=run_id, glue={"bootstrap": N_BOOT})
    skeleton.write_config(cfg)
    layout = RunLayout(str(root), run_id)
    predictions = [
        {
            "example_id": example_id,
            "task": task,
            "split": "dev",
            "system": system,
            "seed": 42 + k,
            "label": 1.0,
            "prediction": float(value),
            "spans_fused": 0,
        }
        for (system, task), rows in outcomes.items()
        for example_id, per_seed in rows.items()
        for k, value in enumerate(per_seed)
    ]
    layout.write_table(
        pa.Table.from_pylist(predictions, schema=run_files.GLUE_PREDICTION_SCHEMA), *run_files.GLUE_PREDICTIONS
    )
    tasks: dict = {}
    for (system, task), rows in outcomes.items():
        values = np.asarray(list(rows.values()), dtype=np.float64).T  # (seeds, rows)
        entry = tasks.setdefault(task, {"metrics": list(glue_metrics.METRICS[task]), "systems": {}, "paired": {}})
        entry["systems"][system] = {
            "rows": values.shape[1],
            "seeds": values.shape[0],
            **glue_metrics.bootstrap_metrics(task, values, np.ones(values.shape[1]), n_boot=N_BOOT),
        }
    results = {"benchmark": "glue", "split": "dev", "systems": sorted({s for s, _ in outcomes}), "tasks": tasks}
    layout.write_json(results, *run_files.GLUE_RESULTS)
    layout.mark_done(run_files.GLUE, "constructed", {"results": results})
    return run_id


def test_glue_runs_compare_by_glue_metrics_on_the_rows_both_scored(tmp_path, capsys):
    # SST-2, label 1 everywhere: run A right on rows 1-4, run B on rows 1-2, and B scored a row 5 A did not.
    write_glue_run(tmp_path, "glue-a", {("ith", "sst2"): {f"sst2/dev/{i}": [1] for i in range(1, 5)}})
    b = {f"sst2/dev/{i}": [int(i <= 2)] for i in range(1, 6)}
    write_glue_run(tmp_path, "glue-b", {("ith", "sst2"): b, ("bert", "sst2"): b})
    code, out, err = compare(capsys, tmp_path, "glue-a", "glue-b")
    assert code == 0, err
    header, *body = shown_table(out.replace("| system | task | metric |", "| system | task | split |"))
    assert len(header) == 3 + 2 and header[3].startswith("glue-a (") and header[4].startswith("glue-b (")
    assert [row[:3] for row in body] == [["BERT (fine-tuned, no audio)", "SST-2", "accuracy"]] + [
        ["ITH (imagined audio fused)", "SST-2", "accuracy"]
    ]
    assert body[0][3] == "-" and body[1][3].startswith("100.00 [") and body[1][4].startswith("40.00 [")
    assert "1 row scored by glue-b only: sst2/dev/5" in out
    assert "BERT (fine-tuned, no audio), sst2 dev: not compared with glue-b, only in glue-b" in out
    code, out, _ = compare(capsys, tmp_path, "glue-a", "glue-b", "--json")
    [pair] = json.loads(out)["paired"]
    assert pair["n"] == 4 and pair["only_in_run"] == ["sst2/dev/5"]
    accuracy = pair["metrics"]["accuracy"]
    assert accuracy["difference"] == -50.0
    # By hand: glue_metrics resamples the 4 shared rows with replacement (one seed); B - A on them.
    rng = np.random.default_rng(0)
    boot = [-np.mean(rng.integers(0, 4, size=4) >= 2) for _ in range(N_BOOT)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert (accuracy["ci_low"], accuracy["ci_high"]) == (round(100 * lo, 2), round(100 * hi, 2))


def test_the_report_names_the_generator_of_an_older_run(tmp_path):
    """A run from before results.json recorded the generator: config.json and plan.json say it."""
    from ith_core.report.loading import RunData, generator_label, generator_of

    data = RunData(
        layout=RunLayout(str(tmp_path), "old"),
        config={"imagine": {"generator": "audioldm2"}},
        plan={"settings": {"generator_id": "cvssp/audioldm2@f00d"}},
    )
    assert generator_label(generator_of(data)) == "audioldm2 (cvssp/audioldm2@f00d)"
    data.summary = {"stages": {"fusion": {"generator": {"name": "tone", "id": "tiny-1", "imagined": True}}}}
    assert generator_label(generator_of(data)) == "tone (tiny-1)"


@pytest.mark.slow
def test_ith_compare_on_runs_the_pipeline_wrote(tmp_path, ith_home, capsys):
    """Two real synthetic runs (the second imagines imperfectly: a wrong band with probability 0.5)
    record their generator, and `ith compare` pairs them on the rows both scored."""
    root = tmp_path / "runs"
    sizes = {"train": 8, "dev": 4, "test": 4, "wiki": 2}
    common = ["--set", f"synthetic.names={json.dumps(sizes)}", "--set", "fusion.epochs=2"]
    run_ids = []
    for extra in ([], ["--set", "synthetic.tone_error_rate=0.5"]):
        args = ["run", "--benchmark", "synthetic", "--systems", "ith", "--run-root", str(root), *common, *extra]
        run_ids.append(run_ith_json(args, tmp_path, ith_home)["run_id"])
    for run_id in run_ids:
        results = json.loads((root / run_id / "fusion" / "results.json").read_text())
        summary = json.loads((root / run_id / "summary.json").read_text())
        plan = json.loads((root / run_id / "imagine" / "plan.json").read_text())
        generator = {"name": "tone", "id": plan["settings"]["generator_id"], "imagined": True}
        assert results["generator"] == summary["stages"]["fusion"]["generator"] == generator
        report = (root / run_id / "report" / "report.md").read_text(encoding="utf-8")
        assert md_escape(f"tone ({generator['id']})") in report  # the overview's generator row
    out_file = tmp_path / "compare.md"
    code = main(["compare", *run_ids, "--run-root", str(root), "--out", str(out_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    header = shown_table(out)[0]
    assert len(header) == 3 + 2 and all(h.startswith(f"{r} (tone (") for h, r in zip(header[3:], run_ids))
    assert main(["compare", *run_ids, "--run-root", str(root), "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    predictions = {r: RunLayout(str(root), r).read_table(*run_files.ALL_PREDICTIONS).to_pylist() for r in run_ids}
    for pair in comparison["paired"]:
        scored = [
            {
                p["example_id"]: p["correct"]
                for p in predictions[r]
                if (p["task"], p["split"]) == (pair["task"], pair["split"])
            }
            for r in run_ids
        ]
        assert pair["n"] == len(scored[0]) == len(scored[1]) and pair["units_kind"] == "bootstrap units"
        by_hand = 100 * (np.mean(list(scored[1].values())) - np.mean(list(scored[0].values())))
        assert pair["difference"] == round(by_hand, 2)
        assert pair["ci_low"] <= pair["difference"] <= pair["ci_high"]
    assert {(p["task"], p["split"]) for p in comparison["paired"]} == {
        (t, s) for t in ("animal", "pitch") for s in ("dev", "test", "wiki")
    }
    assert re.search(r"Paired differences against the first run", out_file.read_text(encoding="utf-8"))
