"""Write student versions of the notebooks: solutions replaced by placeholders, outputs and widget state cleared.

Usage: python tools/student_versions.py notebooks student      (or `make student`)

Solution code is marked as nbgrader marks it (``### BEGIN SOLUTION`` / ``### END SOLUTION``);
each region becomes nbgrader's own stub, so these files match what ``nbgrader
generate_assignment`` releases (a test checks that) and run top to bottom without error:
the checks report "not attempted yet" and score 0.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]  # nbgrader's default Python stub


def strip_solutions(source: str) -> str:
    """Replace every BEGIN/END SOLUTION region of a code cell by the stub, keeping its indent."""
    out, inside = [], False
    for line in source.split("\n"):
        if BEGIN in line:
            if inside:
                raise ValueError(f"nested {BEGIN!r} in:\n{source}")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + stub for stub in STUB)
        elif END in line:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r} in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r} in:\n{source}")
    return "\n".join(out)


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions stripped, every output cleared and no saved widget state.

    The executed notebooks store the state of their widgets (notebook metadata ``widgets``) so that
    sliders render on GitHub; in a copy without outputs that state belongs to no view, and JupyterLab
    would restore stale models from it. A learner's widgets come from running the cells.
    """
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    return nb


def main(src: str, dst: str) -> None:
    out_dir = Path(dst)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(src).glob("*.ipynb")):
        nbformat.write(student_version(nbformat.read(path, as_version=4)), out_dir / path.name)
        print(f"wrote {out_dir / path.name}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/student_versions.py NOTEBOOK_DIR OUTPUT_DIR")
    main(*sys.argv[1:])
