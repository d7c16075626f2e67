"""Slide metadata (tools/slides.py): every notebook carries it, it follows the rules, and the rules do what they say.

The rules themselves are in the docstring of ``tools/slides.py``; the unit tests below run them on
small synthetic notebooks, one rule at a time. The notebook tests read the stored notebooks: one
that lacks the metadata, or whose metadata is stale, fails with the command that fixes it.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import slides  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tests" / "notebooks"))
from pending import params  # noqa: E402  (issue 24's checks other owners' notebooks do not pass yet)

INSTALL = slides.INSTALL_CELL_FIRST_LINE + ": install it first\n%pip install lora-edu"
FIX = "run: python tools/slides.py notebooks/*.ipynb (or make slides)"


def md(text):
    return nbformat.v4.new_markdown_cell(text)


def code(text, **nbgrader):
    cell = nbformat.v4.new_code_cell(text)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "locked": not nbgrader.get("solution"), **nbgrader}
    return cell


def notebook(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def types(*cells):
    return slides.slide_types(list(cells))


# ---- the stored notebooks --------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_a_slide_type(path):
    cells = json.loads(path.read_text())["cells"]
    missing = [i for i, c in enumerate(cells) if "slide_type" not in c.get("metadata", {}).get("slideshow", {})]
    assert not missing, f"{path.name}: cells {missing} have no slide metadata; {FIX}"
    bad = {c["metadata"]["slideshow"]["slide_type"] for c in cells} - set(slides.SLIDE_TYPES)
    assert not bad, f"{path.name}: unknown slide types {bad}; {FIX}"


@pytest.mark.parametrize("path", params("slide metadata", NOTEBOOKS), ids=lambda p: p.name)
def test_slide_metadata_follows_the_rules(path):
    """Hand edits (RISE's own cell toolbar) and new cells are caught here: the tool is the one source."""
    found = slides.problems(json.loads(path.read_text()))
    assert not found, f"{path.name}: slide metadata out of date; {FIX}\n" + "\n".join(found[:10])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_slideshow_structure(path):
    """What a lecture needs, whatever the rules become: title and sections on top, set-up and solutions hidden."""
    cells = json.loads(path.read_text())["cells"]
    kind = [c.get("metadata", {}).get("slideshow", {}).get("slide_type") for c in cells]
    assert kind[0] == "slide", f"{path.name}: the title cell opens the slideshow; {FIX}"
    for c, k in zip(cells, kind):
        text = slides._source(c)
        sections = [line for line in text.split("\n") if line.startswith("## ")]
        if c["cell_type"] == "markdown" and sections:
            assert k == "slide", f"{path.name}: the cell with section {sections[0]!r} is not a slide; {FIX}"
        if c["cell_type"] == "code" and (text.startswith(slides.INSTALL_CELL_FIRST_LINE) or "### BEGIN SOLUTION" in text):
            assert k == "skip", f"{path.name}: the install cell and solutions are hidden in the slideshow; {FIX}"
    assert kind.count("slide") >= 3, f"{path.name}: a slideshow of title, sections and summary; {FIX}"
    markdown = [slides._source(c) for c in cells if c["cell_type"] == "markdown"]
    assert "## References" in "\n".join(markdown[-2:]), f"{path.name}: the last slide keeps the references"


@pytest.mark.parametrize("path", params("slide text", NOTEBOOKS), ids=lambda p: p.name)
def test_no_slide_shows_more_than_about_120_words_in_one_cell(path):
    """Issue 24, item 6: long prose is speaker notes; a heading keeps a cell visible, so a long one must be split."""
    long = slides.long_slides(json.loads(path.read_text()))
    assert not long, (f"{path.name}: cells {long} are slides of more than {slides.LONG_PROSE_WORDS} words; keep the heading "
                      "and a short lead, move the rest into a cell of its own (it becomes speaker notes)")


def test_notebooks_00_02_03_have_speaker_notes():
    for stem in ("00_start_here", "02_worked_example", "03_gradient_step"):
        cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
        assert any(c.get("metadata", {}).get("slideshow", {}).get("slide_type") == "notes" for c in cells), stem


def test_a_notebook_without_metadata_fails_with_the_fix(tmp_path):
    path = tmp_path / "99_bare.ipynb"
    nbformat.write(notebook(md("# Title"), code(INSTALL), md("## Section"), code("print(1)")), path)
    found = slides.problems(json.loads(path.read_text()))
    assert found and "slide_type None, the rules give 'slide'" in found[0]
    assert slides.main(["--check", str(path)]) == 1
    assert slides.main([str(path)]) == 0 and slides.main(["--check", str(path)]) == 0


# ---- the rules, on synthetic notebooks ---------------------------------------------------------

def test_title_and_sections_are_slides_and_subsections_subslides():
    assert types(md("# T\n## Learning goals"), md("## A"), md("text"), md("### A.1"), md("## B")) == \
        ["slide", "slide", "-", "subslide", "slide"]


def test_one_code_cell_per_screen():
    assert types(md("# T"), md("lead-in prose"), code("x = f()"), code("plot(x)"), md("prose after it, long enough " * 12),
                 code("y = g(x)")) == ["slide", "-", "-", "subslide", "subslide", "-"]


def test_a_short_closing_remark_is_a_fragment_but_a_lead_in_opens_the_next_screen():
    remark, lead_in, colon = md("Only the first row is non-zero."), md("Now a real update."), md("The same in PyTorch:")
    assert types(md("# T"), code("show()"), remark, md("## Next")) == ["slide", "-", "fragment", "slide"]
    assert types(md("# T"), code("show()"), lead_in, code("real()")) == ["slide", "-", "subslide", "-"]
    assert types(md("# T"), code("show()"), colon, md("## Next")) == ["slide", "-", "subslide", "slide"]
    assert types(md("# T"), remark, code("show()")) == ["slide", "-", "-"], "before any code a remark is plain prose"


def test_a_heading_in_the_middle_of_a_cell_still_makes_a_slide():
    long = "word " * (slides.LONG_PROSE_WORDS + 1)
    nb = notebook(md("# T"), code("show()"), md(long + "\n\n## Next section\nIntro."), md("Text\n### Sub"),
                  md("```python\n# a comment, not a heading\n```"))
    assert slides.slide_types(nb.cells) == ["slide", "-", "slide", "subslide", "-"]
    assert slides.mid_cell_headings(nb) == [2, 3]


def test_long_prose_is_speaker_notes_but_a_long_heading_cell_is_a_slide():
    long, just = "word " * (slides.LONG_PROSE_WORDS + 1), "word " * slides.LONG_PROSE_WORDS
    assert types(md("# T"), code("show()"), md(long), code("more()")) == ["slide", "-", "notes", "subslide"]
    assert types(md("# T"), code("show()"), md(just + "\n\n"), code("more()")) == ["slide", "-", "subslide", "-"]
    assert types(md("# T"), md("## Summary\n" + long)) == ["slide", "slide"]
    nb = notebook(md("# T\n" + long), md("## References\n" + long), md("## Section\nshort"))
    assert slides.long_slides(nb) == [0], "a heading cell over the limit is listed (the references are exempt)"


def test_the_threshold_counts_words_not_characters():
    """Issue 24: about 120 words a slide; 1,200 characters of formulas were far fewer words than that."""
    assert slides.LONG_PROSE_WORDS == 120
    assert slides.cell_role(md("W·x " * 121)) == "long" and slides.cell_role(md("ΔW = B·A " * 40)) == "prose"


def test_a_speaker_notes_cell_is_notes_whatever_its_length():
    note = md(slides.SPEAKER_NOTES_MARK + " Ask the room first.")
    assert types(md("# T"), code("show()"), note, md("Only a remark.")) == ["slide", "-", "notes", "fragment"]


def test_install_setup_and_graded_cells_are_skipped():
    setup = code("import numpy as np\nfrom torch import nn\n\nrng = le.seed_everything(0)\nGB, GiB = le.memory.GB, le.memory.GiB\n"
                 "np.set_printoptions(precision=4)\nwarnings.filterwarnings('ignore')\n%matplotlib inline")
    exercise = code("ex2 = le.exercise_bank.delta_w()")
    solution = code("def f(A, B):\n    ### BEGIN SOLUTION\n    return B @ A\n    ### END SOLUTION", solution=True, grade=False)
    check = code("ex2.check(f).mark()", solution=False, grade=True, points=1.0)
    assert types(md("# T"), code(INSTALL), setup, md("## Exercise"), exercise, solution, check, md("## Summary")) == \
        ["slide", "skip", "skip", "slide", "skip", "skip", "skip", "slide"]


def test_set_up_means_only_set_up():
    for shown in ("import numpy as np\nprint(np.pi)", "x = np.zeros(3)", "display(Markdown('a'))", "", "def f(): pass",
                  "import torch\nmodel = torch.nn.Linear(2, 2)"):
        assert not slides.is_setup_code(shown), shown
    assert slides.is_setup_code("%matplotlib inline")
    assert slides.cell_role(code("ex0b = le.exercise_bank.lora_param_count()")) == "setup"
    assert slides.cell_role(code("x = (")) == "code", "a cell Python cannot parse is shown, not guessed at"


def test_hidden_cells_do_not_end_a_screen():
    assert types(md("# T"), code("show()"), code("import os"), md("Only a remark."), md("## B")) == \
        ["slide", "-", "skip", "fragment", "slide"]


def test_the_first_shown_cell_is_a_slide_even_without_a_title():
    assert types(code(INSTALL), md("Some text"), code("x()")) == ["skip", "slide", "-"]
    assert types() == []


def test_apply_is_idempotent_keeps_other_metadata_and_sets_rise_settings():
    nb = notebook(md("# T"), code(INSTALL), md("## A"), code("show()"))
    nb.cells[3].metadata["tags"] = ["keep-me"]
    nb.cells[3].metadata["slideshow"] = {"slide_type": "notes", "other": 1}
    assert slides.apply(nb) is True
    first = nbformat.writes(nb)
    assert slides.apply(nb) is False and nbformat.writes(nb) == first
    assert nb.cells[3].metadata == {"tags": ["keep-me"], "slideshow": {"slide_type": "-", "other": 1}}
    assert nb.metadata["rise"] == slides.RISE_SETTINGS and slides.problems(nb) == []


def test_outputs_do_not_change_the_slides():
    """Executed notebooks and their student versions (no outputs) get the same slideshow."""
    cells = [md("# T"), code("show()"), md("Only a remark."), md("## B")]
    executed = [nbformat.from_dict(c) for c in cells]
    executed[1].outputs = [nbformat.v4.new_output("stream", text="x" * 5000)]
    assert slides.slide_types(executed) == slides.slide_types(cells)


def test_command_line_refuses_bad_input_and_changes_nothing(tmp_path, capsys):
    assert slides.main([]) == 2
    text = tmp_path / "notes.txt"
    text.write_text("not a notebook")
    assert slides.main([str(text)]) == 2 and text.read_text() == "not a notebook"
    assert "pass .ipynb files" in capsys.readouterr().err


# ---- the instructor guide ------------------------------------------------------------------------

GUIDE = ROOT / "docs" / "instructor_guide.md"


def guide_table(heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first Markdown table after ``heading`` in the guide."""
    after = GUIDE.read_text().split(heading, 1)[1].split("\n")
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    end = next((i for i, line in enumerate(after[start:]) if not line.startswith("|")), len(after) - start)
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in after[start:start + end]][2:]


def headings(stem: str, level: str = "## ") -> list[str]:
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    return [line[len(level):].strip() for c in cells if c["cell_type"] == "markdown"
            for line in slides._source(c).split("\n") if line.startswith(level)]


def test_the_readme_links_the_guide():
    readme = (ROOT / "README.md").read_text().split("## For instructors")[1].split("\n## ")[0]
    assert "(docs/instructor_guide.md)" in readme


def test_the_guide_names_only_notebooks_of_the_course():
    from lora_edu.course.course_map import COURSE_MAP

    stems = {ch.notebook.removesuffix(".ipynb"): ch for ch in COURSE_MAP}
    named = set(re.findall(r"`(\d\d_[a-z0-9_]+)`", GUIDE.read_text()))
    assert named, "the guide names its notebooks as `NN_name`"
    unknown = sorted(n for n in named if n not in stems or not (ROOT / "notebooks" / f"{n}.ipynb").exists())
    assert not unknown, f"the instructor guide names notebooks the course does not have: {unknown}"
    for row in guide_table("## A 90-minute lecture") + guide_table("**Optional and advanced stops**"):
        stem = re.search(r"`(\d\d_[a-z0-9_]+)`", row[1])
        if stem:
            assert stems[stem.group(1)].title in row[1], f"call {stem.group(1)} by its course-map title"


def test_the_lecture_path_fits_in_90_minutes_and_says_its_total():

    minutes = [int(row[0]) for row in guide_table("## A 90-minute lecture")]
    assert len(minutes) >= 7 and sum(minutes) <= 90, minutes
    assert f"Total: {sum(minutes)} minutes" in GUIDE.read_text()


def test_the_sections_the_guide_shows_exist():
    """Every quoted section of the lecture path is (the start of) a `## ` heading of its notebook."""
    for row in guide_table("## A 90-minute lecture") + guide_table("**Optional and advanced stops**"):
        stem = re.search(r"`(\d\d_[a-z0-9_]+)`", row[1])
        if not stem:
            continue
        sections = headings(stem.group(1))
        for quoted in re.findall(r"\"([^\"]+)\"", " ".join(row[2:])):
            assert any(h.startswith(quoted) for h in sections), f"{stem.group(1)} has no section {quoted!r}: {sections}"


def test_the_lab_plan_names_real_exercises_in_their_notebooks():
    from lora_edu.course import exercise_bank

    rows = guide_table("## The lab session")
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        stem, name = re.search(r"`(\d\d_[a-z0-9_]+)`", row[1]).group(1), row[2].strip("`")
        assert callable(getattr(exercise_bank, name, None)), f"no exercise factory {name}"
        source = (ROOT / "notebooks" / f"{stem}.ipynb").read_text()
        assert f"le.exercise_bank.{name}()" in source, f"{stem} does not create the exercise {name}"


def test_make_lab_and_instructor_give_rise_the_widget_manager_its_console_token():
    """The Makefile puts tools/rise_widgets on JUPYTER_PATH for every target (the browser test's server does the same)."""
    makefile = (ROOT / "Makefile").read_text()
    assert "export JUPYTER_PATH := $(CURDIR)/tools/rise_widgets" in makefile
    package = json.loads((ROOT / "tools/rise_widgets/labextensions/lora-edu-rise-widgets/package.json").read_text())
    assert (ROOT / "tools/rise_widgets/labextensions/lora-edu-rise-widgets" / package["jupyterlab"]["_build"]["load"]).is_file()


def test_the_guide_states_the_course_maps_minutes_and_each_exercises_kind_and_order():
    """The self-paced total is the course map's; a predict is a PredictExercise, an open task a CriterionExercise,
    a bug hunt's notebook shows the bank's planted bug; the lab plan follows each notebook's order."""
    from lora_edu.course import exercise_bank
    from lora_edu.course.course_map import COURSE_MAP, EXERCISE_KINDS, core_path_minutes
    from lora_edu.course.exercises import CriterionExercise, PredictExercise

    last_core = max(ch.notebook[:2] for ch in COURSE_MAP if ch.core)
    assert f"The course is self-paced: {core_path_minutes()} minutes for the core path (notebooks 00–{last_core})" in GUIDE.read_text()
    from lora_edu.course.course_map import KIND_MINUTES as k

    assert (f"{k['predict']} for a prediction, {k['formula']} for a formula, a prediction by derivation or a bug "
            f"hunt, {k['open']} for an open task, a derivation or the capstone, {k['build']} for a build)") in " ".join(GUIDE.read_text().split())
    assert k["formula"] == k["predict by derivation"] == k["bug hunt"] and k["open"] == k["derive first"] == k["capstone"]
    bugs = {"torch_style_output": exercise_bank.BUGGY_TORCH_STYLE, "outputs_around_merge": exercise_bank.BUGGY_MERGE,
            "merge_conv1d": exercise_bank.BUGGY_MERGE_CONV1D}
    where = {}
    for row in guide_table("## The lab session"):
        stem, name, kind = re.search(r"`(\d\d_[a-z0-9_]+)`", row[1]).group(1), row[2].strip("`"), row[3].split(" (")[0]
        exercise = getattr(exercise_bank, name)()
        assert EXERCISE_KINDS[name] == kind, f"the lab plan calls {name} a {kind!r}; the course map's EXERCISE_KINDS a {EXERCISE_KINDS[name]!r}"
        assert isinstance(exercise, PredictExercise) == kind.startswith("predict"), (name, kind)
        assert isinstance(exercise, CriterionExercise) == (kind == "open"), (name, kind)
        source = (ROOT / "notebooks" / f"{stem}.ipynb").read_text()
        if kind == "bug hunt":
            cells = ["".join(c["source"]) for c in json.loads(source)["cells"]]
            assert any(c.startswith(bugs[name]) for c in cells), f"{stem} does not show the planted bug of {name}"
        where.setdefault(stem, []).append(source.index(f"le.exercise_bank.{name}()"))
    assert all(places == sorted(places) for places in where.values()), where


def test_the_lab_plan_lists_every_graded_exercise_of_the_course_in_order():
    """Issue 24, item 5: the lab plan is checked against the notebooks, both ways: each exercise the notebooks grade has
    its row, each row is an exercise a notebook grades, in the course's order."""
    from lora_edu.course import course_map as cm

    rows = guide_table("## The lab session")
    planned = [(re.search(r"`(\d\d_[a-z0-9_]+)`", row[1]).group(1), row[2].strip("`")) for row in rows]
    graded, optional = [], set()
    for ch in cm.COURSE_MAP:
        path = ROOT / "notebooks" / ch.notebook
        source = path.read_text()
        # every exercise the notebook creates, in its order; one created in a deep dive is optional
        created = list(dict.fromkeys(re.findall(r"le\.exercise_bank\.(\w+)\(\)", "".join(
            cm._source(c) for c in json.loads(source)["cells"] if c["cell_type"] == "code"))))
        main = cm.main_line_exercises(path)
        graded += [(ch.notebook.removesuffix(".ipynb"), name) for name in created]
        optional |= {name for name in created if name not in main}
    marked = {row[2].strip("`") for row in rows if "(optional)" in row[3]}
    assert marked == optional, f"the lab plan marks {sorted(marked)} '(optional)'; the deep dives hold {sorted(optional)}"
    missing = [g for g in graded if g not in planned]
    extra = [p for p in planned if p not in graded]
    assert not missing, f"exercises the notebooks grade but the instructor guide's lab plan does not list: {missing}"
    assert not extra, f"lab-plan rows that no notebook grades: {extra}"
    assert planned == graded, "the lab plan follows the course's order"
