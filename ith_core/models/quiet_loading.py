"""Loading models without the noise a load prints on purpose; shared by the profiles and the tiny builders."""

from __future__ import annotations

import contextlib
import warnings

from transformers.utils import logging as hf_logging


@contextlib.contextmanager
def expected_load_noise():
    """Quiets what a load says that is expected here, nothing else: transformers' load report about
    heads a model drops or adds on purpose (the AudioSet classifier of AST, the MLM head under the
    span detector's new head: "UNEXPECTED"/"MISSING" keys; errors still show), and the warning that
    some of AST's 128 mel filters are all zero at 16 kHz (the checkpoint's own feature settings)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"At least one mel filter has all zero values", category=UserWarning
            )
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
