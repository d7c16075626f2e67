"""The execution-time budgets in lora_edu.course.course_map (read by conftest.py and benchmarks/bench_course.py)."""
from dataclasses import replace

from lora_edu.course import course_map as cm

NB04 = "notebooks/04_rank_and_alpha.ipynb"
FIRST_SEVEN = cm.COURSE_MAP[:7]   # the course as first released, 00..06: the budgets' base


def test_the_seven_notebook_course_has_120_s_and_30_s_a_notebook():
    assert [ch.notebook[:2] for ch in FIRST_SEVEN] == ["00", "01", "02", "03", "04", "05", "06"]
    assert cm.course_budget_s(FIRST_SEVEN) == 120.0
    assert all(cm.notebook_budget_s(ch.notebook, FIRST_SEVEN) == 30.0 for ch in FIRST_SEVEN)
    # the course as it stands: 30 s more for each notebook after 06, whatever their number
    assert cm.course_budget_s() == 120.0 + 30.0 * (len(cm.COURSE_MAP) - 7)


def test_notebooks_07_and_08_raise_the_course_budget_to_180_s_and_07_may_take_60_s():
    template = FIRST_SEVEN[-1]
    grown = FIRST_SEVEN + [replace(template, notebook="07_next.ipynb", budget_s=60.0),
                             replace(template, notebook="08_after.ipynb")]
    assert cm.course_budget_s(grown) == 180.0
    assert cm.notebook_budget_s("notebooks/07_next.ipynb", grown) == 60.0
    assert cm.notebook_budget_s("08_after.ipynb", grown) == 30.0


def test_a_notebook_missing_from_the_map_gets_the_default_budget():
    assert cm.notebook_budget_s("notebooks/99_draft.ipynb") == 30.0


def test_a_busy_machine_is_over_budget_but_no_failure():
    # The case of the issue: notebook 04 took 55.9 s while another process used one core.
    assert cm.time_verdicts({NB04: 55.9}, whole_course=False) == [("over", f"{NB04} took 55.9 s (budget 30 s)")]


def test_within_budget_says_nothing_and_only_past_three_times_fails():
    assert cm.time_verdicts({NB04: 30.0}, whole_course=False) == []
    assert cm.time_verdicts({NB04: 90.0}, whole_course=False)[0][0] == "over"
    assert cm.time_verdicts({NB04: 90.1}, whole_course=False)[0][0] == "gross"


def test_the_course_total_is_judged_only_when_every_notebook_ran():
    seconds = {ch.notebook: 29.0 for ch in cm.COURSE_MAP}  # 203 s: each within 30 s, the course over 120 s
    assert cm.time_verdicts(seconds, whole_course=False) == []
    assert [level for level, _ in cm.time_verdicts(seconds, whole_course=True)] == ["over"]


def test_a_course_over_three_times_its_budget_fails_even_when_each_notebook_is_only_over():
    seconds = {ch.notebook: 55.0 for ch in FIRST_SEVEN}  # 385 s > 3 × 120 s
    assert [level for level, _ in cm.time_verdicts(seconds, whole_course=True, chapters=FIRST_SEVEN)] == ["over"] * 7 + ["gross"]


# ---- the time method (issue 24, item 3) ---------------------------------------------------------------------

import inspect  # noqa: E402

import nbformat  # noqa: E402
import pytest  # noqa: E402

from lora_edu.course import exercise_bank  # noqa: E402
from lora_edu.course.exercises import CriterionExercise, PredictExercise  # noqa: E402


def write_notebook(tmp_path, *cells):
    nb = nbformat.v4.new_notebook()
    for kind, text, *grader in cells:
        cell = nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
        if grader:
            cell.metadata["nbgrader"] = grader[0]
        nb.cells.append(cell)
    path = tmp_path / "99_sample.ipynb"
    nbformat.write(nb, path)
    return path


def sample(tmp_path):
    words = " ".join(["word"] * 190)
    return write_notebook(
        tmp_path,
        ("md", "# 99 · Sample\n## Learning goals\n- one"),                        # 9 tokens
        ("code", cm.INSTALL_CELL_FIRST_LINE + "\n%pip install lora-edu"),         # not counted
        ("md", "## The idea\n" + words),                                         # 193 words
        ("code", "print(1)"),                                                    # 1 cell
        ("code", "ex = le.exercise_bank.predict_trainable()"),                   # the exercise's own: 4 minutes
        ("code", "def predict_trainable():\n    return 1", {"solution": True, "grade": False}),
        ("code", "ex.check(predict_trainable).mark()", {"solution": False, "grade": True}),
        ("code", "ex.check(lambda: 2)"),                                         # runs its check: the exercise's own
        ("md", "## Summary\n- done.\n\n## References\n- " + words),               # 4 words; references not counted
        ("md", "## Deep dive (optional): more\n" + words),                      # not counted
        ("code", "print(2)"),                                                    # not counted
        ("code", "ex2 = le.exercise_bank.lora_plan()"),                          # not counted: after the deep dive
        ("md", "## References\n- " + words),
    )


