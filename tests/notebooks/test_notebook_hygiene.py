"""Every notebook is stored executed in order, clean, and starts and ends as the course promises."""
import json
import os
import re
import sys
from pathlib import Path

import pytest

from lora_edu.course import course_map as cm
from lora_edu.course.course_map import COURSE_MAP

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from slides import INSTALL_CELL_FIRST_LINE  # noqa: E402  (the install cell's first line, written once)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pending import params  # noqa: E402  (issue 24's checks other owners' notebooks do not pass yet)

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


def section_headings(path) -> list[str]:
    return [line for c in load(path)["cells"] if c["cell_type"] == "markdown"
            for line in text_of(c).split("\n") if line.startswith("## ")]


@pytest.mark.parametrize("path", params("structure", NOTEBOOKS), ids=lambda p: p.name)
def test_main_line_then_summary_then_deep_dives_then_references(path):
    """Issue 24, item 3: the main line ends with its summary; optional deep dives follow it; the references close."""
    headings = section_headings(path)
    assert "## Summary" in headings, f"{path.name}: a '## Summary' section ends the main line"
    assert headings[-1] == "## References", f"{path.name}: '## References' closes the notebook, found {headings[-1]!r} last"
    after = headings[headings.index("## Summary") + 1:-1]
    stray = [h for h in after if not h.startswith(cm.DEEP_DIVE_HEADING)]
    assert not stray, f"{path.name}: after the summary only '{cm.DEEP_DIVE_HEADING} …' sections, found {stray}"
    early = [h for h in headings[:headings.index("## Summary")] if h.startswith(cm.DEEP_DIVE_HEADING)]
    assert not early, f"{path.name}: deep dives go after the summary (the main line would stop at them): {early}"


@pytest.mark.parametrize("path", params("main line", NOTEBOOKS), ids=lambda p: p.name)
def test_main_line_within_its_word_limit(path):
    words = cm.main_line_words(path)
    assert words <= cm.MAIN_LINE_MAX_WORDS, (
        f"{path.name}: its main line has {words} words, over {cm.MAIN_LINE_MAX_WORDS}; move provenance, errata, method and "
        f"secondary experiments under '{cm.DEEP_DIVE_HEADING} …' sections after the summary")


#: A sentence that says A (lora_A) starts at zero: "A = 0", "A starts at zero", "A … zero at start", "zeros A".
#: The zero must belong to A: no B between them. A sentence about the other choice (instead, reversed, Init[B],
#: not) is allowed: notebook 03 compares both starts.
_A = r"(?:`?lora_A`?|(?<![·∇@*∂])\bA\b)"   # not A inside a product (B·A) or a gradient (∇A)
A_ZERO_AFTER = re.compile(_A + r"(?:(?!\bB\b|lora_B)[^.;:|]){0,40}?(?:starts? (?:at|from|as) (?:zero|0)\b|(?:is )?zero at "
                          r"(?:the )?start|is the zero (?:one|matrix)|=\s*0\b|initiali[sz]ed (?:to|at|with) zeros?|zero-initiali[sz]ed)")
A_ZERO_BEFORE = re.compile(r"\bzero(?:e?s|ing)?\s+(?:out\s+)?(?:the\s+)?" + _A)
OTHER_CHOICE = re.compile(r"\binstead\b|\breversed?\b|\bInit\[B\]|\bthe other (?:choice|one|way)\b|\bnot\b|\bnever\b", re.I)


def sentences(text: str) -> list[str]:
    """Sentences, with each list item and paragraph apart."""
    blocks = re.split(r"\n\s*\n|\n\s*[-*] |\n\s*\d+\. ", text)
    return [s for b in blocks for s in re.split(r"(?<=[.!?])\s+(?=[A-Z*`(])", re.sub(r"\s+", " ", b).strip()) if s]


def a_starts_at_zero(text: str) -> list[str]:
    """The sentences of ``text`` that say A (lora_A) starts at zero."""
    return [s for s in sentences(text) if (A_ZERO_AFTER.search(s) or A_ZERO_BEFORE.search(s)) and not OTHER_CHOICE.search(s)]


