"""GLUE's data side: every task's TSV layout read, rows accounted for, the home fetched and verified,
GLUE's metrics against hand computations (and scipy), the bootstrap, `ith data fetch --glue`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers.glue_folder import (
    LABELS,
    STSB_SCORES,
    append_bad_rows,
    append_lines,
    file_path,
    write_glue_folder,
)

from ith_core.config import GLUE_TASKS, ConfigError
from ith_core.data import glue
from ith_core.data.auditorybench import EXAMPLES_SCHEMA, REJECTS_SCHEMA, DataError
from ith_core.evaluation import glue_metrics

ROWS = 12


@pytest.fixture()
def folder(tmp_path):
    return write_glue_folder(tmp_path / "glue", rows=ROWS)


@pytest.fixture()
def ith_home(tmp_path, monkeypatch):
    home = tmp_path / "ith_home"
    monkeypatch.setenv("ITH_HOME", str(home))
    return home


def test_every_task_layout_is_read(folder):
    result = glue.ingest(str(folder))
    assert result.examples.schema == EXAMPLES_SCHEMA
    assert result.rejects.schema == REJECTS_SCHEMA
    assert result.glue.schema == glue.GLUE_SCHEMA
    assert result.rejects.num_rows == 0
    assert result.examples.num_rows == result.glue.num_rows == len(GLUE_TASKS) * 2 * ROWS
    assert list(result.counts) == [f"{t}/{s}" for t in GLUE_TASKS for s in ("train", "dev")]
    ids = result.examples.column("example_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert ids[0] == "sst2/train/000001"
    examples = {r["example_id"]: r for r in result.examples.to_pylist()}
    for row in result.glue.to_pylist():
        task = glue.TASKS[row["task"]]
        example = examples[row["example_id"]]
        assert glue.split_pair(example["sentence"]) == (row["sentence1"], row["sentence2"])
        assert (row["sentence2"] is not None) == task.is_pair
        assert example["answer"] == row["label_text"]
        assert example["spans"] == [] and example["flags"] == []
        assert example["options"] is None and example["answer_letter"] is None
        if task.is_regression:
            assert row["label"] == float(row["label_text"])
        else:
            assert row["label"] == task.labels.index(row["label_text"])
    # Labels as written, cycled: balanced, and in the task's class order.
    for task, labels in LABELS.items():
        assert result.counts[f"{task}/dev"]["labels"] == {label: ROWS // len(labels) for label in labels}
    scores = sorted({r["label_text"] for r in result.glue.to_pylist() if r["task"] == "stsb"})
    assert scores == sorted(STSB_SCORES)
    # The literal double quotes of one sentence survive (GLUE files are unquoted).
    assert any('"old"' in s for s in result.glue.column("sentence1").to_pylist())
    # MNLI's dev is dev_matched.tsv; dev_mismatched.tsv is not read.
    mnli = [p for p in result.provenance if p["task"] == "mnli"]
    assert [p["file"] for p in mnli] == ["MNLI/train.tsv", "MNLI/dev_matched.tsv"]


def test_task_specs():
    assert tuple(glue.TASKS) == GLUE_TASKS
    assert glue.TASKS["stsb"].num_labels == 1 and glue.TASKS["stsb"].is_regression
    assert glue.TASKS["mnli"].num_labels == 3 and glue.TASKS["mnli"].labels[0] == "contradiction"
    assert glue.TASKS["cola"].has_header is False
    assert glue_metrics.METRICS == {name: spec.metrics for name, spec in glue.TASKS.items()}
    assert glue_metrics.METRICS["qqp"] == ("f1", "accuracy")
    assert glue_metrics.METRICS["stsb"] == ("pearson", "spearman")
    assert glue_metrics.METRICS["cola"] == ("matthews",)


def test_pairs_round_trip():
    assert glue.join_pair("a dog barks", None) == "a dog barks"
    assert glue.split_pair(glue.join_pair("a dog barks", "is it loud?")) == ("a dog barks", "is it loud?")
    assert glue.split_pair("a dog barks") == ("a dog barks", None)
    with pytest.raises(ValueError, match="pair separator"):
        glue.join_pair("two\nlines", None)


def test_malformed_rows_are_rejected_and_counted(folder):
    expected = {task: append_bad_rows(folder, task, "dev") for task in GLUE_TASKS}
    # A trailing blank line and a CRLF line end change nothing.
    append_lines(folder, "sst2", "dev", ["", "a cat purrs on the sofa\t1\r"])
    result = glue.ingest(str(folder))
    for prov in result.provenance:
        assert prov["rows_read"] == prov["rows_accepted"] + prov["rows_rejected"]
        count = result.counts[f"{prov['task']}/{prov['split']}"]
        assert (count["rows_in"], count["accepted"], count["rejected"]) == (
            prov["rows_read"],
            prov["rows_accepted"],
            prov["rows_rejected"],
        )
    for task, reasons in expected.items():
        count = result.counts[f"{task}/dev"]
        assert {k: v for k, v in count["rejects_by_reason"].items() if v} == reasons
        assert count["accepted"] == ROWS + (1 if task == "sst2" else 0)
        assert result.counts[f"{task}/train"]["rejected"] == 0
    rejects = result.rejects.to_pylist()
    assert result.rejects.num_rows == sum(sum(r.values()) for r in expected.values())
    by_reason = {(r["task"], r["reason"]): r for r in rejects}
    bad_label = by_reason[("qnli", "label_not_in_label_set")]
    assert bad_label["detail"] == "label: must be one of entailment, not_entailment, got 'maybe'"
    assert bad_label["raw"].split("\t")[-1] == "maybe"
    assert bad_label["example_id"] == f"qnli/dev/{bad_label['row']:06d}"
    assert "expected 10 tab-separated fields, found 9" in by_reason[("stsb", "wrong_field_count")]["detail"]
    assert "#1 String: must not be empty" == by_reason[("mrpc", "empty_sentence")]["detail"]
    assert "repeats" in by_reason[("qqp", "duplicate_id")]["detail"]
    assert "in [0, 5], got 7.5" in by_reason[("stsb", "score_out_of_range")]["detail"]
    crlf = [r for r in result.glue.to_pylist() if r["sentence1"] == "a cat purrs on the sofa"]
    assert len(crlf) == 1 and crlf[0]["label_text"] == "1"


def test_subset_and_unknown_names(folder):
    result = glue.ingest(str(folder), ("mrpc", "sst2"), "dev")
    assert list(result.counts) == ["sst2/dev", "mrpc/dev"]
    with pytest.raises(ConfigError) as error:
        glue.ingest(str(folder), ("sst2", "snli"))
    assert "'snli'" in str(error.value) and "sst2, qnli, qqp, mnli, mrpc, stsb, cola" in str(error.value)
    with pytest.raises(ConfigError, match="'test'"):
        glue.ingest(str(folder), "sst2", ("dev", "test"))


def test_missing_folder_file_and_column(folder, tmp_path):
    with pytest.raises(glue.GlueDataError) as error:
        glue.ingest(str(tmp_path / "nowhere"))
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    for part in ("https://gluebenchmark.com/tasks", "download_glue_data.py", "nyu-mll/glue", "ith data fetch --glue"):
        assert part in message
    assert isinstance(error.value, DataError)
    file_path(folder, "qqp", "dev").unlink()
    path = file_path(folder, "mrpc", "train")
    path.write_text(path.read_text().replace("#1 String", "String 1", 1))
    with pytest.raises(glue.GlueDataError) as error:
        glue.ingest(str(folder))
    message = str(error.value)
    assert message.startswith("2 of 14 GLUE files cannot be used")
    assert f"{file_path(folder, 'qqp', 'dev')}: GLUE file not found" in message
    assert "missing column '#1 String' (task 'mrpc')" in message


def test_fetch_locate_and_tampering(folder, ith_home):
    with pytest.raises(glue.GlueDataError, match="ith data fetch --glue DIR"):
        glue.locate()
    file_path(folder, "cola", "dev").unlink()
    result = glue.fetch(str(folder), tasks=("sst2", "mnli", "cola"))
    assert result["home"] == glue.home_dir() == str(ith_home / "data" / "glue")
    status = {e["file"]: e["status"] for e in result["files"]}
    assert status == {
        "SST-2/train.tsv": "copied",
        "SST-2/dev.tsv": "copied",
        "MNLI/train.tsv": "copied",
        "MNLI/dev_matched.tsv": "copied",
        "MNLI/dev_mismatched.tsv": "copied",
        "CoLA/train.tsv": "copied",
        "CoLA/dev.tsv": "missing",
    }
    manifest = json.loads((ith_home / "data" / "glue" / glue.MANIFEST).read_text())
    assert manifest["files"]["SST-2/dev.tsv"]["rows"] == ROWS
    assert not list((ith_home / "data" / "glue").rglob("*.tmp"))
    assert glue.locate(tasks=("sst2", "mnli")) == glue.home_dir()
    assert glue.content_id(glue.home_dir(), ("sst2", "mnli")) == glue.content_id(str(folder), ("sst2", "mnli"))
    assert glue.content_id(str(folder), "sst2").startswith("sha256:")
    assert glue.content_id(str(folder), "sst2") != glue.content_id(str(folder), "mnli")
    with pytest.raises(glue.GlueDataError, match="CoLA/dev.tsv: task 'cola', split 'dev' was never fetched"):
        glue.locate(tasks=("cola",))
    # The copy in the home changes: found, and the message says to fetch again.
    home_file = ith_home / "data" / "glue" / "SST-2" / "dev.tsv"
    home_file.write_text(home_file.read_text() + "a drum booms\t1\n")
    with pytest.raises(glue.GlueDataError) as error:
        glue.locate(tasks=("sst2",))
    assert "the file changed since it was fetched" in str(error.value) and "ith data fetch --glue DIR" in str(
        error.value
    )
    again = glue.fetch(str(folder), tasks="sst2")
    assert [e["status"] for e in again["files"]] == ["unchanged", "copied"]
    assert glue.locate(tasks=("sst2", "mnli")) == glue.home_dir()  # the earlier fetch's files are kept
    # An explicit folder is used as it is (it must exist).
    assert glue.locate(str(folder)) == str(folder)
    with pytest.raises(glue.GlueDataError, match="no GLUE folder there"):
        glue.locate(str(folder / "missing"))


def test_fetch_errors(folder, tmp_path, ith_home):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(glue.GlueDataError, match="no file of the GLUE tasks"):
        glue.fetch(str(empty))
    path = file_path(folder, "qnli", "dev")
    path.write_text(path.read_text().replace("question", "query", 1))
    with pytest.raises(glue.GlueDataError, match="missing column 'question'"):
        glue.fetch(str(folder))
    assert not (ith_home / "data" / "glue").exists()  # a broken file stops the fetch before any copy


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_by_hand():
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    pred = np.array([1, 1, 0, 0, 0, 1, 1, 1])
    # tp 3, fn 1, tn 2, fp 2
    assert glue_metrics.task_metrics("sst2", pred, labels) == {"accuracy": 5 / 8}
    assert glue_metrics.task_metrics("mrpc", pred, labels) == pytest.approx({"f1": 6 / 9, "accuracy": 5 / 8})
    mcc = (3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 4 * 3)
    assert glue_metrics.task_metrics("cola", pred, labels)["matthews"] == pytest.approx(mcc)
    # Class ids stored as floats (glue.label) are accepted.
    assert glue_metrics.task_metrics("qqp", pred, labels.astype(float))["accuracy"] == 5 / 8
    mnli = glue_metrics.task_metrics("mnli", np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    assert mnli == {"accuracy": 0.75}
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    stsb = glue_metrics.task_metrics("stsb", scores, np.array([2.0, 4.0, 6.0, 9.0]))
    assert stsb["spearman"] == pytest.approx(1.0)
    assert stsb["pearson"] == pytest.approx(np.corrcoef(scores, [2.0, 4.0, 6.0, 9.0])[0, 1])


def test_metrics_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 300).astype(float)  # many ties, as STS-B's scores have
    scores = labels + rng.normal(size=300)
    got = glue_metrics.task_metrics("stsb", np.round(scores), labels)
    assert got["pearson"] == pytest.approx(stats.pearsonr(np.round(scores), labels)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(np.round(scores), labels)[0])


def test_degenerate_cases():
    labels = np.array([0, 1, 0, 1])
    constant = np.zeros(4, dtype=int)
    assert glue_metrics.task_metrics("cola", constant, labels) == {"matthews": 0.0}
    assert glue_metrics.task_metrics("mrpc", constant, np.zeros(4, dtype=int)) == {"f1": 0.0, "accuracy": 1.0}
    stsb = glue_metrics.task_metrics("stsb", np.full(4, 2.5), np.array([0.0, 1.0, 2.0, 3.0]))
    assert stsb == {"pearson": 0.0, "spearman": 0.0}
    with pytest.raises(ValueError, match="class ids"):
        glue_metrics.task_metrics("sst2", np.array([0.5, 1.0, 0.0, 1.0]), labels)
    with pytest.raises(ValueError, match=r"class ids in \[0, 1\]"):
        glue_metrics.task_metrics("sst2", np.array([0, 2, 0, 1]), labels)
    with pytest.raises(ValueError, match="3 predictions per seed but 4 labels"):
        glue_metrics.task_metrics("sst2", np.array([0, 1, 0]), labels)
    with pytest.raises(ValueError, match="GLUE tasks"):
        glue_metrics.task_metrics("animal", labels, labels)


def test_bootstrap_and_paired():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    seeds = np.stack([np.where(rng.random(200) < 0.8, labels, 1 - labels) for _ in range(3)])
    boot = glue_metrics.bootstrap_metrics("qqp", seeds, labels, n_boot=200, seed=1)
    assert set(boot) == {"f1", "accuracy"}
    for name, entry in boot.items():
        assert entry["low"] <= entry["value"] <= entry["high"]
        per_seed = [glue_metrics.task_metrics("qqp", s, labels)[name] for s in seeds]
        assert entry["value"] == pytest.approx(np.mean(per_seed))
    assert boot == glue_metrics.bootstrap_metrics("qqp", seeds, labels, n_boot=200, seed=1)
    same = glue_metrics.paired_bootstrap("qqp", seeds, seeds, labels, n_boot=100)
    assert same == {name: {"difference": 0.0, "low": 0.0, "high": 0.0} for name in ("f1", "accuracy")}
    better = glue_metrics.paired_bootstrap("sst2", seeds[0], labels, labels, n_boot=200)["accuracy"]
    assert better["difference"] == pytest.approx(1 - np.mean(seeds[0] == labels))
    assert 0 < better["low"] <= better["difference"] <= better["high"]
    scores = labels + rng.normal(size=200)
    stsb = glue_metrics.bootstrap_metrics("stsb", scores, labels.astype(float) * 5, n_boot=100)
    assert all(e["low"] <= e["value"] <= e["high"] for e in stsb.values())
    with pytest.raises(ValueError, match="level"):
        glue_metrics.bootstrap_metrics("sst2", labels, labels, level=95)


# -- the command line --------------------------------------------------------------------------


def test_cli_data_fetch_glue(folder, ith_home, capsys):
    from cli.main import main

    assert main(["data", "fetch", "--glue", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"GLUE home: {ith_home / 'data' / 'glue'}" in out
    assert "MNLI/dev_mismatched.tsv" in out and f"{ROWS} rows" in out and "sha256 " in out
    assert glue.locate() == glue.home_dir()
    assert main(["data", "fetch", "--glue", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {e["status"] for e in result["files"]} == {"unchanged"}
    assert main(["data", "fetch", "--glue", str(folder / "nowhere")]) == 1
    assert "no GLUE folder there" in capsys.readouterr().err
