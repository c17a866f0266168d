"""`ith run` end to end on the tiny profile: outputs, accounting, and a rerun that reuses everything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cli.main import main
from flows.pipeline import build_config
from ith_core.config import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from helpers.summary_checks import assert_every_stage_cached  # noqa: E402


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory, ith_home, tiny_models, bench_dir):
    env = dict(os.environ)
    env.update(
        {
            "ITH_HOME": str(ith_home),
            "ITH_AUDITORYBENCH_DIR": str(bench_dir),
            "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect_home")),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": "1",
        }
    )
    return env


def run_cli(args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_ith_run_writes_tables_and_summary_then_reuses_them(cli_env, tmp_path):
    root = tmp_path / "runs"
    args = [
        "run",
        "--run-root",
        str(root),
        "--sample",
        "8",
        "--splits",
        "train,dev",
        "--set",
        "span.max_train_steps=30",
        "--json",
    ]
    first = run_cli(args, cli_env, Path(__file__).resolve().parents[1])
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout[first.stdout.index("{\n") :])
    run_dir = Path(result["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["profile"] == "tiny" and config["span"]["max_train_steps"] == 30

    ingest = summary["stages"]["ingest"]
    assert ingest["cached"] is False
    assert ingest["rows_in"] == 4211 + 592 + 1211 + 197 + 8312 + 1178 + 2387 + 3625
    assert ingest["rows_in"] == ingest["accepted"] + ingest["rejected"]
    examples = pq.read_table(run_dir / "ingest" / "examples.parquet")
    rejects = pq.read_table(run_dir / "ingest" / "rejects.parquet")
    assert examples.num_rows == ingest["accepted"] and rejects.num_rows == ingest["rejected"]

    spans = summary["stages"]["spans"]
    assert set(spans["per_split"]) == {"animal/train", "animal/dev", "pitch/train", "pitch/dev"}
    for name, counts in spans["per_split"].items():
        task, split = name.split("/")
        sample = pq.read_table(run_dir / "spans" / f"{task}-{split}.examples.parquet")
        table = pq.read_table(run_dir / "spans" / f"{task}-{split}.parquet")
        assert sample.num_rows == counts["examples"] == 8
        assert table.num_rows == counts["spans"] == sum(sample["n_spans"].to_pylist())
        assert counts["examples_with_spans"] + counts["examples_without_spans"] == 8
        assert set(table["example_id"].to_pylist()) <= set(sample["example_id"].to_pylist())
    assert (run_dir / "span_detector" / "model" / "model.safetensors").is_file()
    imagine = summary["stages"]["imagine"]
    assert imagine["occurrences"] == sum(c["spans"] + c["examples_without_spans"] for c in spans["per_split"].values())
    assert imagine["accepted"] + imagine["rejected"] == imagine["occurrences"]
    assert pq.read_table(run_dir / "imagine" / "selection.parquet").num_rows == imagine["occurrences"]
    # Fusion ran (train and dev): every dev row of the sample is scored or counted with its reason.
    fusion = summary["stages"]["fusion"]
    assert fusion["ours_vs_paper"] and fusion["evaluate"] and not any(e["cached"] for e in fusion["evaluate"])
    assert set(fusion["scoring"]) == {"animal/dev", "pitch/dev"}
    for counts in fusion["scoring"].values():
        assert counts["rows"] == 8 == counts["scored"] + sum(counts["unscored"].values())
    assert Path(result["report"]).is_file() and "<table" in Path(result["report"]).read_text()

    second = run_cli(args, cli_env, Path(__file__).resolve().parents[1])
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout[second.stdout.index("{\n") :])
    assert again["run_dir"] == result["run_dir"]
    assert_every_stage_cached(again)
    for stage in ("ingest", "span_detector", "spans", "imagine"):
        assert again["stages"][stage]["seconds"] == result["stages"][stage]["seconds"]


def test_bad_settings_fail_fast_with_the_rule(capsys):
    assert main(["run", "--set", "span.epochs=0"]) == 2
    assert "span.epochs must be >= 1, got 0" in capsys.readouterr().err
    assert main(["run", "--set", "span.epoch=3"]) == 2
    assert "span.epoch is not a known setting" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.tasks"):
        build_config(tasks=["animals"])


def test_doctor_reports_models_devices_and_data(cli_env, tmp_path):
    env = {**cli_env, "ITH_HOME": str(tmp_path / "empty-home")}
    out = run_cli(["doctor"], env, Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "profile paper" in text and "bert-base-uncased" in text and "MISSING" in text
    assert "looked in" in text
    # The device lines agree with this host's torch, so the test holds on a GPU host too.
    import torch

    system = text.split("\nsystem\n", 1)[1].splitlines()
    assert f"torch {torch.__version__} (CUDA build: {torch.version.cuda})" in system[0]
    if torch.cuda.is_available():
        devices = [line.split()[0] for line in system[1:] if line.startswith("  cuda:")]
        assert devices == [f"cuda:{i}" for i in range(torch.cuda.device_count())] and "no CUDA device" not in text
    else:
        assert system[1] == "  no CUDA device: every stage runs on the CPU"
    assert "($ITH_AUDITORYBENCH_DIR)" in text
    assert "files present: 8 of 8; verified by sha256 (the pinned files): 8" in text
    assert f"verified home {tmp_path / 'empty-home'}/data/auditorybench: 0 of 8 files" in text


def _pinned_copy(bench_dir: Path, root: Path) -> Path:
    from ith_core.data.auditorybench import PINNED_FILES

    for f in PINNED_FILES:
        (root / f.local_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bench_dir / f.local_path, root / f.local_path)
    return root


def test_data_fetch_fills_the_home_and_doctor_says_it_is_verified(tmp_path, bench_dir, monkeypatch, capsys):
    monkeypatch.delenv("ITH_AUDITORYBENCH_DIR", raising=False)
    monkeypatch.setenv("ITH_HOME", str(tmp_path / "home"))
    assert main(["data", "fetch", "--from", str(bench_dir)]) == 0
    assert f"8 files verified by sha256: 8 copied from {bench_dir}" in capsys.readouterr().out
    assert main(["data", "fetch", "--from", str(bench_dir)]) == 0
    assert "8 files verified by sha256: 8 already there" in capsys.readouterr().out
    assert main(["doctor", "--profile", "tiny"]) == 0
    text = capsys.readouterr().out
    assert f"AuditoryBench: {tmp_path}/home/data/auditorybench (the verified home)" in text
    assert "verified by sha256 (the pinned files): 8" in text


def test_the_same_verified_files_from_another_place_keep_the_run_id(tmp_path, bench_dir, monkeypatch, capsys):
    from ith_core.stages import ingest as ingest_stage

    monkeypatch.delenv("ITH_AUDITORYBENCH_DIR", raising=False)
    default = build_config()  # the verified home (or a verified download into it)
    copy = _pinned_copy(bench_dir, tmp_path / "elsewhere")
    shared, moved = build_config(data_dir=str(bench_dir)), build_config(data_dir=str(copy))
    assert default.effective_run_id == shared.effective_run_id == moved.effective_run_id
    assert default.data.content == shared.data.content == moved.data.content == "pinned"
    # The location stays in the settings, for the ingestion to read (its provenance records it).
    assert moved.data.data_dir == str(copy) and ingest_stage.ingest_key(shared) == ingest_stage.ingest_key(moved)
    monkeypatch.setenv("ITH_AUDITORYBENCH_DIR", str(copy))
    assert build_config().effective_run_id == default.effective_run_id
    assert main(["config", "--data-dir", str(copy)]) == 0
    assert capsys.readouterr().out.startswith(f"run id {default.effective_run_id} ")

    # Other bytes are another run, wherever they are.
    changed = copy / "animal_sound_recognition" / "dev.csv"
    changed.write_bytes(changed.read_bytes().replace(b"dog", b"cat", 1))
    other = build_config(data_dir=str(copy))
    assert other.data.content.startswith("sha256:") and other.effective_run_id != default.effective_run_id
    assert ingest_stage.ingest_key(other) != ingest_stage.ingest_key(moved)


def test_every_subcommand_has_help():
    for command in ([], ["run"], ["doctor"]):
        out = subprocess.run([sys.executable, "-m", "cli.main", *command, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: ith" in out.stdout


@pytest.mark.slow
def test_thresholds_no_candidate_reaches_end_in_one_line_without_tracebacks(cli_env, tmp_path):
    args = [
        "run",
        "--run-root",
        str(tmp_path / "runs"),
        "--sample",
        "8",
        "--splits",
        "train,dev",
        "--systems",
        "ith",
        "--set",
        "span.max_train_steps=30",
        "--set",
        "imagine.thresholds.animal=0.99",
        "--set",
        "imagine.thresholds.pitch=0.99",
    ]
    done = run_cli(args, cli_env, Path(__file__).resolve().parents[1])
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("ith: no span got imagined audio, so ITH has nothing to fuse; task animal: ")
        and "task pitch: " in last
        and "or raise imagine.num_candidates" in last
    ), last
    assert sum(line.startswith("ith: ") for line in done.stderr.splitlines()) == 1


@pytest.mark.slow
def test_two_runs_of_one_run_id_at_once_one_refuses_naming_the_holder(cli_env, tmp_path):
    import socket

    args = [
        "run",
        "--run-root",
        str(tmp_path / "runs"),
        "--run-id",
        "shared",
        "--sample",
        "8",
        "--splits",
        "train,dev",
        "--systems",
        "bert,ith",
        "--set",
        "span.max_train_steps=30",
        "--json",
    ]
    repo = Path(__file__).resolve().parents[1]
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            env=cli_env,
            cwd=repo,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=900) for process in both]
    codes = sorted(process.returncode for process in both)
    assert codes == [0, 1], [err[-2000:] for _, err in outputs]
    winner, loser = (0, 1) if both[0].returncode == 0 else (1, 0)
    said = [line for line in outputs[loser][1].splitlines() if line.startswith("ith")]
    assert len(said) == 1 and said[0].startswith(
        f"ith: run shared is being written by ith run --run-root {tmp_path / 'runs'} --run-id shared "
    ), said
    assert f"(host {socket.gethostname()}, pid {both[winner].pid}, since " in said[0]
    assert "Traceback" not in outputs[loser][1]
    assert not (tmp_path / "runs" / "shared" / "_LOCK.json").exists()  # released by the winner

    third = run_cli(args, cli_env, repo)
    assert third.returncode == 0, third.stderr[-3000:]
    assert_every_stage_cached(json.loads(third.stdout[third.stdout.index("{\n") :]))

    # A worker with another ITH_HOME holding the same models reuses every stage too (stage keys hold
    # what the models are, not their folder).
    other_home = tmp_path / "other-home"
    shutil.copytree(Path(cli_env["ITH_HOME"]) / "models", other_home / "models")
    fourth = run_cli(args, {**cli_env, "ITH_HOME": str(other_home)}, repo)
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert_every_stage_cached(json.loads(fourth.stdout[fourth.stdout.index("{\n") :]))


HOLD_LOCK = r"""
import sys
import time
from storage.layout import RunLayout
from storage.run_lock import RunLock
record = RunLock(RunLayout(sys.argv[1], "held")).acquire("ith run --run-id held")
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.mark.slow
def test_a_flow_run_of_a_held_run_refuses_naming_the_holder(cli_env, tmp_path):
    """The deployments' path: the `ith` flow itself takes the lock (under `ith run` it holds it already)."""
    repo = Path(__file__).resolve().parents[1]
    root = str(tmp_path / "runs")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, root],
        cwd=repo,
        env=cli_env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        flow = (
            f"from flows.pipeline import ith_pipeline\n"
            f"ith_pipeline(run_root={root!r}, run_id='held', sample_limit=8, splits=['train', 'dev'])\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", flow], cwd=repo, env=cli_env, capture_output=True, text=True, timeout=600
        )
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode != 0
    assert "RunLockedError: run held is being written by ith run --run-id held (host " in done.stderr, done.stderr[
        -3000:
    ]
    assert f"pid {holder.pid}, since " in done.stderr
    assert not (tmp_path / "runs" / "held" / "ingest").exists()  # refused before any stage