def test_the_a_at_zero_detector():
    for wrong in ("Here A = 0, which is PEFT's lora_B = 0.", "Why A (the up-projection) starts at zero.",
                  "LoRA's default start is **B random, A = 0**.", "PEFT zeros `lora_A` at the start.",
                  "A is r×d, the up-projection, zero at start."):
        assert a_starts_at_zero(wrong), wrong
    for right in ("A random and B = 0.", "random Gaussian A and zero B, so ΔW = BA is zero at the start.",
                  "Zeroing A instead makes A move first.", "B = `lora_B` = 0 while A is random.",
                  "PEFT's LoRA for embeddings zeros `lora_embedding_A`.", "the other way: A = 0, B random"):
        assert not a_starts_at_zero(right), right


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_sentence_says_a_starts_at_zero(path):
    """Issue 24, item 1: one convention, PEFT's: B (lora_B) starts at zero, A (lora_A) is random."""
    found = [s for c in load(path)["cells"] if c["cell_type"] == "markdown" for s in a_starts_at_zero(text_of(c))]
    assert not found, f"{path.name}: in PEFT's convention B (lora_B) starts at zero and A (lora_A) is random; these say A: {found}"


PROMPT = re.compile(r"\*\*Exercise \d+[a-z]?\b")
DEFINED = re.compile(r"^(?:def|class) (\w+)", re.M)


def graded_exercises(path) -> list[dict]:
    """Each graded cell (nbgrader ``grade``) with its answer cell, the name that cell defines and the markdown above it.

    "Above it": the nearest markdown cell before the answer cell, reached over code cells only (the cell that
    creates the exercise, a bug hunt's planted bug); another exercise's answer or check cell in between does not count.
    """
    cells = load(path)["cells"]
    found = []
    for i, cell in enumerate(cells):
        nbgrader = cell.get("metadata", {}).get("nbgrader", {})
        if not nbgrader.get("grade") or nbgrader.get("solution"):
            continue
        answer = next((j for j in range(i - 1, -1, -1) if cells[j].get("metadata", {}).get("nbgrader", {}).get("solution")), None)
        defined = DEFINED.findall(text_of(cells[answer])) if answer is not None else []
        prompt = None
        for j in range(answer - 1 if answer is not None else -1, -1, -1):
            if cells[j]["cell_type"] == "markdown":
                prompt = text_of(cells[j])
                break
            if cells[j].get("metadata", {}).get("nbgrader", {}):
                break
        found.append(dict(grade_id=nbgrader.get("grade_id"), name=defined[0] if defined else None, prompt=prompt))
    return found


@pytest.mark.parametrize("path", params("prompts", NOTEBOOKS), ids=lambda p: p.name)
def test_every_graded_exercise_has_its_own_prompt_above_it(path):
    """Issue 24, item 5: **Exercise N.** Write `f(...)` …, directly above each graded exercise's cells."""
    for ex in graded_exercises(path):
        assert ex["name"], f"{path.name}: {ex['grade_id']}: its answer cell defines no function or class"
        assert ex["prompt"] and PROMPT.search(ex["prompt"]), (
            f"{path.name}: {ex['grade_id']} ({ex['name']}) has no '**Exercise N.**' prompt in the markdown cell directly above it")
        assert f"`{ex['name']}" in ex["prompt"], (
            f"{path.name}: the prompt above {ex['grade_id']} does not name `{ex['name']}`, the function it asks for")


def test_the_prompt_check_catches_a_lost_prompt(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("Some text about merging."),
                                         nbformat.v4.new_code_cell("ex5e = le.exercise_bank.lora_forward()"),
                                         nbformat.v4.new_code_cell("def lora_forward(x):\n    ### BEGIN SOLUTION"),
                                         nbformat.v4.new_code_cell("ex5e.check(lora_forward).mark()")])
    nb.cells[2].metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "ex05_lora_forward"}
    nb.cells[3].metadata["nbgrader"] = {"solution": False, "grade": True, "grade_id": "ex05_lora_forward_check"}
    path = tmp_path / "05_x.ipynb"
    nbformat.write(nb, path)
    [ex] = graded_exercises(path)
    assert ex["name"] == "lora_forward" and not PROMPT.search(ex["prompt"])
    nb.cells[0].source = "**Exercise 5e.** Write `lora_forward(x, W, b, A, B, scaling)`: …"
    nbformat.write(nb, path)
    assert PROMPT.search(graded_exercises(path)[0]["prompt"])


