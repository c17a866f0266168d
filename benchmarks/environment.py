"""What a recorded result was measured on: `ith_core.environment` (one copy for the benchmarks here
and `ith rehearse`), importable as `environment` by the scripts of this folder."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ith_core.environment import LIBRARIES, REPO, commit, cpu_model, environment  # noqa: E402

__all__ = ["LIBRARIES", "REPO", "commit", "cpu_model", "environment"]
