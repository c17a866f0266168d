"""The `ith-rehearse` flow: the paper run rehearsed at full size on random weights (docs/rehearsal.md).

    build rehearsal checkpoints (every paper role at its published architecture, hub layout)
      -> render a captioned clip pool for AudioBERT
      -> the `ith` flow with profile paper, the paper table's systems, only size knobs reduced
      -> per stage: wall time, peak memory, bytes written (from the flow's task runs)
      -> unit costs and a projection of the whole paper run

Nothing of it is a result about the method: the weights are random. It shows that the paper
configuration runs end to end (shapes, dtypes, tokenizer lengths, memory) and what each unit of
work costs on this machine, before GPU-hours are spent. `ith rehearse` runs it; the report goes to
<run folder>/rehearsal.json and, with `--out`, to a results file.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Literal, Optional

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import artifact_key
from flows.pipeline import ith_pipeline
from ith_core.data.auditorybench import ingest, locate
from ith_core.environment import environment
from ith_core.models.profiles import model_home
from ith_core.models.rehearsal import build_rehearsal_home
from ith_core.models.span_detector import resolve_device
from ith_core.rehearsal import costs
from ith_core.rehearsal.meter import ResourceMeter
from ith_core.retrieval.rehearsal_pool import rehearsal_pool
from ith_core.stages import skeleton
from storage.layout import ith_home
from tasks import report as report_tasks

SYSTEMS = ["bert", "roberta", "audiobert", "ith"]
# The size knobs a rehearsal reduces (the paper's value in the comment); every other setting is the
# paper profile's, as `ith config --profile paper` prints it.
SIZES: dict[str, dict] = {
    # About 20 minutes on 2 CPU cores: every stage, every system, both tasks, one generation call of
    # several clips over two diffusion steps (the solver's second-order path). A full-window DiT step
    # costs about a minute per clip on 2 CPU cores, so the clips are few: one example of train and dev
    # per task, one candidate each (lazy sampling's rule is the same code at every size).
    "default": {
        "splits": ["train", "dev"],  # paper: all four (test and wiki are scored like dev)
        "sample_limit": 1,  # paper: every row
        "seeds": 1,  # paper: 3 (the paper-table deployment)
        "span": {"epochs": 1, "max_train_examples": 32, "max_eval_examples": 32},  # paper: 5 epochs, all rows
        "imagine": {"num_inference_steps": 2, "num_candidates": 1},  # paper: 50 steps, 5 candidates
        "fusion": {"epochs": 1},  # paper: 8
        "audiobert": {"epochs": 1},  # release: 20
        "pool_clips": 32,
    },
    # The smallest that still sends every full-size architecture through every stage (the slow test's):
    # one animal example of train and dev, one step, one candidate (two clips). The pitch task, a call
    # of several clips and a second diffusion step are left to `default`.
    "smallest": {
        "tasks": ["animal"],
        "splits": ["train", "dev"],
        "sample_limit": 1,
        "seeds": 1,
        "span": {"epochs": 1, "max_train_examples": 4, "max_eval_examples": 4},
        "imagine": {"num_inference_steps": 1, "num_candidates": 1},
        "fusion": {"epochs": 1},
        "audiobert": {"epochs": 1},
        "pool_clips": 8,
    },
}


# The two settings besides sizes that a rehearsal changes, and why (both found by rehearsing):
# - span.source=gold: a span detector trained from random weights for a step finds no span (dev span
#   F1 0), so every row would take the fallback prompt and AudioBERT would have nothing to retrieve
#   ("no span retrieved a clip"). The detector is still trained and evaluated on dev at full size (the
#   forward pass detection runs); its spans are not used.
# - CLAP thresholds -1 (every candidate accepted): a random CLAP scores every clip near 0 (best seen
#   -0.065), below the method's 0.4 and 0.3, so no span would get audio and ITH would have nothing to
#   fuse. CLAP still scores every clip at full size; the selection rule runs as always.
NOT_SIZE = {"span": {"source": "gold"}, "imagine": {"thresholds": {"animal": -1.0, "pitch": -1.0}}}


def reduced_settings(size: str) -> dict:
    """The size knobs of `size` as flow parameters (what a rehearsal changes from the paper profile)."""
    knobs = SIZES[size]
    return {
        "tasks": knobs.get("tasks"),
        "splits": knobs.get("splits"),
        "sample_limit": knobs["sample_limit"],
        "seeds": knobs["seeds"],
        "span": {**knobs["span"], **NOT_SIZE["span"]},
        "imagine": {**knobs["imagine"], **NOT_SIZE["imagine"]},
        "fusion": dict(knobs["fusion"]),
        "audiobert": dict(knobs["audiobert"]),
    }


def _train_text(data_dir: str | None) -> tuple[list[str], list[str]]:
    """(tokenizer corpus, gold spans by frequency) of the benchmark's train split."""
    rows = ingest(locate(data_dir), splits=["train"]).examples
    rows = rows.select(["sentence", "spans", "answer", "options"]).to_pylist()
    spans = [s for r in rows for s in r["spans"]]
    corpus = (
        [r["sentence"] for r in rows]
        + spans
        + [r["answer"] for r in rows]
        + [o for r in rows for o in (r["options"] or [])]
    )
    return corpus, [s for s, _ in Counter(spans).most_common()]


