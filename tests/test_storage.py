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
    with pytest.raises(
        RunRootError, match=f"run root {locked}/a/b does not exist and cannot be created: you cannot write to {locked}"
    ):
        check_run_root(str(locked / "a" / "b"))
    check_run_root(str(tmp_path / "new" / "runs"))  # creatable: fine, and nothing was created
    check_run_root("memory://anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["afile"] if os.geteuid() == 0 else ["afile", "locked"])


# -- the shared audio store's manifests -------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_finished_manifest_is_never_replaced_by_a_shorter_one(tmp_path, where):
    from storage.audio_store import AudioStore

    store = AudioStore(str(tmp_path / "runs") if where == "local" else f"memory://ith-store-{uuid.uuid4().hex}")
    row = {
        "audio_id": "ab" * 16,
        "prompt": "x sound",
        "clap_text": "x",
        "clap_id": "m",
        "audio_path": None,
        "duration_s": 1.0,
        "sample_rate": 44100,
        "channels": 2,
        "checksum": None,
        "shard": "part-x",
    }
    rows = [{**row, "candidate": c, "seed": c, "clap_score": 0.1 * c} for c in range(3)]
    store.write_manifest("part-x", rows[:2])
    store.write_manifest("part-x", rows)  # a longer one (sampled further) replaces it
    assert store.read_candidates()["candidate"].to_pylist() == [0, 1, 2]
    store.write_manifest("part-x", rows[:1])  # a shorter one is dropped before its rename
    assert store.read_candidates()["candidate"].to_pylist() == [0, 1, 2]
    assert not [f for f in store.fs.find(store.root) if ".tmp-" in f]


# -- one writer per run ---------------------------------------------------------------------------

HOLD = r"""
import sys
from storage.layout import RunLayout
from storage.run_lock import RunLock
lock = RunLock(RunLayout(sys.argv[1], "run-1"))
record = lock.acquire("holder " + sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
lock.release(record)
"""


@pytest.fixture()
def holder(tmp_path):
    """Another process holding run-1's lock until its stdin is closed."""
    import subprocess
    import sys

    root = str(tmp_path / "runs")
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert process.stdout.readline() == "held\n"
    yield root, process
    process.kill()
    process.wait()


def test_a_held_run_is_refused_naming_the_holder(holder):
    import socket

    from storage.run_lock import RunLock, RunLockedError

    root, process = holder
    lock = RunLock(RunLayout(root, "run-1"))
    with pytest.raises(RunLockedError) as refused:
        lock.acquire("ith run")
    assert (
        f"run run-1 is being written by holder {root} (host {socket.gethostname()}, pid {process.pid}, since "
        in str(refused.value)
    )
    assert "pass --wait-lock to wait" in str(refused.value) and lock.read()["pid"] == process.pid


def test_wait_lock_waits_for_the_holder_then_takes_the_run(holder):
    import threading

    from storage.run_lock import RunLock

    root, process = holder
    lock = RunLock(RunLayout(root, "run-1"))
    waiting, got = threading.Event(), {}
    thread = threading.Thread(
        target=lambda: got.update(
            record=lock.acquire("ith run", wait=True, poll_s=0.05, on_wait=lambda holder: waiting.set())
        )
    )
    thread.start()
    assert waiting.wait(60)  # it saw the holder and waits ...
    assert "record" not in got
    process.stdin.close()  # ... until the holder releases
    thread.join(60)
    assert process.wait(60) == 0 and got["record"]["pid"] == os.getpid() and lock.read() == got["record"]
    lock.release(got["record"])
    assert lock.read() is None


def test_a_stale_lock_is_taken_over_and_the_same_process_may_hold_again(tmp_path, caplog):
    import socket

    import psutil

    from storage.run_lock import LOCK_FILE, RunLock, hold_run_lock, this_process

    layout = RunLayout(str(tmp_path / "runs"), "run-1")
    lock = RunLock(layout)
    mine = this_process("ith run")
    # A holder on this host whose pid now runs another process (started at another time), then one
    # whose pid is not running at all: both are gone.
    for stale in (
        {**mine, "pid": os.getppid(), "process_start_time": psutil.Process().create_time() - 3600.0},
        {**mine, "pid": 2**22 + 1},
    ):
        layout.write_json(stale, LOCK_FILE)
        record = lock.acquire("ith run")
        assert record["pid"] == os.getpid() and lock.read() == record
        assert f"taking over the stale lock of ith run (host {socket.gethostname()}, pid {stale['pid']}" in caplog.text
        lock.release(record)
    # A live holder on another host cannot be judged from here: refused.
    layout.write_json({**mine, "host": "elsewhere"}, LOCK_FILE)
    with pytest.raises(Exception, match="host elsewhere"):
        lock.acquire("ith run")
    layout.fs.rm(layout.path(LOCK_FILE))
    # The flow under `ith run`: the same process takes it again, and only the outer hold releases it.
    with hold_run_lock(layout, "ith run"):
        with hold_run_lock(layout, "flow run"):
            pass
        assert lock.read()["command"] == "ith run"
    assert lock.read() is None
    assert not layout.exists(), "an empty run folder made only for the lock is left"


def test_memory_root_lock_is_create_if_absent():
    from storage.run_lock import RunLock, RunLockedError, this_process

    layout = RunLayout(f"memory://ith-lock-{uuid.uuid4().hex}", "run-1")
    first = RunLock(layout).acquire("ith run")
    # Another process's record (the memory filesystem is per process: write one as it would).
    layout.fs.rm(layout.path("_LOCK.json"))
    layout.write_json({**this_process("ith run"), "host": "node-2", "pid": 7}, "_LOCK.json")
    with pytest.raises(RunLockedError, match="host node-2, pid 7"):
        RunLock(layout).acquire("ith rerun-failed")
    assert first["command"] == "ith run"


def test_an_unreadable_lock_is_taken_over_locally_once_old_and_refused_remotely(tmp_path, caplog):
    from storage.run_lock import LOCK_FILE, UNREADABLE_STALE_S, RunLock, RunLockedError

    layout = RunLayout(str(tmp_path / "runs"), "run-1")
    layout.write_bytes(b"", LOCK_FILE)  # a writer died between creating the file and filling it
    old = os.stat(layout.path(LOCK_FILE)).st_mtime - UNREADABLE_STALE_S - 1
    os.utime(layout.path(LOCK_FILE), (old, old))
    record = RunLock(layout).acquire("ith run")
    assert RunLock(layout).read() == record and "an unreadable lock file" in caplog.text
    remote = RunLayout(f"memory://ith-lock-{uuid.uuid4().hex}", "run-1")
    remote.write_bytes(b"{not json", LOCK_FILE)
    with pytest.raises(RunLockedError, match="is being written by a process"):
        RunLock(remote).acquire("ith run")
