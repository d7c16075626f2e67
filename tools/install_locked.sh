#!/usr/bin/env bash
# Install the course at its locked versions into the environment of PYTHON:
#   tools/install_locked.sh PYTHON LOCKFILE [--editable] [--no-check]
# 1. torch, the CPU build, at the exact version of constraints-cpu.txt: on Linux from PyTorch's CPU wheel
#    index (PyPI's Linux wheel is the CUDA build, several GB of nvidia-* wheels the course never uses),
#    falling back in one line to pip's configured indexes where that index cannot be reached; on macOS from
#    PyPI, whose wheels are CPU builds. Then a check that this torch has no CUDA.
# 2. Every other package from LOCKFILE (lock/full.txt or lock/runtime.txt, written by tools/lock.py):
#    exact versions, each file checked against its sha256 (--require-hashes), nothing else (--no-deps),
#    so a release made after the lock changes nothing here.
# 3. The course itself, without dependencies (they are all in the lock), then `pip check` (skipped with
#    --no-check, for hosts such as Binder whose own packages we do not lock).
# Used by tools/setup_env.sh (.venv, lock/full.txt, editable) and binder/postBuild (lock/runtime.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=$1
LOCK=$2
shift 2
EDITABLE=""; CHECK=1
for arg in "$@"; do
    case "$arg" in
        --editable) EDITABLE=-e ;;
        --no-check) CHECK="" ;;
        *) echo "install_locked.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}   # override only to test set-up

torch_pin=$(grep -E '^torch==[0-9]' constraints-cpu.txt | head -n 1)
if [ -z "$torch_pin" ]; then
    echo "error: constraints-cpu.txt must pin torch exactly (a line like torch==2.13.0)" >&2
    exit 1
fi
[ -f "$LOCK" ] || { echo "error: no lock file $LOCK (write it with: make lock)" >&2; exit 1; }

pip_install() {
    "$PY" -m pip install --quiet --disable-pip-version-check "$@"
}

# The PyTorch CPU index answers within 5 s, or we take it as unreachable.
cpu_index_reachable() {
    "$PY" - "$TORCH_CPU_INDEX/torch/" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=5)
EOF
}

# 1. torch (its own dependencies come from the lock in step 2).
if [ "$(uname -s)" = Linux ]; then
    if cpu_index_reachable; then
        pip_install --no-deps --index-url "$TORCH_CPU_INDEX" "$torch_pin"
    else
        echo "setup: PyTorch's CPU index ($TORCH_CPU_INDEX) is unreachable; installing $torch_pin from pip's configured indexes"
        # Ask pip which file it would take (metadata only) and stop before a multi-GB download of a CUDA build.
        if "$PY" -m pip install --quiet --disable-pip-version-check --dry-run --no-deps --ignore-installed --report - "$torch_pin" 2>/dev/null \
            | "$PY" -c 'import json, sys; r = json.load(sys.stdin)["install"][0]["metadata"]; sys.exit(any("nvidia" in d for d in r.get("requires_dist", [])))'; then
            pip_install --no-deps "$torch_pin"
        else
            echo "setup: error: pip's configured indexes offer only a CUDA build of $torch_pin (several GB of nvidia-* wheels)." >&2
            echo "setup: fix: run set-up where $TORCH_CPU_INDEX can be reached, or point pip at a CPU wheel:" >&2
            echo "       PIP_FIND_LINKS=/folder/with/torch-cpu-wheel bash tools/setup_env.sh" >&2
            exit 1
        fi
    fi
else
    pip_install --no-deps "$torch_pin"   # macOS: PyPI's wheel is the CPU build
fi
# 2. The lock: exact versions, hashes checked, nothing resolved.
pip_install --require-hashes --no-deps -r "$LOCK"

# torch imports only now (its dependencies came with the lock): is it the CPU build?
if ! "$PY" - <<'EOF'
import sys
import torch
if torch.version.cuda is not None:
    sys.exit(f"setup: error: torch {torch.__version__} is a CUDA build (CUDA {torch.version.cuda}), "
             "whose nvidia-* wheels are several GB the course does not use.")
EOF
then
    echo "setup: fix: install the CPU build where $TORCH_CPU_INDEX can be reached:" >&2
    echo "       $PY -m pip install --force-reinstall --no-deps --index-url $TORCH_CPU_INDEX $torch_pin" >&2
    exit 1
fi

# 3. The course, then a consistency check of the whole environment.
pip_install --no-deps --no-build-isolation $EDITABLE .
if [ -n "$CHECK" ]; then
    "$PY" -m pip check
fi
