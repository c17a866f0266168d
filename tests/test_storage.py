"""The run layout: atomic writes, stage markers, local and memory:// roots behave the same."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from storage.layout import DONE_MARKER, RunIdError, RunLayout, RunRootError, StageMismatchError, check_run_root


@pytest.fixture(params=["local", "memory"])
def layout(request, tmp_path):
    root = str(tmp_path / "runs") if request.param == "local" else f"memory://ith-test-{uuid.uuid4().hex}"
    return RunLayout(root, "run-1")


def test_tables_and_json_round_trip(layout):
    table = pa.table({"example_id": ["a", "b"], "n": [1, 2]})
    layout.write_table(table, "ingest", "examples.parquet")
    assert layout.read_table("ingest", "examples.parquet").equals(table)
    layout.write_json({"x": 1}, "config.json")
    assert layout.read_json("config.json") == {"x": 1}
    assert layout.url("config.json").endswith("run-1/config.json")


def test_failed_write_leaves_neither_file_nor_temporary(layout, monkeypatch):
    def broken_mv(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(layout.fs, "mv", broken_mv)
    with pytest.raises(OSError, match="disk full"):
        layout.write_json({"x": 1}, "stage", "out.json")
    monkeypatch.undo()
    assert not layout.exists("stage", "out.json")
    assert layout.fs.ls(layout.path("stage"), detail=False) == []


def test_stage_marker_reuse_mismatch_and_clearing(layout):
    assert layout.stage_done("spans", "key-1") is None
    layout.write_json({"partial": True}, "spans", "part.json")
    layout.clear_stage("spans")  # no marker: the half-written stage is removed
    assert not layout.exists("spans")

    layout.write_json({"whole": True}, "spans", "part.json")
    layout.mark_done("spans", "key-1", {"rows": 3})
    assert layout.exists("spans", DONE_MARKER)
    assert layout.stage_done("spans", "key-1") == {"rows": 3}
    layout.clear_stage("spans")  # a finished stage is never cleared
    assert layout.exists("spans", "part.json")
    with pytest.raises(StageMismatchError, match="other settings"):
        layout.stage_done("spans", "key-2")


def test_put_dir_copies_a_local_folder(layout, tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(b"\0" * 10)
    layout.put_dir(src, "span_detector", "model")
    local = layout.local_dir("span_detector", "model", cache_root=tmp_path / "cache")
    assert (local / "config.json").read_text() == "{}"
    assert (local / "sub" / "weights.bin").read_bytes() == b"\0" * 10


@pytest.mark.parametrize("bad", ["../x", "..", ".hidden", "a/b", "a\\b", "", "x" * 129, "é", "a b", "/abs"])
def test_bad_run_ids_are_refused_before_any_folder_exists(tmp_path, bad):
    root = tmp_path / "runs"
    with pytest.raises(RunIdError, match="not a valid run folder name"):
        RunLayout(str(root), bad)
    assert not root.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_opening_a_run_creates_nothing(tmp_path):
    layout = RunLayout(str(tmp_path / "runs"), "missing")
    assert not layout.exists("config.json")
    assert not (tmp_path / "runs").exists()
    layout.write_json({"x": 1}, "config.json")  # a write creates what it needs
    assert (tmp_path / "runs" / "missing" / "config.json").is_file()


def test_remote_copy_is_keyed_by_run_root_and_refreshed_when_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("ITH_HOME", str(tmp_path / "home"))
    roots = [f"memory://ith-test-{uuid.uuid4().hex}" for _ in range(2)]
    a, b = (RunLayout(root, "same-id") for root in roots)
    a.write_json({"root": "a"}, "stage", "x.json")
    b.write_json({"root": "b"}, "stage", "x.json")
    local_a, local_b = a.local_dir("stage"), b.local_dir("stage")
    # Under ITH_HOME, one copy per (run root, run id): two roots never share one.
    assert local_a != local_b and str(local_a).startswith(str(tmp_path / "home" / "run-cache"))
    assert json.loads((local_a / "x.json").read_text()) == {"root": "a"}
    assert json.loads((local_b / "x.json").read_text()) == {"root": "b"}
    # Unchanged remote: the copy is reused as it is.
    inode = (local_a / "x.json").stat().st_ino
    assert a.local_dir("stage") == local_a and (local_a / "x.json").stat().st_ino == inode
    # Changed remote (a rerun rewrote the stage): the next call refreshes the copy.
    a.write_json({"root": "a", "rerun": True}, "stage", "x.json")
    a.write_json({}, "stage", "new.json")
    assert json.loads((a.local_dir("stage") / "x.json").read_text()) == {"root": "a", "rerun": True}
    assert sorted(p.name for p in local_a.iterdir()) == ["new.json", "x.json"]
    with pytest.raises(FileNotFoundError, match="holds no files"):
        a.local_dir("nothing-here")


def test_run_root_checks_name_the_path_and_the_problem(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(RunRootError, match=f"run root {afile} is a file, not a folder"):
        check_run_root(str(afile))
    with pytest.raises(RunRootError, match=f"run root {afile}/runs cannot be created: {afile} is a file"):
        check_run_root(str(afile / "runs"))
    # Unwritable: a read-only folder for a normal user; root writes anywhere but /proc/sys (Linux).
    if os.geteuid() == 0:
        locked = Path("/proc/sys")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
    with pytest.raises(RunRootError, match=f"run root {locked} is a folder you cannot write to"):
        check_run_root(str(locked))
    with pytest.raises(RunRootError, match=f"run root {locked}/a/b does not exist and cannot be created: you "
                                           f"cannot write to {locked}"):
        check_run_root(str(locked / "a" / "b"))
    check_run_root(str(tmp_path / "new" / "runs"))  # creatable: fine, and nothing was created
    check_run_root("memory://anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["afile"] if os.geteuid() == 0 else ["afile", "locked"])
