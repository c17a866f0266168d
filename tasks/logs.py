"""Progress and metrics of `ith_core` in the run's own log.

`ith_core` has no Prefect in it and logs through plain module loggers (span detector epochs with
their loss, dev F1, shard rounds, ...). `route_core_logs()` sends what they log at INFO and up
inside a flow or task run to the Prefect API, so it shows in that run's log in the UI next to
Prefect's own lines (and on the console). Outside a run (`ith data`, `ith doctor`, a test calling
a stage driver) nothing is sent and the console keeps showing only their warnings, as before.
Prefect's setting `PREFECT_LOGGING_EXTRA_LOGGERS` would do the first half, but leaves the loggers
at WARNING and warns about every record logged outside a run.
"""

from __future__ import annotations

import logging

CORE_LOGGER = "ith_core"
# The modules whose INFO lines are progress and metrics worth a run log. Others stay at WARNING:
# fusion_stage relays its trainer's whole output at INFO (checkpoint saves, weight-loading bars).
# Its trainer's epoch lines (loss, dev accuracy) come through `ith_core.fusion_stage.progress`.
ROUTED = ("ith_core.auditorybench", "ith_core.stages", "ith_core.spans", "ith_core.profiles",
          "ith_core.imagine_stage", "ith_core.imagine", "ith_core.clap_scoring", "ith_core.report",
          "ith_core.fusion_stage.progress")


def _inside_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

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
    from prefect.logging.handlers import APILogHandler

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
