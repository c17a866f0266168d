"""`ith` run the way a user runs it: `python -m cli.main ...` in a subprocess, offline, with its own
ITH_HOME and PREFECT_HOME (a temporary Prefect server per run). Used by the tests that drive the
production entry point end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ith_env(tmp_path: Path, ith_home: Path) -> dict[str, str]:
    """The environment of an offline `ith` process whose Prefect state lives under `tmp_path`."""
    return {
        **os.environ,
        "ITH_HOME": str(ith_home),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def run_ith(args: list[str], tmp_path: Path, ith_home: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    """`ith <args>` from the checkout, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env=ith_env(tmp_path, ith_home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ith_json(args: list[str], tmp_path: Path, ith_home: Path, timeout: int = 1200) -> dict:
    """`ith <args> --json`, which must succeed: the JSON summary it prints last."""
    done = run_ith([*args, "--json"], tmp_path, ith_home, timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout[done.stdout.index("{\n") :])
