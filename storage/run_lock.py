"""One writer per run: `<run_root>/<run_id>/_LOCK.json` names the process that writes the run.

    with hold_run_lock(layout, "ith run --profile tiny"):    # RunLockedError if another holds it
        ...                                                   # released in a finally, even on error

The file holds the holder's host, pid, process start time, command and start time. `ith run`,
the deployments' flow runs, `ith rerun-failed` and `ith repair-audio` hold it while they write;
a second writer of the same run refuses at once, naming the holder (or waits, `wait=True`).

Guarantees by filesystem:

- local paths: the file is created with O_CREAT|O_EXCL, so of two writers exactly one creates
  it. A lock whose holder is gone (same host, and its pid is not running or now belongs to a
  process started at another time) is stale: it is moved aside under a unique name, checked to
  be the stale one, and a fresh lock is created with O_EXCL again, so two writers taking over
  the same stale lock still end with one holder.
- fsspec remote roots (s3://, gs://, memory://): best-effort create-if-absent. The writer checks
  that no lock exists, writes its own, then reads it back and holds the run only if the file is
  its own (a token it wrote). Two writers starting within the store's consistency window can
  both believe they hold the run; object stores offer no exclusive create through fsspec.
  Staleness on another host cannot be judged: the message says which file to delete.

The same process may take the lock again (the `ith` flow under `ith run`, which holds it
already): the inner hold is a no-op and leaves the release to the outer one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import psutil

from storage.layout import RunLayout, write_atomic

LOCK_FILE = "_LOCK.json"
# A local lock file still empty after this long was left by a writer that died between creating
# and filling it (the two are a few microseconds apart).
UNREADABLE_STALE_S = 10.0

logger = logging.getLogger(__name__)
# The locks this process holds (path -> (lock, record)): `release_held` frees them when the
# process is interrupted and exits without unwinding (cli/interrupts.py).
_HELD: dict[str, tuple["RunLock", dict]] = {}


class RunLockedError(RuntimeError):
    """Another process writes this run; the message names it (host, pid, since) and the way out."""

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def this_process(command: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start_time": _start_time(os.getpid()),
        "command": command,
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def _same_process(holder: dict, pid: int, start_time: float | None) -> bool:
    return (
        holder.get("host") == socket.gethostname()
        and holder.get("pid") == pid
        and start_time is not None
        and holder.get("process_start_time") is not None
        and abs(float(holder["process_start_time"]) - start_time) < 1.0
    )


def is_stale(holder: dict) -> bool:
    """True when the holder is on this host and gone: its pid is not running, or runs a process started
    at another time (the id was reused). A holder on another host is never judged from here."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    now = _start_time(holder["pid"]) if holder["pid"] > 0 else None
    if now is None:
        return True
    recorded = holder.get("process_start_time")
    return recorded is not None and abs(float(recorded) - now) >= 1.0


def describe(holder: dict) -> str:
    return (
        f"{holder.get('command') or 'a process'!s} (host {holder.get('host')}, pid {holder.get('pid')}, "
        f"since {holder.get('since')})"
    )


class RunLock:
    """The lock file of one run folder; see the module docstring for what each filesystem guarantees."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.path = layout.path(LOCK_FILE)

    def read(self) -> dict | None:
        """The holder, None if the run is free; {} for a file that holds no readable record."""
        try:
            with self.layout.fs.open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(data)
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def _create(self, record: dict) -> bool:
        """Creates the lock file holding `record` unless one exists; True if this call created it."""
        data = json.dumps(record, indent=2).encode()
        fs = self.layout.fs
        fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        if self.layout.is_local:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return True
        if fs.exists(self.path):
            return False
        write_atomic(fs, self.path, data)
        return (self.read() or {}).get("token") == record["token"]

    def _unreadable_is_stale(self) -> bool:
        if not self.layout.is_local:
            return False
        try:
            return time.time() - os.stat(self.path).st_mtime > UNREADABLE_STALE_S
        except FileNotFoundError:
            return True

    def _take_over(self, stale: dict) -> None:
        """Moves a stale lock aside, but only the very one judged stale (another writer may have
        replaced it meanwhile: then it is put back)."""
        if not self.layout.is_local:
            self.layout.fs.rm(self.path)
            return
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            with open(aside, "rb") as handle:
                moved = json.loads(handle.read() or b"{}")
        except ValueError:
            moved = {}
        if moved != stale:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)  # a fresh holder's lock: back where it was
        os.unlink(aside)

    def acquire(
        self, command: str, wait: bool = False, poll_s: float = 1.0, on_wait: Callable[[dict], None] | None = None
    ) -> dict | None:
        """Takes the lock; returns this process's record, or None when this process holds it already.

        Raises `RunLockedError` when another live process holds it (after waiting, if `wait`).
        """
        record = this_process(command)
        waited = False
        while True:
            if self._create(record):
                _HELD[self.path] = (self, record)
                return record
            holder = self.read()
            if holder is None:
                continue  # released between our create and read: try again
            if _same_process(holder, record["pid"], record["process_start_time"]):
                return None
            # An unreadable local lock is being written by its creator, or was left by one that died
            # right after creating it; a remote one cannot be judged (it is refused like a live holder).
            unreadable_local = holder == {} and self.layout.is_local
            if unreadable_local and not self._unreadable_is_stale():
                time.sleep(0.05)
                continue
            if unreadable_local or is_stale(holder):
                logger.warning(
                    "run %s: taking over the stale lock of %s: %s",
                    self.layout.run_id,
                    describe(holder) if holder else "an unreadable lock file",
                    "its process is gone" if holder else f"empty since more than {UNREADABLE_STALE_S:.0f} s",
                )
                self._take_over(holder)
                continue
            if not wait:
                raise RunLockedError(
                    f"run {self.layout.run_id} is being written by {describe(holder)}; wait for it to finish, "
                    f"pass --wait-lock to wait, or if that process is gone, delete {self.layout.url(LOCK_FILE)}",
                    holder,
                )
            if not waited:
                waited = True
                logger.warning("run %s is being written by %s; waiting for it", self.layout.run_id, describe(holder))
                if on_wait is not None:
                    on_wait(holder)
            time.sleep(poll_s)

    def release(self, record: dict) -> None:
        """Removes the lock if it is still `record`'s; an empty run folder left by a refused start goes too."""
        _HELD.pop(self.path, None)
        holder = self.read()
        if holder is not None and holder.get("token") == record["token"]:
            self.layout.fs.rm(self.path)
        if self.layout.is_local:
            with contextlib.suppress(OSError):
                os.rmdir(self.layout.path())  # only if empty: the run never got past its first check


def release_held() -> list[str]:
    """Releases every lock this process holds; returns their run ids."""
    runs = []
    for lock, record in list(_HELD.values()):
        with contextlib.suppress(Exception):
            lock.release(record)
            runs.append(lock.layout.run_id)
    return runs


@contextlib.contextmanager
def hold_run_lock(
    layout: RunLayout, command: str | None = None, wait: bool = False, poll_s: float = 1.0
) -> Iterator[None]:
    """Holds the run's lock for the block (released in a finally); see `RunLock.acquire`."""
    lock = RunLock(layout)
    record = lock.acquire(command or " ".join(["ith", *sys.argv[1:]]), wait=wait, poll_s=poll_s)
    try:
        yield
    finally:
        if record is not None:
            lock.release(record)
