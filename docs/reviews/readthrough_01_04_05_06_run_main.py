"""The read-through's learner harness: run a student notebook's main line cell by cell, answers in place.

Usage: python readthrough_01_04_05_06_run_main.py STUDENT_NOTEBOOK ANSWERS_JSON
ANSWERS_JSON maps a cell index (as a string) to the source that replaces that cell (the learner's answer).
It stops at the first "## Deep dive (optional)" or "## References" heading and prints each cell's seconds, so a
reviewer sees what the learner ran and how long the machine took (not how long a person takes).
"""
import json
import sys
import time

import matplotlib

matplotlib.use("Agg")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402


def main(notebook_path: str, answers_path: str) -> None:
    answers = json.load(open(answers_path))
    cells = json.load(open(notebook_path))["cells"]
    shell = InteractiveShell.instance()
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if source.startswith(("## Deep dive (optional)", "## References")):
                break
            continue
        start = time.time()
        print(f"----- cell {i} -----", flush=True)
        result = shell.run_cell(answers.get(str(i), source))
        print(f"[cell {i}: {time.time() - start:.1f}s{'' if result.success else ' ERROR'}]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
