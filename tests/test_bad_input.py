"""Bad input a user may give `ith`: one clear `ith:` line naming the value and the rule, no traceback,
nothing created where it does not belong, and deterministic failures never retried."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    """Runs `ith` from an empty folder, so anything it creates shows up."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "afile").write_text("")
    return work


def _ith(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _only(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["rerun-failed", "../x"], 2, "ith: run id '../x' is not a valid run folder name: it must use only letters"),
        (["rerun-failed", ".."], 2, "ith: run id '..' is not a valid run folder name"),
        (["rerun-failed", "nosuch"], 1, "ith: no run 'nosuch' under runs (missing "),
        (["predict", "A [MASK] barks.", "--run", "../x"], 2, "ith: run id '../x' is not a valid run folder name"),
        (["predict", "A [MASK] barks.", "--run", "nosuch"], 1, "ith: no run 'nosuch' under runs"),
        (["predict", "A dog barks.", "--run", "nosuch"], 2, "ith: sentence 1: 'A dog barks.' has no [MASK]"),
        (["predict", "A [MASK] [MASK].", "--run", "nosuch"], 2, "has 2 [MASK] tokens; use exactly one"),
        (["run", "--run-id", "a/b"], 2, "ith: invalid setting: run_id must use only letters, digits"),
        (["run", "--run-id", ".."], 2, "ith: invalid setting: run_id must use only letters"),
        (["run", "--run-root", "afile"], 2, "ith: run root afile is a file, not a folder"),
        (["run", "--run-root", "afile/runs"], 2, "ith: run root afile/runs cannot be created: "),
        (
            ["run", "--model-dir", "afile"],
            2,
            "ith: invalid setting: model_dir must be a folder, got 'afile': it is a file",
        ),
        (["run", "--model-dir", "afile/m"], 2, "it is under afile, which is a file"),
        (
            ["run", "--tasks", "animals"],
            2,
            "ith: invalid setting: data.tasks[0] must be 'animal' or 'pitch', got 'animals'",
        ),
        (["run", "--splits", "train,eval"], 2, "ith: invalid setting: data.splits[1] must be"),
        (["run", "--set", "span.epochs=1.5"], 2, "ith: invalid setting: span.epochs must be an integer, got 1.5"),
        (["run", "--set", "fusion.max_length=4"], 2, "ith: invalid setting: fusion.max_length must be >= 8, got 4"),
    ],
)
def test_bad_input_gets_one_line_and_creates_nothing(in_tmp, capsys, argv, code, message):
    got, err = _ith(capsys, *argv)
    assert got == code, err
    assert message in err and "Traceback" not in err
    assert err.startswith("ith")
    assert _only(in_tmp) == ["afile"]  # no runs/ folder, no ../x, no empty run folder


def test_a_device_this_machine_lacks_is_refused_before_anything_runs(in_tmp, capsys):
    import torch

    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    got, err = _ith(capsys, "run", "--device", missing)
    assert got == 2 and f"ith: invalid setting: device must be a device this machine has, got '{missing}'" in err
    assert "use --device auto or cpu" in err and _only(in_tmp) == ["afile"]


def test_a_run_root_you_cannot_write_is_named(in_tmp, capsys, tmp_path):
    if os.geteuid() == 0:
        locked = "/proc/sys/ith-runs"  # root may write anywhere but here
    else:
        (tmp_path / "locked").mkdir(mode=0o555)
        locked = str(tmp_path / "locked" / "runs")
    got, err = _ith(capsys, "run", "--run-root", locked)
    assert got == 2 and f"ith: run root {locked} does not exist and cannot be created: you cannot write to" in err


def test_retry_only_what_can_change():
    from prefect.states import Failed

    from ith_core.config import ConfigError
    from ith_core.data.auditorybench import DataError
    from ith_core.models.profiles import ModelNotAvailableError
    from storage.layout import StageMismatchError
    from tasks.runtime import is_transient, retry_transient

    never = [
        DataError("bad file"),
        ConfigError("bad setting"),
        ModelNotAvailableError("no model"),
        StageMismatchError("other settings"),
        ValueError("v"),
        KeyError("k"),
        RuntimeError("bug"),
        FileNotFoundError("gone"),
        PermissionError("denied"),
        NotADirectoryError("file"),
    ]
    retried = [
        ConnectionError("reset"),
        TimeoutError("slow"),
        OSError(5, "I/O error"),
        ChildProcessError("trainer killed by signal 9"),
    ]
    for error in never:
        assert retry_transient(None, None, Failed(data=error)) is False, error
    for error in retried:
        assert retry_transient(None, None, Failed(data=error)) is True, error
    assert not is_transient(None)


