"""`ith rehearse`: the paper run rehearsed at full size on random weights, before GPU-hours are spent.

    ith rehearse                          build the rehearsal checkpoints, run the paper table's flow, report
    ith rehearse --size smallest          the least work that still sends every architecture through every stage
    ith rehearse --out benchmarks/results/paper_rehearsal_cpu.json      keep the report as a results file

Every paper role is built at its published architecture with random weights (nothing is downloaded)
into a rehearsal model home, in the hub's folder layout, marked as a rehearsal; then the flow of the
`ith/paper-table` deployment runs with --profile paper and only size knobs reduced (examples per
split, generation steps, candidates, epochs, span training and dev examples, seeds), on a clip pool
rendered and captioned offline for AudioBERT. Each stage's wall time, peak memory and bytes written,
the unit costs (per DiT step per clip, per decode, per CLAP clip, per training example of each
system) and a projection of the whole paper run are printed and written to <run>/rehearsal.json.
No number says anything about the method: the weights are random (docs/rehearsal.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def add_rehearse_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "rehearse",
        help="dress rehearsal of the paper run: paper-size random-weight models through every stage, with costs",
        description=__doc__.split("\n\n", 2)[2].replace("\n", " "),
    )
    parser.add_argument(
        "--size",
        choices=("default", "smallest"),
        default="default",
        help="default: several clips and training steps per stage (about 20 min on 2 CPU cores); smallest: the "
        "least work that still runs every architecture through every stage (the slow test's)",
    )
    parser.add_argument(
        "--run-root", default=None, help="where the rehearsal run goes (default: $ITH_HOME/rehearsal/runs)"
    )
    parser.add_argument(
        "--model-dir",
        default=None,
        help="the rehearsal model home (default: $ITH_HOME/rehearsal/models; about 6.5 GB, built once in about a "
        "minute and reused); never a folder of real checkpoints",
    )
    parser.add_argument("--data-dir", default=None, help="as for `ith run`")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--out", default=None, help="also write the report (JSON) to this file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def print_report(report: dict) -> None:
    print(f"{report['what']}")
    print(f"run {report['run_id']} in {report['run_dir']} ({report['seconds']:.0f} s)")
    print(f"reduced size knobs ({report['size']}): {json.dumps(report['reduced_knobs'])}")
    params = {
        role: info["parameters"] for role, info in report["checkpoints"]["roles"].items() if info.get("parameters")
    }
    print("checkpoints (parameters): " + "; ".join(f"{r} {p}" for r, p in params.items()))
    print(
        f"{'stage':<34} {'runs':>4} {'seconds':>9} {'flow RSS GiB':>13} {'+ trainers GiB':>15} "
        f"{'peak CUDA GiB':>14} {'written GiB':>12}"
    )
    for r in report["stages"]:
        print(
            f"{r['stage']:<34} {r['runs']:>4} {r['seconds']:>9.1f} {_gib(r['peak_rss_bytes']):>13} "
            f"{_gib(r['peak_total_rss_bytes']):>15} {_gib(r['peak_cuda_bytes']):>14} {_gib(r['bytes_written']):>12}"
        )
    print(
        f"peak resident memory of the whole rehearsal: {_gib(report['peak_rss_bytes'])} GiB in the flow's process, "
        f"{_gib(report['peak_total_rss_bytes'])} GiB with its training processes"
    )
    print("unit costs:")
    for name, unit in report["unit_costs"].items():
        print(f"  {name:<34} {unit['value']!s:>10}  ({unit['from']})")
    projection = report["projection"]
    total = projection["total_hours"]
    print(
        f"projected paper run on this machine: {total['one_candidate']} h (1 candidate per prompt) to "
        f"{total['all_candidates']} h (all 5); per stage:"
    )
    for name, stage in projection["stages"].items():
        hours = stage.get("hours", f"{stage.get('hours_one_candidate')}-{stage.get('hours_all_candidates')}")
        print(f"  {name:<20} {hours} h  = {stage['how']}")


def cmd_rehearse(args: argparse.Namespace) -> int:
    from cli.console import quiet_console
    from flows.rehearse import ith_rehearse
    from ith_core.models.span_detector import resolve_device

    resolve_device(args.device)  # an absent GPU is an error now, not an hour in
    quiet_console()
    report = ith_rehearse(
        size=args.size, run_root=args.run_root, model_dir=args.model_dir, data_dir=args.data_dir, device=args.device
    )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        shutil.move(tmp, out)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0
