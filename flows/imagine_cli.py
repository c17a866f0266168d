"""`ith rerun-failed` and `ith repair-audio`: the generation commands for an existing run.

    ith rerun-failed tiny-0123abcd            execute exactly the planned shards without a manifest
    ith repair-audio tiny-0123abcd ID...      regenerate stored audio that no longer matches its checksum

The parsers import nothing heavy, so `ith --help` stays fast; each command imports Prefect and the
imagine stage when it runs.
"""

from __future__ import annotations

import argparse
import json

from ith_core.config import RUN_ROOT_HELP, default_run_root

WAIT_LOCK_HELP = "if another process writes the run, wait for it to finish instead of refusing"


def add_rerun_failed_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "rerun-failed", help="rerun the imagine shards of a run that have no manifest",
        description="Re-executes exactly the planned imagine shards of RUN that did not finish (no manifest in "
                    "<run-root>/_imagine/shards/), then writes the run's selection tables. Finished shards are "
                    "never regenerated.")
    parser.add_argument("run", help="the run id (folder name under --run-root)")
    parser.add_argument("--run-root", default=default_run_root(), help=RUN_ROOT_HELP)
    parser.add_argument("--wait-lock", action="store_true", help=WAIT_LOCK_HELP)
    parser.add_argument("--json", action="store_true", help="print the stage report as JSON")
    return parser


def cmd_rerun_failed(args: argparse.Namespace) -> int:
    from flows.imagine import run_imagine
    from ith_core import imagine_stage
    from ith_core.stages import load_run_config
    from storage.run_lock import hold_run_lock

    cfg = load_run_config(args.run_root, args.run)
    with hold_run_lock(imagine_stage.layout_for(cfg), wait=getattr(args, "wait_lock", False)):
        plan = imagine_stage.plan_stage(cfg, {}, existing_only=True)
        statuses = imagine_stage.shard_statuses(cfg)
        missing = [name for name, done in statuses.items() if not done]
        print(f"run {args.run}: {len(missing)} of {len(statuses)} shards to rerun")
        report = run_imagine(cfg.resolved(), plan["model_paths"], rerun_failed=True)
    print(json.dumps(report, indent=2, default=str) if args.json else
          f"done: {report['accepted']} of {report['occurrences']} span occurrences got audio")
    return 0


def add_repair_audio_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "repair-audio", help="regenerate stored audio whose file no longer matches its checksum",
        description="Regenerates every stored candidate of the given audio ids (the ones the imagine stage names "
                    "when a stored file is missing or does not match its recorded checksum), rescores them with "
                    "CLAP, rewrites the manifests that list them, and collects RUN's selection again. Other audio "
                    "ids are not touched.")
    parser.add_argument("run", help="the run id (folder name under --run-root)")
    parser.add_argument("audio_ids", nargs="+", metavar="AUDIO_ID", help="audio ids to regenerate")
    parser.add_argument("--run-root", default=default_run_root(), help=RUN_ROOT_HELP)
    parser.add_argument("--device", default=None, help="device to generate on (default: the run's device choice)")
    parser.add_argument("--wait-lock", action="store_true", help=WAIT_LOCK_HELP)
    parser.add_argument("--json", action="store_true", help="print the repair report as JSON")
    return parser


def cmd_repair_audio(args: argparse.Namespace) -> int:
    from ith_core import imagine_stage
    from ith_core.stages import load_run_config
    from storage.run_lock import hold_run_lock

    cfg = load_run_config(args.run_root, args.run)
    with hold_run_lock(imagine_stage.layout_for(cfg), wait=getattr(args, "wait_lock", False)):
        plan = imagine_stage.plan_stage(cfg, {}, existing_only=True)
        report = imagine_stage.repair_audio(cfg, plan["model_paths"], args.audio_ids, device=args.device)
    print(json.dumps(report, indent=2, default=str) if args.json else
          f"regenerated {report['candidates_regenerated']} candidate(s) of {len(report['audio_ids'])} audio id(s), "
          f"rewrote {len(report['manifests_rewritten'])} manifest(s); run {args.run}: "
          f"{report['collect']['accepted']} of {report['collect']['occurrences']} span occurrences got audio")
    return 0