def _trainers(pid: int) -> list:
    """The `accelerate launch` / trainer processes below `pid`."""
    import psutil

    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in below:
        try:
            if "ith_core.fusion.training" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            pass
    return found


def _interrupt_when_training(args, env, cwd, signum) -> tuple[subprocess.CompletedProcess, list]:
    """Starts `ith run`, sends `signum` to it (alone, as `kill` does) once a trainer runs; returns the
    finished process and the trainer processes that ran then."""
    import psutil

    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        trainers, deadline = [], time.monotonic() + 900
        while not trainers and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)  # polling for a condition, not asserting on time
            trainers = _trainers(process.pid)
        assert trainers, f"no trainer started; rc {process.poll()}"
        os.kill(process.pid, signum)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    gone = psutil.wait_procs(trainers, timeout=10)[1] == []
    assert gone, "a trainer outlived the interrupted run"
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), trainers


@pytest.mark.slow
def test_sigint_and_sigterm_stop_a_run_and_its_trainers_and_the_run_resumes(cli_env, tmp_path):
    import signal

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "runs"
    args = [
        "run",
        "--run-root",
        str(root),
        "--run-id",
        "stopped",
        "--sample",
        "8",
        "--splits",
        "train,dev",
        "--systems",
        "bert,ith",
        "--set",
        "span.max_train_steps=30",
        "--json",
    ]
    first, _ = _interrupt_when_training(args, cli_env, repo, signal.SIGINT)
    said = [line for line in first.stderr.splitlines() if line.startswith("ith")]
    assert first.returncode == 130, first.stderr[-3000:]
    assert len(said) == 1 and said[0].startswith("ith: interrupted by SIGINT; stopped "), said
    assert said[0].endswith("finished stages of run stopped are kept: run the same command again to resume")
    assert "Traceback" not in first.stderr and not (root / "stopped" / "_LOCK.json").exists()
    finished = {p.parent.name for p in (root / "stopped").glob("*/_DONE.json")}
    assert {"ingest", "span_detector", "spans", "imagine"} <= finished, finished

    # Resumed, then stopped again by SIGTERM (Prefect's own SIGTERM handler is active in flows).
    second, _ = _interrupt_when_training(args, cli_env, repo, signal.SIGTERM)
    said = [line for line in second.stderr.splitlines() if line.startswith("ith")]
    assert second.returncode == 143, second.stderr[-3000:]
    assert len(said) == 1 and said[0].startswith("ith: interrupted by SIGTERM; stopped "), said
    assert "Traceback" not in second.stderr

    third = run_cli(args, cli_env, repo)
    assert third.returncode == 0, third.stderr[-3000:]
    result = json.loads(third.stdout[third.stdout.index("{\n") :])
    for stage in ("ingest", "span_detector", "spans", "imagine"):
        assert result["stages"][stage]["cached"] is True, stage
    assert {(t["system"], t["seed"]) for t in result["stages"]["fusion"]["train"]} >= {("ith", 42), ("bert-text", 42)}
