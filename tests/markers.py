"""Markers shared by test modules (imported by name, like hub_server's helpers)."""
from __future__ import annotations

import os

import pytest

from viscodex.evaluation.design2code import browser_available


def needs_browser(test):
    """Marked `browser` and `slow` as the suite marks such tests (the fast loop leaves them out);
    skipped without chromium (except in CI, where a missing browser must fail)."""
    skip = pytest.mark.skipif(not browser_available() and not os.environ.get("CI"),
                              reason="needs chromium + playwright (bash tests/setup_browser.sh)")
    return pytest.mark.slow(pytest.mark.browser(skip(test)))
