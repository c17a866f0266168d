"""The paper's two mechanisms on the planted-signal benchmark, run as a user runs them (`--set` options).

    .venv/bin/python benchmarks/bench_mechanisms.py                       # both sweeps, seeds 42,43,44
    .venv/bin/python benchmarks/bench_mechanisms.py --sweeps coverage --seeds 42
    .venv/bin/python benchmarks/bench_mechanisms.py --configs q0.5-n5-lazy,q0.5-n1-lazy --append

Writes results/mechanisms_tiny_cpu.json (machine, versions, commit, settings and command of every
configuration, per-seed accuracies with their intervals over source names, the hierarchical
seed-and-source interval of each seed mean, paired comparisons, retrieval and selection
statistics) and results/mechanisms_tiny_cpu.predictions.parquet (every scored test row).
`benchmarks/results_table.py` prints them into docs/synthetic-benchmark.md and the README.

1. Retrieval that misses (`synthetic.pool_coverage`): AudioBERT's pool holds clips of a share of
   each split's source names; the others are still queried and retrieve the best-matching clip
   of another source. Coverage 1.0 (the default, an exact-name lookup), 0.5 and 0, with the
   retrieval hit rate (top-1 clip of the span's own source) beside each. ITH never reads the
   pool; it is trained at coverage 1.0 and, with --ith-every-coverage, at every coverage.
2. Imperfect imagination (`synthetic.tone_error_rate` q = 0.5: each candidate renders a wrong band
   with probability q, drawn from its seed) scored by the planted scorer (`synthetic.scorer=
   planted`, not CLAP) at threshold 0.5 on both tasks, which lies between right (about 1) and
   wrong (near 0) bands: 1 vs 5 candidates, lazy and all sampling, and one candidate with every
   candidate accepted (threshold -1: what fusing candidate 0 regardless of its score gives).
   All sampling runs at the first seed only (FIRST_SEED_ONLY): its selection is compared with lazy
   sampling's in full, and the same selection trains the same model.
   Recorded: acceptance per candidate (expected about 1 - q), the share of span occurrences whose
   selected audio renders the right band (expected about 1 - q^N; truth from the tone generator's
   own error draw, which the scorer never sees), whether lazy and all select the same candidates,
   and ITH's accuracy.

Each configuration is one `ith run --benchmark synthetic --seeds ...` subprocess; all share one
fresh ITH_HOME (the tiny profile built once) and one run root (one audio store).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.environment import environment
from ith_core.config import RunConfig
from ith_core.evaluation.scoring import bootstrap_units, paired_comparisons, seed_mean_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUT = RESULTS / "mechanisms_tiny_cpu.json"
Q = 0.5
THRESHOLD = 0.5
_IMPERFECT = {
    "synthetic.tone_error_rate": Q,
    "synthetic.scorer": "planted",
    "imagine.thresholds": {"animal": THRESHOLD, "pitch": THRESHOLD},
}
# name -> (sweep, --set settings, systems)
CONFIGS: dict[str, tuple[str, dict, str]] = {
    "coverage-1.0": ("coverage", {}, "bert,audiobert,ith"),
    "coverage-0.5": ("coverage", {"synthetic.pool_coverage": 0.5}, "audiobert"),
    "coverage-0": ("coverage", {"synthetic.pool_coverage": 0.0}, "audiobert"),
    "q0.5-n5-lazy": ("imagination", {**_IMPERFECT, "imagine.num_candidates": 5}, "ith"),
    "q0.5-n1-lazy": ("imagination", {**_IMPERFECT, "imagine.num_candidates": 1}, "ith"),
    "q0.5-n5-all": ("imagination", {**_IMPERFECT, "imagine.num_candidates": 5, "imagine.sampling": "all"}, "ith"),
    "q0.5-n1-accept-all": (
        "imagination",
        {**_IMPERFECT, "imagine.num_candidates": 1, "imagine.thresholds": {"animal": -1.0, "pitch": -1.0}},
        "ith",
    ),
}
# Run at the first seed only: lazy and all sampling select the same candidates (compared in full,
# every span occurrence), so their ITH models are the same training; one seed shows it.
FIRST_SEED_ONLY = {"q0.5-n5-all"}
# (a, b) of the paired comparisons: model names are "<system>@<config>".
PAIRS = [
    ("ith@q0.5-n5-lazy", "ith@q0.5-n1-lazy"),
    ("ith@q0.5-n5-lazy", "ith@q0.5-n1-accept-all"),
    ("ith@q0.5-n5-lazy", "ith@coverage-1.0"),
    ("ith@q0.5-n5-lazy", "bert-text@coverage-1.0"),
    ("ith@q0.5-n1-lazy", "bert-text@coverage-1.0"),
    ("audiobert@coverage-1.0", "bert-text@coverage-1.0"),
    ("audiobert@coverage-0.5", "bert-text@coverage-1.0"),
    ("audiobert@coverage-0", "bert-text@coverage-1.0"),
    ("ith@coverage-1.0", "audiobert@coverage-0"),
]
TASKS = ("animal", "pitch")


def settings_of(sets: dict) -> dict:
    """--set dotted settings -> nested section mappings (as RunConfig.for_profile takes them)."""
    out: dict = {}
    for key, value in sets.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def run_config(name: str, seeds: list[int], home: Path, work: Path, systems: str, extra: dict | None = None) -> dict:
    sweep, sets, _ = CONFIGS[name]
    sets = {**sets, **(extra or {})}
    env = {
        **os.environ,
        "ITH_HOME": str(home),
        "PREFECT_HOME": str(work / "prefect"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    args = ["run", "--benchmark", "synthetic", "--run-root", str(work / "runs")]
    args += ["--seeds", ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else ""), "--systems", systems]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--json"], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: ith run failed\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout[done.stdout.index("{\n") :])
    run = Path(result["run_dir"])
    results = json.loads((run / "fusion" / "results.json").read_text())
    examples = pq.read_table(run / "fusion_examples" / "examples.parquet").to_pylist()
    units = bootstrap_units(examples, "synthetic")
    predictions = [
        {**p, "model": f"{p['model']}@{name}", "config": name, "unit": units[p["example_id"]]}
        for p in pq.read_table(run / "fusion" / "predictions.parquet").to_pylist()
        if p["split"] == "test" and p["model"] in ("ith", "audiobert", "bert-text")
    ]
    cfg = RunConfig.for_profile("tiny", benchmark="synthetic", **settings_of(sets))
    out = {
        "config": name,
        "sweep": sweep,
        "settings": sets,
        "systems": systems,
        "command": "ith " + " ".join(a if " " not in a and "{" not in a else f"'{a}'" for a in args),
        "run_id": result["run_id"],
        "wall_seconds": round(wall, 1),
        "majority": results["majority"],
        "accuracy": [
            {
                k: r[k]
                for k in ("model", "task", "split", "seed", "metric", "n", "units", "accuracy", "ci_low", "ci_high")
            }
            for r in results["per_seed"]
            if r["split"] == "test" and r["metric"] in ("exact_match", "accuracy")
        ],
    }
    if not sets or set(sets) <= set(extra or {}):
        # The default run: its seed-42 accuracies must be the recorded default's (tests/test_synthetic_benchmark.py).
        recorded = json.loads((RESULTS / "synthetic_default_seed42.json").read_text())
        want = {(r["model"], r["task"], r["split"], r["metric"]): r["accuracy"] for r in recorded["accuracy"]}
        got = {
            (r["model"], r["task"], r["split"], r["metric"]): r["accuracy"]
            for r in results["per_seed"]
            if r["seed"] in (0, 42) and r["model"] in {m for m, *_ in want}
        }
        out["default_seed42_equals_recorded"] = bool(got) and got == {k: want[k] for k in got} and set(got) == set(want)
    os.environ["ITH_HOME"] = str(home)  # where the benchmark's tone table is, for the truth of each candidate
    if "audiobert" in systems:
        out["retrieval"] = retrieval_stats(run, cfg)
    if sweep == "imagination":
        out["imagination"] = imagination_stats(run, cfg)
    return {"record": out, "predictions": predictions}


def _name(span: str | None) -> str:
    return (span or "").split()[0].casefold() if (span or "").split() else ""


def retrieval_stats(run: Path, cfg: RunConfig) -> dict:
    """Top-1 hit rate: the share of the span occurrences naming a source (the whistle anchor left
    out) whose top-1 clip records that source, per task on the test split and over every split.
    A detected span that names no source (a detector error) is counted apart, not as a miss."""
    from ith_core.data.synthetic import ANCHOR, source_names

    names = source_names(cfg.synthetic) - {ANCHOR}

    def named(text: str | None) -> str:
        return next((w for w in (text or "").casefold().split() if w in names), "")

    manifest = {
        r["clip_id"]: r for r in pq.read_table(run / "audiobert_retrieval" / "pool_manifest.parquet").to_pylist()
    }
    rows = pq.read_table(run / "audiobert_retrieval" / "retrieval.parquet").to_pylist()
    pool = json.loads((run / "audiobert_retrieval" / "pool.json").read_text())
    out: dict = {"pool_clips": len(manifest), "pool": pool.get("pool")}
    for label, keep in (("test", lambda r: r["split"] == "test"), ("all_splits", lambda r: True)):
        for task in TASKS:
            spans = [r for r in rows if r["task"] == task and keep(r) and _name(r["span_text"]) != ANCHOR]
            mine = [r for r in spans if named(r["span_text"])]
            hits = [
                bool(r["clip_ids"]) and named(manifest[r["clip_ids"][0]]["source"]) == named(r["span_text"])
                for r in mine
            ]
            out[f"{task}/{label}"] = {
                "spans": len(mine),
                "hit_rate": round(100 * sum(hits) / max(1, len(mine)), 2),
                "spans_naming_no_source": len(spans) - len(mine),
            }
    return out


def imagination_stats(run: Path, cfg: RunConfig) -> dict:
    """Acceptance per candidate, score separation, correctness of the selected audio (truth from the
    tone generator's own error draw), candidates generated, and the selection itself."""
    from ith_core.data import synthetic
    from ith_core.imagination.tone_generator import ToneGenerator

    class _Settings:
        duration_s = cfg.imagine.duration_s
        generator_id = "truth"

    generator = ToneGenerator.from_folder(synthetic.benchmark_dir(cfg.synthetic) / "tone_generator", _Settings())
    candidates = pq.read_table(run / "imagine" / "candidates.parquet").to_pylist()
    selection = pq.read_table(run / "imagine" / "selection.parquet").to_pylist()
    thresholds = cfg.imagine.thresholds

    by_id: dict[str, dict[int, dict]] = {}
    for c in candidates:
        by_id.setdefault(c["audio_id"], {})[c["candidate"]] = c
    # Candidates of prompts naming a source (the whistle anchor, which has no wrong band, left out).
    mine = [c for c in candidates if any(n in generator.wrong_bands_hz for n in generator.source_names(c["prompt"]))]
    right = [c for c in mine if not generator.renders_wrong_band(c["seed"])]
    wrong = [c for c in mine if generator.renders_wrong_band(c["seed"])]
    # The threshold of a prompt's task decides acceptance; on this benchmark both tasks have the same one.
    t = max(thresholds.values())
    out: dict = {
        "threshold": thresholds,
        "num_candidates": cfg.imagine.num_candidates,
        "sampling": cfg.imagine.sampling,
        "source_prompts": len({c["audio_id"] for c in mine}),
        "candidates_generated": len(mine),
        "candidates_per_prompt": round(len(mine) / max(1, len({c["audio_id"] for c in mine})), 3),
        "right_band_share": round(100 * len(right) / max(1, len(mine)), 2),
        "acceptance_per_candidate": round(100 * sum(c["clap_score"] >= t for c in mine) / max(1, len(mine)), 2),
        "accepted_wrong": sum(c["clap_score"] >= t for c in wrong),
        "rejected_right": sum(c["clap_score"] < t for c in right),
        "score_right_min": round(min((c["clap_score"] for c in right), default=float("nan")), 4),
        "score_wrong_max": round(max((c["clap_score"] for c in wrong), default=float("nan")), 4),
    }
    for label, keep in (("test", lambda s: s["split"] == "test"), ("all_splits", lambda s: True)):
        for task in TASKS:
            # Span occurrences naming a source; those naming none (detector errors) are counted apart.
            spans = [
                s
                for s in selection
                if s["task"] == task
                and keep(s)
                and any(n in generator.wrong_bands_hz for n in generator.source_names(s["span_text"] or ""))
            ]
            unnamed = sum(
                s["task"] == task
                and keep(s)
                and s["span_index"] >= 0
                and not generator.source_names(s["span_text"] or "")
                for s in selection
            )
            correct = none = 0
            for s in spans:
                if not s["accepted"]:
                    none += 1
                elif not generator.renders_wrong_band(by_id[s["audio_id"]][s["candidate"]]["seed"]):
                    correct += 1
            n = max(1, len(spans))
            out[f"{task}/{label}"] = {
                "span_occurrences": len(spans),
                "selected_right_band": round(100 * correct / n, 2),
                "selected_wrong_band": round(100 * (len(spans) - correct - none) / n, 2),
                "no_candidate_passed": round(100 * none / n, 2),
                "spans_naming_no_source": unnamed,
                "selected_after_candidate_0": round(
                    100 * sum(s["accepted"] and s["candidate"] > 0 for s in spans) / n, 2
                ),
            }
    out["selection"] = sorted(
        [s["example_id"], s["task"], s["split"], int(s["span_index"]), int(s["candidate"])] for s in selection
    )
    return out


def summarise(runs: list[dict], predictions: list[dict]) -> dict:
    units = {p["example_id"]: p["unit"] for p in predictions}
    over = seed_mean_table(predictions, n_boot=2000, clusters=units)
    pairs = paired_comparisons(predictions, PAIRS, n_boot=2000, clusters=units)
    by = {r["config"]: r for r in runs}
    same = None
    if "q0.5-n5-lazy" in by and "q0.5-n5-all" in by:
        lazy, every = by["q0.5-n5-lazy"]["imagination"]["selection"], by["q0.5-n5-all"]["imagination"]["selection"]
        same = {
            "rows": len(lazy),
            "identical": lazy == every,
            "differing_rows": len({tuple(r) for r in lazy} ^ {tuple(r) for r in every}),
        }
    return {
        "over_seeds": [r for r in over if r["metric"] in ("exact_match", "accuracy")],
        "paired": pairs,
        "lazy_vs_all": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--sweeps", default="coverage,imagination")
    parser.add_argument("--configs", default=None, help="comma-separated configurations (default: the sweeps')")
    parser.add_argument("--ith-every-coverage", action="store_true", help="train ITH at every coverage too")
    parser.add_argument("--append", action="store_true", help="keep the configurations already in --out")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--work", default=None, help="folder for ITH_HOME and runs (default: a temporary one)")
    parser.add_argument(
        "--extra-set",
        action="append",
        default=[],
        metavar="SECTION.NAME=JSON",
        help="a setting added to every configuration (a smoke run on a smaller benchmark; recorded with each run)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = (
        args.configs.split(",")
        if args.configs
        else [n for n, (sweep, _, _) in CONFIGS.items() if sweep in args.sweeps.split(",")]
    )
    out, out_predictions = Path(args.out), Path(args.out).with_suffix(".predictions.parquet")
    runs, predictions = [], []
    if args.append and out.is_file():
        # Earlier records stay until their configuration is measured again, so a sweep cut short loses nothing.
        runs = json.loads(out.read_text())["runs"]
        predictions = pq.read_table(out_predictions).to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for name in names:
            systems = CONFIGS[name][2]
            if args.ith_every_coverage and CONFIGS[name][0] == "coverage" and "ith" not in systems:
                systems += ",ith"
            extra = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.extra_set)}
            mine = seeds[:1] if name in FIRST_SEED_ONLY else seeds
            done = run_config(name, mine, work / "ith_home", work, systems, extra)
            record = {**done["record"], "seeds": mine, "machine": environment()}
            runs = [r for r in runs if r["config"] != name] + [record]
            predictions = [p for p in predictions if p["config"] != name] + done["predictions"]
            shown = {k: v for k, v in record.items() if k in ("config", "wall_seconds", "retrieval")}
            shown["imagination"] = {k: v for k, v in (record.get("imagination") or {}).items() if k != "selection"}
            shown["accuracy"] = [(r["model"], r["task"], r["seed"], r["accuracy"]) for r in record["accuracy"]]
            print(json.dumps(shown, indent=1), flush=True)
            # Written after every configuration, so a sweep cut short keeps what it measured.
            write(out, out_predictions, runs, predictions)
    print(f"wrote {out}")


def write(out: Path, out_predictions: Path, runs: list[dict], predictions: list[dict]) -> None:
    record = {
        "benchmark": "synthetic (planted signal): the two mechanisms",
        "profile": "tiny",
        "machine": environment(),
        "note": "accuracy in %, test split; per-seed intervals bootstrapped over source names; over_seeds: mean, "
        "sample sd and the 95 % hierarchical bootstrap interval (seeds, then source names); paired: a - b in "
        "points with the same hierarchical interval; each run's `seeds` says how many seeds it has",
        "q": Q,
        "threshold": THRESHOLD,
        "runs": runs,
        **summarise(runs, predictions),
    }
    pq.write_table(pa.Table.from_pylist(predictions), out_predictions)
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
