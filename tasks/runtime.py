"""Prefect runtime helpers for the tasks: the run-log bridge and the retry policy.

Run logs. `ith_core` has no Prefect in it and logs through plain module loggers (span detector epochs with
their loss, dev F1, shard rounds, ...). `route_core_logs()` sends what they log at INFO and up
inside a flow or task run to the Prefect API, so it shows in that run's log in the UI next to
Prefect's own lines (and on the console). Outside a run (`ith data`, `ith doctor`, a test calling
a stage driver) nothing is sent and the console keeps showing only their warnings, as before.
Prefect's setting `PREFECT_LOGGING_EXTRA_LOGGERS` would do the first half, but leaves the loggers
at WARNING and warns about every record logged outside a run.

Retries. Prefect retries only the task failures a second attempt can fix.

A bad file, a bad setting, a missing model, a mismatched stage, a generator that returns NaN,
infinite or silent audio, or a bug fails the same way every time (DataError, ConfigError,
ModelNotAvailableError, StageMismatchError, GeneratedAudioError, ValueError, KeyError, ...):
retrying only delays the error. Retried: the network and remote stores (ConnectionError,
TimeoutError and other OSErrors), a child process killed by a signal (ChildProcessError, e.g. the
trainer killed for memory: the retry resumes from its last saved state) and a GPU out of memory
(the device may be free on the next attempt). Not retried: OSErrors about a path
(FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError).

Every task with retries uses `retry_condition_fn=retry_transient`.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

CORE_LOGGER = "ith_core"
# The modules whose INFO lines are progress and metrics worth a run log. Others stay at WARNING:
# ith_core.fusion.launch relays the trainer's whole output at INFO (checkpoint saves, weight-loading
# bars). The trainer's epoch lines (loss, dev accuracy) come through `ith_core.fusion.launch.progress`.
ROUTED = (
    "ith_core.data.auditorybench",
    "ith_core.stages.ingest",
    "ith_core.stages.spans",
    "ith_core.stages.skeleton",
    "ith_core.models.span_detector",
    "ith_core.models.profiles",
    "ith_core.stages.imagine",
    "ith_core.imagination.generators",
    "ith_core.imagination.clap_scoring",
    "ith_core.report.loading",
    "ith_core.imagination.planning",
    "ith_core.imagination.devices",
    "ith_core.report.charts",
    "ith_core.report.rendering",
    "ith_core.fusion.launch.progress",
)


def _inside_run() -> bool:
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


class _InsideRun(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _inside_run()


class _CoreInfoOnlyInRuns(logging.Filter):
    """On the console handlers: `ith_core` records below WARNING only from inside a run."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not record.name.startswith(CORE_LOGGER):
            return True
        return _inside_run()


def route_core_logs() -> None:
    """Idempotent: the ROUTED modules log from INFO up, to the API from inside runs, to the console as above."""
    for name in ROUTED:
        routed = logging.getLogger(name)
        if routed.level == logging.NOTSET or routed.level > logging.INFO:
            routed.setLevel(logging.INFO)
    logger = logging.getLogger(CORE_LOGGER)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_InsideRun())
        logger.addHandler(handler)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _CoreInfoOnlyInRuns) for f in handler.filters):
            handler.addFilter(_CoreInfoOnlyInRuns())


PATH_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)


def is_transient(error: BaseException | None) -> bool:
    """True for failures that can change between attempts (see the module docstring)."""
    if error is None or isinstance(error, PATH_ERRORS):
        return False
    if isinstance(error, OSError):  # ConnectionError, TimeoutError, ChildProcessError included
        return True
    return type(error).__name__ == "OutOfMemoryError"  # torch's, without importing torch here


def retry_transient(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry only a transient failure."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # an unreadable result: do not retry blindly
        return False
    return is_transient(error if isinstance(error, BaseException) else None)
