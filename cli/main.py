"""The `ith` command.

    ith run            run the pipeline's stages on a profile, a data subset and a run root
    ith config         print the resolved settings a run would use, before anything runs
    ith rerun-failed   rerun exactly the generation shards of a run that did not finish
    ith verify         hash the stored audio a run uses and name every damaged or missing file
    ith repair-audio   regenerate stored audio of a run whose files no longer match their checksums
    ith serve          start a local Prefect server, work pool, deployments and worker (--stop stops them)
    ith predict        answer the [MASK] of sentences with a trained run, with and without imagined audio
    ith compare        finished runs side by side (one column per run and its generator), paired differences
    ith doctor         show which models are available, the torch/CUDA situation and the data location
    ith data fetch     put the pinned benchmark files into their verified home ($ITH_HOME/data/auditorybench)
    ith models fetch   download the paper checkpoints into the model home and pin them (models.lock.json)
    ith models lock    write the model lock from the checkpoints already there, offline

`ith <command> --help` documents every option.

The argument tree is built in parser.py; `ith run` and `ith config` run in run_command.py;
console.py turns errors the user can act on into one `ith:` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# Only light imports here: `ith --help` must not load torch, transformers or Prefect (seconds); each
# command imports what it needs when it runs.
from cli import run_command
from cli.console import quiet_console, user_errors
from cli.parser import build_parser
from cli.run_command import cmd_config, cmd_run
from ith_core.config import ConfigError


def _quiet_defaults(argv: list[str]) -> None:
    # Telemetry off, and Hugging Face never waits minutes on an unreachable hub unless the user
    # says it is reachable (ITH_ONLINE=1) or runs the one command that downloads (`ith models fetch`,
    # which fails at once when HF_HUB_OFFLINE is set and within seconds when the hub is unreachable).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect gives its temporary local server 20 s to start; a busy 2-core machine (CI, or a
    # laptop training in another window) can need more, and the run then fails before any work.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("ITH_ONLINE") != "1" and argv[:2] != ["models", "fetch"]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cmd_doctor(args: argparse.Namespace) -> int:
    from cli.doctor import doctor_report, format_doctor

    print(format_doctor(doctor_report(args.profile, args.model_dir, args.data_dir)))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from ith_core.data import auditorybench

    if args.glue:
        return _fetch_glue(args)
    result = auditorybench.fetch(args.source)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    said = {
        "verified": "already there",
        "copied": f"copied from {result['source']}",
        "downloaded": f"downloaded from {result['source']}",
    }
    counts: dict[str, int] = {}
    for entry in result["files"]:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    print(f"AuditoryBench home: {result['home']}")
    print(
        f"  {len(result['files'])} files verified by sha256: "
        + ", ".join(f"{n} {said[status]}" for status, n in sorted(counts.items()))
    )
    return 0


def _fetch_glue(args: argparse.Namespace) -> int:
    from ith_core.data import glue

    if args.source:
        raise ConfigError(f"--from is AuditoryBench's source and --glue is GLUE's; give one, got both ({args.source})")
    result = glue.fetch(args.glue)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"GLUE home: {result['home']} (from {result['source']})")
    for entry in result["files"]:
        rows = "-" if entry["rows"] is None else f"{entry['rows']} rows"
        digest = f"sha256 {entry['sha256'][:16]}" if entry["sha256"] else ""
        print(f"  {entry['file']:<26} {entry['status']:<9} {rows:>12}  {digest}".rstrip())
    if result["missing_tasks"]:
        print(f"  not in {result['source']}: {', '.join(result['missing_tasks'])}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cli.models_command import cmd_models as models

    return models(args)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from cli.rehearse_command import cmd_rehearse as rehearse

    return rehearse(args)


def cmd_predict(args: argparse.Namespace) -> int:
    from cli.predict_command import cmd_predict as predict

    return predict(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from cli.compare_command import cmd_compare as compare

    return compare(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import cmd_serve as serve

    return serve(args)


def cmd_thresholds(args: argparse.Namespace) -> int:
    from cli.thresholds_command import cmd_thresholds as thresholds

    return thresholds(args)


def cmd_repair_audio(args: argparse.Namespace) -> int:
    from cli.imagine_commands import cmd_repair_audio as repair

    return repair(args)


def cmd_verify(args: argparse.Namespace) -> int:
    from cli.imagine_commands import cmd_verify as verify

    return verify(args)


def cmd_rerun_failed(args: argparse.Namespace) -> int:
    from cli.imagine_commands import cmd_rerun_failed as rerun

    quiet_console()
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


# Commands that run for minutes: SIGINT/SIGTERM end them and their children within seconds.
INTERRUPTIBLE = ("run", "rehearse", "rerun-failed", "repair-audio")


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None  # the `ith` program, not a test or a caller in Python
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_defaults(argv)
    run_command.SERVER_UI = _use_running_server(argv)
    args = build_parser().parse_args(argv)
    if as_program and args.command in INTERRUPTIBLE:
        from cli.interrupts import install

        install()
    try:
        return {
            "run": cmd_run,
            "config": cmd_config,
            "doctor": cmd_doctor,
            "data": cmd_data,
            "models": cmd_models,
            "rehearse": cmd_rehearse,
            "rerun-failed": cmd_rerun_failed,
            "repair-audio": cmd_repair_audio,
            "verify": cmd_verify,
            "serve": cmd_serve,
            "predict": cmd_predict,
            "thresholds": cmd_thresholds,
            "compare": cmd_compare,
        }[args.command](args)
    except ConfigError as error:
        print(f"ith: invalid setting: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        _hold_if_interrupted()  # the failures of work being stopped are not reported
        # Errors the user can act on get one clear line, not a traceback.
        from storage.layout import RunIdError, RunRootError

        if isinstance(error, (RunIdError, RunRootError)):
            print(f"ith: {error}", file=sys.stderr)
            return 2
        if isinstance(error, user_errors()):
            # The `ith:` line is the last: Prefect's note that it stops its temporary server (at exit) is not shown.
            logging.getLogger("prefect").setLevel(logging.WARNING)
            print(f"ith: {_describe(error)}", file=sys.stderr)
            return 1
        raise
    finally:
        _hold_if_interrupted()


def _hold_if_interrupted() -> None:
    """While an interrupt is handled (cli/interrupts.py), waits for its exit instead of going on."""
    if "cli.interrupts" in sys.modules:
        sys.modules["cli.interrupts"].hold_if_interrupted()


def _describe(error: BaseException) -> str:
    """The error's own message; an OSError also says what kind it is and which path."""
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"{error.strerror}:{where}" + (f" -> {error.filename2}" if error.filename2 else "")
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
