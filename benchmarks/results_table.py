"""The measured numbers of README.md and docs/, printed from the committed files in benchmarks/results/.

    .venv/bin/python benchmarks/results_table.py            # every block, markdown to stdout
    .venv/bin/python benchmarks/results_table.py --write    # rewrite the blocks inside every target file
    .venv/bin/python benchmarks/results_table.py --check    # exit 1 if a block is stale, missing or misplaced

Each block stands in one target file (`TARGETS`), between `<!-- results:NAME -->` and
`<!-- /results:NAME -->`; no measured number is typed into README.md or docs/ by hand
(tests/test_readme_results.py checks that every block is in its file and is what this script
prints). Blocks:
- `headline` (README.md): the planted-signal seed means and the imagination speed-ups, short, with
  links to the pages holding the full tables.
- `performance` (docs/performance.md): imagine_tiny_cpu.json (bench_imagine.py), paper_size_cpu.json
  (bench_paper_size.py) and, when present, the GPU check's imagine_full_size_cuda.json.
  H100-hours are derived from the paper-size CPU projection as described in `h100_hours`.
- `audioldm2-size` (docs/performance.md, after `performance`): audioldm2_size_cpu.json
  (bench_audioldm2_size.py), AudioLDM2's paper-size components beside Stable Audio's paper_size_cpu.json,
  and, when present, the GPU check's audioldm2_generate_cuda.json.
- `synthetic` (docs/synthetic-benchmark.md): synthetic_tiny_cpu.json and its .predictions.parquet
  (bench_synthetic.py, 3 seeds): accuracies, intervals and paired comparisons recomputed from the
  recorded predictions with ith_core.evaluation.scoring, so they are the code's statistics of the
  recorded run.
- `synthetic-default` (docs/synthetic-benchmark.md): synthetic_default_seed42.json
  (bench_synthetic.py --default), the numbers the default command gives and `make test` checks.
- `mechanisms` (docs/synthetic-benchmark.md) and `mechanisms-headline` (README.md):
  mechanisms_tiny_cpu.json (bench_mechanisms.py), printed by benchmarks/results_mechanisms.py.
- `rehearsal` (README.md) and `rehearsal-detail` (docs/rehearsal.md): paper_rehearsal_cpu.json
  (`make rehearse`): the paper-size rehearsal's stages, peak memory, unit costs and projection.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections import defaultdict
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.results_mechanisms import mechanisms, mechanisms_headline  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# Published: Stable Audio Open generates 47 s of audio in 100 steps in 8.6 s on an A40.
A40_SECONDS_100_STEPS = 8.6
# Assumed, not measured: an H100 runs this fp16 DiT about 2.5x as fast as an A40.
H100_OVER_A40 = 2.5


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def h100_hours(paper: dict) -> tuple[float, dict]:
    """Whole-benchmark H100-hours per mode: the CPU projection scaled to an H100.

    One factor maps CPU seconds to A40 seconds: the published A40 time of one 100-step
    full-window generation (8.6 s) over this CPU's time for the same work (100 DiT steps at 1024
    frames + one full decode); H100_OVER_A40 then maps A40 to H100. Both are stated assumptions:
    GPU batching, fp16 kernels and the VAE's share on a GPU differ from a CPU's, which
    gpu_check.sh measures.
    """
    c = {k: v["median_s"] for k, v in paper["measured"]["components"].items()}
    cpu_equivalent = 100 * c["dit_step_full"] + c["vae_decode_full"]
    factor = A40_SECONDS_100_STEPS / cpu_equivalent / H100_OVER_A40
    proj = paper["projection"]
    hours = {"reference": proj["reference"]["whole_benchmark_hours_one_device"] * factor}
    for m in proj["modes"]:
        key = f"{m['latent_length']}-{m['sampling']}" + (f"-p{m['acceptance_rate']}" if m["acceptance_rate"] else "")
        hours[key] = m["whole_benchmark_hours_one_device"] * factor
    return factor, hours


def performance() -> None:
    tiny, paper = _load("imagine_tiny_cpu.json"), _load("paper_size_cpu.json")
    if tiny is None or paper is None:
        raise SystemExit("benchmarks/results/ lacks imagine_tiny_cpu.json or paper_size_cpu.json")
    s, env, d = tiny["settings"], tiny["environment"], tiny["dedup"]
    ref = tiny["reference"]
    print(
        f"**Tiny profile, CPU** (`imagine_tiny_cpu.json`: {s['prompts']} prompts x {s['candidates']} candidates, "
        f"{s['steps']} steps, {s['duration_s']} s clips, torch {env['versions']['torch']}, {env['torch_threads']} "
        f"thread(s); stage threshold {s['threshold']} = median reference score). Reference-style loop "
        f"{ref['seconds'] / s['prompts']:.2f} s/prompt. Dedup over the whole benchmark: {d['occurrences']} span "
        f"occurrences, {d['distinct_prompts']} distinct prompts ({d['global_dedup']}x); the reference's per-split "
        f"skip leaves {d['distinct_per_task_split']} ({d['reference_per_split_dedup']}x), so ours adds "
        f"{d['global_dedup'] / d['reference_per_split_dedup']:.3f}x over it.\n"
    )
    print("| mode | s/prompt | candidates/prompt | per prompt vs reference | whole benchmark, with dedup |")
    print("|---|---|---|---|---|")
    for m in tiny["modes"]:
        default = " (default)" if (m["latent_length"], m["sampling"]) == ("full", "lazy") else ""
        print(
            f"| {m['latent_length']}, {m['sampling']}{default} | {m['seconds_per_prompt']:.2f} | "
            f"{m['candidates_per_prompt']:.2f} | {m['per_prompt_speedup']:.2f}x | "
            f"{m['whole_benchmark_speedup']:.2f}x |"
        )
    c = paper["measured"]["components"]
    pe, pr = paper["environment"], paper["projection"]
    check = paper["measured"]["prefix_decode_check"]
    print(
        f"\n**Paper size, CPU, measured** (`paper_size_cpu.json`: random weights, float32, {pe['torch_threads']} "
        f"thread(s), shared machine): DiT step (CFG batch 2) {c['dit_step_full']['median_s']:.1f} s at 1024 frames, "
        f"{c['dit_step_exact']['median_s']:.1f} s at 108; VAE decode {c['vae_decode_full']['median_s']:.0f} s "
        "for 1024 "
        f"frames, {c['vae_decode_prefix']['median_s']:.1f} s for the 119-frame prefix (kept 5 s equal within "
        f"{check['max_abs_diff']:.1e}, signal max {check['max_abs_full']:.2f}); CLAP 5 clips "
        f"{c['clap_batch5']['median_s']:.1f} s; AST one clip {c['ast_clip']['median_s']:.1f} s; T5 "
        f"{c['text_encode']['median_s']:.1f} s; FLAC {c['encode_flac']['bytes'] / c['encode_wav']['bytes']:.2f}x "
        "the WAV size on this (noise-like) audio.\n"
    )
    print(
        f"**Paper size, projected** at {pr['steps']} steps, {pr['candidates']} candidates: the reference "
        f"{pr['reference']['total_s']:.0f} s per prompt over {pr['reference']['prompts']} prompts (per-split skip); "
        f"the stage over {pr['distinct_prompts']} distinct prompts. p = per-candidate acceptance rate (assumed, "
        "independent candidates).\n"
    )
    factor, hours = h100_hours(paper)
    print(
        "| mode | p | candidates/prompt | s/prompt (CPU) | per prompt vs reference | whole benchmark | "
        "H100-hours, whole benchmark |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| reference loop | - | 5 | {pr['reference']['total_s']:.0f} | 1x | 1x | {hours['reference']:.1f} |")
    for m in pr["modes"]:
        key = f"{m['latent_length']}-{m['sampling']}" + (f"-p{m['acceptance_rate']}" if m["acceptance_rate"] else "")
        print(
            f"| {m['latent_length']}, {m['sampling']} | {m['acceptance_rate'] if m['acceptance_rate'] else '-'} | "
            f"{m['clips']:.2f} | {m['total_s']:.0f} | {m['per_prompt_speedup']:.2f}x | "
            f"{m['whole_benchmark_speedup']:.2f}x | {hours[key]:.1f} |"
        )
    bounds = ", ".join(
        f"{m['lower_bound_speedup']:.2f}x at p = {m['acceptance_rate']}"
        for m in pr["modes"]
        if m["latent_length"] == "full" and m["sampling"] == "lazy"
    )
    print(
        f"\nThe `full`, lazy ratio without any prefix-decoding saving (our clips as costly as the reference's; only "
        f"fewer clips and the dedup gain of {pr['dedup_gain']}x): {bounds}. The full-window decode was timed once "
        "on a machine shared with other jobs, so it is the least certain number here; this bound does not use it."
    )
    print(
        f"\nH100-hours = CPU hours x {factor:.2e} (published A40: 8.6 s per 100-step window, over this CPU's "
        f"{100 * c['dit_step_full']['median_s'] + c['vae_decode_full']['median_s']:.0f} s; H100 assumed "
        f"{H100_OVER_A40}x an A40). On N GPUs divide by N (shards are independent)."
    )
    gpu = _load("imagine_full_size_cuda.json")
    if gpu:
        print(f"\n**GPU** ({gpu['environment']['gpu']}, `imagine_full_size_cuda.json`):\n")
        print("| mode | s/prompt | clips/s | candidates/prompt | per prompt vs reference | peak GiB |")
        print("|---|---|---|---|---|---|")
        for m in gpu["modes"]:
            print(
                f"| {m['latent_length']}, {m['sampling']} | {m['seconds_per_prompt']:.2f} | {m['clips_per_s']:.2f} | "
                f"{m['candidates_per_prompt']:.2f} | {m['per_prompt_speedup']:.2f}x | "
                f"{m.get('peak_memory_bytes', 0) / 2**30:.1f} |"
            )
    else:
        print(
            "\nNo GPU results yet: `benchmarks/gpu_check.sh` writes them (no GPU was available when these were made)."
        )


def _system_labels() -> dict[str, str]:
    from ith_core.stages.fusion import SYSTEMS  # one name per system, as the run's tables give it

    return {name: s.label for name, s in SYSTEMS.items()}


def _machine(env: dict) -> str:
    v = env.get("versions") or {}
    return (
        f"{env.get('cpu', env.get('machine'))}, {env.get('cpu_count')} cores, {env.get('torch_threads')} torch "
        f"threads, torch {v.get('torch')}, transformers {v.get('transformers')}, commit {env.get('commit')}"
    )


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.1f}, {hi:.1f}]"


def _command(recorded: str) -> str:
    """The recorded `cli.main run ...` as a user types it, without the benchmark's own --run-root and --json."""
    words = recorded.split()
    out, skip = ["ith"], False
    for word in words[1:]:
        if skip:
            skip = False
        elif word == "--run-root":
            skip = True
        elif word != "--json":
            out.append(word)
    return " ".join(out)


