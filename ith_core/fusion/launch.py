"""Launching the fusion trainer: the `accelerate launch` command line of a training spec, and
running it with its output streamed, line by line, to this module's log and to a log file.

    cmd = launch_command(spec_path, num_processes, mixed_precision, cuda)
    rc, tail = run_streaming(cmd, log_path, env)    # exit status, the last 40 output lines

The stage drivers (ith_core.stages.fusion, ith_core.stages.audiobert) write the spec and the
environment and decide what a failure means; the entry point is `TRAIN_ENTRY` (the trainer module,
ith_core.fusion.training), looked up here when the command is built.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

from ith_core.net import free_port

logger = logging.getLogger(__name__)

# What `accelerate launch` runs: the training entry point (a module), then its arguments.
TRAIN_ENTRY = ("-m", "ith_core.fusion.training")


def launch_command(spec_path: str, num_processes: int, mixed_precision: str, cuda: bool) -> list[str]:
    """`accelerate launch ... -m ith_core.fusion.training --config spec`.

    `--cpu --num_processes N` silently runs ONE process, so N > 1 always goes through
    `--multi_gpu`, which without GPUs starts N processes over gloo (the entry point builds its
    Accelerator with cpu=True there).
    """
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += [
        "--num_machines",
        "1",
        "--num_processes",
        str(num_processes),
        "--mixed_precision",
        mixed_precision,
        "--dynamo_backend",
        "no",
    ]
    if num_processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", str(free_port())]
    elif not cuda:
        cmd += ["--cpu"]
    return cmd + [*TRAIN_ENTRY, "--config", spec_path]


# The trainer's per-epoch lines (train_fusion: "<job> epoch N/M: loss L, dev accuracy A ...") and
# resumes. This module's own logger relays every output line (weight loading, checkpoint saves)
# and stays out of run logs; `progress_logger` is one that tasks/runtime.py routes into them.
PROGRESS_LINE = re.compile(r" epoch \d+(/\d+)?: | resumed from ")
progress_logger = logging.getLogger(__name__ + ".progress")


def run_streaming(cmd: list[str], log_path: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Runs `cmd`, sending each output line to this module's log and to `log_path` as it comes."""
    tail: list[str] = []
    with (
        open(log_path, "a", encoding="utf-8") as log,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1) as proc,
    ):
        log.write(f"$ {' '.join(cmd)}\n")
        for line in proc.stdout:
            log.write(line)
            log.flush()
            logger.info("train: %s", line.rstrip())
            if PROGRESS_LINE.search(line):  # epochs, loss and dev accuracy: to the run log as well
                progress_logger.info("%s", line.rstrip())
            tail = (tail + [line.rstrip()])[-40:]
        rc = proc.wait()
    return rc, tail
