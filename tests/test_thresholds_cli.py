"""`ith thresholds RUN`: acceptance per threshold from a run's stored CLAP scores, checked against
a plain count over scores written for the test (lazy sampling's unknown candidates included)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from cli.main import main
from ith_core.config import RunConfig
from storage.layout import RunLayout

# audio id -> stored candidate scores (index order). "a4" was sampled lazily: only candidate 0
# exists, so its acceptance above 0.2 is unknown.
SCORES = {"a1": [0.2, 0.6, 0.1], "a2": [0.05, 0.0, 0.3], "a3": [0.7, 0.1, 0.1], "a4": [0.2]}
OCCURRENCES = [("animal", "a1"), ("animal", "a1"), ("animal", "a2"), ("pitch", "a3"), ("pitch", "a4")]


@pytest.fixture()
def run(tmp_path):
    cfg = RunConfig.for_profile(
        "tiny",
        run_root=str(tmp_path),
        run_id="scored",
        device="cpu",
        imagine={"num_candidates": 3, "thresholds": {"animal": 0.4, "pitch": 0.3}},
    )
    layout = RunLayout(str(tmp_path), "scored")
    layout.write_json(cfg.resolved(), "config.json")
    layout.write_table(
        pa.Table.from_pylist(
            [
                {
                    "example_id": f"{task}/dev/{i:05d}",
                    "task": task,
                    "split": "dev",
                    "span_index": 0,
                    "span_text": "s",
                    "prompt": "s sound",
                    "clap_text": "s",
                    "audio_id": audio,
                }
                for i, (task, audio) in enumerate(OCCURRENCES)
            ]
        ),
        "imagine",
        "mapping.parquet",
    )
    layout.write_table(
        pa.Table.from_pylist(
            [
                {"audio_id": audio, "candidate": k, "clap_score": score, "audio_path": f"audio/{audio}/{k}.wav"}
                for audio, scores in SCORES.items()
                for k, score in enumerate(scores)
            ]
        ),
        "imagine",
        "candidates.parquet",
    )
    return str(tmp_path)


def plain_count(task: str, threshold: float) -> tuple[int, int]:
    """(accepted, undetermined): the first of 3 candidates at or above the threshold, in order."""
    accepted = undetermined = 0
    for t, audio in OCCURRENCES:
        if t != task:
            continue
        scores = SCORES[audio]
        for k in range(3):
            if k >= len(scores):
                undetermined += 1
                break
            if scores[k] >= threshold:
                accepted += 1
                break
    return accepted, undetermined


def test_thresholds_match_a_plain_count_and_choose_by_acceptance(run, capsys):
    assert main(["thresholds", "scored", "--run-root", run, "--grid", "0.1,0.5", "--acceptance", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["thresholds"] == {"animal": 0.4, "pitch": 0.3}
    grid = {(r["task"], r["threshold"]) for r in result["rows"]}
    assert grid == {(t, x) for t in ("animal", "pitch") for x in (0.1, 0.3, 0.4, 0.5)}  # the run's own added
    for r in result["rows"]:
        accepted, undetermined = plain_count(r["task"], r["threshold"])
        assert (r["accepted"], r["undetermined"]) == (accepted, undetermined), r
        assert r["occurrences"] == sum(1 for t, _ in OCCURRENCES if t == r["task"])
    # animal: 2 of 3 at 0.5; pitch: 1 of 2 at 0.5 (a4 unknown, counted as rejected).
    assert result["for_acceptance"]["threshold"] == {"animal": 0.5, "pitch": 0.5}
    assert main(["thresholds", "scored", "--run-root", run, "--acceptance", "0.9"]) == 0
    text = capsys.readouterr().out
    assert "<- the run's" in text and "undetermined: lazy sampling stopped" in text
    assert "animal: threshold 0.3 keeps at least 90 %" in text and "pitch: threshold 0.2 keeps at least 90 %" in text


def test_thresholds_mistakes_are_one_line(run, tmp_path, capsys):
    assert main(["thresholds", "scored", "--run-root", run, "--grid", "0.1,high"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "ith: invalid setting: --grid must be comma-separated numbers, got '0.1,high'"
    )
    assert main(["thresholds", "scored", "--run-root", run, "--acceptance", "60"]) == 2
    assert "share between 0 and 1" in capsys.readouterr().err
    RunLayout(run, "scored").fs.rm(RunLayout(run, "scored").path("imagine"), recursive=True)
    assert main(["thresholds", "scored", "--run-root", run]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ith: run 'scored' has no stored CLAP scores yet") and "Traceback" not in err
