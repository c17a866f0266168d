"""`ith rerun-failed`, `ith verify` and `ith repair-audio`: the generation commands for an existing run.

    ith rerun-failed tiny-0123abcd            execute exactly the planned shards without a manifest
    ith verify tiny-0123abcd                  hash the stored audio the run uses; name what is damaged
    ith repair-audio tiny-0123abcd ID...      regenerate stored audio that no longer matches its checksum

The parsers import nothing heavy, so `ith --help` stays fast; each command imports Prefect and the
imagine stage (or its repair drivers, `ith_core.stages.audio_repair`) when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json

from ith_core.config import RUN_ROOT_HELP, default_run_root

WAIT_LOCK_HELP = "if another process writes the run, wait for it to finish instead of refusing"


@contextlib.contextmanager
def _existing_plan(args: argparse.Namespace):
    """(config, plan) of run `args.run` while this process holds its lock: the plan made from what
    the run already planned and stored (nothing new is planned), for the commands that regenerate."""
    from ith_core.stages import imagine as imagine_stage
    from ith_core.stages.skeleton import load_run_config
    from storage.run_lock import hold_run_lock

    cfg = load_run_config(args.run_root, args.run)
    with hold_run_lock(imagine_stage.layout_for(cfg), wait=getattr(args, "wait_lock", False)):
        yield cfg, imagine_stage.plan_imagine(cfg, {}, existing_only=True)


def add_rerun_failed_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "rerun-failed",
        help="rerun the imagine shards of a run that have no manifest",
        description="Re-executes exactly the planned imagine shards of RUN that did not finish (no manifest in "
        "<run-root>/_imagine/shards/), then writes the run's selection tables. Finished shards are "
        "never regenerated.",
    )
    parser.add_argument("run", help="the run id (folder name under --run-root)")
    parser.add_argument("--run-root", default=default_run_root(), help=RUN_ROOT_HELP)
    parser.add_argument("--wait-lock", action="store_true", help=WAIT_LOCK_HELP)
    parser.add_argument("--json", action="store_true", help="print the stage report as JSON")
    return parser


def cmd_rerun_failed(args: argparse.Namespace) -> int:
    from flows.imagine import run_imagine
    from ith_core.stages import imagine as imagine_stage

    with _existing_plan(args) as (cfg, plan):
        statuses = imagine_stage.shard_statuses(cfg)
        missing = [name for name, done in statuses.items() if not done]
        print(f"run {args.run}: {len(missing)} of {len(statuses)} shards to rerun")
        report = run_imagine(cfg.resolved(), plan["model_paths"], rerun_failed=True)
    print(
        json.dumps(report, indent=2, default=str)
        if args.json
        else f"done: {report['accepted']} of {report['occurrences']} span occurrences got audio"
    )
    return 0


def add_repair_audio_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "repair-audio",
        help="regenerate stored audio whose file no longer matches its checksum",
        description="Regenerates the missing or damaged stored files of the given audio ids (the ones `ith verify` "
        "or the imagine stage names), each in the generation call its shard recorded, so on the "
        "machine and settings that made it the file gets back its very bytes and no table changes. "
        "Where the bytes differ, the new file is scored and every manifest row naming the old file "
        "is pointed at it; no file is deleted. Then RUN's selection is collected again, and so is "
        "every other run under --run-root whose tables named a replaced file (a run another process "
        "is writing is named with the command that updates it). Other audio ids are not touched.",
    )
    parser.add_argument("run", help="the run id (folder name under --run-root)")
    parser.add_argument("audio_ids", nargs="+", metavar="AUDIO_ID", help="audio ids to regenerate")
    parser.add_argument("--run-root", default=default_run_root(), help=RUN_ROOT_HELP)
    parser.add_argument("--device", default=None, help="device to generate on (default: the run's device choice)")
    parser.add_argument("--wait-lock", action="store_true", help=WAIT_LOCK_HELP)
    parser.add_argument("--json", action="store_true", help="print the repair report as JSON")
    return parser


def cmd_repair_audio(args: argparse.Namespace) -> int:
    from ith_core.stages import audio_repair

    with _existing_plan(args) as (cfg, plan):
        report = audio_repair.repair_audio(cfg, plan["model_paths"], args.audio_ids, device=args.device)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(
        f"regenerated {report['candidates_regenerated']} damaged file(s) of {len(report['audio_ids'])} audio "
        f"id(s): {report['restored_identical']} with their original bytes, {len(report['replaced'])} as new "
        f"files (rewrote {len(report['manifests_rewritten'])} manifest(s)); run {args.run}: "
        f"{report['collect']['accepted']} of {report['collect']['occurrences']} span occurrences got audio"
    )
    for run_id in report["runs_updated"]:
        print(f"run {run_id}: its selection named replaced files; collected again")
    for entry in report["runs_to_update"]:
        print(
            f"run {entry['run_id']}: its selection names replaced files and another process writes it; "
            f"afterwards run `{entry['command']}`"
        )
    return 0


def add_verify_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify",
        help="hash the stored audio a run uses and name every damaged or missing file",
        description="Hashes every stored audio file RUN's imagine tables name (its candidates, hence every file "
        "its selection uses) and compares it with the checksum recorded when it was written. Prints "
        "one line per missing or damaged file (audio id, candidate, path, what is wrong, the "
        "`ith repair-audio` command that repairs it). Exit status 0: all files intact; 1: damage.",
    )
    parser.add_argument("run", help="the run id (folder name under --run-root)")
    parser.add_argument("--run-root", default=default_run_root(), help=RUN_ROOT_HELP)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def cmd_verify(args: argparse.Namespace) -> int:
    from ith_core.stages import audio_repair
    from ith_core.stages.skeleton import load_run_config

    result = audio_repair.verify_run(load_run_config(args.run_root, args.run))
    damaged = result["damaged"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 1 if damaged else 0
    for entry in damaged:
        print(
            f"damaged: audio id {entry['audio_id']} candidate {entry['candidate']}: {entry['path']} "
            f"({entry['problem']}); repair: {entry['repair']}"
        )
    if damaged:
        ids = sorted({e["audio_id"] for e in damaged})
        print(
            f"run {args.run}: {len(damaged)} of {result['files_checked']} audio file(s) damaged or missing; "
            f"repair all: ith repair-audio {args.run} {' '.join(ids)} --run-root {args.run_root}"
        )
        return 1
    print(f"run {args.run}: all {result['files_checked']} audio file(s) match their checksums")
    return 0
