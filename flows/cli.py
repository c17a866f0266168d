"""The `ith` command.

    ith run            run the pipeline's stages on a profile, a data subset and a run root
    ith rerun-failed   rerun exactly the generation shards of a run that did not finish
    ith repair-audio   regenerate stored audio of a run whose files no longer match their checksums
    ith serve          start a local Prefect server, work pool, deployments and worker (--stop stops them)
    ith predict        answer the [MASK] of sentences with a trained run, with and without imagined audio
    ith doctor         show which models are available, the torch/CUDA situation and the data location

`ith <command> --help` documents every option.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ith_core.config import PROFILE_NAMES, SPLITS, TASKS, ConfigError


_SERVER_UI: str | None = None


def _quiet_defaults() -> None:
    # Telemetry off, and Hugging Face never waits minutes on an unreachable hub unless the user
    # says it is reachable (ITH_ONLINE=1).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("ITH_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _settings(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`SECTION.NAME=VALUE` (or `SECTION.NAME.KEY=VALUE` for a mapping) -> nested overrides."""
    settings: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set takes SECTION.NAME=VALUE or SECTION.NAME.KEY=VALUE (e.g. span.epochs=3, "
                              f"imagine.thresholds.animal=0.4), got {pair!r}")
        node: dict[str, Any] = settings
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {pair!r}: {'.'.join(parts[:-1])} was already given a value")
            node = child
        node[parts[-1]] = _parse_value(value)
    return settings


def _sample(text: str) -> int | str | None:
    if text in ("all", "profile"):
        return None if text == "profile" else "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sample takes a number of examples or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--sample must be >= 1 or 'all', got {value}")
    return value


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ith", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the pipeline locally",
        description="Run the pipeline locally as the Prefect flow `ith` (no server needed). Each run writes "
                    "<run-root>/<run-id>/ with one folder per stage, config.json and summary.json. An identical "
                    "run reuses every finished stage.")
    run.add_argument("--profile", choices=PROFILE_NAMES, default="tiny",
                     help="tiny: small random-weight models built offline (default); paper: the method's checkpoints")
    run.add_argument("--run-root", default="runs", help="folder or fsspec URL (s3://, gs://, memory://) for runs "
                                                        "(default: ./runs)")
    run.add_argument("--run-id", default=None, help="name of the run folder (default: <profile>-<hash of the "
                                                    "settings>, so an identical run reuses its results)")
    run.add_argument("--data-dir", default=None, help="AuditoryBench folder or URL (default: $ITH_AUDITORYBENCH_DIR, "
                                                      "else the pinned upstream files, downloaded and verified)")
    run.add_argument("--tasks", type=_csv, default=None, help=f"comma-separated tasks (default: {','.join(TASKS)})")
    run.add_argument("--splits", type=_csv, default=None,
                     help=f"comma-separated splits to detect spans on (default: {','.join(SPLITS)}); ingestion "
                          "always reads all four")
    run.add_argument("--sample", type=_sample, default=None, metavar="N|all|profile",
                     help="examples per task and split for span detection (default: the profile's, 64 for tiny, "
                          "all for paper)")
    run.add_argument("--model-dir", default=None, help="where models are built or looked for (default: "
                                                       "$ITH_HOME/models, ITH_HOME defaulting to ~/.cache/ith)")
    run.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda or cuda:N")
    run.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.NAME=VALUE",
                     help="override a stage setting, e.g. --set span.epochs=3 or --set imagine.thresholds.animal=0.4 "
                          "(repeatable; values are JSON; `ith config` lists every setting)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")

    from flows.imagine import add_repair_audio_parser, add_rerun_failed_parser

    add_rerun_failed_parser(commands)
    add_repair_audio_parser(commands)

    from flows.serve import add_serve_parser

    add_serve_parser(commands)

    from flows.predict_cli import add_predict_parser

    add_predict_parser(commands)

    doctor = commands.add_parser(
        "doctor", help="show models, devices and data location",
        description="Print which models of each profile are available locally and where each was looked for, "
                    "the torch/CUDA/device situation, and where AuditoryBench will be read from. Builds and "
                    "downloads nothing.")
    doctor.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="only this profile (default: both)")
    doctor.add_argument("--model-dir", default=None, help="as for `ith run`")
    doctor.add_argument("--data-dir", default=None, help="as for `ith run`")
    return parser


