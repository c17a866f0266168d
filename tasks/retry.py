"""Which task failures Prefect retries: only those a second attempt can fix.

A bad file, a bad setting, a missing model, a mismatched stage or a bug fails the same way every
time (DataError, ConfigError, ModelNotAvailableError, StageMismatchError, ValueError, KeyError,
...): retrying only delays the error. Retried: the network and remote stores (ConnectionError,
TimeoutError and other OSErrors), a child process killed by a signal (ChildProcessError, e.g. the
trainer killed for memory: the retry resumes from its last saved state) and a GPU out of memory
(the device may be free on the next attempt). Not retried: OSErrors about a path
(FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError).

Every task with retries uses `retry_condition_fn=retry_transient`.
"""

from __future__ import annotations

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
