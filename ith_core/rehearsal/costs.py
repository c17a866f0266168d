"""A rehearsal's report: per-stage costs, unit costs, and the projection of the whole paper run.

- Stages: every task run of the rehearsal's flow runs (the `ith` flow and its subflows), read back
  from Prefect, with its wall time and, from the `ResourceMeter`, its peak resident memory (the
  flow's process, its child processes, both together), peak CUDA memory and the bytes this process
  wrote meanwhile. Rows are merged per task name
  (`generate-candidates` over its shards, `train` over systems and seeds keep one row each).
- Unit costs, from what the stages recorded in the run folder: seconds per DiT step per clip and per
  prefix decode (imagine/shards.json), per CLAP clip, per training example of each system, per
  span-detector training example and per evaluated sentence.
- Projection: unit costs times the counts of the whole paper run (every row of the benchmark, 5
  candidates, 50 steps, the method's epochs, 3 seeds, the four systems) on this machine; on one GPU
  where `benchmarks/gpu_check.sh` left a rehearsal measured on CUDA.

Every count the projection uses is written beside it, so a reader can redo the arithmetic.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import fsspec
import pyarrow.parquet as pq
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from ith_core.rehearsal.meter import ResourceMeter
from storage import run_files

# The paper run the projection is of (ith-method.md; the paper-table deployment).
PAPER_RUN = {
    "candidates": 5,
    "steps": 50,
    "seeds": 3,
    "span_epochs": 5,
    "fusion_epochs": 8,
    "audiobert_epochs": 20,
    "systems": ["bert", "roberta", "audiobert", "ith"],
}
_SUFFIX = re.compile(r"-[0-9a-f]{3}$")  # Prefect's suffix of a task run's name
_SHARD = re.compile(r" part-[0-9a-f]{8,}$")  # the imagine shards' task runs: one row for all


def _read_json(url: str) -> dict | None:
    try:
        with fsspec.open(url, "r") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def task_runs(flow_run_id) -> list[dict]:
    """Task runs of a flow run and of its subflows (recursively), with their start and end times."""
    with get_client(sync_client=True) as client:
        flow_ids = [flow_run_id]
        frontier = [flow_run_id]
        while frontier:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
            )
            frontier = [c.id for c in children if c.id not in flow_ids]
            flow_ids += frontier
        flows = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_ids)))
        names = {f.id: f.name for f in flows}
        # A subflow's own task run spans the whole subflow: its tasks are counted instead.
        wrappers = {f.parent_task_run_id for f in flows}
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=flow_ids)))
    out = []
    for run in runs:
        if run.start_time is None or run.end_time is None or run.id in wrappers:
            continue
        out.append(
            {
                "task": _SHARD.sub(" (shards)", _SUFFIX.sub("", run.name)),
                "task_run": run.name,
                "flow_run": names.get(run.flow_run_id),
                "state": run.state_name,
                "start": run.start_time.timestamp(),
                "end": run.end_time.timestamp(),
            }
        )
    return sorted(out, key=lambda r: r["start"])


def stage_rows(runs: list[dict], meter: ResourceMeter) -> list[dict]:
    """One row per task name: runs, wall seconds, peak RSS / CUDA bytes, bytes written."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        grouped[run["task"]].append({**run, **meter.window(run["start"], run["end"])})
    rows = []
    for task, items in grouped.items():
        cuda = [i["peak_cuda_bytes"] for i in items if i["peak_cuda_bytes"] is not None]
        written = [i["bytes_written"] for i in items if i["bytes_written"] is not None]
        rows.append(
            {
                "stage": task,
                "runs": len(items),
                "states": sorted({i["state"] for i in items}),
                "seconds": round(sum(i["end"] - i["start"] for i in items), 2),
                "peak_rss_bytes": max(i["peak_rss_bytes"] for i in items),
                "peak_children_rss_bytes": max(i["peak_children_rss_bytes"] for i in items),
                "peak_total_rss_bytes": max(i["peak_total_rss_bytes"] for i in items),
                "peak_cuda_bytes": max(cuda) if cuda else None,
                "bytes_written": sum(written) if written else None,
                "first_start": min(i["start"] for i in items),
            }
        )
    return sorted(rows, key=lambda r: r["first_start"])


def _ratio(total: float | None, count: float | None) -> float | None:
    if not total or not count:
        return None
    return round(total / count, 4)


