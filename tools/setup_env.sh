#!/usr/bin/env bash
# Set up (or re-use) the course's virtual environment in .venv.
#   tools/setup_env.sh            packages only (what `make lab` needs)
#   tools/setup_env.sh --browser  also Chromium for the browser tests (what `make test` needs)
# Idempotent: a second run finds .venv matching pyproject.toml + constraints-cpu.txt and
# returns in about a second. torch is pinned by constraints-cpu.txt so that set-up never
# pulls a multi-GB CUDA build; pyproject.toml itself keeps an honest range for pip users.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1   # we drive Debian's chromium; never download a browser

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: the course needs Python 3.10 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

stamp=$(cat pyproject.toml constraints-cpu.txt | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.course-stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "setup: .venv is up to date"
else
    echo "setup: installing the course into .venv (first time: about 2-3 minutes)"
    start=$(date +%s)
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c constraints-cpu.txt -e ".[dev]"
    echo "$stamp" > "$VENV/.course-stamp"
    echo "setup: done in $(( $(date +%s) - start )) s"
fi

if [ "${1:-}" = "--browser" ]; then
    if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
        echo "setup: chromium found"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's chromium for the browser tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "setup: could not install chromium; the browser tests will say how to get one" >&2
    else
        echo "setup: no chromium here; the browser tests will fail and say how to install it" >&2
    fi
fi
