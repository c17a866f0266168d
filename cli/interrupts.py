"""SIGINT and SIGTERM for the long `ith` commands: stop within seconds, children included.

    interrupts.install()            # in the main thread, before any work starts

A Python signal handler runs in the main thread between bytecodes, and Prefect swaps in its own
SIGTERM handler while a flow runs (it raises into the flow, which then waits for the task at
hand: a training subprocess may run for minutes). So the work is done elsewhere: the C-level
handler writes every signal's number to a wakeup pipe whatever Python handler is installed, and
a watcher thread reading that pipe

1. silences logging (Prefect's crash reports of the dying flow are not the user's news),
2. ends every descendant process (`accelerate launch` and its trainers, Ray or Prefect workers,
   Prefect's temporary server): SIGTERM, then SIGKILL for those still alive after a few
   seconds, and again for any started meanwhile,
3. releases the run locks this process holds,
4. prints one `ith: interrupted ...` line and exits with 128 + the signal's number
   (130 for SIGINT, 143 for SIGTERM) without unwinding the main thread.

Finished stages stay finished (their markers are written last), an unfinished one restarts or
resumes from its last saved epoch on the next run of the same command.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TERM_GRACE_S = 3.0

_interrupted = threading.Event()


def _ignore(signum, frame) -> None:
    """The Python-level handler: nothing, so the main thread keeps going until the watcher exits."""


def _descendants() -> list:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _end_descendants() -> int:
    """Ends every descendant; returns how many there were."""
    import psutil

    seen: set[int] = set()
    for attempt in range(5):
        children = [c for c in _descendants() if c.pid not in seen]
        if not children:
            break
        seen.update(c.pid for c in children)
        for child in children:
            try:
                child.send_signal(signal.SIGTERM if attempt == 0 else signal.SIGKILL)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(children, timeout=TERM_GRACE_S if attempt == 0 else 1.0)
        for child in alive:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=2.0)
    return len(seen)


def _watch(read_fd: int) -> None:
    while True:
        data = os.read(read_fd, 64)
        signums = [b for b in data if b in SIGNALS]
        if signums:
            break
    signum = signums[0]
    _interrupted.set()
    logging.disable(logging.CRITICAL)
    stopped = _end_descendants()
    from storage.run_lock import release_held

    runs = release_held()
    name = signal.Signals(signum).name
    where = f"; finished stages of run {', '.join(runs)} are kept: run the same command again to resume" if runs else ""
    stream = sys.__stderr__
    try:
        sys.__stdout__.flush()
        stream.write(f"ith: interrupted by {name}; stopped {stopped} child process(es){where}\n")
        stream.flush()
    finally:
        os._exit(128 + signum)


def install() -> None:
    """Routes SIGINT and SIGTERM to the watcher thread (call in the main thread, once)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("interrupts.install() must be called in the main thread")
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for signum in SIGNALS:
        signal.signal(signum, _ignore)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read_fd,), name="ith-interrupts", daemon=True).start()


def hold_if_interrupted() -> None:
    """Waits for the watcher's exit when an interrupt is being handled (it never returns then), so
    the main thread neither reports the errors of the work being stopped nor exits first."""
    if _interrupted.is_set():
        while True:
            time.sleep(60)
