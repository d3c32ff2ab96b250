#!/usr/bin/env bash
# Installs what tests/test_browser.py needs, idempotently: the Playwright Python package (its
# driver only: never `playwright install`, the browser is Debian's) and Debian's chromium.
set -euo pipefail
if ! python -c "import playwright" 2>/dev/null; then
  python -m pip install -q "playwright>=1.45"
fi
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
echo "browser test set-up: playwright $(python -c 'import importlib.metadata as m; print(m.version("playwright"))'), $(chromium --version 2>/dev/null || echo 'chromium missing')"