def test_every_task_with_retries_uses_the_retry_policy():
    from prefect import Task

    import tasks.audiobert
    import tasks.fusion
    import tasks.imagine
    import tasks.ingest
    import tasks.report
    import tasks.spans
    from tasks.runtime import retry_transient

    found = [
        obj
        for module in (tasks.ingest, tasks.spans, tasks.report, tasks.audiobert, tasks.fusion, tasks.imagine)
        for obj in vars(module).values()
        if isinstance(obj, Task)
    ]
    assert len(found) >= 12
    for task in found:
        # generate-candidates gets its retries from imagine.retries (with_options keeps the condition).
        if task.retries or task.name == "generate-candidates":
            assert task.retry_condition_fn is retry_transient, task.name
    shard = tasks.imagine.generate_candidates.with_options(retries=2)
    assert shard.retry_condition_fn is retry_transient


@pytest.fixture()
def broken_bench(tmp_path, bench_dir) -> Path:
    """The benchmark copy with four broken files, each broken another way."""
    root = tmp_path / "bench"
    for task_dir in ("animal_sound_recognition", "sound_pitch_comparison"):
        shutil.copytree(bench_dir / task_dir, root / task_dir)
    (root / "animal_sound_recognition" / "dev.csv").unlink()
    (root / "animal_sound_recognition" / "wiki.csv").write_text(
        "animal,description,sentence,A,B,C,D,Answer\ndog,bark,A [MASK] barks.,dog,cat\n"
    )
    (root / "sound_pitch_comparison" / "dev.csv").write_text("sentence,answer,span1\nA [MASK] x,higher,a\n")
    (root / "sound_pitch_comparison" / "test.csv").write_bytes(b"")
    return root


@pytest.mark.slow
def test_broken_files_fail_once_naming_each_without_retries_or_tracebacks(broken_bench, tmp_path, ith_home):
    """Through `ith run` (a real flow): every broken file named in one `ith:` error, the ingest task run once."""
    env = {
        **os.environ,
        "ITH_HOME": str(ith_home),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "run",
            "--run-root",
            str(tmp_path / "runs"),
            "--data-dir",
            str(broken_bench),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    err = done.stderr
    assert "Traceback" not in err and "Retry" not in err, err
    assert [line for line in err.splitlines() if line.startswith("ith")] == [
        "ith: 4 of 8 AuditoryBench files cannot be used:"
    ]
    named = [line for line in err.splitlines() if line.startswith("  - ")]
    assert [line.split(":")[0] for line in named] == [
        f"  - {broken_bench}/{name}"
        for name in (
            "animal_sound_recognition/dev.csv",
            "animal_sound_recognition/wiki.csv",
            "sound_pitch_comparison/dev.csv",
            "sound_pitch_comparison/test.csv",
        )
    ]
    assert "not found" in named[0] and "data row 1 has 5 fields" in named[1]
    assert "missing column 'span2'" in named[2] and "empty file" in named[3]
    assert "Finished in state Failed" not in err  # the error is printed once, by `ith`
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir()), "a run folder was left"


@pytest.mark.slow
def test_no_benchmark_anywhere_fails_once_saying_how_to_fill_the_home_and_leaves_no_run_folder(tmp_path):
    """The first deployment run's story: no copy, no home, no network. One error naming the fix, no retries,
    no run folder holding only config.json."""
    env = {key: value for key, value in os.environ.items() if key != "ITH_AUDITORYBENCH_DIR"}
    env.update(
        {
            "ITH_HOME": str(tmp_path / "home"),
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "ITH_AUDITORYBENCH_UPSTREAM": f"file://{tmp_path}/no-upstream/{{commit}}/{{path}}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": "1",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "run", "--run-root", str(tmp_path / "runs")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    err = done.stderr
    assert "Traceback" not in err and "Retrying" not in err, err
    assert [line for line in err.splitlines() if line.startswith("ith")] == [
        "ith: 8 of 8 pinned AuditoryBench files could not be fetched:"
    ]
    assert err.count("`ith data fetch --from DIR`") == 8
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir()), "a run folder was left"
