"""What the `ith` console shows of an error the user can act on: one `ith:` line, no traceback.

`user_errors` names those errors (`cli/main.py` prints them as one line); `quiet_console` keeps
Prefect's console handlers from printing them again with their tracebacks.
"""

from __future__ import annotations

import logging
import re

from ith_core.config import ConfigError


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors the user can act on: one `ith:` line, no traceback (a bug still shows its traceback)."""
    from flows.imagine import ShardsFailedError
    from flows.serve import ServeError
    from ith_core.data.auditorybench import DataError
    from ith_core.imagination.generators import GeneratedAudioError
    from ith_core.imagination.planning import DiskSpaceError
    from ith_core.imagination.selection import UndeterminedSelectionError
    from ith_core.models.profiles import ModelNotAvailableError
    from ith_core.report.compare import CompareError
    from ith_core.stages.audio_repair import UnknownAudioIdError
    from ith_core.stages.imagine import NoAudioError, ShardsMissingError
    from storage.audio_store import AudioStoreError
    from storage.layout import RunIdError, RunRootError, StageMismatchError, StageNotFinishedError
    from storage.run_lock import RunLockedError

    return (
        DataError,
        ModelNotAvailableError,
        StageMismatchError,
        ShardsFailedError,
        ShardsMissingError,
        StageNotFinishedError,
        RunIdError,
        RunRootError,
        ConfigError,
        OSError,
        AudioStoreError,
        GeneratedAudioError,
        DiskSpaceError,
        UndeterminedSelectionError,
        NoAudioError,
        UnknownAudioIdError,
        ServeError,
        RunLockedError,
        CompareError,
    )


class _HideUserErrorsOnConsole(logging.Filter):
    """Keeps Prefect's console free of tracebacks and repeats of an error the CLI prints as `ith:`.

    Only the console: the records still reach the Prefect API (the UI shows them in full).
    """

    def __init__(self) -> None:
        super().__init__()
        self.errors = user_errors()
        names, todo = set(), list(self.errors)
        while todo:
            cls = todo.pop()
            names.add(cls.__name__)
            todo += cls.__subclasses__()
        # Prefect's failed-state messages: `... encountered an exception DataError: ...` (task) and
        # `... encountered an exception: DataError: ...` (flow).
        self.in_message = re.compile(rf"exception:? ({'|'.join(sorted(names))}):")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.errors):
            return False
        return not self.in_message.search(record.getMessage())


def quiet_console() -> None:
    """Installs `_HideUserErrorsOnConsole` on the console handlers Prefect set up (after its import)."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging)

    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, _HideUserErrorsOnConsole) for f in handler.filters
        ):
            handler.addFilter(_HideUserErrorsOnConsole())
