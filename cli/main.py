"""The `ith` command.

    ith run            run the pipeline's stages on a profile, a data subset and a run root
    ith config         print the resolved settings a run would use, before anything runs
    ith rerun-failed   rerun exactly the generation shards of a run that did not finish
    ith verify         hash the stored audio a run uses and name every damaged or missing file
    ith repair-audio   regenerate stored audio of a run whose files no longer match their checksums
    ith serve          start a local Prefect server, work pool, deployments and worker (--stop stops them)
    ith predict        answer the [MASK] of sentences with a trained run, with and without imagined audio
    ith doctor         show which models are available, the torch/CUDA situation and the data location
    ith data fetch     put the pinned benchmark files into their verified home ($ITH_HOME/data/auditorybench)

`ith <command> --help` documents every option.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from typing import Any

# Only light imports here: `ith --help` must not load torch, transformers or Prefect (seconds); each
# command imports what it needs when it runs.
from ith_core.config import PROFILE_NAMES, SPLITS, TASKS, ConfigError, default_run_root

_SERVER_UI: str | None = None


def _quiet_defaults() -> None:
    # Telemetry off, and Hugging Face never waits minutes on an unreachable hub unless the user
    # says it is reachable (ITH_ONLINE=1).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect gives its temporary local server 20 s to start; a busy 2-core machine (CI, or a
    # laptop training in another window) can need more, and the run then fails before any work.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("ITH_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors the user can act on: one `ith:` line, no traceback (a bug still shows its traceback)."""
    from flows.imagine import ShardsFailedError
    from flows.serve import ServeError
    from ith_core.data.auditorybench import DataError
    from ith_core.imagination.planning import DiskSpaceError
    from ith_core.imagination.selection import UndeterminedSelectionError
    from ith_core.models.profiles import ModelNotAvailableError
    from ith_core.stages.imagine import NoAudioError, ShardsMissingError, UnknownAudioIdError
    from storage.audio_store import AudioStoreError
    from storage.layout import RunIdError, RunRootError, StageMismatchError, StageNotFinishedError
    from storage.run_lock import RunLockedError

    return (
        DataError,
        ModelNotAvailableError,
        StageMismatchError,
        ShardsFailedError,
        ShardsMissingError,
        StageNotFinishedError,
        RunIdError,
        RunRootError,
        ConfigError,
        OSError,
        AudioStoreError,
        DiskSpaceError,
        UndeterminedSelectionError,
        NoAudioError,
        UnknownAudioIdError,
        ServeError,
        RunLockedError,
    )


class _HideUserErrorsOnConsole(logging.Filter):
    """Keeps Prefect's console free of tracebacks and repeats of an error the CLI prints as `ith:`.

    Only the console: the records still reach the Prefect API (the UI shows them in full).
    """

    def __init__(self) -> None:
        super().__init__()
        self.errors = _user_errors()
        names, todo = set(), list(self.errors)
        while todo:
            cls = todo.pop()
            names.add(cls.__name__)
            todo += cls.__subclasses__()
        # Prefect's failed-state messages: `... encountered an exception DataError: ...` (task) and
        # `... encountered an exception: DataError: ...` (flow).
        self.in_message = re.compile(rf"exception:? ({'|'.join(sorted(names))}):")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.errors):
            return False
        return not self.in_message.search(record.getMessage())


