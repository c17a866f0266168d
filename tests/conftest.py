"""Shared test setup: offline Hugging Face, the benchmark copy in ../shared, an isolated ITH_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Model hubs are unreachable: without these, every hub id is retried with back-off for minutes.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# In-process flows start Prefect's temporary server, which gets 20 s by default: not enough on a
# loaded 2-core CI machine (seen: "Timed out while attempting to connect to ephemeral Prefect API").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _benchmark_dir() -> Path:
    explicit = os.environ.get("ITH_AUDITORYBENCH_DIR")
    path = Path(explicit) if explicit else REPO_ROOT.parent / "shared" / "auditorybench"
    if not (path / "animal_sound_recognition" / "train.csv").is_file():
        raise RuntimeError(
            f"AuditoryBench copy not found at {path}: tests read the shared copy beside the checkout "
            "(../shared/auditorybench) or $ITH_AUDITORYBENCH_DIR"
        )
    return path


@pytest.fixture(scope="session")
def bench_dir() -> Path:
    return _benchmark_dir()


@pytest.fixture(scope="session")
def ith_home(tmp_path_factory) -> Path:
    """A per-session ITH_HOME so tests never touch (or depend on) the user's model cache."""
    home = tmp_path_factory.mktemp("ith_home")
    os.environ["ITH_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def train_corpus(bench_dir) -> list[str]:
    """The tiny profile's tokenizer corpus, built exactly as the pipeline builds it."""
    from ith_core.data import auditorybench

    examples = auditorybench.ingest(str(bench_dir), splits=("train",)).examples
    rows = examples.select(["sentence", "spans", "answer", "options"]).to_pylist()
    return (
        [r["sentence"] for r in rows]
        + [s for r in rows for s in r["spans"]]
        + [r["answer"] for r in rows]
        + [o for r in rows for o in (r["options"] or [])]
    )


@pytest.fixture(scope="session")
def tiny_models(ith_home, train_corpus) -> dict[str, Path]:
    """The tiny profile, built once per test session into the session's ITH_HOME."""
    from ith_core.models import profiles

    return profiles.ensure_tiny_profile(train_corpus)