@flow(name="ith-rehearse", log_prints=True)
def ith_rehearse(
    size: Literal["default", "smallest"] = "default",
    run_root: Optional[str] = None,
    model_dir: Optional[str] = None,
    data_dir: Optional[str] = None,
    device: str = "auto",
) -> dict:
    """Builds the rehearsal checkpoints, runs the paper table's flow on them and measures every stage.

    Args:
        size: default (about 20 minutes on 2 CPU cores) or smallest (every architecture through
            every stage at the least work: the slow test's).
        run_root: where the rehearsal's run goes; empty: $ITH_HOME/rehearsal/runs.
        model_dir: the rehearsal model home; empty: $ITH_HOME/rehearsal/models. Never a home of real
            checkpoints: the rehearsal's carry a marker and a paper run refuses them.
        data_dir: AuditoryBench folder (as `ith run --data-dir`).
        device: auto, cpu, cuda or cuda:N.
    """
    logger = get_run_logger()
    started = time.time()
    home = Path(model_dir) if model_dir else ith_home() / "rehearsal" / "models"
    run_root = run_root or str(ith_home() / "rehearsal" / "runs")
    knobs = reduced_settings(size)
    with ResourceMeter() as meter:
        t0 = time.time()
        corpus, spans = _train_text(data_dir)
        marker = build_rehearsal_home(home, corpus)
        pool = rehearsal_pool(home.parent / "pool", spans, clips=SIZES[size]["pool_clips"])
        t1 = time.time()
        logger.info("rehearsal checkpoints in %s, clip pool %s (%.0f s)", model_home(str(home)), pool, t1 - t0)
        result = ith_pipeline(
            profile="paper",
            rehearsal=True,
            systems=SYSTEMS,
            run_root=run_root,
            model_dir=str(home),
            data_dir=data_dir,
            device=device,
            tasks=knobs["tasks"],
            splits=knobs["splits"],
            sample_limit=knobs["sample_limit"],
            seeds=knobs["seeds"],
            span=knobs["span"],
            imagine=knobs["imagine"],
            fusion=knobs["fusion"],
            audiobert={**knobs["audiobert"], "pool": pool},
        )
    settings = skeleton.load_run_config(run_root, result["run_id"]).resolved()
    report = costs.rehearsal_report(
        result,
        settings,
        meter,
        prepare=(t0, t1),
        checkpoints=marker,
        size=size,
        reduced=knobs,
        environment=environment(device=resolve_device(device).type),
        seconds=time.time() - started,
    )
    path = costs.write_report(report, result["run_dir"])
    # The run's report again, now with its rehearsal section (reduced knobs, stage costs, projection).
    report_tasks.write_report(settings)
    create_markdown_artifact(
        costs.markdown(report),
        key=artifact_key("rehearsal", result["run_id"]),
        description=f"paper-size rehearsal {result['run_id']}: random weights, per-stage costs, projection",
    )
    logger.info("rehearsal report: %s", path)
    return report
