"""The run layout: atomic writes, stage markers, local and memory:// roots behave the same."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from storage.layout import DONE_MARKER, RunLayout, StageMismatchError


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