def test_main_line_words_cells_and_exercises(tmp_path):
    path = sample(tmp_path)
    assert cm.main_line_words(path) == 9 + 193 + 4
    assert cm.main_line_code_cells(path) == 1
    assert cm.main_line_exercises(path) == ["predict_trainable"]
    t = cm.time_breakdown(path)
    assert t["code_lines"] == 1 and t["output_lines"] == 0 and t["figures"] == 0
    assert t["minutes_exact"] == pytest.approx(206 / cm.WORDS_PER_MINUTE + 1 / cm.CODE_LINES_PER_MINUTE + 4, abs=0.01) and t["minutes"] == 7
    assert t["exercises"] == [["predict_trainable", "predict by derivation", 4]]
    assert cm.minutes_until(path, "print(1)") == pytest.approx((9 + 193) / cm.WORDS_PER_MINUTE + 1 / cm.CODE_LINES_PER_MINUTE)
    with pytest.raises(ValueError, match="no main-line cell"):
        cm.minutes_until(path, "print(2)")


def test_a_deep_dive_heading_inside_a_cell_cuts_the_main_line_there(tmp_path):
    path = write_notebook(tmp_path, ("md", "# T\nfour words here now\n## Summary\nok\n" + cm.DEEP_DIVE_HEADING + " x\nnot counted"))
    assert cm.main_line_words(path) == 2 + 4 + 2 + 1


def test_stated_minutes_round_up_to_the_whole_minute_and_at_least_five():
    """A learner is never told less than the method computes (the read-through of 01 and 04 found 15 stated for 16.9
    and 17.3); a float's last bits do not add a minute (17.000000001 states 17, as course_times.json stores 17.0)."""
    assert [cm.stated_minutes(m) for m in (0.5, 4.2, 7.01, 16.87, 17.0, 17.000000001, 22.5, 180.0)] == [
        5, 5, 8, 17, 17, 17, 23, 180]
    assert all(cm.stated_minutes(m) >= m for m in (5.2, 16.9, 17.3, 49.9, 178.9))


