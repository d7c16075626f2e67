"""Re-execute notebooks in place, top to bottom, and store their outputs.

Usage: python tools/execute_notebooks.py notebooks/*.ipynb   (or `make execute`)

Run it after changing a notebook or ``lora_edu``: notebooks are committed executed so that
readers see results on GitHub and nbval can compare every output. Each notebook runs with
its own folder as working directory, in this Python environment's kernel, and the time
each took is printed. Cells keep no timing metadata (``record_timing=False``), so a re-run changes
only what a reader sees, never every cell's timestamps. Before saving, each notebook gets its slide
metadata recomputed (``tools/slides.py``), so a re-executed notebook is always a consistent slideshow.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import slides  # tools/slides.py, beside this script
from nbclient import NotebookClient


def execute(path: Path) -> float:
    """Execute one notebook in place; return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps left by an earlier run
    NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - start
    slides.apply(nb)
    nbformat.write(nb, path)
    return elapsed


def main(paths: list[str]) -> None:
    total = 0.0
    for name in sorted(paths):
        seconds = execute(Path(name))
        total += seconds
        print(f"{name:<45} {seconds:6.1f} s", flush=True)
    print(f"{'total':<45} {total:6.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
