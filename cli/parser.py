"""The `ith` command.

The argparse tree of `ith`: every command and subcommand, its options and their help (the first
paragraph above is the program's --help description). Commands kept in their own modules add their
parsers (imagine_commands, thresholds_command, predict_command, flows.serve). Only light imports at
the top: `ith --help` must not load torch, transformers or Prefect.
"""

from __future__ import annotations

import argparse

from ith_core.config import PROFILE_NAMES, SPLITS, TASKS, default_run_root


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
        choices=("auditorybench", "synthetic", "glue"),
        default="auditorybench",
        help="auditorybench (default); synthetic: the planted-signal benchmark in AuditoryBench's layout, whose "
        "answers only the audio can give (a check of the audio path, see the README); glue: GLUE's six tasks "
        "fine-tuned with (ith) and without (bert) imagined audio, scored on dev (--data-dir: a GLUE folder in "
        "GLUE's TSV layout, or the home `ith data fetch --glue DIR` fills)",
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
        help="override a setting of section span, imagine, fusion, synthetic, audiobert or glue, e.g. --set span.epochs=3 or "
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

    from cli.models_command import add_models_parser

    add_models_parser(commands)

    from cli.rehearse_command import add_rehearse_parser

    add_rehearse_parser(commands)

    from cli.compare_command import add_compare_parser

    add_compare_parser(commands)

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
    fetch.add_argument(
        "--glue",
        default=None,
        metavar="DIR",
        help="instead: copy a local GLUE folder (GLUE's TSV layout: SST-2/, QNLI/, QQP/, MNLI/, MRPC/, STS-B/, "
        "CoLA/) into the GLUE home $ITH_HOME/data/glue, with a manifest of rows and sha256 per file; GLUE is "
        "never downloaded (gluebenchmark.com/tasks, download_glue_data.py, or nyu-mll/glue exported to TSV)",
    )
    fetch.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser
