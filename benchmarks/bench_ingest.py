"""Time `ingest` of the whole AuditoryBench against a bare csv.DictReader pass over the same files.

Both run in this process, best of N each, so the ratio is comparable across machines. The
target is a whole-benchmark ingest under 5 s.

    .venv/bin/python benchmarks/bench_ingest.py [--data-dir DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path

import fsspec

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from ith_core.config import SPLITS, TASKS  # noqa: E402
from ith_core.data.auditorybench import TASK_DIRS, ingest  # noqa: E402

TARGET_S = 5.0


def baseline(data_dir: str) -> int:
    """Read every file through fsspec and walk it with csv.DictReader; nothing else."""
    rows = 0
    for task in TASKS:
        for split in SPLITS:
            with fsspec.open(f"{data_dir.rstrip('/')}/{TASK_DIRS[task]}/{split}.csv", "rb") as handle:
                text = handle.read().decode("utf-8")
            rows += sum(1 for _ in csv.DictReader(io.StringIO(text, newline="")))
    return rows


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("ITH_AUDITORYBENCH_DIR") or str(REPO_ROOT.parent / "shared" / "auditorybench"),
        help="benchmark directory or fsspec URL (default: $ITH_AUDITORYBENCH_DIR, "
        "else ../shared/auditorybench beside the repository)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each; the best counts")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    base_s, base_rows = best_of(args.repeats, baseline, args.data_dir)
    ingest_s, result = best_of(args.repeats, ingest, args.data_dir)
    rows = sum(c["rows_in"] for c in result.counts.values())
    if rows != base_rows:
        sys.exit(f"row counts differ: ingest read {rows} rows, csv.DictReader {base_rows}")

    print(f"data: {args.data_dir} ({len(result.counts)} files, {rows} rows), best of {args.repeats}")
    print(f"baseline csv.DictReader: {base_s:.4f} s  {rows / base_s:,.0f} rows/s")
    print(
        f"ingest:                  {ingest_s:.4f} s  {rows / ingest_s:,.0f} rows/s  "
        f"({ingest_s / base_s:.1f}x the baseline)"
    )
    print(f"target < {TARGET_S:.0f} s: {'met' if ingest_s < TARGET_S else 'MISSED'}")
    if ingest_s >= TARGET_S:
        sys.exit(1)


if __name__ == "__main__":
    main()
