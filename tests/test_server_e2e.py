"""End to end through a real Prefect server and worker on loopback, as a user would run it.

The benchmark is put in the worker's home with `ith data fetch`; `ith serve` starts the server,
pool, deployments and worker; `prefect deployment run ith/full-pipeline` with no parameters runs
the tiny pipeline; the Prefect client (tests/helpers/prefect_probe.py, in a subprocess pointed at
the server) checks the flow runs (names, tags), task runs (names, the inputs the default UI can
read, skipped shards), every edge of the UI's graphs (graph-v2: only data dependencies) and
artifacts. Headless Chromium saves the runs list, a flow run's graph, its Task Runs tab (which must
list the task runs) and the deployment form as PNGs under $ITH_TEST_ARTIFACTS/prefect-ui (default:
the test's tmp dir). Then: a rerun
recomputes nothing, and a run with one broken generation shard, once retried with
`prefect flow-run retry`, reruns exactly that shard.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ith_core.net import free_port

sys.path.insert(0, str(Path(__file__).parent))
from helpers.browser import PNG_SIGNATURE, artifact_dir, browser  # noqa: E402
from helpers.summary_checks import assert_every_stage_cached  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "helpers" / "prefect_probe.py"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, ith_home, tiny_models, bench_dir):
    state = tmp_path_factory.mktemp("serve")
    runs = tmp_path_factory.mktemp("runs")
    port = free_port()
    fault_file = state / "fault"
    env = dict(os.environ)
    # As a user would: the benchmark in the home (`ith data fetch`), not named by the environment.
    env.pop("ITH_AUDITORYBENCH_DIR", None)
    env.update(
        {
            "ITH_SERVE_DIR": str(state),
            "ITH_HOME": str(ith_home),
            # The deployments' run_root default (prefect.yaml): this test's folder, not the checkout's runs/.
            "ITH_RUNS_DIR": str(runs),
            "HF_HUB_OFFLINE": "1",
            # Test-only fault injection (tests/helpers/faults.py), installed in the worker's flow runs by
            # tests/helpers/fault_site/sitecustomize.py; the shards to break are read from this file at run time.
            "ITH_TEST_FAULT_SHARDS": f"@{fault_file}",
            "PYTHONPATH": os.pathsep.join(
                p for p in [str(REPO / "tests" / "helpers" / "fault_site"), os.environ.get("PYTHONPATH", "")] if p
            ),
        }
    )
    fetched = subprocess.run(
        [sys.executable, "-m", "cli.main", "data", "fetch", "--from", str(bench_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    started = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert started.returncode == 0, started.stderr[-3000:] + started.stdout[-2000:]
        info = json.loads(started.stdout.strip().splitlines()[-1])
        client_env = {**env, "PREFECT_API_URL": info["api"], "PREFECT_HOME": str(state / "prefect")}
        yield {"env": client_env, "info": info, "fault_file": fault_file, "runs": runs}
    finally:
        stopped = subprocess.run(
            [sys.executable, "-m", "cli.main", "serve", "--stop", "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        for name in ("server", "worker"):
            assert not (state / "serve" / f"{name}.pid").exists()


def _prefect(server, *args, timeout=120):
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env=server["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
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
    done = subprocess.run(
        [sys.executable, str(PROBE), flow_run_id, "--wait", str(wait_s)],
        cwd=REPO,
        env=server["env"],
        capture_output=True,
        text=True,
        timeout=wait_s + 120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _params(server, seed: int) -> dict:
    return {
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


def _task_runs(probe: dict) -> dict[str, dict]:
    return {t["name"]: t for t in probe["task_runs"]}


def _base_name(name: str) -> str:
    """A task run's name without the random suffix Prefect gives default names (`detect-spans-a1b`)."""
    return name if name.startswith(("generate ", "train ", "evaluate ")) else name.rsplit("-", 1)[0]


def _one(task_runs: dict[str, dict], prefix: str) -> dict:
    found = [t for name, t in task_runs.items() if name.startswith(prefix)]
    assert found, (prefix, sorted(task_runs))
    return found[0]


