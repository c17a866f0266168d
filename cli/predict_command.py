"""`ith predict`: the [MASK] of new sentences answered by a trained run, with and without imagined audio.

    ith predict "Rattle is the sound a [MASK] makes." --run tiny-0123abcd
    ith predict --file sentences.txt --run tiny-0123abcd --json

The work is `ith_core.stages.predict.predict_sentences` (no Prefect: a prediction is one process).
"""

from __future__ import annotations

import argparse
import sys

from ith_core.config import RUN_ROOT_HELP, TASKS, default_run_root


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="answer the [MASK] of sentences with a trained run, with and without audio",
        description="Loads a finished run, detects the auditory spans of each sentence, imagines their audio "
        "(reusing the run root's audio store when a prompt was generated before, else generating and "
        "storing it), and prints the top answers for the [MASK] from the run's ITH model (with audio) "
        "and its text-only model, with the spans, prompts, chosen candidates and WAV paths. Each "
        "sentence needs exactly one [MASK].",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "sentence",
        nargs="?",
        default=None,
        help='a sentence with one [MASK], e.g. "Rattle is the sound a [MASK] makes."',
    )
    source.add_argument(
        "--file",
        default=None,
        metavar="PATH",
        help="one sentence per line (blank lines and lines starting with # are skipped)",
    )
    parser.add_argument("--run", required=True, help="the run id (folder name under --run-root)")
    parser.add_argument("--run-root", default=default_run_root(), help=RUN_ROOT_HELP)
    parser.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="animal or pitch (default: inferred per sentence: 'than' after the [MASK] -> pitch)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="answers to show per model (default: 5)")
    parser.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON")
    return parser


def cmd_predict(args: argparse.Namespace) -> int:
    # Weight-loading bars of transformers would bury the answers.
    from transformers.utils import logging as hf_logging

    from ith_core.fusion.answering import PredictInputError, format_prediction, read_sentence_file, to_json
    from ith_core.stages.predict import RunNotReadyError, predict_sentences

    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        if args.file is not None:
            sentences, where = read_sentence_file(args.file)
        else:
            sentences, where = [args.sentence], None
        results = predict_sentences(
            args.run_root, args.run, sentences, task=args.task, top_k=args.top_k, device=args.device, where=where
        )
    except PredictInputError as error:
        print(f"ith: {error}", file=sys.stderr)
        return 2
    except RunNotReadyError as error:
        print(f"ith: {error}", file=sys.stderr)
        return 1
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if args.json:
        print(to_json(results))
        return 0
    for i, result in enumerate(results):
        if i:
            print()
        print(format_prediction(result))
    imagined = results[0]["imagine"]
    print(
        f"\nprompts: {imagined['prompts']} ({imagined['reused']} reused from the audio store, "
        f"{imagined['generated']} generated{' into shard ' + imagined['shard'] if imagined['shard'] else ''})"
    )
    return 0