def unit_costs(run_dir: str, summary: dict) -> dict:
    """Seconds per unit of work, from what the run's stages recorded (see the module docstring)."""
    stages = summary.get("stages", {})
    units: dict[str, dict] = {}
    shards = (_read_json(f"{run_dir}/{'/'.join(run_files.SHARD_STATUS)}") or {}).get("shards", [])
    done = [s for s in shards if s.get("status") == "done"]
    if done:
        total = defaultdict(float)
        for shard in done:
            for key in ("seconds_denoise", "denoise_clip_steps", "seconds_decode", "decoded_clips"):
                total[key] += float(shard.get(key) or 0)
            total["seconds_score"] += float(shard.get("seconds_score") or 0)
            total["candidates"] += float(shard.get("candidates") or 0)
            total["seconds_load"] += float(shard.get("seconds_load") or 0)
        units["dit_step_per_clip_s"] = {
            "value": _ratio(total["seconds_denoise"], total["denoise_clip_steps"]),
            "from": f"{total['seconds_denoise']:.1f} s over {total['denoise_clip_steps']:.0f} clip-steps "
            "(T5 prompt encoding and classifier-free guidance included)",
        }
        units["decode_per_clip_s"] = {
            "value": _ratio(total["seconds_decode"], total["decoded_clips"]),
            "from": f"{total['seconds_decode']:.1f} s over {total['decoded_clips']:.0f} clips",
        }
        units["clap_per_clip_s"] = {
            "value": _ratio(total["seconds_score"], total["candidates"]),
            "from": f"{total['seconds_score']:.1f} s over {total['candidates']:.0f} clips",
        }
        units["generator_load_s"] = {"value": round(total["seconds_load"] / len(done), 2), "from": "per shard"}
    detector = stages.get("span_detector", {})
    if detector and not detector.get("cached"):
        units["span_detector_run_s"] = {
            "value": detector.get("seconds"),
            "from": f"{detector.get('train_examples')} train examples x {detector.get('steps')} steps, "
            f"{detector.get('dev_examples')} dev examples x (1 + epochs) evaluations",
        }
    by_system: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    fs, root = fsspec.core.url_to_fs(f"{run_dir}/{run_files.FUSION_TRAIN}")
    for done in sorted(fs.glob(f"{root}/*/_DONE.json")):
        with fs.open(done, "r") as handle:
            report = json.load(handle).get("report", {})
        for job in report.get("jobs", []):
            if "seconds_steps" not in job:  # a run trained before the trainer split its time
                continue
            total = by_system[report["system"]]
            total["examples"] += job["examples_seen"]
            total["steps"] += job["steps"]
            total["epochs"] += len(job.get("history", []))
            for part in ("steps", "dev", "saving"):
                total[f"seconds_{part}"] += job[f"seconds_{part}"]
    for system, t in sorted(by_system.items()):
        units[f"train_{system}_per_example_s"] = {
            "value": _ratio(t["seconds_steps"], t["examples"]),
            "from": f"{t['seconds_steps']:.1f} s of optimisation steps over {t['examples']:.0f} examples in "
            f"{t['steps']:.0f} steps (forward, backward, gradient clipping, AdamW over every trained weight; with "
            "this few examples per step the step's fixed cost is in each example's share, so against the paper's "
            "batch 32 this overstates)",
        }
        units[f"train_{system}_saving_per_epoch_s"] = {
            "value": _ratio(t["seconds_saving"], t["epochs"]),
            "from": f"{t['seconds_saving']:.1f} s over {t['epochs']:.0f} epochs: the dev-best weights and the "
            "resumable state (weights and optimiser) written at every epoch's end",
        }
        units[f"train_{system}_dev_per_epoch_s"] = {
            "value": _ratio(t["seconds_dev"], t["epochs"]),
            "from": f"{t['seconds_dev']:.1f} s over {t['epochs']:.0f} epochs, on this run's dev examples",
        }
    ith, text = units.get("train_ith_per_example_s"), units.get("train_bert-text_per_example_s")
    if ith and text and ith["value"] and text["value"]:
        units["ast_training_example_s"] = {
            "value": round(ith["value"] - text["value"], 4),
            "from": "ITH's per-example training cost minus BERT-text's (derived: AST forward and backward over "
            "its ~1214 tokens, the projector and the fusion layer)",
        }
    return units


def _counts(run_dir: str) -> dict:
    """Rows of the whole benchmark (what the paper run trains and scores) and its distinct gold spans."""
    table = pq.read_table(fsspec.open(f"{run_dir}/{'/'.join(run_files.EXAMPLES)}", "rb").open())
    rows = table.select(["task", "split", "spans"]).to_pylist()
    per = defaultdict(int)
    for r in rows:
        per[f"{r['task']}/{r['split']}"] += 1
    spans = {s.strip().lower() for r in rows for s in r["spans"] if s.strip()}
    return {"rows": dict(sorted(per.items())), "distinct_gold_spans": len(spans)}


