"""`make upgrade`: move the course to the newest releases, deliberately, and show what that changed.

1. tools/lock.py --upgrade re-resolves lock/full.txt and lock/runtime.txt to the newest releases
   (extra arguments go to it: `make upgrade HOLD=hold.txt` holds packages back to that file's pins);
2. prints each package whose version changed;
3. rebuilds .venv from the new lock (tools/setup_env.sh) and re-executes every notebook;
4. prints every stored output that changed, cell by cell (after the masking nbval itself applies), with the
   upgraded packages that cell's notebook imports, the likely reasons;
5. runs the whole test suite.

A person then reads the list and decides: commit the lock with the notebooks, or hold a package back, or
fix what broke. The lock changes only this way (or by `make lock` after pyproject.toml changed). To go back:
`git checkout lock/ notebooks/ && make setup`.

Runs with the system's python3 and the standard library alone, since it rebuilds .venv under itself.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


def locked_versions(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", path.read_text(), re.M)
    return {name.lower(): version for name, version in found}


def _masks() -> list[tuple[re.Pattern, str]]:
    config = configparser.ConfigParser()
    config.read(SANITIZE)
    return [(re.compile(config[s]["regex"]), config[s]["replace"]) for s in config.sections()]


def cell_outputs(path: Path) -> list[tuple[str, str]]:
    """(cell source, its outputs as text, masked as nbval masks them; images as a digest) per code cell."""
    masks = _masks()
    out = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        parts = []
        streams: dict[str, str] = {}   # stdout and stderr, each coalesced (as nbval compares them)
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                streams[o["name"]] = streams.get(o["name"], "") + "".join(o["text"])
                continue
            for kind, value in sorted(o.get("data", {}).items()):
                if kind.startswith("image/"):
                    parts.append(f"[{kind} {hashlib.sha256(''.join(value).encode()).hexdigest()[:12]}]")
                elif kind == "text/plain":
                    parts.append("".join(value))
            if o.get("output_type") == "error":
                parts.append(f"{o['ename']}: {o['evalue']}")
        text = "\n".join([*(streams[name] for name in sorted(streams)), *parts])
        for pattern, replacement in masks:
            text = pattern.sub(replacement, text)
        out.append(("".join(cell["source"]), text))
    return out


def import_names(distributions: list[str]) -> dict[str, set[str]]:
    """{distribution: its top-level module names}, read in .venv (where the new versions live)."""
    code = ("import importlib.metadata as md, json, sys; m = md.packages_distributions(); "
            "d = {k.lower(): [] for k in sys.argv[1:]}; "
            "[d[x.lower()].append(mod) for mod, ds in m.items() for x in ds if x.lower() in d]; print(json.dumps(d))")
    proc = subprocess.run([str(VENV_PY), "-c", code, *distributions], capture_output=True, text=True, check=True)
    return {k: set(v) for k, v in json.loads(proc.stdout).items()}


def report(before: dict[str, list[tuple[str, str]]], changed_packages: dict[str, tuple[str, str]]) -> int:
    modules = import_names(sorted(changed_packages)) if changed_packages else {}
    n_changed = 0
    for name, old_cells in before.items():
        new_cells = cell_outputs(ROOT / "notebooks" / name)
        notebook_source = "\n".join(src for src, _ in new_cells)
        suspects = sorted(p for p, mods in modules.items()
                          if any(re.search(rf"\b{re.escape(m)}\b", notebook_source) for m in mods))
        if len(new_cells) != len(old_cells):
            print(f"  {name}: {len(old_cells)} -> {len(new_cells)} code cells")
        for index, ((_, old), (_, new)) in enumerate(zip(old_cells, new_cells)):
            if old == new:
                continue
            n_changed += 1
            old_lines, new_lines = old.splitlines(), new.splitlines()
            first = next((i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b), min(len(old_lines), len(new_lines)))
            print(f"  {name}, code cell {index}: output line {first + 1} changed")
            print(f"      was: {old_lines[first] if first < len(old_lines) else '(nothing)'}"[:200])
            print(f"      now: {new_lines[first] if first < len(new_lines) else '(nothing)'}"[:200])
            if suspects:
                print(f"      upgraded packages this notebook imports: {', '.join(suspects)}")
    return n_changed


def run(cmd: list[str]) -> int:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    old = locked_versions(ROOT / "lock" / "full.txt")
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    before = {p.name: cell_outputs(p) for p in notebooks}

    if run([str(VENV_PY), "tools/lock.py", "--upgrade", *argv]) != 0:
        return 1
    new = locked_versions(ROOT / "lock" / "full.txt")
    changed = {n: (old.get(n, "-"), new.get(n, "-")) for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)}
    print(f"\n{len(changed)} packages changed in lock/full.txt:")
    for name, (a, b) in changed.items():
        print(f"  {name:<30} {a} -> {b}")
    if not changed:
        print("  none: the lock is already the newest releases")
        return 0

    if run(["bash", "tools/setup_env.sh", "--test-tools"]) != 0:
        return 1
    if run([str(VENV_PY), "tools/execute_notebooks.py", *[str(p.relative_to(ROOT)) for p in notebooks]]) != 0:
        print("a notebook failed to execute with the new versions; its error is above. "
              "To go back: git checkout lock/ notebooks/ && make setup")
        return 1

    print("\nStored outputs that changed (masked as nbval masks them):")
    n_changed = report(before, changed)
    if not n_changed:
        print("  none")
    tests = run([str(VENV_PY), "-m", "pytest", "-q"])
    print(f"\nmake upgrade: {len(changed)} packages changed, {n_changed} stored outputs changed, "
          f"tests {'passed' if tests == 0 else 'FAILED'}.")
    print("Read each changed output above; commit lock/ with notebooks/ if they are right, "
          "or hold a package back (make upgrade HOLD=file) or go back (git checkout lock/ notebooks/ && make setup).")
    return tests


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