def _quiet_console() -> None:
    """Installs `_HideUserErrorsOnConsole` on the console handlers Prefect set up (after its import)."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging)

    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, _HideUserErrorsOnConsole) for f in handler.filters
        ):
            handler.addFilter(_HideUserErrorsOnConsole())


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
            raise ConfigError(
                f"--set takes SECTION.NAME=VALUE or SECTION.NAME.KEY=VALUE (e.g. span.epochs=3, "
                f"imagine.thresholds.animal=0.4), got {pair!r}"
            )
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


def _seeds(text: str) -> int | list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count or a comma-separated list of integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("--seeds takes a count or a comma-separated list of integers, got nothing")
    if "," not in text:
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"--seeds N must be >= 1, got {values[0]}")
        return values[0]
    return values


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_run_settings(parser: argparse.ArgumentParser) -> None:
    """The options that choose a run's settings (shared by `ith run` and `ith config`)."""
    add = parser.add_argument
    add(
        "--profile",
        choices=PROFILE_NAMES,
        default="tiny",
        help="tiny: small random-weight models built offline (default); paper: the method's checkpoints",
    )
    add(
        "--benchmark",
        choices=("auditorybench", "synthetic"),
        default="auditorybench",
        help="auditorybench (default); synthetic: the planted-signal benchmark in AuditoryBench's layout, whose "
        "answers only the audio can give (a check of the audio path, see the README)",
    )
    add(
        "--run-root",
        default=default_run_root(),
        help="folder or fsspec URL (s3://, gs://, memory://) for runs (default: $ITH_RUNS_DIR, else ./runs)",
    )
    add(
        "--run-id",
        default=None,
        help="name of the run folder (default: <profile>[-<benchmark>]-<hash of the "
        "settings>, so an identical run reuses its results)",
    )
    add(
        "--data-dir",
        default=None,
        help="AuditoryBench folder or URL (default: $ITH_AUDITORYBENCH_DIR, else the "
        "verified home $ITH_HOME/data/auditorybench, else a verified download into "
        "it); where the files are does not change the run id, what they are does",
    )
    add("--tasks", type=_csv, default=None, help=f"comma-separated tasks (default: {','.join(TASKS)})")
    add(
        "--splits",
        type=_csv,
        default=None,
        help=f"comma-separated splits to detect spans on (default: {','.join(SPLITS)}); ingestion always reads all four",
    )
    add(
        "--sample",
        type=_sample,
        default=None,
        metavar="N|all|profile",
        help="examples per task and split for span detection (default: the profile's, 64 for tiny, all for paper "
        "and for the synthetic benchmark)",
    )
    add(
        "--model-dir",
        default=None,
        help="where models are built or looked for (default: $ITH_HOME/models, ITH_HOME defaulting to ~/.cache/ith)",
    )
    add("--device", default="auto", help="auto (GPU when there is one), cpu, cuda or cuda:N")
    add(
        "--systems",
        type=_csv,
        default=None,
        metavar="LIST",
        help="the table's systems, comma-separated: bert, roberta (each zero-shot and fine-tuned text-only), "
        "audiobert (retrieval; needs a clip pool), ith (default: the profile's; `ith config` shows it)",
    )
    add(
        "--seeds",
        type=_seeds,
        default=None,
        metavar="N|LIST",
        help="training seeds: N for 42, 43, ... (N of them) or a comma-separated list (default: fusion.seeds, 42); "
        "adding seeds or systems to a finished run trains only the new ones",
    )
    add(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SECTION.NAME=VALUE",
        help="override a setting of section span, imagine, fusion or synthetic, e.g. --set span.epochs=3 or "
        "--set imagine.thresholds.animal=0.4 (repeatable; values are JSON; `ith config` lists every setting)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ith", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the pipeline locally",
        description="Run the pipeline locally as the Prefect flow `ith` (no server needed). Each run writes "
        "<run-root>/<run-id>/ with one folder per stage, config.json and summary.json. An identical "
        "run reuses every finished stage.",
    )
    _add_run_settings(run)
    run.add_argument(
        "--wait-lock",
        action="store_true",
        help="if another process writes the same run id, wait for it to finish instead of refusing",
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON")

    config = commands.add_parser(
        "config",
        help="print the resolved settings a run would use",
        description="Print the settings `ith run` would use with the same options (profile defaults, then the "
        "benchmark's, then --set), validated, and the run id they give. Runs nothing.",
    )
    _add_run_settings(config)
    config.add_argument("--json", action="store_true", help="print the settings as JSON (config.json's form)")

    from cli.imagine_commands import add_repair_audio_parser, add_rerun_failed_parser, add_verify_parser

    add_rerun_failed_parser(commands)
    add_verify_parser(commands)
    add_repair_audio_parser(commands)

    from cli.thresholds_command import add_thresholds_parser

    add_thresholds_parser(commands)

    from flows.serve import add_serve_parser

    add_serve_parser(commands)

    from cli.predict_command import add_predict_parser

    add_predict_parser(commands)

    doctor = commands.add_parser(
        "doctor",
        help="show models, devices and data location",
        description="Print which models of each profile are available locally and where each was looked for, "
        "the torch/CUDA/device situation, and where AuditoryBench will be read from. Builds and "
        "downloads nothing.",
    )
    doctor.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="only this profile (default: both)")
    doctor.add_argument("--model-dir", default=None, help="as for `ith run`")
    doctor.add_argument("--data-dir", default=None, help="as for `ith run`")

    data = commands.add_parser(
        "data",
        help="the benchmark's verified home",
        description="AuditoryBench is read from --data-dir, else $ITH_AUDITORYBENCH_DIR, else its verified home "
        "$ITH_HOME/data/auditorybench (ITH_HOME defaults to ~/.cache/ith), else downloaded into the home. "
        "Every entry point (ith run, deployments and their workers) looks there, so fill it once per "
        "machine.",
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    fetch = data_commands.add_parser(
        "fetch",
        help="put the pinned benchmark files into the verified home",
        description="Put the eight pinned AuditoryBench files into $ITH_HOME/data/auditorybench, each checked by its "
        "sha256 (a file that fails is not kept; the error names it). Files already there and verified "
        "are left alone. Without --from the files are downloaded from their pinned upstream commits "
        "($ITH_AUDITORYBENCH_UPSTREAM: a mirror).",
    )
    fetch.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="DIR|URL",
        help="copy from this benchmark folder or fsspec URL (layout <task dir>/<split>.csv, e.g. "
        "../shared/auditorybench) instead of downloading",
    )
    fetch.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _print_summary(result: dict, profile: str, benchmark: str) -> None:
    from ith_core.report.summaries import profile_statement

    stages = result["stages"]
    ingest, detector, spans = stages["ingest"], stages["span_detector"], stages["spans"]
    print()
    print(f"run {result['run_id']}: {result['run_dir']}")
    print(f"  {profile_statement(profile, benchmark)}")
    print(f"  {'stage':<15} {'cached':<7} {'seconds':>8}  result")
    print(
        f"  {'ingest':<15} {str(ingest['cached']).lower():<7} {ingest['seconds']:>8.1f}  "
        f"{ingest['rows_in']} rows: {ingest['accepted']} accepted, {ingest['rejected']} rejected "
        f"{ {k: v for k, v in ingest['rejects_by_reason'].items() if v} }"
    )
    print(
        f"  {'span_detector':<15} {str(detector['cached']).lower():<7} {detector['seconds']:>8.1f}  "
        f"dev span F1 {detector['dev_span_f1_untrained']:.3f} untrained -> {detector['dev_span_f1']:.3f} "
        f"trained ({detector['steps']} steps)"
    )
    print(
        f"  {'spans':<15} {str(spans['cached']).lower():<7} {spans['seconds']:>8.1f}  "
        f"{spans['spans']} spans in {spans['examples']} examples"
    )
    imagine = stages["imagine"]
    if "skipped" in imagine:
        print(f"  {'imagine':<15} skipped: {imagine['skipped']}")
    else:
        print(
            f"  {'imagine':<15} {str(imagine['cached']).lower():<7} "
            f"{imagine.get('seconds_total', imagine['seconds']):>8.1f}  "
            f"{imagine['occurrences']} span occurrences -> {imagine['unique_prompts']} prompts "
            f"({imagine['dedup_ratio']:.2f}x dedup), {imagine['candidates']} candidates; "
            f"{imagine['accepted']} of {imagine['occurrences']} got audio at {imagine['thresholds']}"
        )
    fusion = stages["fusion"]
    if "skipped" in fusion:
        print(f"  {'fusion':<15} skipped: {fusion['skipped']}")
    else:
        trained = [r for r in fusion.get("train") or [] if not r.get("cached")]
        print(
            f"  {'fusion':<15} {'':<7} {fusion['seconds']:>8.1f}  {len(trained)} (system, seed) trained now, "
            f"{len(fusion.get('train') or []) - len(trained)} reused; seconds by system "
            f"{fusion.get('seconds_by_system')}"
        )
        print(_systems_table(fusion))
        if fusion.get("unscored_rows"):
            print(
                f"      {fusion['unscored_rows']} rows could not be scored: "
                + ", ".join(
                    f"{name} {a['unscored']}"
                    for name, a in sorted((fusion.get("scoring") or {}).items())
                    if a["unscored"]
                )
            )
    print(f"summary: {result['summary']}")
    print(f"report:  {result['report']}")
    if _SERVER_UI:
        print(f"in the Prefect UI: {_SERVER_UI}/runs/flow-run/{result['flow_run_id']}")
    else:
        print(
            "To browse runs in the Prefect UI: `ith serve` (it prints the address); `ith run` then records "
            "its runs there, with their artifacts."
        )