def _verdict(row: dict) -> str:
    if row["ci_low"] > 0:
        return "above"
    if row["ci_high"] < 0:
        return "below"
    return "not distinguishable from"


PAIRS = (("ith", "bert-text"), ("ith", "audiobert"), ("audiobert", "bert-text"))
TASKS = ("animal", "pitch")


def _comparison_claims(variant: str, found: list[dict], labels: dict[str, str]) -> tuple[list[str], list[str]]:
    """One variant's paired comparisons: the table rows, and one claim per pair read off its intervals."""
    by = {(c["a"], c["b"], c["task"]): c for c in found}
    lines, claims = [], []
    for a, b in PAIRS:
        if not any((a, b, t) in by for t in TASKS):
            continue
        lines.append(
            f"| {labels[a]} − {labels[b]} | {variant} | "
            + " | ".join(
                f"{by[(a, b, t)]['difference']:+.2f} {_ci(by[(a, b, t)]['ci_low'], by[(a, b, t)]['ci_high'])}, "
                f"{by[(a, b, t)]['p_not_better']:.3f}"
                for t in TASKS
            )
            + " |"
        )
        verdicts = {t: _verdict(by[(a, b, t)]) for t in TASKS if (a, b, t) in by}
        if len(set(verdicts.values())) == 1:
            verdict = next(iter(verdicts.values()))
            where = (
                ("either task" if verdict.startswith("not") else "both tasks")
                if len(verdicts) == len(TASKS)
                else " and ".join(verdicts)
            )
            said = f"{verdict} {labels[b]} on {where}"
        else:
            said = ", ".join(f"{v} {labels[b]} on {t}" for t, v in verdicts.items())
        claims.append(f"{labels[a]} is {said} ({variant} encoder)")
    return lines, claims


