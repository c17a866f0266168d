"""The run layout on any fsspec URL: the only code that knows where a run's files live.

A run lives in `<run_root>/<run_id>/`:

    config.json                 resolved settings of the run
    summary.json                stage -> row counts, rejects by reason, timings, metrics
    <stage>/...                 one folder per stage (tables as Parquet, models as folders)
    <stage>/_DONE.json          written last: its existence means the stage is whole

`run_root` is a local path (the default), or any fsspec URL: `s3://`, `gs://`, `memory://`
behave the same. Every file is written under a temporary name and renamed into place, so a
crash leaves either the whole file or none; the stage marker is written after everything
else, so a stage without a marker is redone from scratch on the next run.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

DONE_MARKER = "_DONE.json"


def temporary_sibling(target: str) -> str:
    """A unique temporary name beside `target`; readers skip names starting with '.tmp-'."""
    return posixpath.join(posixpath.dirname(target), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(target)}")


def write_atomic(fs, target: str, data: bytes) -> str:
    """Writes `data` to `target` on `fs` under a temporary name, then renames it into place.

    Rename is atomic on local disks; on object stores the upload itself is atomic. A failure
    leaves neither the target nor the temporary file.
    """
    fs.makedirs(posixpath.dirname(target), exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, target)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return target


class StageMismatchError(RuntimeError):
    """A finished stage in this run folder was computed with other settings."""


class StageNotFinishedError(RuntimeError):
    """A later stage needs an earlier one that has not finished in this run folder."""


class RunLayout:
    """Paths and atomic I/O for one run folder."""

    def __init__(self, run_root: str, run_id: str) -> None:
        self.run_root = run_root
        self.run_id = run_id
        self.fs, root = fsspec.core.url_to_fs(run_root)
        self._root = posixpath.join(root.rstrip("/") or "/", run_id)
        self.fs.makedirs(self._root, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunLayout({self.url()!r})"

    # -- paths -------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """A path inside the run folder, in the filesystem's own form (no protocol)."""
        return posixpath.join(self._root, *parts)

    def url(self, *parts: str) -> str:
        """The same path as a URL that fsspec and the user can open."""
        return self.fs.unstrip_protocol(self.path(*parts)) if not self.is_local else self.path(*parts)

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in protocols or "local" in protocols

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    # -- atomic writes -------------------------------------------------------------------------
    def write_bytes(self, data: bytes, *parts: str) -> str:
        return write_atomic(self.fs, self.path(*parts), data)

    def write_json(self, obj: Any, *parts: str) -> str:
        return self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def read_json(self, *parts: str) -> Any:
        with self.fs.open(self.path(*parts), "rb") as handle:
            return json.load(handle)

    def write_table(self, table: pa.Table, *parts: str) -> str:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return self.write_bytes(sink.getvalue(), *parts)

    def read_table(self, *parts: str) -> pa.Table:
        with self.fs.open(self.path(*parts), "rb") as handle:
            return pq.read_table(handle)

    def put_dir(self, local_dir: str | os.PathLike, *parts: str) -> str:
        """Copies a local folder (a saved model) into the run, replacing what was there."""
        target = self.path(*parts)
        tmp = temporary_sibling(target)
        self.fs.makedirs(tmp, exist_ok=True)
        for file in sorted(Path(local_dir).rglob("*")):
            if file.is_file():
                rel = file.relative_to(local_dir).as_posix()
                self.fs.makedirs(posixpath.dirname(posixpath.join(tmp, rel)), exist_ok=True)
                self.fs.put_file(str(file), posixpath.join(tmp, rel))
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)
        self.fs.mv(tmp, target, recursive=True)
        return target

    def local_dir(self, *parts: str, cache_root: str | os.PathLike | None = None) -> Path:
        """A local folder with the contents of a run folder (itself when the run is on local disk)."""
        if self.is_local:
            return Path(self.path(*parts))
        base = Path(cache_root or Path.home() / ".cache" / "ith" / "run-cache")
        local = base / self.run_id / Path(*parts)
        if not local.exists():
            tmp = local.with_name(f".tmp-{uuid.uuid4().hex}")
            self.fs.get(self.path(*parts) + "/", str(tmp), recursive=True)
            tmp.rename(local)
        return local

    # -- stage markers -------------------------------------------------------------------------
    def stage_done(self, stage: str, key: str) -> dict | None:
        """The stage's recorded report if it finished with the same key; None if it did not finish.

        A finished stage with another key means the run folder holds results of other settings:
        that is an error, never a silent overwrite.
        """
        if not self.exists(stage, DONE_MARKER):
            return None
        marker = self.read_json(stage, DONE_MARKER)
        if marker.get("key") != key:
            raise StageMismatchError(
                f"stage '{stage}' of run {self.url()} was computed with other settings "
                f"(key {marker.get('key', '?')[:12]}, now {key[:12]}); "
                "choose another --run-id or leave it unset so the run id follows the settings"
            )
        return marker["report"]

    def finished_key(self, stage: str) -> str:
        """The key a finished stage recorded; later stages build theirs on it."""
        if not self.exists(stage, DONE_MARKER):
            raise StageNotFinishedError(f"stage '{stage}' of run {self.url()} has not finished; run it first "
                                        "(`ith run` runs the stages in order)")
        return self.read_json(stage, DONE_MARKER)["key"]

    def mark_done(self, stage: str, key: str, report: dict) -> None:
        # Written last: its existence means every other file of the stage is whole.
        self.write_json({"key": key, "report": report}, stage, DONE_MARKER)

    def clear_stage(self, stage: str) -> None:
        """Removes a stage left without its marker (a crash part-way), so it restarts clean."""
        if self.exists(stage) and not self.exists(stage, DONE_MARKER):
            self.fs.rm(self.path(stage), recursive=True)