def _systems_table(fusion: dict) -> str:
    """Accuracy (%) per system and task/split: mean (± sd over seeds), the published number in brackets."""
    rows = {
        (r["model"], r["task"], r["split"]): r
        for r in fusion.get("over_seeds") or []
        if r["metric"] in ("exact_match", "accuracy")
    }
    paper = {
        (r["model"], r["task"], r["split"]): r.get("paper")
        for r in fusion.get("ours_vs_paper") or []
        if r["metric"] in ("exact_match", "accuracy")
    }
    columns = sorted(
        {(t, s) for _, t, s in rows},
        key=lambda ts: (ts[0], ("dev", "test", "wiki").index(ts[1]) if ts[1] in ("dev", "test", "wiki") else 9),
    )
    names = [s["name"] for s in fusion.get("systems") or []] or sorted({m for m, _, _ in rows})
    width = max([len(n) for n in names] + [6])
    lines = ["      " + f"{'system':<{width}}  " + "  ".join(f"{f'{t} {s}':>18}" for t, s in columns)]
    for name in names:
        cells = []
        for t, s in columns:
            r = rows.get((name, t, s))
            if r is None:
                cells.append(f"{'-':>18}")
                continue
            text = f"{r['mean']:.1f}" + (f"±{r['std']:.1f}" if r["seeds"] > 1 else "")
            if paper.get((name, t, s)) is not None:
                text += f" ({paper[(name, t, s)]:.1f})"
            cells.append(f"{text:>18}")
        lines.append("      " + f"{name:<{width}}  " + "  ".join(cells))
    legend = "      accuracy %, mean (± sample sd over seeds); (published: the row it reproduces)"
    results = (fusion.get("outputs") or {}).get("results.json")
    lines.append(f"{legend}; intervals: {results}" if results else legend)
    return "\n".join(lines)


