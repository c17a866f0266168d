"""Selection of the imagine stage: per span occurrence, the first candidate whose CLAP score reaches
its task's threshold; acceptance over a grid of thresholds; the message when no span got audio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ith_core.imagination.clap_scoring import NO_CANDIDATE, first_passing
from storage import run_files


class UndeterminedSelectionError(RuntimeError):
    """Lazy sampling stopped below a threshold now asked for: the stored candidates do not decide it."""


def no_audio_message(selection: pa.Table, candidates: pa.Table, num_candidates: int) -> str:
    """Per task: span occurrences without a passing candidate, the threshold, the best score seen; and the fix."""
    best: dict[str, float] = {}
    for audio, score in zip(candidates["audio_id"].to_pylist(), candidates["clap_score"].to_pylist()):
        if score is not None:
            best[audio] = max(score, best.get(audio, float("-inf")))
    parts, fixes = [], []
    for task in sorted(set(selection["task"].to_pylist())):
        rows = [r for r in selection.to_pylist() if r["task"] == task and r["audio_id"] is not None]
        if not rows:
            continue
        threshold = float(rows[0]["threshold"])
        top = max((best[r["audio_id"]] for r in rows if r["audio_id"] in best), default=None)
        failed = sum(1 for r in rows if not r["accepted"])
        parts.append(
            f"task {task}: {failed} of {len(rows)} spans had no candidate at or above its threshold "
            f"{threshold:g} (best CLAP score seen {'none' if top is None else f'{top:.3f}'})"
        )
        if top is not None and failed:
            fixes.append(f"imagine.thresholds.{task}={np.floor(top * 100) / 100:g}")
    lower = f" (e.g. --set {' --set '.join(fixes)})" if fixes else ""
    return (
        f"no span got imagined audio, so ITH has nothing to fuse; {'; '.join(parts)}; lower the threshold"
        f"{lower} or raise imagine.num_candidates (now {num_candidates}) so more candidates are tried"
    )


def _scores_by_id(candidates: pa.Table) -> dict[str, dict[int, tuple[float, str | None]]]:
    out: dict[str, dict[int, tuple[float, str | None]]] = {}
    for a, c, s, p in zip(*(candidates[n].to_pylist() for n in ("audio_id", "candidate", "clap_score", "audio_path"))):
        out.setdefault(a, {})[int(c)] = (float(s), p)
    return out


def select(mapping: pa.Table, candidates: pa.Table, thresholds: dict[str, float], store_url, k: int) -> pa.Table:
    """Per span occurrence: the first candidate at or above its task's threshold (rule of the method).

    Raises `UndeterminedSelectionError` when the stored candidates of an audio id do not decide
    it (lazy sampling stopped below this threshold): `ith run` with that threshold generates the
    missing candidates.
    """
    by_id = _scores_by_id(candidates)
    out, undecided = [], set()
    for row in mapping.to_pylist():
        threshold = thresholds[row["task"]]
        cands = by_id.get(row["audio_id"], {})
        chosen, decided = first_passing({c: s for c, (s, _) in cands.items()}, threshold, k)
        if not decided:
            undecided.add(row["audio_id"])
            continue
        if chosen != NO_CANDIDATE and cands[chosen][1] is None:
            raise RuntimeError(
                f"candidate {chosen} of audio id {row['audio_id']} is chosen at threshold {threshold} "
                "but its audio was not kept (imagine.keep_audio=selected kept other thresholds' "
                "choices): rerun the stage with this threshold to store it"
            )
        score = cands[chosen][0] if chosen != NO_CANDIDATE else None
        out.append(
            {
                "example_id": row["example_id"],
                "task": row["task"],
                "split": row["split"],
                "span_index": row["span_index"],
                "span_text": row["span_text"],
                "audio_id": row["audio_id"],
                "threshold": threshold,
                "candidate": chosen,
                "clap_score": score,
                "audio_path": store_url(cands[chosen][1]) if chosen != NO_CANDIDATE else None,
                "accepted": chosen != NO_CANDIDATE,
            }
        )
    if undecided:
        raise UndeterminedSelectionError(
            f"the stored candidates of {len(undecided)} audio id(s) (e.g. {sorted(undecided)[0]}) do not decide the "
            f"selection at thresholds {thresholds}: lazy sampling stopped below them; run the imagine stage with "
            "these thresholds (`ith run --set imagine.thresholds.TASK=...`), which generates only the missing "
            "candidates"
        )
    return pa.Table.from_pylist(out, schema=run_files.SELECTION_SCHEMA)


def acceptance(mapping: pa.Table, candidates: pa.Table, grid: Sequence[float], k: int) -> pa.Table:
    """Accepted span occurrences per task at every threshold of the grid (no regeneration needed).

    `undetermined`: occurrences whose stored candidates cannot tell (lazy sampling stopped at a
    lower threshold and no stored candidate reaches this one); `accepted` is then a lower bound
    and `rate` counts them as rejected. `sampling=all` leaves none undetermined.
    """
    by_id = {a: {c: s for c, (s, _) in cands.items()} for a, cands in _scores_by_id(candidates).items()}
    rows = []
    tasks = sorted(set(mapping["task"].to_pylist()))
    ids_task = list(zip(mapping["audio_id"].to_pylist(), mapping["task"].to_pylist()))
    for threshold in grid:
        decisions = {a: first_passing(scores, threshold, k) for a, scores in by_id.items()}
        for task in tasks:
            ids = [a for a, t in ids_task if t == task]
            accepted = sum(1 for a in ids if decisions[a][0] != NO_CANDIDATE)
            undetermined = sum(1 for a in ids if not decisions[a][1])
            rows.append(
                {
                    "task": task,
                    "threshold": float(threshold),
                    "occurrences": len(ids),
                    "accepted": accepted,
                    "undetermined": undetermined,
                    "rate": accepted / len(ids) if ids else 0.0,
                }
            )
    return pa.Table.from_pylist(rows)