LABEL = re.compile(r"\*\*Exercise (\d+)([a-z]?)\b")
MENTION = re.compile(r"\b[Ee]xercise (\d+[a-z]?)\b")
CHECK_VARIABLE = re.compile(r"\bex(\d+[a-z]?)\.check\(")


def exercise_labels(cells) -> list[tuple[str, bool]]:
    """Each prompt's label (``**Exercise 5a…``) in reading order, with whether it sits in a deep dive."""
    labels, deep = [], False
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for line in text_of(cell).split("\n"):
            deep = deep or line.startswith(cm.DEEP_DIVE_HEADING)
            labels += [(number + letter, deep) for number, letter in LABEL.findall(line)]
    return labels


def label_problems(cells, number: int) -> list[str]:
    """What is wrong with a notebook's exercise labels; empty when they follow the course's convention.

    The convention: a notebook's exercises carry its own number; the first is "Exercise N" and the next
    "Nb, Nc …", or they run "Na, Nb …"; in reading order; main-line exercises before deep-dive ones;
    every "Exercise X" the prose mentions is one of them, and each check cell's variable (``exX.check``)
    carries the label of the prompt above it.
    """
    labels = exercise_labels(cells)
    problems = []
    wrong_number = [label for label, _ in labels if int(re.match(r"\d+", label)[0]) != number]
    if wrong_number:
        problems.append(f"labels {wrong_number} do not carry the notebook's number {number}")
    if labels:
        first = labels[0][0].removeprefix(str(number))
        letters = "abcdefghijklmnopqrstuvwxyz"
        suffixes = [""] + list(letters[1:]) if first == "" else list(letters)
        expected = [f"{number}{s}" for s in suffixes[:len(labels)]]
        if [label for label, _ in labels] != expected:
            problems.append(f"labels in reading order are {[label for label, _ in labels]}, expected {expected}")
    by_label = sorted(labels, key=lambda item: (int(re.match(r"\d+", item[0])[0]), item[0]))
    if [d for _, d in by_label] != sorted(d for _, d in by_label):
        problems.append(f"a deep-dive exercise's label comes before a main-line one's: {labels} (label, in a deep dive)")
    known = {label for label, _ in labels}
    stray = sorted({m for c in cells if c["cell_type"] == "markdown" for m in MENTION.findall(text_of(c))} - known)
    if stray:
        problems.append(f"the prose mentions exercises {stray}, which no prompt carries (labels: {sorted(known)})")
    prompt = None
    for cell in cells:
        if cell["cell_type"] == "markdown":
            prompt = next(iter(LABEL.findall(text_of(cell))[-1:]), None) or prompt
        elif cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            used = CHECK_VARIABLE.findall(text_of(cell))
            if prompt and used and used != ["".join(prompt)]:
                problems.append(f"the check {used} sits below the prompt of Exercise {''.join(prompt)}")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercise_labels_in_reading_order_main_line_first(path):
    """Issue 24: "Exercise N", then Nb, Nc … (or Na, Nb …) in reading order; no deep-dive exercise before a main-line one."""
    problems = label_problems(load(path)["cells"], int(path.name[:2]))
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_the_label_check_catches_the_old_orders():
    """Notebook 03 before the renumbering: 3c (predict first), 3a, then 3b in the deep dive; 00's 0b before 0."""
    import nbformat

    def notebook(*cells):
        return [nbformat.v4.new_markdown_cell(c) if isinstance(c, str) else nbformat.v4.new_code_cell(c[0]) for c in cells]

    old_03 = notebook("**Exercise 3c (predict first).** …", "**Exercise 3a.** Write `grad_B`", "## Summary",
                      "## Deep dive (optional): one step\n**Exercise 3b (optional exercise).** Write `one_step`")
    assert any("reading order" in p for p in label_problems(old_03, 3))
    old_00 = notebook("**Exercise 0b (predict first).**", "## Summary", "## Deep dive (optional): x\n**Exercise 0 (optional exercise).**")
    assert any("reading order" in p for p in label_problems(old_00, 0))
    old_05 = notebook("**Exercise 5d.**", "**Exercise 5e.**", "## Summary", "## Deep dive (optional): x\n**Exercise 5a.**")
    assert any("deep-dive exercise's label comes before" in p for p in label_problems(old_05, 5))
    assert any("notebook's number" in p for p in label_problems(notebook("**Exercise 1.**", "**Exercise 2.**"), 1))
    stale = notebook("**Exercise 6.**", "**Exercise 6b.**", "as in Exercise 6c")
    assert any("mentions exercises ['6c']" in p for p in label_problems(stale, 6))
    swapped = notebook("**Exercise 5a.** Write `f`", ("ex5b.check(f).mark()",))
    swapped[1].metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "ex05_f_check"}
    assert any("sits below the prompt" in p for p in label_problems(swapped, 5))
    assert label_problems(notebook("**Exercise 6.**", "**Exercise 6b (bug hunt).**", "## Summary",
                                   "## Deep dive (optional): x\nExercise 6b, in the main line."), 6) == []
    assert label_problems(notebook("**Exercise 5a.**", "**Exercise 5b.**", "## Deep dive (optional): x\n**Exercise 5c.**"), 5) == []