def test_deployment_runs_then_reruns_without_recomputing(server, tmp_path):
    # No parameters: the deployment's defaults (tiny, auditorybench, run_root = $ITH_RUNS_DIR).
    first = _probe(server, _run_deployment(server, {}))
    assert first["state"] == "COMPLETED", first
    runs = _summaries(server)
    assert len(runs) == 1
    run_id, run_dir = next(iter(runs.items()))
    assert run_id.startswith("tiny-")

    # Flow runs named from the run id and tagged with run, profile and benchmark.
    assert first["name"] == f"ith-{run_id}", first["name"]
    names = {r["name"] for r in first["flow_runs"]}
    assert {f"imagine-{run_id}", f"fusion-{run_id}"} <= names, names
    for flow_run in first["flow_runs"]:
        assert {f"run:{run_id}", "profile:tiny", "benchmark:auditorybench"} <= set(flow_run["tags"]), flow_run

    # Task runs named by what they did: the shard, the system and seed.
    task_runs = _task_runs(first)
    for prefix in (
        "ingest-auditorybench",
        "prepare-models",
        "train-span-detector",
        "detect-spans",
        "plan-imagine",
        "generate part-",
        "select-candidates",
        "train ith seed 42",
        "evaluate ith seed 42",
        "train bert-text seed 42",
        "write-summary",
        "write-report",
    ):
        _one(task_runs, prefix)
    assert all(t["state"] == "COMPLETED" for t in first["task_runs"]), first["task_runs"]
    # The graph: each task is linked to the task runs it reads from, not to everything.
    ids = {t["id"]: name for name, t in task_runs.items()}

    def upstream_of(prefix: str) -> set[str]:
        return {_base_name(ids[i]) for i in _one(task_runs, prefix)["upstream"] if i in ids}

    assert "train-span-detector" in upstream_of("detect-spans"), upstream_of("detect-spans")
    assert "ingest-auditorybench" in upstream_of("train-span-detector")
    assert "plan-imagine" in upstream_of("generate part-")
    assert "write-summary" in upstream_of("write-report")
    assert "train ith seed 42" in upstream_of("evaluate ith seed 42")
    # Inputs the default UI can read: a subflow's result recorded as a `flow_run` input empties its
    # Task Runs tab ("Invalid TaskInputResponse").
    assert all(set(t["input_types"]) <= {"task_run", "parameter", "constant"} for t in first["task_runs"]), [
        (t["name"], t["input_types"]) for t in first["task_runs"]
    ]
    # Every edge of every graph the UI draws (graph-v2 of the run and of its subflows) is a data dependency,
    # and the ones that show the stages' order are there, the imagine subflow's included.
    edges = {edge for run_edges in first["graph_edges"].values() for edge in run_edges}
    stray = sorted(e for e in edges if not _data_dependency(*e.split(" -> ")))
    assert not stray, (stray, first["graph_edges"])
    kinds = {tuple(_node(label)[0] for label in e.split(" -> ")) for e in edges}
    for needed in [
        ("ingest-auditorybench", "train-span-detector"),
        ("train-span-detector", "detect-spans"),
        ("detect-spans", "ith-imagine"),
        ("detect-spans", "ith-fusion"),
        ("plan-imagine", "generate"),
        ("generate", "record-shard-status"),
        ("record-shard-status", "select-candidates"),
        ("prepare-examples", "encode-audio"),
        ("train", "evaluate"),
        ("evaluate", "summarise-results"),
        ("detect-spans", "write-summary"),
        ("write-summary", "write-report"),
    ]:
        assert needed in kinds, (needed, first["graph_edges"])
    shards = [t["name"] for t in first["task_runs"] if t["name"].startswith("generate part-")]
    assert {f"plan-imagine -> {s}" for s in shards} <= {
        f"{_node(e.split(' -> ')[0])[0]} -> {e.split(' -> ')[1]}" for e in edges
    }, first["graph_edges"]

    # Progress and metrics from inside the tasks, in the run log.
    logs = "\n".join(first["progress_logs"])
    for line in (
        r"span detector epoch 1/\d+: mean loss",
        r"span detector: dev span F1 [\d.]+ untrained -> [\d.]+ trained",
        r"shards done: 1 of \d+",
        r"ith-animal-seed42 epoch 1/\d+: loss [\d.]+, dev accuracy",
    ):
        assert re.search(line, logs), (line, logs[-3000:])
    artifacts = {a["key"]: a for a in first["artifacts"] if a["key"]}
    for kind in ("ingest", "spans", "imagine", "imagine-progress", "fusion", "fusion-curves", "report"):
        assert any(k.startswith(f"ith-{kind}-") for k in artifacts), (kind, sorted(artifacts))
    # The report's location as copyable text (a code span holding the absolute path): browsers do not
    # open file:// links from the UI.
    report_artifact = artifacts[f"ith-report-{run_id}"]
    assert report_artifact["type"] == "markdown", report_artifact
    assert f"`{run_dir.resolve() / 'report' / 'report.html'}`" in report_artifact["data"], report_artifact
    assert "file://" not in report_artifact["data"], report_artifact
    # The report itself, readable from the UI: the whole Markdown report as a rendered artifact.
    page = artifacts[f"ith-report-page-{run_id}"]
    assert page["type"] == "markdown" and f"# Imagine to Hear: run {run_id}" in page["data"], page["data"][:500]
    # (report.md itself is rewritten by the later report run, so its sections are checked, not its bytes)
    assert all(part in page["data"] for part in ("## Run overview", "| system | source | animal dev |")), page["data"][
        :500
    ]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"]["imagine"]["candidates"] > 0
    assert (run_dir / "imagine" / "selection.parquet").is_file()
    manifests = sorted((Path(server["runs"]) / "_imagine" / "shards").glob("part-*.parquet"))
    assert manifests
    mtimes = {m.name: m.stat().st_mtime_ns for m in manifests}

    train_logs = {p: p.stat().st_mtime_ns for p in run_dir.glob("fusion_train/*/train.log")}
    assert {p.parent.name for p in train_logs} >= {"ith-seed42", "bert-text-seed42"}
    assert summary["stages"]["fusion"]["ours_vs_paper"]

    second = _probe(server, _run_deployment(server, {}))
    assert second["state"] == "COMPLETED", second
    assert second["name"] == f"ith-{run_id}"
    again = json.loads((run_dir / "summary.json").read_text())
    # Every stage is reused, fusion (inputs, every training, evaluation) included.
    assert_every_stage_cached(again)
    assert set(_shard_status(run_dir).values()) == {"skipped"}
    assert {m.name: m.stat().st_mtime_ns for m in manifests} == mtimes
    assert {p: p.stat().st_mtime_ns for p in train_logs} == train_logs  # no training was launched
    # A shard skipped because its manifest exists shows as skipped in the UI, not as a plain Completed.
    shards = [t for t in second["task_runs"] if t["name"].startswith("generate part-")]
    assert len(shards) == len(manifests) and all(t["state_name"] == "Skipped" for t in shards), shards
    assert all(t["state_name"] == "Completed" for t in first["task_runs"] if t["name"].startswith("generate part-"))

    # The form's defaults: run_root as the folder it resolves to on the worker; every parameter described.
    deployment = _prefect(server, "deployment", "inspect", "ith/full-pipeline")
    assert f"'run_root': '{server['runs']}'" in deployment, deployment[:3000]
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import ith_pipeline

    schema = parameter_schema(ith_pipeline).model_dump()["properties"]
    assert all(p.get("description") for p in schema.values()), [
        n for n, p in schema.items() if not p.get("description")
    ]
    _screenshots(server, first, tmp_path)

    # The report deployment for the existing run: evaluation is already done, the report is rewritten.
    report_html = run_dir / "report" / "report.html"
    report_html.unlink()
    out = _prefect(server, "deployment", "run", "ith-report/for-run", "--param", f"run_id={run_id}")
    report_run = _probe(server, re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1))
    assert report_run["state"] == "COMPLETED", report_run
    assert report_run["name"] == f"report-{run_id}"
    assert any(a["key"] and a["key"].startswith("ith-report-") for a in report_run["artifacts"])
    text = report_html.read_text()
    assert "Accuracy: every system of the table" in text and 'id="profile-statement"' in text