def synthetic() -> None:
    import pyarrow.parquet as pq

    from ith_core.evaluation.scoring import accuracy_table, paired_comparisons, seed_mean_table

    record = _load("synthetic_tiny_cpu.json")
    parquet = RESULTS / "synthetic_tiny_cpu.predictions.parquet"
    if record is None or not parquet.is_file():
        raise SystemExit(
            "benchmarks/results/ lacks synthetic_tiny_cpu.json or its .predictions.parquet: "
            "run benchmarks/bench_synthetic.py"
        )
    labels = _system_labels()
    rows = pq.read_table(parquet).to_pylist()
    runs = {r["variant"]: r for r in record["runs"]}
    trained = runs["trained"]
    n_boot = 2000
    tasks = ("animal", "pitch")
    majority = trained["majority"]
    print(
        f"Recorded in `benchmarks/results/synthetic_tiny_cpu.json` (`benchmarks/bench_synthetic.py`): tiny profile, "
        f"seeds {', '.join(map(str, record['seeds']))}, test split; {_machine(trained.get('machine') or record['machine'])}"
        ". Each cell: mean ± "
        "sample sd (ddof 1) over seeds [95 % hierarchical bootstrap interval: seeds, then source names], then "
        "each seed's accuracy [95 % interval over source names, conditional on that seed's trained checkpoint]. "
        f"One constant answer scores {majority['animal/test']['accuracy']:.2f} (animal) and "
        f"{majority['pitch/test']['accuracy']:.2f} (pitch).\n"
    )
    print("| system | animal test | pitch test |")
    print("|---|---|---|")
    cells: dict[tuple[str, str], dict] = {}
    comparisons: dict[str, list[dict]] = {}
    for variant in runs:
        mine = [r for r in rows if r["variant"] == variant and r["split"] == "test"]
        units = {r["example_id"]: r["unit"] for r in mine}
        per_seed = defaultdict(list)
        for r in accuracy_table(mine, n_boot=n_boot, clusters=units):
            if r["metric"] in ("exact_match", "accuracy"):
                per_seed[(r["model"], r["task"])].append(r)
        over = {
            (r["model"], r["task"]): r
            for r in seed_mean_table(mine, n_boot=n_boot, clusters=units)
            if r["metric"] in ("exact_match", "accuracy")
        }
        for model in labels:
            if not any((model, t) in over for t in tasks):
                continue
            label = labels[model] + ("" if variant == "trained" else f", {variant}-encoder variant")
            if variant != "trained" and model != "ith":
                continue  # the other systems do not use the audio encoder: the same rows as above
            line = []
            for task in tasks:
                o, seeds = over[(model, task)], sorted(per_seed[(model, task)], key=lambda r: r["seed"])
                if o["seeds"] == 1:
                    line.append(f"{o['mean']:.2f} {_ci(o['ci_low'], o['ci_high'])}")
                else:
                    line.append(
                        f"{o['mean']:.2f} ± {o['std']:.2f} {_ci(o['ci_low'], o['ci_high'])}: "
                        + ", ".join(f"{r['accuracy']:.2f} {_ci(r['ci_low'], r['ci_high'])}" for r in seeds)
                    )
                cells[(variant, model, task)] = {"over": o, "seeds": seeds}
            print(f"| {label} | " + " | ".join(line) + " |")
        comparisons[variant] = paired_comparisons(mine, list(PAIRS), n_boot=n_boot, clusters=units)
    print(
        "\nPaired comparisons on the test split: difference of seed-mean accuracies in points [95 % hierarchical "
        "interval: each system's seeds drawn with replacement, then the same source names for both], and the "
        "share of resamples where the first is not better (a one-sided bootstrap p-value, with 3 seeds a coarse "
        "one).\n"
    )
    print("| comparison | encoder | animal test | pitch test |")
    print("|---|---|---|---|")
    claims = []
    for variant, found in comparisons.items():
        lines, said = _comparison_claims(variant, found, labels)
        print("\n".join(lines))
        claims += said
    print(
        "\nWhat this shows, read off the intervals above (an interval that excludes 0 is a difference; one that "
        "holds 0 is not shown to be one): " + "; ".join(claims) + "."
    )
    gains = {}
    for model in ("ith", "audiobert"):
        per = []
        for task in tasks:
            mine = cells.get(("trained", model, task))
            text = cells.get(("trained", "bert-text", task))
            if mine and text:
                diffs = [m["accuracy"] - t["accuracy"] for m, t in zip(mine["seeds"], text["seeds"])]
                per.append((task, diffs))
        gains[model] = per
    for model, per in gains.items():
        if not per:
            continue
        total = sum(len(d) for _, d in per)
        passed = sum(1 for _, d in per for x in d if x >= 25)
        print(
            f"\n{labels[model]} − {labels['bert-text']} per seed (the +25 check `make test` makes at seed 42): "
            + "; ".join(f"{task} " + "/".join(f"{x:+.1f}" for x in d) for task, d in per)
            + f": {passed} of {total} at +25 or more."
        )
    change = [v for run in runs.values() for v in (run.get("encoder_change") or {}).values()]
    if change:
        print(
            f"\nTrained-encoder jobs moved AST by {100 * min(change):.2f}-{100 * max(change):.2f} % of its weight "
            "norm (relative L2 change of the dev-best checkpoint from the initial weights)."
        )
    for variant, run in runs.items():
        st = run["stage_seconds"]
        by_system = ", ".join(f"{labels.get(k, k)} {v:.0f} s" for k, v in sorted(st["fusion_by_system"].items()))
        machine = run.get("machine") or {}
        print(
            f"\nWall time of the {variant}-encoder run (`{_command(run['command'])}`, commit "
            f"{machine.get('commit', 'not recorded')}{' (' + machine['commit_note'] + ')' if 'commit_note' in machine else ''}, "
            f"{'the tiny profile built inside it' if run.get('tiny_profile_built_in_this_run') else 'tiny profile reused'}"
            f"): {run['wall_seconds']:.0f} s; stages: ingest {st['ingest']:.1f} s, span detector "
            f"{st['span_detector']:.1f} s, spans {st['spans']:.1f} s, imagine {st['imagine']:.1f} s; training and "
            f"scoring per system over all seeds: {by_system}. Wall times come from a 2-core machine that other "
            "jobs may have shared; read them as upper bounds."
        )


