#!/usr/bin/env bash
# Headless Chromium for the trace viewer's browser test: Debian's chromium package, driven by
# the playwright Python package. Playwright's own browser download is never used (no
# `playwright install`): the test launches /usr/bin/chromium. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
    echo "installing chromium (Debian package)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true

if ! "$PY" -c "import playwright" 2>/dev/null; then
    "$PY" -m pip install -q "playwright>=1.40"
fi
"$PY" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