# Which task (or subflow) reads which one's output: (upstream kind, downstream kind). Train and evaluate
# pairs must also name the same system and seed.
DATA_DEPENDENCIES = {
    ("ingest-auditorybench", "train-span-detector"),
    ("prepare-models", "train-span-detector"),
    ("ingest-auditorybench", "detect-spans"),
    ("prepare-models", "detect-spans"),
    ("train-span-detector", "detect-spans"),
    ("prepare-models", "ith-imagine"),
    ("detect-spans", "ith-imagine"),
    ("prepare-models", "ith-fusion"),
    ("detect-spans", "ith-fusion"),
    ("ingest-auditorybench", "write-summary"),
    ("train-span-detector", "write-summary"),
    ("detect-spans", "write-summary"),
    ("write-summary", "write-report"),
    ("plan-imagine", "generate"),
    ("generate", "record-shard-status"),
    ("record-shard-status", "select-candidates"),
    ("prepare-examples", "encode-audio"),
    ("prepare-examples", "retrieve-clips"),
    ("retrieve-clips", "encode-clips"),
    ("prepare-examples", "train"),
    ("encode-audio", "train"),
    ("encode-clips", "train"),
    ("prepare-examples", "evaluate"),
    ("encode-audio", "evaluate"),
    ("encode-clips", "evaluate"),
    ("train", "evaluate"),
    ("evaluate", "summarise-results"),
}


