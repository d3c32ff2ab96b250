#!/usr/bin/env bash
# Everything the test suite needs beyond `pip install -e ".[test]"`: Debian's chromium + the
# Playwright driver (browser tests) and the code sandbox's libseccomp (sandbox tests). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
bash setup_browser.sh
bash setup_sandbox.sh