def _output(text=None, image_axes=None, widget=False):
    if widget:
        return {"output_type": "display_data", "metadata": {},
                "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "VBox(...)"}}
    if image_axes is not None:
        return {"output_type": "display_data", "metadata": {},
                "data": {"image/png": "iVBOR", "text/plain": f"<Figure size 1200x380 with {image_axes} Axes>"}}
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_tables_panels_and_widgets_are_counted_as_the_read_through_found_them():
    """Numeric-table lines at 10 a minute, prose-like lines at 20; a figure 1 minute and half a minute for each further
    panel (at most 3 counted); a widget 2 minutes, its still included; a progress bar one line."""
    prose_line, table_line = "same logits (to 1e-5): True\n", "     1         75.0%    89.8%\n"
    assert cm._is_table_line(table_line) and not cm._is_table_line(prose_line)
    cell = {"cell_type": "code", "source": "", "outputs": [_output(prose_line * 2 + table_line * 3)]}
    assert cm._cell_output(cell)["lines"] == 5 and cm._cell_output(cell)["table_lines"] == 3
    assert cm._cell_minutes(cell) == pytest.approx(2 / cm.OUTPUT_LINES_PER_MINUTE + 3 / cm.TABLE_LINES_PER_MINUTE)
    for axes, minutes in ((1, 1.0), (2, 1.5), (3, 2.0), (6, 2.0)):
        cell = {"cell_type": "code", "source": "", "outputs": [_output(image_axes=axes)]}
        assert cm._cell_minutes(cell) == pytest.approx(minutes), axes
    still_and_widget = {"cell_type": "code", "source": "", "outputs": [_output(widget=True), _output(image_axes=3)]}
    out = cm._cell_output(still_and_widget)
    assert (out["widgets"], out["panels"], out["figures"]) == (1, 0, 1)
    assert cm._cell_minutes(still_and_widget) == pytest.approx(cm.MINUTES_PER_WIDGET)
    bar = {"output_type": "display_data", "metadata": {}, "data": {
        "application/vnd.jupyter.widget-view+json": {"model_id": "y"}, "text/plain": "LoRA r=4:  0%|          | 0/30 [00:00<?, ?it/s]"}}
    assert cm._cell_output({"cell_type": "code", "source": "", "outputs": [bar]})["widgets"] == 0


def test_bad_input_gets_a_clear_error():
    with pytest.raises(FileNotFoundError, match="is not a notebook file"):
        cm.main_line_words("notebooks/no_such.ipynb")
    with pytest.raises(KeyError, match="add it to EXERCISE_KINDS in lora_edu/course/course_map.py"):
        cm.exercise_minutes("a_new_exercise")


def test_every_exercise_of_the_bank_has_a_kind_that_fits_its_class():
    factories = {name for name, f in inspect.getmembers(exercise_bank, inspect.isfunction)
                 if not name.startswith("_") and f.__module__ == exercise_bank.__name__}
    factories |= {f.__name__ for f in exercise_bank.BUILD_EXERCISES}   # notebook 05's, from build_exercises
    assert factories == set(cm.EXERCISE_KINDS), (
        f"without a kind: {sorted(factories - set(cm.EXERCISE_KINDS))}; not in the bank: {sorted(set(cm.EXERCISE_KINDS) - factories)}")
    assert set(cm.EXERCISE_KINDS.values()) <= set(cm.KIND_MINUTES)
    for name, kind in cm.EXERCISE_KINDS.items():
        exercise = getattr(exercise_bank, name)()
        assert isinstance(exercise, PredictExercise) == kind.startswith("predict"), name
        assert isinstance(exercise, CriterionExercise) == (kind == "open"), name


def test_the_map_reads_the_computed_times_and_names_the_core_path():
    from lora_edu.data import load_json

    stored = load_json(cm.TIMES_FILE)
    assert [ch.minutes for ch in cm.COURSE_MAP] == [stored["notebooks"][ch.notebook]["minutes"] for ch in cm.COURSE_MAP]
    assert cm.core_path_minutes() == stored["core_path"]["minutes"]
    assert [ch.notebook[:2] for ch in cm.COURSE_MAP if ch.core] == list(cm.CORE_PATH)
    table = cm.course_map_markdown()
    assert f"| **Core path, 00–07** | | **{cm.core_path_minutes()} min** | |" in table
    with pytest.raises(KeyError, match="run python tools/course_times.py --write"):
        _ = replace(cm.COURSE_MAP[0], notebook="99_new.ipynb").minutes


def test_a_progress_bar_is_a_line_of_output_and_a_widget_a_figure():
    """tqdm's bars are widgets too; the time method reads them as one line each, not as a figure to study."""
    from lora_edu.course.course_map import _output_lines_and_figures

    widget = "application/vnd.jupyter.widget-view+json"
    bar = {"output_type": "display_data", "data": {widget: {}, "text/plain": "LoRA r=4:   0%|          | 0/30 [00:00<?, ?it/s]"}}
    slider = {"output_type": "display_data", "data": {widget: {}, "text/plain": "interactive(children=(IntSlider(value=4)))"}}
    assert _output_lines_and_figures({"outputs": [bar, bar]}) == (2, 0)
    assert _output_lines_and_figures({"outputs": [slider, bar]}) == (1, 1)


def test_the_first_notebook_is_read_more_slowly(tmp_path):
    """Notebook 00 brings in every term of the course: its prose counts at the first-contact rate, the others at the usual one."""
    assert cm.words_per_minute("notebooks/00_start_here.ipynb") == cm.FIRST_CONTACT_WORDS_PER_MINUTE < cm.WORDS_PER_MINUTE
    assert cm.words_per_minute("notebooks/03_gradient_step.ipynb") == cm.WORDS_PER_MINUTE
    other = write_notebook(tmp_path, ("md", "# T\n" + " ".join(["word"] * 140)))   # 142 words
    first = other.rename(tmp_path / "00_first.ipynb")
    assert cm.time_breakdown(first)["minutes_exact"] == pytest.approx(142 / cm.FIRST_CONTACT_WORDS_PER_MINUTE, abs=0.01)
    assert cm.minutes_until(first, "word") == pytest.approx(142 / cm.FIRST_CONTACT_WORDS_PER_MINUTE)
