#!/usr/bin/env bash
# Installs what the sandbox (viscodex/sandbox.py) needs, idempotently: Debian's libseccomp2 (the C
# library behind pyseccomp; Debian's apt already depends on it, so this is normally a no-op) and
# the pyseccomp package. Landlock needs nothing installed: it is a kernel feature (the tests
# report the ABI they found).
set -euo pipefail
if ! ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends libseccomp2 >/dev/null
fi
if ! python -c "import pyseccomp" 2>/dev/null; then
  python -m pip install -q "pyseccomp>=0.1.2"
fi
python -c "from viscodex import sandbox; print(sandbox.status().line)"
