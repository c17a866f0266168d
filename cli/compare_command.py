"""`ith compare RUN RUN...`: finished runs of one benchmark side by side (ith_core/report/compare.py).

ith compare tiny-synthetic-46d3a8d6d804 tiny-synthetic-0123456789ab
ith compare RUN_A RUN_B --run-root s3://bucket/runs --out compare.md
ith compare runs/RUN_A other/runs/RUN_B --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ith_core.config import default_run_root


def add_compare_parser(commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare finished runs side by side, with paired differences",
        description="Print one table of systems x tasks x splits with one column per run (accuracy with its "
        "95 % interval, as each run's fusion/results.json gives it), each run labelled by its run id and the "
        "generator that imagined its audio; then each later run minus the first on the rows both scored "
        "(joined on example id), with a 95 % paired hierarchical bootstrap interval. Rows scored by only one "
        "run are counted and named. The runs must be finished and of one benchmark; GLUE runs compare by GLUE's "
        "metrics (glue/results.json and glue/predictions.parquet).",
    )
    compare.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="two or more run ids under --run-root, or paths to run folders; the first is the one the others "
        "are compared against",
    )
    compare.add_argument(
        "--run-root",
        default=default_run_root(),
        help="folder or fsspec URL holding the runs (default: $ITH_RUNS_DIR, else ./runs)",
    )
    compare.add_argument("--out", default=None, metavar="FILE.md", help="also write the comparison to this file")
    compare.add_argument(
        "--bootstrap-samples",
        type=int,
        default=None,
        metavar="N",
        help="resamples of the paired bootstrap (default: the first run's fusion.bootstrap_samples)",
    )
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON instead of Markdown")


def cmd_compare(args: argparse.Namespace) -> int:
    from ith_core.report.compare import CompareError, compare_runs, comparison_markdown, load_compared_run

    if len(args.runs) < 2:  # before any run is read: the plainest error first
        raise CompareError(f"`ith compare` needs at least two runs, got {len(args.runs)}: {args.runs[0]}")
    if args.bootstrap_samples is not None and args.bootstrap_samples < 1:
        raise CompareError(f"--bootstrap-samples must be >= 1, got {args.bootstrap_samples}")
    comparison = compare_runs([load_compared_run(args.run_root, run) for run in args.runs], args.bootstrap_samples)
    markdown = comparison_markdown(comparison)
    if args.out:
        Path(args.out).write_text(markdown, encoding="utf-8")
    print(json.dumps(comparison, indent=2) if args.json else markdown, end="" if not args.json else "\n")
    return 0
