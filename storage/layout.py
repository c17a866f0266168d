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

A run id is one folder name (`check_run_id`): it is checked before any path is built from it,
and opening a layout creates nothing, so reading a run that does not exist leaves no folder.
For a remote run root, local copies of run folders (`local_dir`) and local working folders
(`work_dir`) live under `$ITH_HOME/run-cache/<hash of the run root URL>/<run id>/`, so two run
roots holding the same run id never share them; a copy is refreshed when the remote folder's
listing (names, sizes, modification stamps) changed since it was made.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
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


class RunIdError(ValueError):
    """A run id that is not a single safe folder name (`..`, a slash, empty, ...)."""


class RunRootError(ValueError):
    """The run root cannot hold runs: not a folder, or not writable; the message names the path."""


RUN_ID_RULE = "use only letters, digits, '-', '_' and '.', not start with '.', and be at most 128 characters"


def run_id_problem(run_id: object) -> str | None:
    """None for a usable run id, else the rule it breaks (shared by the settings and the CLI)."""
    if (
        not isinstance(run_id, str)
        or not run_id
        or len(run_id) > 128
        or run_id.startswith(".")
        or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in run_id)
    ):
        return RUN_ID_RULE
    return None


def check_run_id(run_id: object) -> str:
    """`run_id` if it names one folder inside the run root; else `RunIdError` naming the rule."""
    problem = run_id_problem(run_id)
    if problem:
        raise RunIdError(f"run id {run_id!r} is not a valid run folder name: it must {problem}")
    return run_id  # type: ignore[return-value]


def ith_home() -> Path:
    """`$ITH_HOME`, else `~/.cache/ith`: models, downloaded data and local run copies live under it."""
    home = os.environ.get("ITH_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "ith"


def check_run_root(run_root: str) -> None:
    """Raises `RunRootError` if a local `run_root` cannot hold runs, saying what the path is and why.

    Nothing is created. Remote URLs are left to their filesystem (credentials, buckets).
    """
    fs, path = fsspec.core.url_to_fs(run_root)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" not in protocols and "local" not in protocols:
        return
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise RunRootError(f"run root {run_root} is a file, not a folder; choose a folder with --run-root")
        if not os.access(target, os.W_OK | os.X_OK):
            raise RunRootError(
                f"run root {run_root} is a folder you cannot write to; choose another with "
                "--run-root or fix its permissions"
            )
        return
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunRootError(f"run root {run_root} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunRootError(
            f"run root {run_root} does not exist and cannot be created: you cannot write to "
            f"{ancestor}; choose another --run-root"
        )


def listing_stamp(fs, root: str) -> str | None:
    """A hash of every file under `root` (name, size, the filesystem's modification fields); None if empty."""
    files = fs.find(root, detail=True)
    if not files:
        return None
    entries = sorted(
        (posixpath.relpath(name, root), json.dumps(info, sort_keys=True, default=str)) for name, info in files.items()
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


class StageMismatchError(RuntimeError):
    """A finished stage in this run folder was computed with other settings."""


class StageNotFinishedError(RuntimeError):
    """A later stage needs an earlier one that has not finished in this run folder."""


def run_ids(run_root: str) -> list[str]:
    """The runs under a run root: folders holding a config.json (the shared `_imagine` store is none)."""
    fs, root = fsspec.core.url_to_fs(run_root)
    root = root.rstrip("/") or "/"
    found = fs.glob(posixpath.join(root, "*", "config.json"))
    return sorted(
        name for name in (posixpath.basename(posixpath.dirname(f)) for f in found) if run_id_problem(name) is None
    )


class RunLayout:
    """Paths and atomic I/O for one run folder."""

    def __init__(self, run_root: str, run_id: str) -> None:
        # Checked before any path is built from it; nothing is created here (writes create
        # their folders), so opening a run that does not exist leaves nothing behind.
        self.run_id = check_run_id(run_id)
        self.run_root = run_root
        self.fs, root = fsspec.core.url_to_fs(run_root)
        self._base = root.rstrip("/") or "/"
        self._root = posixpath.join(self._base, run_id)

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

    def cache_dir(self, cache_root: str | os.PathLike | None = None) -> Path:
        """This run's local cache: `<cache_root or $ITH_HOME/run-cache>/<run root hash>/<run id>`.

        Keyed by the run root's URL too, so the same run id under two run roots never shares it.
        """
        root_key = hashlib.sha256(self.fs.unstrip_protocol(self._base).encode())
        base = Path(cache_root) if cache_root else ith_home() / "run-cache"
        return base / root_key.hexdigest()[:16] / self.run_id

    def local_dir(self, *parts: str, cache_root: str | os.PathLike | None = None) -> Path:
        """A local folder with the contents of a run folder (itself when the run is on local disk).

        For a remote run the copy is made once and reused while the remote folder's listing is
        unchanged; a changed listing (a rerun stage, another writer) makes a fresh copy.
        """
        if self.is_local:
            return Path(self.path(*parts))
        remote = self.path(*parts)
        stamp = listing_stamp(self.fs, remote)
        if stamp is None:
            raise FileNotFoundError(f"{self.url(*parts)} holds no files")
        local = self.cache_dir(cache_root) / "mirror" / Path(*parts)
        stamp_file = local.with_name(f".{local.name}.stamp")
        if local.is_dir() and stamp_file.is_file() and stamp_file.read_text() == stamp:
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".tmp-{uuid.uuid4().hex}")
        try:
            self.fs.get(remote + "/", str(tmp), recursive=True)
            stamp_file.unlink(missing_ok=True)  # no stamp while the copy is being replaced
            if local.exists():
                shutil.rmtree(local)
            tmp.rename(local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        stamp_file.write_text(stamp)
        return local

    def work_dir(self, stage: str, cache_root: str | os.PathLike | None = None) -> Path:
        """Where a process that needs local files (the trainer) writes a stage: the stage folder itself
        on local disk, else a local working folder that the caller copies back with `put_dir`."""
        if self.is_local:
            return Path(self.path(stage))
        return self.cache_dir(cache_root) / "work" / stage

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
            raise StageNotFinishedError(
                f"stage '{stage}' of run {self.url()} has not finished; run it first "
                "(`ith run` runs the stages in order)"
            )
        return self.read_json(stage, DONE_MARKER)["key"]

    def mark_done(self, stage: str, key: str, report: dict) -> None:
        # Written last: its existence means every other file of the stage is whole.
        self.write_json({"key": key, "report": report}, stage, DONE_MARKER)

    def clear_stage(self, stage: str) -> None:
        """Removes a stage left without its marker (a crash part-way), so it restarts clean."""
        if self.exists(stage) and not self.exists(stage, DONE_MARKER):
            self.fs.rm(self.path(stage), recursive=True)
