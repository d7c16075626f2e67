#!/usr/bin/env bash
# `make test-latest`: the whole test suite against the newest releases that pyproject.toml's ranges allow,
# in its own environment (.venv-latest), ignoring the lock. It tells early what the next `make upgrade` will
# meet (a changed output, a broken API) and blocks nothing: the scheduled workflow
# (.github/workflows/test-latest.yml) reports its result without failing anyone's change. It prints which
# packages differ from the lock, then pytest's summary, and exits with pytest's status. Arguments go to pytest
# (a quick look: `make test-latest TESTS="tests/core notebooks/06_peft_comparison.ipynb"`); none means everything.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-latest
PYTHON=${PYTHON:-python3}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
# The CPU build of the newest torch where PyTorch's CPU index answers; else pip's own indexes.
if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen(u.Request('$TORCH_CPU_INDEX/torch/', method='HEAD'), timeout=5)" 2>/dev/null; then
    extra=(--extra-index-url "$TORCH_CPU_INDEX")
else
    echo "test-latest: $TORCH_CPU_INDEX unreachable; torch from pip's configured indexes"
    extra=()
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "${extra[@]}" -e ".[lab,dev,site,hub]"
"$VENV/bin/python" -m lora_edu.core.smollm2 >/dev/null

echo "test-latest: packages newer than the lock:"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, re
locked = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", open("lock/full.txt").read(), re.M))
locked["torch"] = re.search(r"^torch==(\S+)", open("constraints-cpu.txt").read(), re.M).group(1)
for name, version in sorted(locked.items(), key=lambda kv: kv[0].lower()):
    try:
        now = md.version(name)
    except md.PackageNotFoundError:
        continue
    if now.split("+")[0] != version:
        print(f"  {name:<30} lock {version:<12} latest {now}")
EOF
status=0
# Every test but the one that checks this environment is the lock (it is not, on purpose).
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --deselect tests/test_lock.py::test_this_environment_is_the_lock "$@" || status=$?
echo "test-latest: pytest exited $status against the newest releases (the lock's own run is \`make test\`)."
exit "$status"