def synthetic_default() -> None:
    record = _load("synthetic_default_seed42.json")
    if record is None:
        raise SystemExit(
            "benchmarks/results/ lacks synthetic_default_seed42.json: run benchmarks/bench_synthetic.py --default"
        )
    labels = _system_labels()
    acc = {
        (r["model"], r["task"], r["split"]): r for r in record["accuracy"] if r["metric"] in ("exact_match", "accuracy")
    }
    st = record["stage_seconds"]
    by_system = ", ".join(f"{labels.get(k, k)} {v:.0f} s" for k, v in sorted(st["fusion_by_system"].items()))
    print(
        f"The default command, `ith run --benchmark synthetic` (seed 42; systems BERT, AudioBERT, ITH), recorded "
        f"in `benchmarks/results/synthetic_default_seed42.json` ({_machine(record['machine'])}): "
        f"{record['wall_seconds'] / 60:.1f} minutes wall with an empty `ITH_HOME` (the tiny profile built inside "
        f"the run); stages: span detector {st['span_detector']:.1f} s, imagine {st['imagine']:.1f} s; training and "
        f"scoring: {by_system} (a 2-core machine other jobs may have shared: an upper bound). `make test` runs the "
        "same command and fails unless every accuracy below (and on dev and wiki, and the second animal metric) "
        "is the recorded one. Test accuracy in %; intervals are in the 3-seed table above.\n"
    )
    print("| system | animal test | pitch test |")
    print("|---|---|---|")
    for model in labels:
        if (model, "animal", "test") in acc:
            print(
                f"| {labels[model]} | "
                + " | ".join(f"{acc[(model, t, 'test')]['accuracy']:.2f}" for t in ("animal", "pitch"))
                + " |"
            )
    three = _load("synthetic_tiny_cpu.json")
    if three:
        seed42 = {
            (r["model"], r["task"], r["split"]): r["accuracy"]
            for run in three["runs"]
            if run["variant"] == "trained"
            for r in run["accuracy"]
            if r["seed"] in (42, 0) and r.get("metric", "accuracy") in ("exact_match", "accuracy")
        }
        differ = sorted(
            f"{m} {t} {s}" for (m, t, s), r in acc.items() if (m, t, s) in seed42 and seed42[(m, t, s)] != r["accuracy"]
        )
        print(
            "\nSeed 42 of the 3-seed run above gives "
            + (
                "the same accuracies on every system, task and split they share."
                if not differ
                else "other accuracies on: " + ", ".join(differ) + "."
            )
        )


