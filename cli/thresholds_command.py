"""`ith thresholds RUN`: the acceptance each CLAP threshold would give a run, from its stored scores.

    ith thresholds tiny-0123abcd                         acceptance per task over a grid of thresholds
    ith thresholds tiny-0123abcd --acceptance 0.6        per task, the highest threshold keeping 60 %

The method's thresholds (animal 0.4, pitch 0.3) were tuned by the reference release on its own
CLAP scores, which two of its bugs shift (audio at 44.1 kHz labelled 48 kHz; zero padding to
10 s with a random "longer" flag). Our scores are computed correctly, so the same number may keep
another share of the spans; this command shows the share each threshold keeps, so a threshold
can be chosen by acceptance. Nothing is regenerated: the scores are the imagine stage's
candidates table. Where lazy sampling stopped at a lower threshold, acceptance at a higher one
is a lower bound (its `undetermined` occurrences); `imagine.sampling=all` leaves none.
"""

from __future__ import annotations

import argparse
import json

from ith_core.config import RUN_ROOT_HELP, ConfigError, default_run_root

DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(-4, 17))  # -0.2 ... 0.8


def add_thresholds_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "thresholds",
        help="acceptance each CLAP threshold would give a run, from its stored scores",
        description=__doc__.split("\n\n", 2)[2].split("\n\n")[0].replace("\n", " "),
    )
    parser.add_argument("run", help="the run id (folder name under --run-root)")
    parser.add_argument("--run-root", default=default_run_root(), help=RUN_ROOT_HELP)
    parser.add_argument(
        "--grid",
        default=",".join(f"{t:g}" for t in DEFAULT_GRID),
        help="comma-separated thresholds to show (default -0.2 to 0.8 in steps of 0.05, plus the run's own thresholds)",
    )
    parser.add_argument(
        "--acceptance",
        type=float,
        default=None,
        metavar="SHARE",
        help="also print, per task, the highest threshold of the grid whose acceptance is at least SHARE (0-1)",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    return parser


def _grid(text: str, own: dict[str, float]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--grid must be comma-separated numbers, got {text!r}") from None
    if not values or any(not -1.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"--grid needs at least one threshold, each in [-1, 1] (cosine similarity), got {text!r}")
    return sorted(set(values) | set(own.values()))


def threshold_table(run_root: str, run_id: str, grid_text: str) -> dict:
    """Acceptance per task at every threshold of the grid, from the run's stored CLAP scores."""
    from ith_core.imagination.selection import acceptance
    from ith_core.stages import imagine as imagine_stage
    from ith_core.stages.skeleton import load_run_config
    from storage import run_files

    cfg = load_run_config(run_root, run_id)
    layout = imagine_stage.layout_for(cfg)
    if not (layout.exists(*run_files.MAPPING) and layout.exists(*run_files.CANDIDATES)):
        raise FileNotFoundError(
            f"run {run_id!r} has no stored CLAP scores yet ({layout.url(imagine_stage.STAGE)} "
            "lacks mapping.parquet or candidates.parquet): let its imagine stage finish first"
        )
    own = dict(cfg.imagine.thresholds)
    grid = _grid(grid_text, own)
    table = acceptance(
        layout.read_table(*run_files.MAPPING),
        layout.read_table(*run_files.CANDIDATES),
        grid,
        cfg.imagine.num_candidates,
    )
    return {
        "run_id": run_id,
        "thresholds": own,
        "num_candidates": cfg.imagine.num_candidates,
        "sampling": cfg.imagine.sampling,
        "rows": table.to_pylist(),
    }


def choose(rows: list[dict], share: float) -> dict[str, float | None]:
    """Per task, the highest threshold whose acceptance (undetermined counted as rejected) is >= share."""
    out: dict[str, float | None] = {}
    for task in sorted({r["task"] for r in rows}):
        passing = [r["threshold"] for r in rows if r["task"] == task and r["rate"] >= share]
        out[task] = max(passing) if passing else None
    return out


def cmd_thresholds(args: argparse.Namespace) -> int:
    if args.acceptance is not None and not 0.0 <= args.acceptance <= 1.0:
        raise ConfigError(f"--acceptance is a share between 0 and 1, got {args.acceptance}")
    result = threshold_table(args.run_root, args.run, args.grid)
    if args.acceptance is not None:
        result["for_acceptance"] = {"share": args.acceptance, "threshold": choose(result["rows"], args.acceptance)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"run {args.run}: span occurrences with an accepted candidate (first of {result['num_candidates']} "
        f"candidates whose CLAP score reaches the threshold; sampling {result['sampling']}); the run uses "
        + ", ".join(f"{t} {v:g}" for t, v in sorted(result["thresholds"].items()))
    )
    print(f"{'task':<8} {'threshold':>9} {'accepted':>9} {'of':>7} {'share':>7} {'undetermined':>13}")
    for r in sorted(result["rows"], key=lambda r: (r["task"], r["threshold"])):
        mark = " <- the run's" if result["thresholds"].get(r["task"]) == r["threshold"] else ""
        print(
            f"{r['task']:<8} {r['threshold']:>9.2f} {r['accepted']:>9} {r['occurrences']:>7} "
            f"{100 * r['rate']:>6.1f}% {r['undetermined']:>13}{mark}"
        )
    if any(r["undetermined"] for r in result["rows"]):
        print(
            "undetermined: lazy sampling stopped before these occurrences' later candidates were generated; their "
            "acceptance at that threshold is unknown and counted as rejected (rerun with "
            "--set imagine.sampling='\"all\"' to know it)"
        )
    if args.acceptance is not None:
        for task, threshold in result["for_acceptance"]["threshold"].items():
            print(
                f"{task}: "
                + (
                    f"threshold {threshold:g} keeps at least {100 * args.acceptance:.0f} % "
                    f"(--set imagine.thresholds.{task}={threshold:g})"
                    if threshold is not None
                    else f"no threshold of the grid keeps {100 * args.acceptance:.0f} %"
                )
            )
    return 0
