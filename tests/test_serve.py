"""`ith serve --stop` signals only the processes `ith serve` started (pid, start time and command line)."""

from __future__ import annotations

import json
import os
import signal
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


def test_serve_on_a_taken_port_names_it_and_suggests_another(serve_dir, capsys):
    import socket

    from cli.main import main

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code = main(["serve", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"ith: port {port} on 127.0.0.1 is taken by another program; choose a free one with --port")
    assert not serve_dir.pid_file("server").exists()  # nothing was started


@pytest.mark.parametrize("garbage", ["-1", "0", "not a pid", '{"pid": -1, "create_time": 1.0, "cmdline": []}'])
def test_stop_removes_a_process_file_holding_no_process_id(serve_dir, capsys, garbage):
    from cli.main import main

    serve_dir.pid_file("worker").write_text(garbage + "\n")
    assert main(["serve", "--stop"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ith: {serve_dir.pid_file('worker')} holds "), err
    assert "not a process id; removed it, nothing was signalled" in err
    assert not serve_dir.pid_file("worker").exists()
    # The next --stop has nothing left to trip on.
    assert main(["serve", "--stop"]) == 0 and "nothing to stop" in capsys.readouterr().out


def test_stop_signals_a_process_that_leads_no_group(serve_dir):
    """A recorded process in its parent's group (killpg on its id reaches nothing) is still stopped."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        from flows.serve import _record_pid, stop

        assert os.getpgid(process.pid) != process.pid
        _record_pid(serve_dir, "worker", process.pid)
        assert stop() == {"worker": process.pid}
        assert process.wait(timeout=10) is not None
    finally:
        process.kill()
        process.wait()


def test_stop_does_not_claim_a_process_that_outlived_every_signal(serve_dir, sleeper, monkeypatch, capsys):
    import flows.serve
    from cli.main import main

    flows.serve._record_pid(serve_dir, "server", sleeper.pid)
    sent = []
    # As if the process could not be signalled (another user's, or stuck in the kernel): it lives on.
    monkeypatch.setattr(flows.serve, "_signal", lambda pid, sig: sent.append(sig))
    monkeypatch.setattr(flows.serve, "STOP_WAIT_S", 0.2)
    assert main(["serve", "--stop"]) == 1
    out, err = capsys.readouterr()
    assert sent[-1] == signal.SIGKILL and sleeper.poll() is None
    assert "stopped" not in out and "nothing to stop" in out
    assert err == f"ith: the server (pid {sleeper.pid}) is still running after SIGKILL; its process file was kept\n"
    assert serve_dir.pid_file("server").exists()
