"""Every notebook is stored executed in order, clean, and starts and ends as the course promises."""
import json
import os
import re
import sys
from pathlib import Path

import pytest

from lora_edu.course.course_map import COURSE_MAP

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from slides import INSTALL_CELL_FIRST_LINE  # noqa: E402  (the install cell's first line, written once)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTERS = {ch.notebook: ch for ch in COURSE_MAP}
# Anything that would leak a machine's layout or a user's name into a published output.
LEAKS = [str(ROOT), os.path.expanduser("~"), "/home/", "/root/", "/Users/", "/tmp/", "site-packages", "C:\\"]


def load(path):
    return json.loads(path.read_text())


def text_of(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def outputs_text(cell):
    for out in cell.get("outputs", []):
        if "text" in out:
            yield "".join(out["text"])
        for mime, data in out.get("data", {}).items():
            if mime.startswith("text/"):
                yield "".join(data) if isinstance(data, list) else data
        if out["output_type"] == "error":
            yield "\n".join(out.get("traceback", []))


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_start_here.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_in_order_without_errors(path):
    code = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: re-run top to bottom (make execute); counts are {counts}"
    errors = [text_of(c)[:60] for c in code if any(o["output_type"] == "error" for o in c["outputs"])]
    assert not errors, f"{path.name}: cells with errors: {errors}"
    stderr = [text_of(c)[:60] for c in code if any(o.get("name") == "stderr" and "%|" not in "".join(o["text"]) for o in c["outputs"])]
    assert not stderr, f"{path.name}: cells writing warnings to stderr: {stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernel_and_no_leaks(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        for text in outputs_text(cell):
            for leak in LEAKS:
                assert leak not in text, f"{path.name}: output of cell {text_of(cell)[:40]!r} shows {leak!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_title_goals_time_and_summary(path):
    cells = load(path)["cells"]
    head = text_of(cells[0])
    assert cells[0]["cell_type"] == "markdown" and head.startswith("# "), "first cell: a title"
    assert not re.match(r"#+\s*#", head), f"{path.name}: the title renders a literal '#': {head.splitlines()[0]!r}"
    assert "## Learning goals" in head, "first cell: learning goals"
    chapter = CHAPTERS[path.name]
    assert f"**Estimated time:** {chapter.minutes} minutes" in head, "first cell: the time that the course map gives"
    assert chapter.title in head.splitlines()[0], "title as in the course map"
    markdown = [text_of(c) for c in cells if c["cell_type"] == "markdown"]
    summary = [i for i, text in enumerate(markdown) if "## Summary" in text]
    assert summary, "a summary"
    after = re.findall(r"^## (.*)", "\n".join(t.split("## Summary", 1)[-1] for t in markdown[summary[-1]:]), re.M)
    assert all(h.startswith(("Deep dive (optional):", "References")) for h in after), \
        f"{path.name}: after the summary only deep dives and References, found sections {after}"


IMPORT_STYLE = re.compile(r"^\s*(import lora_edu|from lora_edu)", re.M)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_import_style(path):
    """The first code cell installs/imports the package as ``le``; no other cell imports from it."""
    code = [text_of(c) for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert code[0].startswith(INSTALL_CELL_FIRST_LINE), f"{path.name}: the first code cell must be the install cell"
    assert code[0] == text_of(next(c for c in load(NOTEBOOKS[0])["cells"] if c["cell_type"] == "code")), \
        f"{path.name}: the install cell differs from notebook 00's"
    others = [c[:60] for c in code[1:] if IMPORT_STYLE.search(c)]
    assert not others, f"{path.name}: import lora_edu only once, as `le` (in the first code cell); found in {others}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_timing_metadata(path):
    """nbclient's timestamps would make every re-execution rewrite every cell."""
    timed = [text_of(c)[:40] for c in load(path)["cells"] if "execution" in c.get("metadata", {})]
    assert not timed, f"{path.name}: cells with timing metadata (re-run `make execute`): {timed}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_references_and_the_course_bibliography(path):
    """Each notebook ends with its sources; every paper it cites is in the README's bibliography."""
    markdown = [text_of(c) for c in load(path)["cells"] if c["cell_type"] == "markdown"]
    assert "## References" in "\n".join(markdown[-2:]), f"{path.name}: end with a '## References' list"
    bibliography = (ROOT / "README.md").read_text().split("## References (course bibliography)")[1].split("\n## ")[0]
    for arxiv in sorted(set(re.findall(r"arXiv:\d{4}\.\d{4,5}", "\n".join(markdown)))):
        assert arxiv in bibliography, f"{path.name} cites {arxiv}: add it to the README's course bibliography"


def test_course_map_lists_exactly_the_notebooks():
    assert [p.name for p in NOTEBOOKS] == [ch.notebook for ch in COURSE_MAP]


def test_readme_course_table_matches_the_course_map():
    readme = (ROOT / "README.md").read_text()
    for ch in COURSE_MAP:
        stem = ch.notebook.removesuffix(".ipynb")
        assert f"| `{stem}` | {ch.teaches} | {ch.minutes} min |" in readme, stem
