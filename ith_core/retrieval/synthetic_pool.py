"""The clip pool of the synthetic benchmark, which the pipeline builds itself; no Prefect here.

A folder under `$ITH_HOME/retrieval/synthetic/<hash of its settings>/` with a `captions.csv`,
written once and reused; `pool.load_pool` reads it like any other pool folder.

    pool = load_pool(synthetic_pool(cfg))
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ith_core.config import SPLITS
from ith_core.data import synthetic
from ith_core.data.synthetic import ANCHOR, TASK_DIRS
from ith_core.imagination.tone_generator import ToneGenerator
from ith_core.retrieval.pool import _sha256, retrieval_home, write_pool_folder
from ith_core.retrieval.queries import normalize_span
from storage.audio_store import encode_audio, pcm16

# Bump when the synthetic pool's clips or captions change for the same settings.
SYNTHETIC_POOL_VERSION = 1
SYNTHETIC_CAPTIONS = ("a {name} call", "the sound of a {name}")


@dataclass(frozen=True)
class _RenderSettings:
    duration_s: float
    generator_id: str


def _synthetic_sources(bench: Path) -> list[tuple[str, str, str | None, str | None]]:
    """(name, source key, split, task) of every source of the synthetic benchmark, the anchor last
    (no split, no task)."""
    out = []
    for split in SPLITS:
        with open(bench / TASK_DIRS["animal"] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        # The animal task's span is "<name> call": its source key is that span, as the rows spell it.
        for span in sorted({r.get("span") or r.get("description") for r in rows}):
            out.append((span.split()[0], normalize_span(span), split, "animal"))
        with open(bench / TASK_DIRS["pitch"] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            names = sorted({r["span1"] for r in csv.DictReader(handle)})
        out += [(name, normalize_span(name), split, "pitch") for name in names]
    return out + [(ANCHOR, ANCHOR, None, None)]


def covered_names(sources: list[tuple[str, str, str | None, str | None]], coverage: float, key: str) -> set[str]:
    """The names that get clips: in every (task, split), the first round(coverage x names) in an order
    hashed from `key` and the name (independent of the answers); the anchor always.

    Nested: the names covered at a lower coverage are covered at every higher one.
    """
    groups: dict[tuple, list[str]] = {}
    for name, _, split, task in sources:
        if task is not None:
            groups.setdefault((task, split), []).append(name)
    covered = {name for name, _, _, task in sources if task is None}
    for names in groups.values():
        ranked = sorted(names, key=lambda n: hashlib.sha256(f"pool-coverage:{key}:{n}".encode()).hexdigest())
        covered |= set(ranked[: round(coverage * len(ranked))])
    return covered


def synthetic_pool(cfg) -> str:
    """The clip pool of the synthetic benchmark (a folder; written once, reused): its sources' clips.

    For every source name of both tasks, and the whistle anchor, `len(SYNTHETIC_CAPTIONS)` clips
    rendered by the tone generator (the source's hidden tone with fresh nuisance), captioned "a
    kelomit call" and "the sound of a kelomit"; `source` is the name's span as the benchmark
    writes it ("kelomit call" for an animal-like name, "kelomit" for a pitch-like one), `split`
    the name's split (none for the anchor, which every split shares). Clip seeds hash
    ("audiobert-pool", benchmark, name, k): independent of ITH's candidate seeds. With
    `synthetic.pool_coverage` below 1, only that share of each split's names (per task) get clips
    (`covered_names`, nested over coverages, the same clips as the full pool); the others are
    still queried and retrieve the best-matching other clip, as a real pool that lacks a sound
    does. The pool never holds the tone generator's errors. Clips last
    `imagine.duration_s` (what the profile's AST window is sized for). File names are hashes
    of the bytes.
    """
    bench = synthetic.ensure_benchmark(cfg.synthetic)
    coverage = float(cfg.synthetic.pool_coverage)
    settings = {
        "version": SYNTHETIC_POOL_VERSION,
        # The rows' hash, not the files': the tone generator's error rate leaves the pool as it is.
        "benchmark": synthetic.rows_hash(cfg.synthetic),
        "duration_s": float(cfg.imagine.duration_s),
        "captions": SYNTHETIC_CAPTIONS,
    }
    if coverage < 1.0:  # left out at 1.0, so the full pool keeps its folder and its clips
        settings["pool_coverage"] = coverage
    key = _sha256(json.dumps(settings, sort_keys=True).encode())[:16]
    final = retrieval_home() / "synthetic" / key
    if (final / "captions.csv").is_file():
        return str(final)
    generator = ToneGenerator.from_folder(
        bench / "tone_generator", _RenderSettings(float(cfg.imagine.duration_s), f"audiobert-pool-{key}")
    )
    clips = []
    sources = _synthetic_sources(bench)
    covered = covered_names(sources, coverage, settings["benchmark"])
    for name, source, split, _ in sources:
        if name not in covered:
            continue
        for k, template in enumerate(SYNTHETIC_CAPTIONS):
            seed = int.from_bytes(
                hashlib.sha256(f"audiobert-pool:{settings['benchmark']}:{name}:{k}".encode()).digest()[:8], "big"
            ) & (2**63 - 1)
            data = encode_audio(pcm16(generator.render(generator.sources(name), seed)), generator.sample_rate)
            clips.append((data, template.format(name=name), source, split or ""))
    named = [s for s in sources if s[3] is not None]
    counts = {"clips": len(clips), "names": len(named), "names_with_clips": sum(s[0] in covered for s in named)}
    return write_pool_folder(final, clips, {**settings, **counts})
