"""Query modes and retrieval over a clip pool for the AudioBERT backend; no Prefect here.

Queries: `query_template` (`"{span} sound"`) over the case-folded span. Mode `clap`: the CLAP
text embedding against the index, dot product (cosine). Mode `text` (for pools whose CLAP is
untrained: tiny profile, synthetic benchmark): TF-IDF cosine between the query's words and each
caption's words (words: runs of letters and digits after NFKC and case folding; idf =
ln((1 + N) / (1 + df)) + 1; raw term counts; vectors L2-normalised). Ties are broken by clip id,
so retrieval is deterministic. Pool policies: `all`; `split_own` (clips whose split is the
row's, plus clips without a split); `exclude_source` (all but the clips whose `source` is the
row's example id or one of its case-folded gold spans).

    hits = retrieve(queries, pool, clap_scores(scorer, index), policy="all", k=50)
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ith_core.retrieval.clip_index import ClipIndex
from ith_core.retrieval.pool import Pool

# Queries scored at once (a chunk x pool float32 matrix).
QUERY_CHUNK = 64
POLICIES = ("all", "split_own", "exclude_source")


def normalize_words(text: str) -> list[str]:
    """Words of `text` for the `text` query mode: runs of letters and digits after NFKC and case folding."""
    return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).casefold())


def normalize_span(text: str) -> str:
    """Case-folded, whitespace-collapsed span (as ith_core.imagination.generators.normalize_span: one key for both backends)."""
    return re.sub(r"\s+", " ", text).strip().casefold()


# ---------------------------------------------------------------------------------------------
# Query modes: each turns query texts into a (queries, clips) score matrix


class CaptionMatcher:
    """The `text` query mode: TF-IDF cosine between a query's words and each caption's words."""

    def __init__(self, captions: Sequence[str]) -> None:
        self.size = len(captions)
        df: Counter = Counter()
        counted = []
        for caption in captions:
            counts = Counter(normalize_words(caption))
            counted.append(counts)
            df.update(counts.keys())
        self.idf = {w: math.log((1 + self.size) / (1 + n)) + 1.0 for w, n in df.items()}
        postings: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for clip, counts in enumerate(counted):
            weights = {w: c * self.idf[w] for w, c in counts.items()}
            norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
            for w, v in weights.items():
                postings[w][0].append(clip)
                postings[w][1].append(v / norm)
        self.postings = {
            w: (np.asarray(i, dtype=np.int64), np.asarray(v, dtype=np.float32)) for w, (i, v) in postings.items()
        }

    def query_vector(self, text: str) -> dict[str, float]:
        counts = Counter(w for w in normalize_words(text) if w in self.idf)
        weights = {w: c * self.idf[w] for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        return {w: v / norm for w, v in weights.items()}

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.size), dtype=np.float32)
        for q, text in enumerate(texts):
            for word, weight in self.query_vector(text).items():
                clips, values = self.postings[word]
                out[q, clips] += weight * values
        return out


def text_scores(pool: Pool) -> Callable[[Sequence[str]], np.ndarray]:
    return CaptionMatcher(pool.manifest["caption"].to_pylist()).scores


def clap_scores(scorer, index: ClipIndex) -> Callable[[Sequence[str]], np.ndarray]:
    """The `clap` query mode: CLAP text embeddings (unit vectors) dot the index's audio embeddings."""

    def scores(texts: Sequence[str]) -> np.ndarray:
        text = scorer.text_embeddings(list(texts)).cpu().numpy().astype(np.float32)
        return text @ index.embeddings.T

    return scores


# ---------------------------------------------------------------------------------------------
# Retrieval


@dataclass(frozen=True)
class Query:
    """One span occurrence to retrieve for: its query text, the row's split and its source keys."""

    text: str
    split: str
    sources: frozenset = frozenset()


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best finite scores, best first; equal scores in index (clip id) order."""
    finite = np.isfinite(scores)
    k = min(k, int(finite.sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-np.where(finite, scores, -np.inf), k - 1)[:k]
    cut = scores[part].min()
    above = np.flatnonzero(finite & (scores > cut))
    equal = np.flatnonzero(scores == cut)[: k - len(above)]
    chosen = np.concatenate([above, equal])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def retrieve(
    queries: Sequence[Query], pool: Pool, score_fn: Callable[[Sequence[str]], np.ndarray], policy: str, k: int
) -> list[dict]:
    """Per query: {clip_index (list), scores (list), allowed (clips the policy left it)}, in query order.

    Each distinct query text is scored once against the whole pool; `split_own` masks the clips of
    other splits (clips without a split stay), `exclude_source` drops the clips whose `source`
    is one of the query's source keys.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    splits = pool.manifest["split"].to_pylist()
    shared = np.asarray([s is None for s in splits])
    by_split = {s: shared | np.asarray([x == s for x in splits]) for s in {q.split for q in queries}}
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(pool.manifest["source"].to_pylist()):
        if source is not None:
            by_source[normalize_span(source)].append(i)

    def excluded(query: Query) -> set[int]:
        if policy != "exclude_source":
            return set()
        return {i for key in query.sources for i in by_source.get(normalize_span(key), ())}

    groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for n, query in enumerate(queries):
        groups[(query.text, query.split if policy == "split_own" else None)].append(n)
    texts = sorted({q.text for q in queries})
    out: list[dict | None] = [None] * len(queries)
    for start in range(0, len(texts), QUERY_CHUNK):
        chunk = texts[start : start + QUERY_CHUNK]
        matrix = score_fn(chunk)
        for row, text in enumerate(chunk):
            for split in [None] if policy != "split_own" else sorted({s for t, s in groups if t == text}):
                members = groups[(text, split)]
                scores = matrix[row] if split is None else np.where(by_split[split], matrix[row], -np.inf)
                allowed_base = pool.size if split is None else int(by_split[split].sum())
                drops = {n: excluded(queries[n]) for n in members}
                candidates = top_k(scores, k + max(len(d) for d in drops.values()))
                for n in members:
                    picked = [int(i) for i in candidates if int(i) not in drops[n]][:k]
                    dropped = sum(1 for i in drops[n] if split is None or by_split[split][i])
                    out[n] = {
                        "clip_index": picked,
                        "scores": [float(scores[i]) for i in picked],
                        "allowed": allowed_base - dropped,
                    }
    return out  # type: ignore[return-value]
