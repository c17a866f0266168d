"""What a recorded result was measured on: machine, CPU, thread count, library versions, commit.

Every benchmark (benchmarks/) and `ith rehearse` write `environment()` beside their numbers, so a
reader (and `benchmarks/results_table.py`) can tell which machine and which code produced them.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "diffusers", "accelerate", "peft", "numpy", "pyarrow", "prefect", "soundfile")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """The checkout's commit, `-dirty` when files other than benchmarks/results/ differ from it:
    the code that produced the numbers (a benchmark writing its own results file is not a change
    of code)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if changed else "")


def environment(device: str = "cpu", threads: int | None = None) -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "versions": versions,
        "commit": commit(),
    }
