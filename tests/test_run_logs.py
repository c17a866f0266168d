"""Which `ith_core` loggers reach a run's log (tasks/runtime.py ROUTED): the progress and metrics lines
the UI shows (span detector F1, ingestion counts, imagination plan, stage reuse, trainer epochs). A
module moved or renamed without its logger name in ROUTED would silently drop them from the run log
(the server e2e test sees it after minutes; this sees it at once)."""

from __future__ import annotations

import importlib
import logging

import pytest

from ith_core.data import auditorybench
from ith_core.fusion import launch
from ith_core.imagination import devices, planning
from ith_core.models import span_detector
from ith_core.report import rendering
from ith_core.stages import imagine, ingest, skeleton, spans

# Importing `tasks` routes the loggers (tasks/__init__.py calls route_core_logs), as in every worker.
# Not called again here: it would filter the handlers of pytest's log capture for later tests.
from tasks.runtime import ROUTED


@pytest.mark.parametrize(
    "logger",
    [
        auditorybench.logger,
        ingest.logger,
        spans.logger,
        skeleton.logger,
        span_detector.logger,
        imagine.logger,
        planning.logger,
        devices.logger,
        rendering.logger,
        launch.progress_logger,
    ],
    ids=lambda logger: logger.name,
)
def test_progress_loggers_log_info_into_run_logs(logger):
    assert logger.name in ROUTED
    assert logger.isEnabledFor(logging.INFO)


def test_every_routed_name_is_a_module_or_its_progress_logger():
    for name in ROUTED:
        importlib.import_module(name.removesuffix(".progress"))
