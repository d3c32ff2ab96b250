"""Silence transformers while loading and generating: its warnings and progress bars would bury
the few lines viscodex prints."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings and progress bars off while loading and generating."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
