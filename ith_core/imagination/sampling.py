"""Lazy rejection sampling's rules: what an audio id's tasks ask of its candidates (its work spec),
whether the stored candidates satisfy it, and one prompt's state while a shard samples it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ith_core.imagination.clap_scoring import NO_CANDIDATE, first_passing


def work_spec(thresholds: Sequence[float], sampling: str, keep_audio: str) -> tuple[float | None, list[float] | None]:
    """(stop threshold, keep thresholds) of an audio id whose occurrences have these task thresholds.

    Lazy sampling stops at the first candidate passing the highest threshold: for every lower
    one the first passing candidate comes no later, so each task selects what it would select
    from all candidates. keep_audio=selected stores the first passing candidate of each threshold.
    """
    distinct = sorted({float(t) for t in thresholds})
    return (distinct[-1] if sampling == "lazy" else None), (distinct if keep_audio == "selected" else None)


def needs_work(stored: dict[int, dict], k: int, stop: float | None, keep: list[float] | None) -> bool:
    """Whether the stored candidate rows of an audio id (index -> row) lack something its spec needs."""
    scores = {c: r["clap_score"] for c, r in stored.items()}
    if stop is None:
        needed = list(range(k))
        if any(c not in stored for c in needed):
            return True
    else:
        j, decided = first_passing(scores, stop, k)
        if not decided:
            return True
        needed = list(range(j + 1 if j != NO_CANDIDATE else k))
    if keep is None:
        return any(stored[c]["audio_path"] is None for c in needed)
    chosen = {first_passing(scores, t, k)[0] for t in keep} - {NO_CANDIDATE}
    return any(stored[c]["audio_path"] is None for c in chosen)


class Prompt:
    """One planned audio id in a shard: its candidates' scores so far and whether it still samples."""

    def __init__(self, row: dict, seeds: list[int], stored: dict[int, dict], k: int) -> None:
        self.row, self.seeds, self.stored, self.k = row, seeds, stored, k
        self.stop = row.get("stop_threshold")
        self.keep = row.get("keep_thresholds")
        self.scores: dict[int, float] = {}
        self.open = True

    def audio_needed(self, c: int, score: float) -> bool:
        """Whether candidate c's audio is stored: always, or (keep selected) when it is the first
        candidate to pass one of the prompt's thresholds."""
        if self.keep is None:
            return True
        return any(score >= t and not any(s >= t for s in self.scores.values()) for t in self.keep)

    def reusable(self, c: int) -> bool:
        row = self.stored.get(c)
        return row is not None and (row["audio_path"] is not None or not self.audio_needed(c, row["clap_score"]))

    def take(self, c: int, score: float) -> None:
        self.scores[c] = score
        if (self.stop is not None and score >= self.stop) or c == self.k - 1:
            self.open = False
