"""`ith serve --stop` signals only the processes `ith serve` started (pid, start time and command line)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture()
def serve_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ITH_SERVE_DIR", str(tmp_path / "ith"))
    from flows.serve import serve_paths

    paths = serve_paths()
    paths.state.mkdir(parents=True)
    return paths


@pytest.fixture()
def sleeper():
    """A process of our own in its own session, like the ones `ith serve` starts."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def test_stop_leaves_a_process_whose_id_was_reused(serve_dir, sleeper):
    from flows.serve import _record_pid, stop

    _record_pid(serve_dir, "worker", sleeper.pid)
    record = json.loads(serve_dir.pid_file("worker").read_text())
    assert record["pid"] == sleeper.pid and record["cmdline"][-1] == "import time; time.sleep(120)"
    # The recorded process ended and its id now belongs to another one (another start time).
    serve_dir.pid_file("worker").write_text(json.dumps({**record, "create_time": record["create_time"] - 3600}))
    stopped = stop()
    assert sleeper.poll() is None, "a process `ith serve` did not start was signalled"
    assert "worker" not in stopped and "is not the worker `ith serve` started" in stopped["left_alone"][0]
    assert not serve_dir.pid_file("worker").exists()  # the stale record is gone
    # Same start time, other command line: left alone too.
    serve_dir.pid_file("server").write_text(json.dumps({**record, "cmdline": ["prefect", "server", "start"]}))
    assert "server" not in stop() and sleeper.poll() is None
    # A legacy record (a bare pid) cannot be checked: left alone, and the user is told how to stop it.
    serve_dir.pid_file("server").write_text(f"{sleeper.pid}\n")
    assert "cannot be checked" in stop()["left_alone"][0] and sleeper.poll() is None


def test_stop_stops_the_process_it_started(serve_dir, sleeper):
    from flows.serve import _record_pid, stop

    _record_pid(serve_dir, "server", sleeper.pid)
    assert stop() == {"server": sleeper.pid}
    assert sleeper.wait(timeout=10) is not None
    assert not serve_dir.pid_file("server").exists()