def headline() -> None:
    """README's short version: seed means of the planted-signal run and the imagination speed-ups."""
    import pyarrow.parquet as pq

    from ith_core.evaluation.scoring import paired_comparisons, seed_mean_table

    record, tiny, paper = _load("synthetic_tiny_cpu.json"), _load("imagine_tiny_cpu.json"), _load("paper_size_cpu.json")
    parquet = RESULTS / "synthetic_tiny_cpu.predictions.parquet"
    if record is None or tiny is None or paper is None or not parquet.is_file():
        raise SystemExit(
            "benchmarks/results/ lacks synthetic_tiny_cpu.json (and its .predictions.parquet), "
            "imagine_tiny_cpu.json or paper_size_cpu.json"
        )
    from ith_core.stages.fusion import SYSTEMS

    labels = _system_labels()
    mine = [r for r in pq.read_table(parquet).to_pylist() if r["variant"] == "trained" and r["split"] == "test"]
    units = {r["example_id"]: r["unit"] for r in mine}
    over = {
        (r["model"], r["task"]): r
        for r in seed_mean_table(mine, n_boot=2000, clusters=units)
        if r["metric"] in ("exact_match", "accuracy")
    }
    majority = next(r for r in record["runs"] if r["variant"] == "trained")["majority"]
    print(
        f"**Planted-signal benchmark** (`ith run --benchmark synthetic`, tiny profile, seeds "
        f"{', '.join(map(str, record['seeds']))}; recorded in "
        "[synthetic_tiny_cpu.json](benchmarks/results/synthetic_tiny_cpu.json)): test accuracy in %, mean ± sample "
        f"sd over seeds; one constant answer scores {majority['animal/test']['accuracy']:.2f} (animal) and "
        f"{majority['pitch/test']['accuracy']:.2f} (pitch).\n"
    )
    print("| system | animal test | pitch test |")
    print("|---|---|---|")
    for model in labels:
        if SYSTEMS[model].trained and all((model, t) in over for t in TASKS):
            print(
                f"| {labels[model]} | "
                + " | ".join(f"{over[(model, t)]['mean']:.2f} ± {over[(model, t)]['std']:.2f}" for t in TASKS)
                + " |"
            )
    _, claims = _comparison_claims(
        "trained", paired_comparisons(mine, list(PAIRS), n_boot=2000, clusters=units), labels
    )
    print(
        "\nRead off the 95 % hierarchical bootstrap intervals of the paired differences: "
        + "; ".join(claims)
        + ". Intervals, every seed, the frozen-encoder variant and wall times: "
        "[the planted-signal benchmark](docs/synthetic-benchmark.md)."
    )
    default = next(m for m in tiny["modes"] if (m["latent_length"], m["sampling"]) == ("full", "lazy"))
    half = next(
        m
        for m in paper["projection"]["modes"]
        if (m["latent_length"], m["sampling"], m["acceptance_rate"]) == ("full", "lazy", 0.5)
    )
    _, hours = h100_hours(paper)
    print(
        f"\n**Imagination speed** (recorded in [imagine_tiny_cpu.json](benchmarks/results/imagine_tiny_cpu.json), "
        "tiny profile, CPU): the default mode (the method's full latent window, lazy rejection sampling) is "
        f"{default['per_prompt_speedup']:.2f}x as fast per prompt as a reference-style loop, "
        f"{default['whole_benchmark_speedup']:.2f}x over the whole benchmark with its prompts deduplicated. "
        "At paper size, projected from CPU timings "
        "([paper_size_cpu.json](benchmarks/results/paper_size_cpu.json); acceptance rate 0.5 assumed): "
        f"{half['whole_benchmark_speedup']:.2f}x over the whole benchmark, about {hours['full-lazy-p0.5']:.1f} "
        f"H100-hours against the reference's {hours['reference']:.1f} (assumptions and every mode: "
        "[performance](docs/performance.md))."
    )


