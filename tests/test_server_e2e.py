"""End to end through a real Prefect server and worker on loopback, as a user would run it.

`ith serve` starts the server, pool, deployments and worker; `prefect deployment run
ith/full-pipeline` runs the tiny pipeline; the Prefect client (tests/helpers/prefect_probe.py,
in a subprocess pointed at the server) checks the flow run, its task runs and artifacts. Then:
a rerun recomputes nothing, and a run with one broken generation shard, once retried with
`prefect flow-run retry`, reruns exactly that shard.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers.summary_checks import assert_every_stage_cached  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "helpers" / "prefect_probe.py"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, ith_home, tiny_models, bench_dir):
    state = tmp_path_factory.mktemp("serve")
    port = _free_port()
    fault_file = state / "fault"
    env = dict(os.environ)
    env.update({
        "ITH_SERVE_DIR": str(state),
        "ITH_HOME": str(ith_home),
        "ITH_AUDITORYBENCH_DIR": str(bench_dir),
        "HF_HUB_OFFLINE": "1",
        # Test-only fault injection (tests/helpers/faults.py), installed in the worker's flow runs by
        # tests/helpers/fault_site/sitecustomize.py; the shards to break are read from this file at run time.
        "ITH_TEST_FAULT_SHARDS": f"@{fault_file}",
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO / "tests" / "helpers" / "fault_site"),
                                                  os.environ.get("PYTHONPATH", "")] if p),
    })
    started = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--port", str(port), "--json"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stderr[-3000:] + started.stdout[-2000:]
        info = json.loads(started.stdout.strip().splitlines()[-1])
        client_env = {**env, "PREFECT_API_URL": info["api"], "PREFECT_HOME": str(state / "prefect")}
        yield {"env": client_env, "info": info, "fault_file": fault_file, "runs": tmp_path_factory.mktemp("runs")}
    finally:
        stopped = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--stop", "--json"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        for name in ("server", "worker"):
            assert not (state / "serve" / f"{name}.pid").exists()


def _prefect(server, *args, timeout=120):
    done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=server["env"],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def _run_deployment(server, params: dict) -> str:
    args = ["deployment", "run", "ith/full-pipeline"]
    for name, value in params.items():
        args += ["--param", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    out = _prefect(server, *args)
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def _probe(server, flow_run_id: str, wait_s: float = 900) -> dict:
    done = subprocess.run([sys.executable, str(PROBE), flow_run_id, "--wait", str(wait_s)], cwd=REPO,
                          env=server["env"], capture_output=True, text=True, timeout=wait_s + 120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _params(server, seed: int) -> dict:
    return {
        "run_root": str(server["runs"]),
        "sample_limit": 4,
        "splits": ["train", "dev"],
        "span": {"max_train_steps": 10},
        "imagine": {"seed": seed, "shard_size": 2},
    }


def _summaries(server) -> dict[str, Path]:
    runs = [p for p in Path(server["runs"]).iterdir() if (p / "summary.json").is_file()]
    by_id = {json.loads((p / "summary.json").read_text())["run_id"]: p for p in runs}
    assert by_id, "no run folder with a summary.json"
    return by_id


def test_deployment_runs_then_reruns_without_recomputing(server):
    first = _probe(server, _run_deployment(server, _params(server, seed=42)))
    assert first["state"] == "COMPLETED", first
    names = {t["name"].rsplit("-", 1)[0] for t in first["task_runs"]}
    for expected in ("ingest-auditorybench", "prepare-models", "train-span-detector", "detect-spans",
                     "plan-imagine", "generate-candidates", "select-candidates", "write-summary"):
        assert expected in names, (expected, sorted(names))
    assert all(t["state"] == "COMPLETED" for t in first["task_runs"]), first["task_runs"]
    keys = {a["key"] for a in first["artifacts"] if a["key"]}
    for kind in ("ingest", "spans", "imagine", "imagine-progress", "fusion", "fusion-curves", "report"):
        assert any(k.startswith(f"ith-{kind}-") for k in keys), (kind, sorted(keys))

    runs = _summaries(server)
    assert len(runs) == 1
    run_dir = next(iter(runs.values()))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"]["imagine"]["candidates"] > 0
    assert (run_dir / "imagine" / "selection.parquet").is_file()
    manifests = sorted((Path(server["runs"]) / "_imagine" / "shards").glob("part-*.parquet"))
    assert manifests
    mtimes = {m.name: m.stat().st_mtime_ns for m in manifests}

    train_logs = {p: p.stat().st_mtime_ns for p in run_dir.glob("fusion_train_*/train.log")}
    assert len(train_logs) == 2 and summary["stages"]["fusion"]["ours_vs_paper"]

    second = _probe(server, _run_deployment(server, _params(server, seed=42)))
    assert second["state"] == "COMPLETED", second
    again = json.loads((run_dir / "summary.json").read_text())
    # Every stage is reused, fusion (features, both trainings, evaluation) included.
    assert_every_stage_cached(again)
    assert set(_shard_status(run_dir).values()) == {"skipped"}
    assert {m.name: m.stat().st_mtime_ns for m in manifests} == mtimes
    assert {p: p.stat().st_mtime_ns for p in train_logs} == train_logs  # no training was launched

    # The report deployment for the existing run: evaluation is already done, the report is rewritten.
    report_html = run_dir / "report" / "report.html"
    report_html.unlink()
    out = _prefect(server, "deployment", "run", "ith-report/for-run", "--param", f"run_id={run_dir.name}",
                   "--param", f"run_root={server['runs']}")
    report_run = _probe(server, re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1))
    assert report_run["state"] == "COMPLETED", report_run
    assert any(a["key"] and a["key"].startswith("ith-report-") for a in report_run["artifacts"])
    assert report_html.is_file() and "ITH vs text-only" in report_html.read_text()


def test_broken_shard_is_the_only_one_a_retry_reruns(server):
    params = _params(server, seed=7)  # new audio ids: every shard is new
    server["fault_file"].write_text("0\n")
    failed = _probe(server, _run_deployment(server, params))
    assert failed["state"] == "FAILED", failed
    run_dir = _run_dir_for_seed(server, 7)
    status = _shard_status(run_dir)
    broken = [name for name, s in status.items() if s == "failed"]
    assert len(broken) == 1, status
    assert any(s == "done" for s in status.values()), "the other shards completed"
    shards_dir = Path(server["runs"]) / "_imagine" / "shards"
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards_dir.glob("part-*.parquet")}

    server["fault_file"].write_text("")
    _prefect(server, "flow-run", "retry", failed["id"])
    retried = _probe(server, failed["id"])
    assert retried["state"] == "COMPLETED", retried
    status = _shard_status(run_dir)
    assert {name for name, s in status.items() if s == "done"} == set(broken), status
    assert all(s == "skipped" for name, s in status.items() if name not in broken), status
    after = {p.name: p.stat().st_mtime_ns for p in shards_dir.glob("part-*.parquet")}
    assert {n: t for n, t in after.items() if n in mtimes} == mtimes, "finished shards were not rewritten"
    assert len(after) == len(mtimes) + 1
    assert json.loads((run_dir / "summary.json").read_text())["stages"]["imagine"]["candidates"] > 0


def _shard_status(run_dir: Path) -> dict[str, str]:
    """What the last flow run did to each shard: done, skipped or failed."""
    status = json.loads((run_dir / "imagine" / "shards.json").read_text())
    return {entry["shard"]: entry["status"] for entry in status["shards"]}


def _run_dir_for_seed(server, seed: int) -> Path:
    for path in Path(server["runs"]).iterdir():
        config = path / "config.json"
        if config.is_file() and json.loads(config.read_text())["imagine"]["seed"] == seed:
            return path
    raise AssertionError(f"no run folder with imagine.seed={seed}")