def _run_params(args: argparse.Namespace) -> dict[str, Any]:
    """`ith run`/`ith config` options -> the flow's parameters (checked for shape, not yet validated)."""
    settings = _settings(args.settings)
    sections = ("span", "imagine", "fusion", "synthetic", "audiobert")
    unknown = sorted(set(settings) - set(sections))
    if unknown:
        hint = (
            " (data settings have their own options: --data-dir, --tasks, --splits, --sample)"
            if unknown[0] == "data"
            else ""
        )
        raise ConfigError(
            f"--set {unknown[0]}.*: {unknown[0]!r} is not a settings section; sections: {', '.join(sections)}{hint}"
        )
    return dict(
        profile=args.profile,
        benchmark=args.benchmark,
        run_root=args.run_root,
        run_id=args.run_id,
        data_dir=args.data_dir,
        tasks=args.tasks,
        splits=args.splits,
        sample_limit=args.sample,
        model_dir=args.model_dir,
        device=args.device,
        systems=args.systems,
        seeds=args.seeds,
        **settings,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import build_config, ith_pipeline
    from ith_core.models.profiles import check_model_dir
    from ith_core.models.span_detector import resolve_device
    from ith_core.stages import audiobert as audiobert_stage
    from storage.layout import RunLayout, check_run_root
    from storage.run_lock import hold_run_lock

    params = _run_params(args)
    cfg = build_config(**params)  # validate before Prefect starts, so a bad setting fails in a second
    check_run_root(cfg.run_root)
    resolve_device(cfg.device)  # an absent GPU is an error now, not deep inside a stage
    check_model_dir(cfg.model_dir)
    audiobert_stage.check_pool(cfg)
    _quiet_console()
    # One writer per run, taken before Prefect starts so that a second `ith run` refuses at once.
    with hold_run_lock(RunLayout(cfg.run_root, cfg.effective_run_id), wait=args.wait_lock):
        result = ith_pipeline(**params)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result, args.profile, args.benchmark)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from flows.pipeline import build_config

    cfg = build_config(**_run_params(args))
    resolved = {**cfg.resolved(), "run_id": cfg.effective_run_id}
    if args.json:
        print(json.dumps(resolved, indent=2))
        return 0
    from ith_core.config import SECTIONS

    print(
        f"run id {cfg.effective_run_id} (profile {cfg.profile}, benchmark {cfg.benchmark}); "
        f"written as <run root>/<run id>/config.json"
    )
    for name in ("run_root", "model_dir", "device"):
        print(f"  {name:<22} {json.dumps(resolved[name])}")
    for section, model in SECTIONS.items():
        if section == "synthetic" and cfg.benchmark != "synthetic":
            continue
        print(f"[{section}]")
        for name, field in model.model_fields.items():
            print(f"  {name:<22} {json.dumps(resolved[section][name]):<28} {field.description}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from cli.doctor import doctor_report, format_doctor

    print(format_doctor(doctor_report(args.profile, args.model_dir, args.data_dir)))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from ith_core.data import auditorybench

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


def cmd_predict(args: argparse.Namespace) -> int:
    from cli.predict_command import cmd_predict as predict

    return predict(args)


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

    _quiet_console()
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
INTERRUPTIBLE = ("run", "rerun-failed", "repair-audio")


def main(argv: list[str] | None = None) -> int:
    _quiet_defaults()
    as_program = argv is None  # the `ith` program, not a test or a caller in Python
    argv = list(sys.argv[1:] if argv is None else argv)
    global _SERVER_UI
    _SERVER_UI = _use_running_server(argv)
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
            "rerun-failed": cmd_rerun_failed,
            "repair-audio": cmd_repair_audio,
            "verify": cmd_verify,
            "serve": cmd_serve,
            "predict": cmd_predict,
            "thresholds": cmd_thresholds,
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
        if isinstance(error, _user_errors()):
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