def test_the_idea_comes_within_the_first_15_minutes_of_notebook_00():
    """Issue 24, item 2: the layer, what it adds, why it starts unchanged, one picture and the count prediction."""
    path = ROOT / "notebooks" / "00_start_here.ipynb"
    main = "\n".join(text_of(c) for c in cm.main_line(path))
    for shown in ("base(x) + scaling * (x @ A.T) @ B.T", "requires_grad_(False)", "torch.zeros(4, r", "ΔW = scaling·B·A",
                  "B starts at zero, so ΔW starts at zero", "le.plotting.update_spectrum_figure", "le.exercise_bank.predict_trainable()"):
        assert shown in main, shown
    pointer = "The course map, with every notebook's time and prerequisites, is the first deep dive below."
    flat = " ".join(main.split())
    order = [flat.index(s) for s in ("def lora_layer", "update_spectrum_figure", "predict_trainable()", pointer)]
    assert order == sorted(order), "the layer, the picture, the prediction, then how the course works"
    assert "course_map_markdown" not in main, "the course map is a deep dive: the main line only points to it"
    text = (ROOT / "notebooks" / "00_start_here.ipynb").read_text()
    first_dive = text.index("## Deep dive (optional)")
    assert text.index("## Deep dive (optional): the course map") == first_dive, "the course map is the first deep dive"
    assert first_dive < text.index("course_map_markdown()") < text.index("## Deep dive (optional)", first_dive + 1)
    minutes = cm.minutes_until(path, "ex0.check(predict_trainable)")
    assert minutes <= 15, f"notebook 00 reaches its count prediction after {minutes:.1f} minutes by the time method (at most 15)"


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


def test_the_stated_times_come_from_the_time_method():
    """The course map's minutes (lora_edu/data/course_times.json), each notebook's Estimated time line, the README's
    table and the instructor guide agree with a fresh computation from the notebooks."""
    import course_times  # tools/course_times.py

    edits = course_times.planned_edits(course_times.compute())
    assert not edits, f"stated times out of date in {[str(p.relative_to(ROOT)) for p in edits]}: run python tools/course_times.py --write"


def test_the_core_path_reads_in_at_most_three_hours():
    minutes = cm.core_path_minutes()
    assert minutes <= cm.CORE_PATH_MAX_MINUTES, f"core path {minutes} min > {cm.CORE_PATH_MAX_MINUTES}"