def projection(units: dict, counts: dict) -> dict:
    """Hours of the whole paper run on this machine, stage by stage, from `units` and `counts`."""

    def unit(name: str) -> float | None:
        return (units.get(name) or {}).get("value")

    rows = counts["rows"]
    train = sum(v for k, v in rows.items() if k.endswith("/train"))
    prompts = counts["distinct_gold_spans"]
    p = PAPER_RUN
    out: dict[str, dict] = {}
    step, decode, clap = unit("dit_step_per_clip_s"), unit("decode_per_clip_s"), unit("clap_per_clip_s")
    if None not in (step, decode, clap):
        per_clip = p["steps"] * step + decode + clap
        out["imagine"] = {
            "hours_all_candidates": round(prompts * p["candidates"] * per_clip / 3600, 1),
            "hours_one_candidate": round(prompts * per_clip / 3600, 1),
            "how": f"{prompts} prompts (distinct gold spans) x candidates (5; lazy sampling stops at the first "
            f"accepted, 1 at best) x ({p['steps']} steps x {step} s + decode {decode} s + CLAP {clap} s)",
        }
    tasks = len({k.split("/")[0] for k in rows})
    for system, epochs in (
        ("ith", "fusion_epochs"),
        ("bert-text", "fusion_epochs"),
        ("roberta-text", "fusion_epochs"),
        ("audiobert", "audiobert_epochs"),
    ):
        per = unit(f"train_{system}_per_example_s")
        if per is None:
            continue
        saving = unit(f"train_{system}_saving_per_epoch_s") or 0.0
        seconds = train * p[epochs] * p["seeds"] * per + tasks * p[epochs] * p["seeds"] * saving
        out[f"train_{system}"] = {
            "hours": round(seconds / 3600, 1),
            "how": f"{train} train rows x {p[epochs]} epochs x {p['seeds']} seeds x {per} s, plus {tasks} tasks x "
            f"{p[epochs]} epochs x {p['seeds']} seeds x {saving} s of saving",
        }
    total_low = sum(v.get("hours", v.get("hours_one_candidate", 0)) for v in out.values())
    total_high = sum(v.get("hours", v.get("hours_all_candidates", 0)) for v in out.values())
    return {
        "stages": out,
        "total_hours": {"one_candidate": round(total_low, 1), "all_candidates": round(total_high, 1)},
        "left_out": "span detection, encoding and evaluation (small beside generation and training at these counts; "
        "their measured stage times are in `stages`)",
        "counts": counts,
        "paper_run": PAPER_RUN,
    }


def rehearsal_report(
    result: dict,
    settings: dict,
    meter: ResourceMeter,
    prepare: tuple[float, float],
    checkpoints: dict,
    size: str,
    reduced: dict,
    environment: dict,
    seconds: float,
) -> dict:
    run_dir = result["run_dir"]
    summary = _read_json(result["summary"]) or {}
    rows = [
        {
            "stage": "build-checkpoints-and-pool",
            "runs": 1,
            "states": ["Completed"],
            "seconds": round(prepare[1] - prepare[0], 2),
            **meter.window(*prepare),
        }
    ]
    rows += stage_rows(task_runs(result["flow_run_id"]), meter)
    units = unit_costs(run_dir, summary)
    overall = meter.overall()
    return {
        "benchmark": "paper_rehearsal",
        "what": "rehearsal: random weights at paper size; no number here says anything about the method",
        "size": size,
        "reduced_knobs": reduced,
        "settings": settings,
        "run_id": result["run_id"],
        "run_dir": run_dir,
        "environment": environment,
        "checkpoints": checkpoints,
        "seconds": round(seconds, 1),
        "peak_rss_bytes": overall["peak_rss_bytes"],
        "peak_total_rss_bytes": overall["peak_total_rss_bytes"],
        "peak_cuda_bytes": overall["peak_cuda_bytes"],
        "exact_peaks": meter.exact_peaks,
        # Other work on the machine inflates every time here: the 1-minute load average while it ran.
        "load_average": meter.load_average(),
        "stages": [{k: v for k, v in r.items() if k != "first_start"} for r in rows],
        "unit_costs": units,
        "projection": projection(units, _counts(run_dir)),
    }


def write_report(report: dict, run_dir: str) -> str:
    url = f"{run_dir}/{'/'.join(run_files.REHEARSAL)}"
    with fsspec.open(url, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=False, default=str)
    return url


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def markdown(report: dict) -> str:
    lines = [
        f"# Paper rehearsal {report['run_id']}",
        "",
        f"**{report['what']}.** Size: {report['size']}; reduced knobs: `{json.dumps(report['reduced_knobs'])}`.",
        "",
        "| stage | runs | seconds | peak RSS GiB (flow + trainers) | peak CUDA GiB | written GiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["stages"]:
        lines.append(
            f"| {r['stage']} | {r['runs']} | {r['seconds']:.1f} | {_gib(r['peak_total_rss_bytes'])} | "
            f"{_gib(r['peak_cuda_bytes'])} | {_gib(r['bytes_written'])} |"
        )
    lines += ["", "| unit | seconds | from |", "|---|---:|---|"]
    for name, u in report["unit_costs"].items():
        lines.append(f"| {name} | {u['value']} | {u['from']} |")
    total = report["projection"]["total_hours"]
    lines += [
        "",
        f"Projected paper run on this machine: {total['one_candidate']} to {total['all_candidates']} hours "
        "(1 to 5 candidates per prompt).",
    ]
    return "\n".join(lines) + "\n"
