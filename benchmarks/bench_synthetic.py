"""The planted-signal benchmark, run as a user runs it, for both encoder variants and several seeds.

    .venv/bin/python benchmarks/bench_synthetic.py                      # results/synthetic_tiny_cpu.json
    .venv/bin/python benchmarks/bench_synthetic.py --seeds 42,43,44 --variants trained,frozen
    .venv/bin/python benchmarks/bench_synthetic.py --default            # results/synthetic_default_seed42.json

Each variant is one `ith run --benchmark synthetic --seeds ...` (a subprocess, the production
entry point, every system by default: BERT and RoBERTa zero-shot and fine-tuned text-only,
AudioBERT, ITH) in a fresh run root and a fresh ITH_HOME, one model per (system,
task, seed). `trained` is the tiny profile's default (AST trained end to end, the method's
recipe, at the tiny profile's encoder rate); `frozen` adds `--set fusion.train_audio_encoder=false`
(the frozen-encoder variant). The first variant's wall time includes building the
tiny profile; the second reuses it (stated per run). Recorded per variant: accuracy with its
95 % interval (bootstrapped by source name) for ITH and text-only on dev/test/wiki of both
tasks and every seed, the constant-answer level, seconds per stage, machine and versions.
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
from ith_core.evaluation.scoring import bootstrap_units

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
VARIANTS = {"trained": [], "frozen": ["--set", "fusion.train_audio_encoder=false"]}


def run_variant(variant: str, seeds: list[int] | None, home: Path, workdir: Path, systems: str | None = None) -> dict:
    """One `ith run --benchmark synthetic` (seeds and systems: the command's defaults when None)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ITH_HOME": str(home),
        "PREFECT_HOME": str(workdir / "prefect"),
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "run",
        "--benchmark",
        "synthetic",
        "--run-root",
        str(workdir / "runs"),
        *(["--seeds", ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else "")] if seeds else []),
        *(["--systems", systems] if systems else []),
        *VARIANTS[variant],
        "--json",
    ]
    machine = environment()
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{variant}: ith run failed\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout[done.stdout.index("{\n") :])
    run = Path(result["run_dir"])
    results = json.loads((run / "fusion" / "results.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    rows = [
        {k: r[k] for k in ("model", "task", "split", "seed", "metric", "n", "units", "accuracy", "ci_low", "ci_high")}
        for r in results["per_seed"]
    ]
    stages = summary["stages"]
    seconds = {
        name: stages[name].get("seconds_total", stages[name].get("seconds"))
        for name in ("ingest", "span_detector", "spans", "imagine")
    }
    fusion = stages["fusion"]
    seconds.update({f"fusion_{name}": r["seconds"] for name, r in fusion["prepared"].items()})
    seconds.update({f"train {r['system']} seed {r['seed']}": r["seconds"] for r in fusion["train"]})
    seconds.update(
        {
            f"evaluate {r['system']}" + (f" seed {r['seed']}" if r["seed"] is not None else ""): r["seconds"]
            for r in fusion["evaluate"]
        }
    )
    seconds["fusion_by_system"] = fusion["seconds_by_system"]
    examples = pq.read_table(run / "fusion_examples" / "examples.parquet").to_pylist()
    units = bootstrap_units(examples, "synthetic")
    predictions = pq.read_table(run / "fusion" / "predictions.parquet").to_pylist()
    for p in predictions:
        p["variant"], p["unit"] = variant, units[p["example_id"]]
    return {
        "variant": variant,
        "command": " ".join(cmd[2:]),
        "machine": machine,
        "run_id": result["run_id"],
        "predictions": predictions,
        "wall_seconds": round(wall, 1),
        "stage_seconds": seconds,
        "majority": results["majority"],
        "bootstrap_unit": results["bootstrap_unit"],
        "accuracy": rows,
        "over_seeds": [r for r in results["over_seeds"] if r["metric"] in ("exact_match", "accuracy")],
        "encoder_change": encoder_change(run),
    }


def encoder_change(run: Path) -> dict:
    """Per trained ITH job: ||AST_best - AST_initial|| / ||AST_initial|| over all its weights (how
    far end-to-end training moved the encoder); empty for the frozen variant."""
    from safetensors.torch import load_file

    from ith_core.models.profiles import load_audio_encoder

    out = {}
    for best in sorted((run / "fusion_train").glob("ith-seed*/ith-*/best/fusion.safetensors")):
        trained = {
            k[len("audio_encoder.") :]: v for k, v in load_file(str(best)).items() if k.startswith("audio_encoder.")
        }
        if not trained:
            continue
        spec = json.loads((best.parents[2] / "spec.json").read_text())
        initial = load_audio_encoder(spec["audio_encoder_path"])[0].state_dict()
        diff = sum(float((trained[k].float() - initial[k].float()).pow(2).sum()) for k in trained)
        norm = sum(float(initial[k].float().pow(2).sum()) for k in trained)
        out[best.parents[1].name] = round((diff / norm) ** 0.5, 5)
    return out


def verdict(run: dict) -> dict:
    """Per (task, seed): ITH and AudioBERT minus text-only (BERT fine-tuned without audio) on
    test, and whether text-only's interval holds chance."""
    out = {}
    by = {
        (r["model"], r["task"], r["split"], r["seed"]): r
        for r in run["accuracy"]
        if r.get("metric", "accuracy") in ("exact_match", "accuracy")
    }
    for (model, task, split, seed), ith in by.items():
        if model != "ith" or split != "test":
            continue
        text = by[("bert-text", task, split, seed)]
        chance = run["majority"][f"{task}/{split}"]["accuracy"]
        audiobert = by.get(("audiobert", task, split, seed))
        out[f"{task} seed {seed}"] = {
            "ith": ith["accuracy"],
            "text": text["accuracy"],
            "gain": round(ith["accuracy"] - text["accuracy"], 2),
            "passes_plus_25": ith["accuracy"] >= text["accuracy"] + 25,
            "audiobert": audiobert and audiobert["accuracy"],
            "audiobert_passes_plus_25": bool(audiobert) and audiobert["accuracy"] >= text["accuracy"] + 25,
            "text_ci_holds_chance": text["ci_low"] <= chance <= text["ci_high"],
        }
    return out


def record_default(out: Path) -> None:
    """The default command exactly as a user types it (`ith run --benchmark synthetic`: seed 42,
    systems bert, audiobert, ith), in a fresh ITH_HOME: what tests/test_synthetic_benchmark.py
    compares its own run with, row for row."""
    with tempfile.TemporaryDirectory() as tmp:
        run = run_variant("trained", None, Path(tmp) / "ith_home", Path(tmp) / "default")
    run.pop("predictions")
    record = {
        "benchmark": "synthetic (planted signal)",
        "profile": "tiny",
        "machine": environment(),
        "note": "the default `ith run --benchmark synthetic`; accuracy in %, per-seed intervals bootstrapped "
        "over source names; wall_seconds covers the whole command, the tiny profile built inside it",
        **run,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--default",
        action="store_true",
        help="record only the default command (results/synthetic_default_seed42.json), which `make test` compares with",
    )
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--variants", default="trained,frozen")
    parser.add_argument(
        "--systems",
        default="bert,roberta,audiobert,ith",
        help="systems of every variant's run (default: every system of the table)",
    )
    parser.add_argument("--out", default=str(RESULTS / "synthetic_tiny_cpu.json"))
    parser.add_argument("--append", action="store_true", help="add these runs to those already in --out")
    args = parser.parse_args()
    if args.default:
        record_default(RESULTS / "synthetic_default_seed42.json")
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "ith_home"
        runs, predictions = [], []
        for variant in args.variants.split(","):
            run = run_variant(variant, seeds, home, Path(tmp) / variant, args.systems)
            run["verdict"] = verdict(run)
            predictions += run.pop("predictions")
            run["tiny_profile_built_in_this_run"] = not runs
            runs.append(run)
            print(
                json.dumps(
                    {"variant": variant, "wall_seconds": run["wall_seconds"], "verdict": run["verdict"]}, indent=2
                )
            )
    record = {
        "benchmark": "synthetic (planted signal)",
        "profile": "tiny",
        "seeds": seeds,
        "machine": environment(),
        "note": "accuracy in %, 95 % intervals bootstrapped over source names; chance = the constant-answer "
        "level of the split; wall_seconds covers the whole ith run (Prefect start included)",
        "runs": runs,
    }
    if args.append and Path(args.out).is_file():
        earlier = json.loads(Path(args.out).read_text())
        record["runs"] = earlier["runs"] + runs
    # Every scored row, so that intervals and comparisons are recomputed from what was recorded
    # (benchmarks/results_table.py) with the evaluation code of the day, not copied by hand.
    out_predictions = Path(args.out).with_suffix(".predictions.parquet")
    if args.append and out_predictions.is_file():
        predictions = pq.read_table(out_predictions).to_pylist() + predictions
    pq.write_table(pa.Table.from_pylist(predictions), out_predictions)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