def _node(label: str) -> tuple[str, str]:
    """A graph label as (kind, what): `train ith seed 42` -> (train, ith seed 42); a subflow
    `ith-imagine / imagine-<run>` -> (ith-imagine, ''); `detect-spans-a1b` -> (detect-spans, '')."""
    if " / " in label:
        return label.split(" / ", 1)[0], ""
    for verb in ("generate", "train", "evaluate"):
        if label.startswith(verb + " "):
            return verb, label[len(verb) + 1 :]
    return _base_name(label), ""


def _data_dependency(parent: str, child: str) -> bool:
    (up, up_what), (down, down_what) = _node(parent), _node(child)
    if (up, down) == ("train", "evaluate"):
        return up_what == down_what
    return (up, down) in DATA_DEPENDENCIES


def _task_runs_tab_shown(driver) -> bool:
    """Clicks the flow run page's Task Runs tab; true once the tab shows its list (or says it has none)."""
    from selenium.webdriver.common.by import By

    tabs = [e for e in driver.find_elements(By.CSS_SELECTOR, "[role=tablist] #task-runs") if e.is_displayed()]
    if not tabs:
        return False
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", tabs[0])
    tabs[0].click()
    text = driver.find_element(By.TAG_NAME, "body").text
    # The Logs tab (the default) is gone once its first line is: the text below is the Task Runs tab's.
    return "Beginning flow run" not in text and ("write-report" in text or "No task runs" in text)


def _screenshots(server, flow_run: dict, tmp_path) -> None:
    """The runs list, the flow run's graph and task runs, and the deployment's run form, as a user sees them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ui = server["info"]["ui"]
    out = artifact_dir(tmp_path, "prefect-ui")
    pages = {
        "runs-list.png": (f"{ui}/runs", lambda d: flow_run["name"] in d.page_source),
        "flow-run-graph.png": (
            f"{ui}/runs/flow-run/{flow_run['id']}",
            lambda d: d.find_elements(By.TAG_NAME, "canvas"),
        ),
        # The Task Runs tab lists the task runs (it said "6 Task runs" over "No task runs" when a task
        # had a subflow's result among its inputs). The tab is opened by a click, as a user does.
        "flow-run-task-runs.png": (f"{ui}/runs/flow-run/{flow_run['id']}", _task_runs_tab_shown),
        "deployment-form.png": (
            f"{ui}/deployments/deployment/{flow_run['deployment_id']}/run",
            lambda d: "run_root" in d.page_source or "Run Root" in d.page_source,
        ),
    }
    driver = browser(tmp_path, window="1600,1200")
    try:
        for name, (url, ready) in pages.items():
            driver.get(url)
            WebDriverWait(driver, 90, poll_frequency=1).until(ready)
            time.sleep(3)  # let the graph finish laying out
            shot = out / name
            assert driver.save_screenshot(str(shot)), name
            print(f"\nPrefect UI screenshot: {shot}")
            if name == "flow-run-task-runs.png":
                listed = driver.find_element(By.TAG_NAME, "body").text
                assert "No task runs" not in listed, listed[-2000:]
                for task_name in ("ingest-auditorybench", "detect-spans", "write-summary", "write-report"):
                    assert task_name in listed, (task_name, listed[-2000:])
                console = [entry["message"] for entry in driver.get_log("browser")]
                assert not [m for m in console if "TaskInputResponse" in m], console
    finally:
        driver.quit()
    for name in pages:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, (name, len(data))


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