def _rehearsal() -> dict:
    record = _load("paper_rehearsal_cpu.json")
    if record is None:
        raise SystemExit("benchmarks/results/ lacks paper_rehearsal_cpu.json (make rehearse)")
    return record


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _millions(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _load_note(r: dict) -> str:
    load = r.get("load_average") or {}
    if not load:
        return "machine load not recorded"
    shared = load["mean"] > load["cpus"] + 0.5
    return f"1-minute load average {load['mean']} on {load['cpus']} cores" + (
        ": the machine was shared with other work, so every time is an upper bound" if shared else ""
    )


def rehearsal() -> None:
    """README's short version of the paper-size rehearsal (paper_rehearsal_cpu.json, `make rehearse`)."""
    r = _rehearsal()
    roles = r["checkpoints"]["roles"]
    sizes = {
        "DiT": roles["generator"]["parameters"]["transformer"],
        "BERT": roles["lm"]["parameters"]["mlm"],
        "RoBERTa": roles["roberta"]["parameters"]["mlm"],
        "AST": roles["audio_encoder"]["parameters"]["encoder"],
        "CLAP": roles["clap"]["parameters"]["model"],
    }
    systems = sorted({s["stage"].split()[1] for s in r["stages"] if s["stage"].startswith("train ")})
    total = r["projection"]["total_hours"]
    slowest = max(r["stages"], key=lambda s: s["seconds"])
    print(
        f"**Paper-size rehearsal** (`make rehearse`, recorded in "
        "[paper_rehearsal_cpu.json](benchmarks/results/paper_rehearsal_cpu.json), "
        f"{_machine(r['environment'])}): `--profile paper` through every stage "
        f"on random weights at the published sizes ({', '.join(f'{k} {_millions(v)}' for k, v in sizes.items())}), "
        f"systems trained: {', '.join(systems)}; only size knobs reduced (`{json.dumps(r['reduced_knobs'])}`). "
        f"It completed in {r['seconds'] / 60:.1f} min ({_load_note(r)}) with a peak resident memory of "
        f"{_gib(r['peak_total_rss_bytes'])} GiB (the flow's process and its training processes) "
        f"(slowest stage: {slowest['stage']}, {slowest['seconds']:.0f} s). From its unit costs the whole paper run "
        f"(every row, 5 candidates, 50 steps, 8 epochs, 3 seeds, four systems) would take {total['one_candidate']:,.0f}"
        f"-{total['all_candidates']:,.0f} hours on this machine; "
        + (
            "on one GPU ([paper_rehearsal_cuda.json](benchmarks/results/paper_rehearsal_cuda.json), "
            f"{gpu['environment'].get('gpu')}): {gpu['projection']['total_hours']['one_candidate']:,.1f}-"
            f"{gpu['projection']['total_hours']['all_candidates']:,.1f} hours, peak CUDA memory "
            f"{_gib(gpu['peak_cuda_bytes'])} GiB. "
            if (gpu := _load("paper_rehearsal_cuda.json"))
            else "no GPU rehearsal is recorded yet (`benchmarks/gpu_check.sh` records one). "
        )
        + "Random weights: no accuracy of it means anything. What it proves and what it cannot, every stage and "
        "unit cost: [the rehearsal](docs/rehearsal.md)."
    )


def rehearsal_detail() -> None:
    """docs/rehearsal.md: every stage and unit cost of paper_rehearsal_cpu.json."""
    r = _rehearsal()
    print(
        f"Recorded in [paper_rehearsal_cpu.json](../benchmarks/results/paper_rehearsal_cpu.json): "
        f"{_machine(r['environment'])}, size `{r['size']}`, run {r['run_id']}, {r['seconds'] / 60:.1f} min "
        f"({_load_note(r)}), peak "
        f"resident memory {_gib(r['peak_rss_bytes'])} GiB in the flow's process, "
        f"{_gib(r['peak_total_rss_bytes'])} GiB with its training processes"
        + ("" if r["exact_peaks"] else " (sampled, not exact)")
        + ".\n"
    )
    print("| stage (Prefect task) | runs | seconds | flow RSS GiB | + trainers GiB | written GiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in r["stages"]:
        print(
            f"| {s['stage']} | {s['runs']} | {s['seconds']:.1f} | {_gib(s['peak_rss_bytes'])} | "
            f"{_gib(s['peak_total_rss_bytes'])} | {_gib(s['bytes_written'])} |"
        )
    print("\n| unit cost | seconds | measured as |")
    print("|---|---:|---|")
    for name, u in r["unit_costs"].items():
        print(f"| {name} | {u['value']} | {u['from']} |")
    print("\n| projected stage (whole paper run, this machine) | hours | from |")
    print("|---|---:|---|")
    for name, st in r["projection"]["stages"].items():
        hours = st["hours"] if "hours" in st else f"{st['hours_one_candidate']:,} to {st['hours_all_candidates']:,}"
        print(f"| {name} | {hours} | {st['how']} |")
    print(f"\nLeft out of the projection: {r['projection']['left_out']}.")


def audioldm2_size() -> None:
    ldm, paper = _load("audioldm2_size_cpu.json"), _load("paper_size_cpu.json")
    if ldm is None or paper is None:
        raise SystemExit("benchmarks/results/ lacks audioldm2_size_cpu.json or paper_size_cpu.json")
    a, s = ldm["measured"]["components"], paper["measured"]["components"]
    env, m, frames = ldm["environment"], ldm["measured"], paper["measured"]["frames"]
    steps = paper["settings"]["steps"]

    def sec(c: dict, name: str) -> str:
        return f"{c[name]['median_s']:.1f} s"

    print(
        f"**AudioLDM2 at paper size, CPU, measured** (`audioldm2_size_cpu.json`: cvssp/audioldm2's architecture "
        f"from its published configs, {sum(m['parameters'].values()) / 1e9:.2f} B parameters, random weights, "
        f"float32, {env['torch_threads']} thread(s), median of {ldm['settings']['repeats']}, commit "
        f"{env['commit']}, 1-minute load {env['load_1min_at_start']} at the start on {env['cpu_count']} cores), "
        f"beside Stable Audio's components above (`paper_size_cpu.json`, commit "
        f"{paper['environment'].get('commit', 'not recorded')}). Per clip of {ldm['settings']['duration_s']} s, "
        "one clip at a time:\n"
    )
    print("| component | Stable Audio Open | AudioLDM2 |")
    print("|---|---|---|")
    print(
        f"| text encoding, prompt + negative prompt | {sec(s, 'text_encode')} (T5-base) | {sec(a, 'text_encode')} "
        f"(CLAP text on 512 padded tokens, Flan-T5-large, GPT-2 generating 8 states; GPT-2 alone "
        f"{sec(a, 'gpt2_generate_8')}) |"
    )
    print(
        f"| one denoising step, exact latents (CFG batch 2) | {sec(s, 'dit_step_exact')} ({frames['exact']} frames) | "
        f"{sec(a, 'denoise_step_exact')} ({m['frames']['exact']} frames) |"
    )
    print(
        f"| one denoising step, the whole window (`full`) | {sec(s, 'dit_step_full')} ({frames['full']} frames) | "
        f"{sec(a, 'denoise_step_full')} ({m['frames']['full']} frames, {m['window_s']:.2f} s) |"
    )
    print(
        f"| decode of the kept 5 s | {sec(s, 'vae_decode_prefix')} (prefix of {frames['decode_prefix']} frames) | "
        f"{sec(a, 'decode_5s')} (VAE {sec(a, 'vae_decode_5s')}, HiFi-GAN {sec(a, 'vocoder_5s')}) |"
    )
    sa_exact = steps * s["dit_step_exact"]["median_s"] + s["vae_decode_prefix"]["median_s"]
    ldm_exact = steps * a["denoise_step_exact"]["median_s"] + a["decode_5s"]["median_s"]
    print(f"| {steps} steps + decode, exact latents (derived) | {sa_exact:.0f} s | {ldm_exact:.0f} s |")
    print(
        f"\nWith `full` latents AudioLDM2 also decodes its whole {m['window_s']:.2f} s window (its VAE decoder attends "
        "over the whole latent; not timed here). Both were timed on a shared machine, at different times: read "
        "ratios within a factor of the load, not to the decimal. Random weights: the cost of the architectures, "
        "nothing about their audio."
    )
    gpu = _load("audioldm2_generate_cuda.json")
    if gpu:
        print(f"\n**AudioLDM2 on a GPU** ({gpu['environment'].get('gpu')}, `audioldm2_generate_cuda.json`):\n")
        print("| latents | batch | s/clip | clips/s | unusable clips | peak GiB |")
        print("|---|---|---|---|---|---|")
        for mode in gpu["modes"]:
            print(
                f"| {mode['latent_length']} | {mode['batch_size']} | {mode['seconds_per_clip']:.2f} | "
                f"{mode['clips_per_s']:.2f} | {mode['unusable_clips']} | {mode.get('peak_memory_bytes', 0) / 2**30:.1f} |"
            )
    else:
        print(
            "\nNo AudioLDM2 GPU results yet: `benchmarks/gpu_check.sh` step 5 writes them (no GPU was available when "
            "these were made)."
        )


BLOCKS = {
    "audioldm2-size": audioldm2_size,
    "mechanisms": mechanisms,
    "mechanisms-headline": mechanisms_headline,
    "headline": headline,
    "rehearsal": rehearsal,
    "rehearsal-detail": rehearsal_detail,
    "performance": performance,
    "synthetic": synthetic,
    "synthetic-default": synthetic_default,
}
# The file each block stands in, relative to the repository root: README.md keeps the headline,
# each topic's page in docs/ its full tables.
TARGETS = {
    "audioldm2-size": "docs/performance.md",
    "mechanisms": "docs/synthetic-benchmark.md",
    "mechanisms-headline": "README.md",
    "headline": "README.md",
    "rehearsal": "README.md",
    "rehearsal-detail": "docs/rehearsal.md",
    "performance": "docs/performance.md",
    "synthetic": "docs/synthetic-benchmark.md",
    "synthetic-default": "docs/synthetic-benchmark.md",
}
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) [^>]*-->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


@cache
def render(name: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        BLOCKS[name]()
    return out.getvalue().rstrip("\n") + "\n"


def rewrite(text: str, names: list[str] | None = None) -> str:
    """`text` with its results blocks (those in `names`, default all) replaced by what this script prints now."""
    return BLOCK.sub(
        lambda m: (
            m.group(1) + render(m.group("name")) + m.group(4) if not names or m.group("name") in names else m.group(0)
        ),
        text,
    )


def stale_blocks(text: str) -> list[str]:
    return [m.group("name") for m in BLOCK.finditer(text) if m.group("body") != render(m.group("name"))]


def documents(root: Path = REPO) -> list[str]:
    """Every file that may hold a block: README.md, docs/*.md and each target, relative to `root`."""
    found = {"README.md", *TARGETS.values(), *(str(p.relative_to(root)) for p in (root / "docs").glob("*.md"))}
    return sorted(f for f in found if (root / f).is_file() or f in TARGETS.values())


def problems(root: Path = REPO) -> list[str]:
    """What `--check` reports: per file, a block missing from its target, one outside it, one twice, one stale."""
    out = []
    for name in documents(root):
        path = root / name
        if not path.is_file():
            out.append(f"{name}: missing (it should hold {', '.join(b for b, f in TARGETS.items() if f == name)})")
            continue
        text = path.read_text()
        held = [m.group("name") for m in BLOCK.finditer(text)]
        for block, target in TARGETS.items():
            if target == name and block not in held:
                out.append(f"{name}: lacks the block {block}")
        for block in sorted(set(held)):
            if block not in TARGETS:
                out.append(f"{name}: holds {block}, which this script does not print")
            elif TARGETS[block] != name:
                out.append(f"{name}: holds {block}, whose place is {TARGETS[block]}")
            elif held.count(block) > 1:
                out.append(f"{name}: holds {block} {held.count(block)} times")
        out += [f"{name}: {block} is out of date" for block in stale_blocks(text) if block in TARGETS]
    return out


def write(names: list[str] | None = None, root: Path = REPO) -> list[str]:
    """Rewrites the blocks in every target file; returns the files changed. A block missing from its file is an error."""
    changed = []
    for name in sorted(set(TARGETS.values())):
        path = root / name
        text = path.read_text()
        held = {m.group("name") for m in BLOCK.finditer(text)}
        lacking = [b for b, f in TARGETS.items() if f == name and b not in held]
        if lacking:
            raise SystemExit(
                f"{name} lacks the block(s) {', '.join(lacking)}: add `<!-- results:NAME (printed by "
                "benchmarks/results_table.py --write; do not edit) -->` and `<!-- /results:NAME -->` "
                "where each belongs, then --write again"
            )
        new = rewrite(text, names)
        if new != text:
            path.write_text(new)
            changed.append(name)
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the results blocks inside every target file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 naming each block that is stale, missing from its file or outside it",
    )
    parser.add_argument("blocks", nargs="*", choices=[[], *BLOCKS], help="blocks to print (default: all)")
    args = parser.parse_args()
    if args.write:
        changed = write(args.blocks)
        print(f"rewrote the results blocks of {', '.join(changed)}" if changed else "every results block was current")
        return 0
    if args.check:
        found = problems()
        if found:
            print(
                "results blocks to fix:\n  " + "\n  ".join(found) + "\nrun .venv/bin/python "
                "benchmarks/results_table.py --write (after re-recording what moved)",
                file=sys.stderr,
            )
        return 1 if found else 0
    for name in args.blocks or BLOCKS:
        print(f"<!-- results:{name} -->\n{render(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
