"""The clip pool of the synthetic benchmark, which the pipeline builds itself; no Prefect here.

A folder under `$ITH_HOME/retrieval/synthetic/<hash of its settings>/` with a `captions.csv`,
written once and reused; `pool.load_pool` reads it like any other pool folder.

    pool = load_pool(synthetic_pool(cfg))
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from ith_core.config import SPLITS
from ith_core.data import synthetic
from ith_core.data.synthetic import ANCHOR, TASK_DIRS
from ith_core.imagination.tone_generator import ToneGenerator
from ith_core.retrieval.pool import _sha256, retrieval_home
from ith_core.retrieval.queries import normalize_span
from storage.audio_store import encode_audio, pcm16

# Bump when the synthetic pool's clips or captions change for the same settings.
SYNTHETIC_POOL_VERSION = 1
SYNTHETIC_CAPTIONS = ("a {name} call", "the sound of a {name}")


@dataclass(frozen=True)
class _RenderSettings:
    duration_s: float
    generator_id: str


def _synthetic_sources(bench: Path) -> list[tuple[str, str, str | None]]:
    """(name, source key, split) of every source of the synthetic benchmark, the anchor last (no split)."""
    out = []
    for split in SPLITS:
        with open(bench / TASK_DIRS["animal"] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        # The animal task's span is "<name> call": its source key is that span, as the rows spell it.
        for span in sorted({r.get("span") or r.get("description") for r in rows}):
            out.append((span.split()[0], normalize_span(span), split))
        with open(bench / TASK_DIRS["pitch"] / f"{split}.csv", newline="", encoding="utf-8") as handle:
            names = sorted({r["span1"] for r in csv.DictReader(handle)})
        out += [(name, normalize_span(name), split) for name in names]
    return out + [(ANCHOR, ANCHOR, None)]


def synthetic_pool(cfg) -> str:
    """The clip pool of the synthetic benchmark (a folder; written once, reused): every source's clips.

    For every source name of both tasks, and the whistle anchor, `len(SYNTHETIC_CAPTIONS)` clips
    rendered by the tone generator (the source's hidden tone with fresh nuisance), captioned "a
    kelomit call" and "the sound of a kelomit"; `source` is the name's span as the benchmark
    writes it ("kelomit call" for an animal-like name, "kelomit" for a pitch-like one), `split`
    the name's split (none for the anchor, which every split shares). Clip seeds hash
    ("audiobert-pool", benchmark, name, k): independent of ITH's candidate seeds. Clips last
    `imagine.duration_s` (what the profile's AST window is sized for). File names are hashes
    of the bytes.
    """
    bench = synthetic.ensure_benchmark(cfg.synthetic)
    settings = {
        "version": SYNTHETIC_POOL_VERSION,
        "benchmark": synthetic.settings_hash(cfg.synthetic),
        "duration_s": float(cfg.imagine.duration_s),
        "captions": SYNTHETIC_CAPTIONS,
    }
    key = _sha256(json.dumps(settings, sort_keys=True).encode())[:16]
    final = retrieval_home() / "synthetic" / key
    if (final / "captions.csv").is_file():
        return str(final)
    generator = ToneGenerator.from_folder(
        bench / "tone_generator", _RenderSettings(float(cfg.imagine.duration_s), f"audiobert-pool-{key}")
    )
    staging = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    (staging / "clips").mkdir(parents=True)
    try:
        rows = []
        for name, source, split in _synthetic_sources(bench):
            for k, template in enumerate(SYNTHETIC_CAPTIONS):
                seed = int.from_bytes(
                    hashlib.sha256(f"audiobert-pool:{settings['benchmark']}:{name}:{k}".encode()).digest()[:8], "big"
                ) & (2**63 - 1)
                data = encode_audio(pcm16(generator.render(generator.sources(name), seed)), generator.sample_rate)
                relative = f"clips/{_sha256(data)[:16]}.wav"
                (staging / relative).write_bytes(data)
                rows.append([relative, template.format(name=name), source, split or ""])
        sink = io.StringIO(newline="")
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(["path", "caption", "source", "split"])
        writer.writerows(rows)
        (staging / "pool.json").write_text(json.dumps({**settings, "clips": len(rows)}, indent=2))
        # The captions table goes last: a folder with it is whole.
        (staging / "captions.csv").write_text(sink.getvalue(), encoding="utf-8")
        try:
            staging.rename(final)
        except OSError:
            if not (final / "captions.csv").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(final)