def _print_summary(result: dict) -> None:
    stages = result["stages"]
    ingest, detector, spans = stages["ingest"], stages["span_detector"], stages["spans"]
    print()
    print(f"run {result['run_id']}: {result['run_dir']}")
    print(f"  {'stage':<15} {'cached':<7} {'seconds':>8}  result")
    print(f"  {'ingest':<15} {str(ingest['cached']).lower():<7} {ingest['seconds']:>8.1f}  "
          f"{ingest['rows_in']} rows: {ingest['accepted']} accepted, {ingest['rejected']} rejected "
          f"{ {k: v for k, v in ingest['rejects_by_reason'].items() if v} }")
    print(f"  {'span_detector':<15} {str(detector['cached']).lower():<7} {detector['seconds']:>8.1f}  "
          f"dev span F1 {detector['dev_span_f1_untrained']:.3f} untrained -> {detector['dev_span_f1']:.3f} "
          f"trained ({detector['steps']} steps)")
    print(f"  {'spans':<15} {str(spans['cached']).lower():<7} {spans['seconds']:>8.1f}  "
          f"{spans['spans']} spans in {spans['examples']} examples")
    imagine = stages["imagine"]
    print(f"  {'imagine':<15} {str(imagine['cached']).lower():<7} {imagine.get('seconds_total', imagine['seconds']):>8.1f}  "
          f"{imagine['occurrences']} span occurrences -> {imagine['unique_prompts']} prompts "
          f"({imagine['dedup_ratio']:.2f}x dedup), {imagine['candidates']} candidates; "
          f"{imagine['accepted']} of {imagine['occurrences']} got audio at {imagine['thresholds']}")
    fusion = stages["fusion"]
    if "skipped" in fusion:
        print(f"  {'fusion':<15} skipped: {fusion['skipped']}")
    else:
        print(f"  {'fusion':<15} {'':<7} {fusion['seconds']:>8.1f}  accuracy, ours vs paper "
              "(intervals in fusion/results.parquet):")
        for row in fusion["ours_vs_paper"] or []:
            print("      " + _accuracy_line(row))
    print(f"summary: {result['summary']}")
    print(f"report:  {result['report']}")
    if _SERVER_UI:
        print(f"in the Prefect UI: {_SERVER_UI}/runs/flow-run/{result['flow_run_id']}")
    else:
        print("To browse runs in the Prefect UI: `ith serve` (it prints the address); `ith run` then records "
              "its runs there, with their artifacts.")


def _accuracy_line(row: dict) -> str:
    paper = f"paper {row['paper']:.2f} ({row['paper_model']})" if row.get("paper") is not None else ""
    return (f"{row['model']:<5} {row['task']:<6} {row['split']:<5} {row['metric']:<13} {row['mean']:6.2f} % "
            f"(sd {row['std']:.2f} over {row['seeds']} seed{'s' if row['seeds'] != 1 else ''})  {paper}")


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import build_config, ith_pipeline

    settings = _settings(args.settings)
    unknown = sorted(set(settings) - {"span", "imagine", "fusion", "data"})
    if unknown:
        raise ConfigError(f"--set {unknown[0]}.*: {unknown[0]} is not a settings section; sections: span, imagine, "
                          "fusion, data (data.* has its own options: --data-dir, --tasks, --splits, --sample)")
    if "data" in settings:
        raise ConfigError("--set data.*: use --data-dir, --tasks, --splits and --sample for the data settings")
    params = dict(profile=args.profile, run_root=args.run_root, run_id=args.run_id, data_dir=args.data_dir,
                  tasks=args.tasks, splits=args.splits, sample_limit=args.sample, model_dir=args.model_dir,
                  device=args.device, **settings)
    build_config(**params)  # validate before Prefect starts, so a bad setting fails in a second
    result = ith_pipeline(**params)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ith_core.doctor import doctor_report, format_doctor

    print(format_doctor(doctor_report(args.profile, args.model_dir, args.data_dir)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from flows.predict_cli import cmd_predict as predict

    return predict(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import cmd_serve as serve

    return serve(args)


def cmd_repair_audio(args: argparse.Namespace) -> int:
    from flows.imagine import cmd_repair_audio as repair

    return repair(args)


def cmd_rerun_failed(args: argparse.Namespace) -> int:
    from flows.imagine import cmd_rerun_failed as rerun

    return rerun(args)


def _use_running_server(argv: list[str]) -> str | None:
    """`ith run` records into the server `ith serve` started, when one runs, so the run shows in its UI.

    Must happen before Prefect is imported: Prefect reads PREFECT_API_URL once.
    """
    if argv[:1] != ["run"] or os.environ.get("PREFECT_API_URL"):
        return None
    from flows.serve import running_server

    ui = running_server()
    if ui:
        os.environ["PREFECT_API_URL"] = f"{ui}/api"
    return ui


def main(argv: list[str] | None = None) -> int:
    _quiet_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    global _SERVER_UI
    _SERVER_UI = _use_running_server(argv)
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "doctor": cmd_doctor, "rerun-failed": cmd_rerun_failed,
                "repair-audio": cmd_repair_audio,
                "serve": cmd_serve, "predict": cmd_predict}[args.command](args)
    except ConfigError as error:
        print(f"ith: invalid setting: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # Errors the user can act on get one clear line, not a traceback.
        from flows.imagine import ShardsFailedError
        from ith_core.auditorybench import DataError
        from ith_core.imagine_stage import DiskSpaceError, ShardsMissingError, UndeterminedSelectionError
        from storage.audio_store import AudioStoreError
        from ith_core.profiles import ModelNotAvailableError
        from storage.layout import StageMismatchError, StageNotFinishedError

        if isinstance(error, (DataError, ModelNotAvailableError, StageMismatchError, ShardsFailedError,
                              ShardsMissingError, StageNotFinishedError, FileNotFoundError, AudioStoreError,
                              DiskSpaceError, UndeterminedSelectionError)):
            print(f"ith: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
