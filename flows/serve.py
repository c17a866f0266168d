"""`ith serve`: a local Prefect server, work pool, deployments and worker, all on loopback.

    ith serve            start (or reuse) them and print the UI address
    ith serve --stop     stop what `ith serve` started, by process id

State lives in the project: the server's database in `.ith/prefect/` (PREFECT_HOME) and the
process ids and logs in `.ith/serve/`. Analytics are off. The deployments are those of
`prefect.yaml`, deployed from the repository root, so workers run this checkout's code.

A process file records the process id, its start time and its command line: `--stop` signals a
process only if all three still match, so a recycled process id (the server exited and the
system gave its id to another program) is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from ith_core.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
POOL = "ith-local"
# How long `--stop` waits for a process after each signal before trying the next, firmer one.
STOP_WAIT_S = 5.0


class ServeError(RuntimeError):
    """Something the user can fix before `ith serve` can start or stop (a taken port, a bad process file)."""


@dataclass(frozen=True)
class ServePaths:
    root: Path

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def state(self) -> Path:
        return self.root / "serve"

    def pid_file(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state / f"{name}.log"


def serve_paths() -> ServePaths:
    return ServePaths(Path(os.environ.get("ITH_SERVE_DIR", REPO_ROOT / ".ith")).resolve())


def _prefect() -> list[str]:
    return [sys.executable, "-m", "prefect"]


def serve_env(paths: ServePaths, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(paths.prefect_home),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "ITH_PROJECT_DIR": str(REPO_ROOT),
            # The deployments' run_root default (prefect.yaml), absolute so the form shows where runs go.
            "ITH_RUNS_DIR": str(Path(env.get("ITH_RUNS_DIR") or REPO_ROOT / "runs").resolve()),
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "TRANSFORMERS_OFFLINE": env.get("TRANSFORMERS_OFFLINE", "1"),
        }
    )
    return env


def _valid_pid(value: object) -> int | None:
    """`value` if it can name one process; never 0 or negative (os.kill would signal a group or every process)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
        return value
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, OverflowError):
        return False
    try:  # a zombie child of this process is not alive
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def _identity(pid: int) -> dict | None:
    """{"pid", "create_time", "cmdline"} of a running process, None if there is none."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return {"pid": pid, "create_time": process.create_time(), "cmdline": process.cmdline()}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _record_pid(paths: ServePaths, name: str, pid: int) -> None:
    identity = _identity(pid) or {"pid": pid, "create_time": None, "cmdline": None}
    paths.pid_file(name).write_text(json.dumps(identity) + "\n")


def _same_process(recorded: dict, now: dict) -> bool:
    # Start times come from the same clock and formula each time; a tolerance covers rounding only.
    return (
        recorded.get("create_time") is not None
        and abs(recorded["create_time"] - now["create_time"]) < 0.05
        and recorded.get("cmdline") == now["cmdline"]
    )


def _started_process(paths: ServePaths, name: str) -> tuple[int | None, str | None]:
    """(pid, None) if the process `ith serve` recorded as `name` still runs; else (None, why not) or
    (None, None) when there is no record or the process has exited. `ServeError` if the record
    holds no process id (garbage, 0 or a negative number, which os.kill reads as a group or all)."""
    try:
        text = paths.pid_file(name).read_text()
    except OSError:
        return None, None
    try:
        recorded = json.loads(text)
        if isinstance(recorded, int):  # written by an `ith serve` before start times were recorded
            recorded = {"pid": recorded, "create_time": None, "cmdline": None}
        pid = _valid_pid(recorded["pid"])
    except (ValueError, KeyError, TypeError):
        pid = None
    if pid is None:
        raise ServeError(f"{paths.pid_file(name)} holds {text.strip()[:80]!r}, not a process id")
    now = _identity(pid) if _alive(pid) else None
    if now is None:
        return None, None
    if recorded.get("create_time") is None:
        return None, (
            f"process {pid} was recorded without its start time, so it cannot be checked; it was left "
            f"alone: if it is the {name}, stop it with `kill -INT -- -{pid}`"
        )
    if not _same_process(recorded, now):
        return None, (
            f"process {pid} is not the {name} `ith serve` started (started at {now['create_time']:.2f}, "
            f"command {' '.join(now['cmdline'])[:120]!r}); it was left alone"
        )
    return pid, None


def _read_pid(paths: ServePaths, name: str) -> int | None:
    try:
        return _started_process(paths, name)[0]
    except ServeError as error:
        raise ServeError(f"{error}; remove it with `ith serve --stop`") from None


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def healthy(port: int, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def _spawn(name: str, command: list[str], env: dict[str, str], paths: ServePaths) -> int:
    paths.state.mkdir(parents=True, exist_ok=True)
    log = open(paths.log_file(name), "ab")
    # A session of its own: `--stop` signals the whole process group, the server's uvicorn
    # child included, and the process outlives the `ith serve` command that started it.
    process = subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _record_pid(paths, name, process.pid)  # Popen returns after the exec: the command line is the new one
    return process.pid


def _run(command: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(command[2:])}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def start(port: int = 4200, pool: str = POOL, wait_s: float = 120.0) -> dict:
    paths = serve_paths()
    env = serve_env(paths, port)
    paths.prefect_home.mkdir(parents=True, exist_ok=True)

    server = _read_pid(paths, "server")
    if server is None or not healthy(port):
        if server is not None:
            raise ServeError(
                f"a server started by `ith serve` (pid {server}) runs but does not answer on port "
                f"{port}; stop it with `ith serve --stop` first"
            )
        if healthy(port):
            raise ServeError(
                f"port {port} already serves a Prefect API not started by `ith serve`; "
                f"choose another with --port (e.g. --port {free_port()})"
            )
        if _port_taken(port):
            raise ServeError(
                f"port {port} on 127.0.0.1 is taken by another program; choose a free one with --port "
                f"(e.g. --port {free_port()})"
            )
        server = _spawn(
            "server", [*_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, paths
        )
        deadline = time.monotonic() + wait_s
        while not healthy(port):
            if not _alive(server):
                raise RuntimeError(f"the Prefect server exited; see {paths.log_file('server')}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Prefect server did not answer within {wait_s:.0f} s; see {paths.log_file('server')}"
                )
            time.sleep(1.0)
    (paths.state / "port").write_text(f"{port}\n")

    pools = _run([*_prefect(), "work-pool", "ls"], env, "listing work pools")
    if pool not in pools:
        _run([*_prefect(), "work-pool", "create", pool, "--type", "process"], env, f"creating work pool {pool}")
    _run([*_prefect(), "--no-prompt", "deploy", "--all"], env, "deploying prefect.yaml")

    worker = _read_pid(paths, "worker")
    if worker is None:
        worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": env.get("PREFECT_WORKER_QUERY_SECONDS", "2")}
        worker = _spawn("worker", [*_prefect(), "worker", "start", "--pool", pool], worker_env, paths)
    return {
        "ui": f"http://127.0.0.1:{port}",
        "api": env["PREFECT_API_URL"],
        "server_pid": server,
        "worker_pid": worker,
        "prefect_home": str(paths.prefect_home),
        "logs": str(paths.state),
    }


def running_server() -> str | None:
    """The UI address of a server that `ith serve` started and that answers now, else None."""
    paths = serve_paths()
    try:
        port = int((paths.state / "port").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        if _read_pid(paths, "server") is None or not healthy(port, timeout_s=0.5):
            return None
    except ServeError:  # `ith serve` and `ith serve --stop` report it; a run just records locally
        return None
    return f"http://127.0.0.1:{port}"


def _signal(pid: int, sig: int) -> None:
    """Signals the process, and its whole group when it leads one (the server's uvicorn child with it).

    A process that does not lead a group (started by hand, or by an older `ith serve`) is signalled
    alone: `killpg` on its id would reach nothing.
    """
    try:
        leads_group = os.getpgid(pid) == pid
        if leads_group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return not _alive(pid)


def stop() -> dict:
    """Stops the worker, then the server; each by its process group, firmly if it lingers.

    Returns {name: pid} of what was stopped, `left_alone`: why a recorded process was not
    signalled (its id now belongs to another process), `bad_records`: process files that held no
    process id (removed, so the next `--stop` is clean), and `still_running`: processes that
    outlived every signal (their process files are kept).
    """
    paths = serve_paths()
    stopped: dict = {}
    for name in ("worker", "server"):
        try:
            pid, refused = _started_process(paths, name)
        except ServeError as error:
            paths.pid_file(name).unlink(missing_ok=True)
            stopped.setdefault("bad_records", []).append(f"{error}; removed it, nothing was signalled")
            continue
        if pid is None:
            if refused:
                stopped.setdefault("left_alone", []).append(refused)
            paths.pid_file(name).unlink(missing_ok=True)
            continue
        # The worker ignores SIGTERM for a while; SIGINT twice is its own clean shutdown.
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            _signal(pid, sig)
            if _wait_gone(pid, STOP_WAIT_S):
                break
        if _alive(pid):
            stopped.setdefault("still_running", []).append(
                f"the {name} (pid {pid}) is still running after SIGKILL; its process file was kept"
            )
            continue
        paths.pid_file(name).unlink(missing_ok=True)
        stopped[name] = pid
    return stopped


def add_serve_parser(subparsers):
    parser = subparsers.add_parser(
        "serve",
        help="start a local Prefect server, work pool, deployments and worker",
        description="Start (or reuse) a Prefect server on 127.0.0.1 with its database under .ith/prefect, create "
        f"the process work pool '{POOL}', deploy prefect.yaml, start a worker, and print the UI "
        "address. `ith serve --stop` stops what it started, by process id.",
    )
    parser.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default: 4200)")
    parser.add_argument("--stop", action="store_true", help="stop the worker and server started by `ith serve`")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def cmd_serve(args) -> int:
    if args.stop:
        stopped = stop()
        notes = ("left_alone", "bad_records", "still_running")
        done = {k: v for k, v in stopped.items() if k not in notes}
        if args.json:
            print(json.dumps(stopped))
        else:
            print(("stopped " + ", ".join(f"{k} (pid {v})" for k, v in done.items())) if done else "nothing to stop")
            for line in stopped.get("left_alone", []):
                print(f"not stopped: {line}")
        # What the user must look at: one `ith:` line, and a failure status.
        problems = stopped.get("bad_records", []) + stopped.get("still_running", [])
        if problems:
            print(f"ith: {'; '.join(problems)}", file=sys.stderr)
        return 1 if problems else 0
    info = start(args.port)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"Prefect UI:  {info['ui']}")
    print(f"worker pid {info['worker_pid']}, server pid {info['server_pid']}, logs in {info['logs']}")
    print("To run the pipeline through the server:")
    print(f"  export PREFECT_API_URL={info['api']}")
    print("  prefect deployment run ith/full-pipeline --param sample_limit=16")
    print("Stop everything with: ith serve --stop")
    return 0
