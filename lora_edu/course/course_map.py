"""The course map and the course's time method: one place that notebook 00, the README, the instructor
guide and the hygiene tests all read.

**The time method** (stated in notebook 00). A notebook's estimated time is the time to read its main line and do
its exercises: the main line's words / 100 (a reading speed for technical prose read to be understood; / 70 in
notebook 00, where every term is new), plus its
code read and run at 8 lines a minute, plus what its code prints: text at 20 lines a minute but a line of a numeric
table (a line with three numbers or more) at 10; plus a minute for each figure's first panel (its axes) and half a
minute for each further panel, counting at most 3 (a strip of small images is taken in as one picture); plus 2
minutes for an interactive widget (its still picture included); plus each graded exercise's minutes by its kind
(``KIND_MINUTES``). The sum is rounded *up* to the whole minute (a learner is never told less than the method
computes), and is at least 5. The *main line* is every cell before the first ``## Deep dive (optional): …``
heading, less the ``## References`` section; deep dives are optional reading and are not counted. Code lines are
the non-blank lines that are not comments. The install cell and an exercise's own cells (the cell that creates it,
its answer, its check, and a cell that runs its check on something else, such as a bug hunt's planted bug) are not
counted as code: the exercise's minutes cover them.

Why each term. The rates were set against read-throughs by reviewers acting as learners (docs/reviews/),
which the stated times must match within 20 %. The read-through of 01, 04, 05 and 06
(docs/reviews/readthrough_01_04_05_06.md) found where the first method (every output line at 20 a
minute, every figure or widget one minute, rounding to the nearest 5) undercounted: a dense table of numbers
took about twice as long as prose-like output (each number is compared with its neighbours); a three-panel
figure's cell took 1.5-2.5 minutes with its code, not one (each panel has its own axes to read); a widget's
1.5-2.5 minutes (the learner moves its sliders, which goal statements ask for); and rounding 16.9 and 17.3
down to 15 told the learner 25-35 % less than that read-through found. With these terms the method gives
01, 04, 05 and 06 (as that review read them) 19.4, 21.6, 51.0 and 19.5 minutes against its 20, 23, 48 and
24: within 20 % each. Hence the terms above, and rounding up.
The fifth round of read-throughs and two blind ones (docs/reviews/readthrough_01_07_round5.md,
readthrough_08_09_round5.md, readthrough_blind_01_09.md, readthrough_blind_07_08.md) found the reading speed itself
too fast: this prose is read to be understood and checked against the outputs beside it, and 09's derivation
exercise took 8 minutes, not 4 (most learners read the hint). At 200 words a minute the method under-stated 01, 07,
08 and 09 by 23-54 %. The main lines were then trimmed, and a sixth round of blind read-throughs timed the trimmed
notebooks (docs/reviews/readthrough_round6_*.md): their prose took about 70-110 words a minute, their code about 8
lines a minute, and 05's capstone about 5 minutes (3-10) once the learner's own pieces work. Hence prose at 100
words a minute, code at 8 lines, a capstone 8 minutes (like an open task): with these, nine of the notebooks round
6 timed fall within -14 % and +19 % of its estimates, where 130 words a minute and 10 lines left 00, 06 and 07
32-40 % under; 03 and 04 (timed last) stayed 39 % and 33 % over. Round 7, two new readers for each notebook trimmed
again, checks it (docs/reviews/readthrough_round7_summary.md): nine of eleven within 20 %, the core path +10 %; 00
and 03, the first-contact notebooks dense with notation, 33 % over. Both main lines were then made lighter to read
(shapes in one table, one formula per sentence), and a round 8 of two new blind readers each
(docs/reviews/readthrough_round8_*.md) timed 03 at 21 and 22 minutes against its 18 (+19 %), and 00 at 21 and 19.5,
still 35 % over its 15. Their tables put the gap in 00's exercise: counting LoRA's parameters for two layers from
their shapes took 3-5.6 minutes (round 7's readers: about 4.5), the time of a number that takes a derivation, not of
a number committed to and revealed. So 00's exercise is counted as a *predict by derivation* (4 minutes, not 2):
a correction of its kind, with the rates unchanged. Round 9 (two more readers: 22 and 22) and round 10 (after 00's
main line was shortened again: the figure one panel, the course map a deep dive; 21 and 19) kept 00 at 19-22
minutes while the method gave 15-17: nine readers in all, each slowing to 45-100 words a minute on a prose in which
nearly every sentence brings a new term, where the later notebooks reuse those terms. Hence 00's prose at 70 words a
minute (``FIRST_CONTACT_WORDS_PER_MINUTE``), the one notebook-specific rate; round 11, two new readers of the final
text, checks it: 20.5 and 15.6 minutes against 18 (docs/reviews/readthrough_round8_summary.md, which tables every
notebook against its latest readers: all within 20 %, the core path +7 %).
The minutes are computed from the notebooks (``estimated_minutes``) by ``tools/course_times.py``, which
writes them to ``lora_edu/data/course_times.json`` (read here, so the map also works where the package
is installed without its notebooks, e.g. on Colab) and into every place that states them: the
"Estimated time" line of each notebook, the README's course table and the instructor guide. Tests check
that all of these agree with a fresh computation.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

#: Reading speed of the time method, in words a minute.
WORDS_PER_MINUTE = 100
#: Reading speed of the first notebook, where every term of the course is new (W, ΔW, A, B, α/r, rank, the
#: singular value decomposition): nine blind readers of 00 (rounds 6-10) read its prose at 45-100 words a minute.
FIRST_CONTACT_WORDS_PER_MINUTE = 70
#: The notebooks read at :data:`FIRST_CONTACT_WORDS_PER_MINUTE`: the first one only.
FIRST_CONTACT_NOTEBOOKS = ("00",)
#: Code read and run, in lines a minute (non-blank, non-comment lines of the main line's code cells).
CODE_LINES_PER_MINUTE = 8
#: Printed output read, in lines a minute (text the main line's code cells print or display).
OUTPUT_LINES_PER_MINUTE = 20
#: A line of a numeric table (``TABLE_LINE_MIN_NUMBERS`` numbers or more) is read at this many lines a minute:
#: its numbers are compared with each other, not skimmed (the read-through of 01 and 04).
TABLE_LINES_PER_MINUTE = 10
#: How many numbers make a printed line a line of a numeric table.
TABLE_LINE_MIN_NUMBERS = 3
#: Minutes to look at a figure's first panel (one set of axes) ...
MINUTES_PER_FIGURE = 1
#: ... and at each further panel,
MINUTES_PER_EXTRA_PANEL = 0.5
#: counting at most this many panels (a strip of six small digits is taken in as one picture).
MAX_PANELS_PER_FIGURE = 3
#: Minutes for an interactive widget, its still picture included (the learner moves its sliders).
MINUTES_PER_WIDGET = 2
#: Minutes a graded exercise takes, by its kind (the instructor guide's lab plan names each exercise's kind).
KIND_MINUTES = {
    "predict": 2,        # commit to a number, then run the cell that computes it
    "predict by derivation": 4,   # commit to numbers that take a derivation (e.g. the chain rule through α/r)
    "formula": 4,        # write a short function the notebook has just explained
    "derive first": 8,   # work out a formula before the cell that reveals it (a derivation: most read the hint)
    "bug hunt": 4,       # find and fix the one planted bug in a short implementation
    "open": 8,           # any answer that meets a criterion on hidden data (choose, try, re-check)
    "build": 10,         # write a class, an injection or a training loop
    "capstone": 8,       # put your own pieces together on a new task (they are written and checked by then)
}
#: The kind of every exercise of the bank, by its factory's name in ``lora_edu.course.exercise_bank``
#: (what a notebook calls: ``le.exercise_bank.<name>()``). A test fails for an exercise missing here.
EXERCISE_KINDS = {
    "lora_param_count": "formula", "predict_trainable": "predict by derivation",                     # 00
    "predict_lora_activations_gb": "predict", "training_state_gb": "formula",                         # 01
    "delta_w": "formula", "torch_style_output": "bug hunt",                                           # 02
    "predict_alpha_doubling": "predict by derivation", "grad_b": "formula", "one_step": "formula",                   # 03
    "smallest_rank": "formula", "lora_plan": "open",                                                  # 04
    "lora_forward": "formula", "merge_weight": "formula", "outputs_around_merge": "bug hunt",          # 05
    "lora_linear_class": "build", "add_lora_function": "build", "train_adapters_loop": "build",       # 05: build LoRA
    "adapt_digits": "capstone",                                                                       # 05
    "lora_qv_trainable": "formula", "merge_conv1d": "bug hunt",                                       # 06
    "dequantize_q4_1_block": "formula",                                                               # 07
    "nf4_block_codes": "formula",                                                                     # 08
    "random_subspace_similarity": "derive first",                                                     # 09
}
#: The core path: the notebooks a learner takes in order (the others are advanced, taken as needed).
CORE_PATH = ("00", "01", "02", "03", "04", "05", "06", "07")
#: The core path's main lines must read in at most this many minutes by the time method (issue 24).
CORE_PATH_MAX_MINUTES = 180
#: Each notebook's main line holds at most this many words.
MAIN_LINE_MAX_WORDS = 1400

DEEP_DIVE_HEADING = "## Deep dive (optional):"
REFERENCES_HEADING = "## References"
INSTALL_CELL_FIRST_LINE = "# Colab, or a Jupyter without the course"
TIMES_FILE = "course_times.json"
_EXERCISE_CALL = re.compile(r"\ble\.exercise_bank\.([A-Za-z_]\w*)\(")
_EXERCISE_VARIABLE = re.compile(r"^\s*(\w+)\s*=\s*le\.exercise_bank\.\w+\(", re.M)
_EXERCISE_ONLY = re.compile(r"^\s*\w+\s*=\s*le\.exercise_bank\.\w+\(\)\s*$")


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _cells(path) -> list[dict]:
    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise FileNotFoundError(f"{path} is not a notebook file (pass a path such as notebooks/00_start_here.ipynb)")
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def main_line(path) -> list[dict]:
    """The main line's cells: every cell before the first deep-dive heading (a cell holding one is cut there).

    Markdown cells come back as ``{"cell_type", "source"}`` with the References section removed; code
    cells as they are. Deep dives, whatever follows them, and the References are not the main line.
    """
    kept = []
    for cell in _cells(path):
        text = _source(cell)
        if cell["cell_type"] == "markdown":
            lines = text.split("\n")
            cut = next((i for i, line in enumerate(lines) if line.startswith(DEEP_DIVE_HEADING)), None)
            body = "\n".join(lines[:cut])
            body = re.sub(rf"^{REFERENCES_HEADING}\b.*?(?=^## |\Z)", "", body, flags=re.S | re.M)
            if body.strip():
                kept.append({"cell_type": "markdown", "source": body})
            if cut is not None:
                break
        else:
            kept.append(cell)
    return kept


def main_line_words(path) -> int:
    """Whitespace-separated tokens of the main line's markdown (References excluded)."""
    return sum(len(c["source"].split()) for c in main_line(path) if c["cell_type"] == "markdown")


def _is_exercise_cell(cell, exercise_names: set[str]) -> bool:
    """An exercise's own cell: its answer or check (nbgrader), the cell that creates it, or one that runs its check
    (a bug hunt's planted bug, a demonstration of the check's feedback)."""
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    text = _source(cell)
    return (bool(nbgrader.get("solution") or nbgrader.get("grade")) or bool(_EXERCISE_ONLY.match(text))
            or any(re.search(rf"\b{re.escape(name)}\.check\(", text) for name in exercise_names))


def _counted_code_cells(path) -> list[dict]:
    """Code cells of the main line that a learner reads and runs: not the install cell, not an exercise's own cells."""
    cells = main_line(path)
    exercise_names = {m for c in cells if c["cell_type"] == "code" for m in _EXERCISE_VARIABLE.findall(_source(c))}
    return [c for c in cells if c["cell_type"] == "code"
            and not _source(c).startswith(INSTALL_CELL_FIRST_LINE) and not _is_exercise_cell(c, exercise_names)]


def main_line_code_cells(path) -> int:
    """How many code cells of the main line a learner reads and runs (see :func:`_counted_code_cells`)."""
    return len(_counted_code_cells(path))


def _code_lines(cell) -> int:
    return sum(1 for line in _source(cell).splitlines() if line.strip() and not line.strip().startswith("#"))


#: tqdm's text for a progress bar widget ("LoRA r=4:  0%|          | 0/30 [00:00<?, ?it/s]")
_PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")
#: matplotlib's text for a figure ("<Figure size 1200x380 with 3 Axes>"): its panels are its axes.
_FIGURE_AXES = re.compile(r"with (\d+) Axes>")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _is_table_line(line: str) -> bool:
    return len(_NUMBER.findall(line)) >= TABLE_LINE_MIN_NUMBERS


def _cell_output(cell) -> dict:
    """What one code cell's stored outputs show: text lines (prose-like and numeric-table), figures, panels, widgets.

    A widget's still picture (an image in the same cell) is part of the widget, not a figure of its own.
    """
    text, images, panels, widgets = [], 0, 0, 0
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if out.get("output_type") == "stream":
            text += "".join(out.get("text", "")).splitlines()
        elif any(kind.startswith("image/") for kind in data):
            images += 1
            axes = _FIGURE_AXES.search("".join(data.get("text/plain", "")))
            panels += min(MAX_PANELS_PER_FIGURE, int(axes.group(1)) if axes else 1)
        elif "application/vnd.jupyter.widget-view+json" in data and _PROGRESS_BAR.search("".join(data.get("text/plain", ""))):
            text.append("")   # a progress bar is glanced at like a line of output, not studied like a figure
        elif "application/vnd.jupyter.widget-view+json" in data:
            widgets += 1
        elif "text/markdown" in data or "text/html" in data or "text/plain" in data:
            text += "".join(data.get("text/markdown") or data.get("text/plain") or "").splitlines()
    tables = sum(_is_table_line(line) for line in text)
    if widgets:
        images = panels = 0
    return dict(lines=len(text), table_lines=tables, figures=images + widgets, panels=panels, widgets=widgets,
                figure_minutes=MINUTES_PER_FIGURE * images + MINUTES_PER_EXTRA_PANEL * (panels - images))


def _output_lines_and_figures(cell) -> tuple[int, int]:
    """Lines of printed text and figures in one code cell's stored outputs (a widget and its still: one figure)."""
    out = _cell_output(cell)
    return out["lines"], out["figures"]


def main_line_code_lines(path) -> int:
    """Non-blank, non-comment lines of the main line's counted code cells."""
    return sum(_code_lines(c) for c in _counted_code_cells(path))


def main_line_output(path) -> tuple[int, int]:
    """(lines of printed output, figures) of the main line's counted code cells, from their stored outputs."""
    pairs = [_output_lines_and_figures(c) for c in _counted_code_cells(path)]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def _cell_minutes(cell, out: dict | None = None) -> float:
    """One counted code cell's minutes; ``out`` is its :func:`_cell_output` where the caller has it already."""
    out = _cell_output(cell) if out is None else out
    return (_code_lines(cell) / CODE_LINES_PER_MINUTE + (out["lines"] - out["table_lines"]) / OUTPUT_LINES_PER_MINUTE
            + out["table_lines"] / TABLE_LINES_PER_MINUTE + out["figure_minutes"]
            + MINUTES_PER_WIDGET * out["widgets"])


def main_line_exercises(path) -> list[str]:
    """The exercises the main line creates (``le.exercise_bank.<name>()``), in order, by factory name."""
    names = []
    for cell in main_line(path):
        if cell["cell_type"] == "code":
            names += [n for n in _EXERCISE_CALL.findall(_source(cell)) if n not in names]
    return names


def exercise_minutes(name: str) -> int:
    """The minutes of one exercise, from its kind; a clear error for an exercise without one."""
    if name not in EXERCISE_KINDS:
        raise KeyError(f"exercise {name!r} has no kind: add it to EXERCISE_KINDS in lora_edu/course/course_map.py "
                       f"(one of {', '.join(KIND_MINUTES)})")
    return KIND_MINUTES[EXERCISE_KINDS[name]]


def words_per_minute(path) -> int:
    """The reading speed the time method gives a notebook's prose: slower for the first notebook, where every term is new."""
    return FIRST_CONTACT_WORDS_PER_MINUTE if Path(path).name[:2] in FIRST_CONTACT_NOTEBOOKS else WORDS_PER_MINUTE


def time_breakdown(path) -> dict:
    """The time method's terms for one notebook: words, code, output, figures, exercises and the minutes."""
    words, exercises = main_line_words(path), main_line_exercises(path)
    counted = _counted_code_cells(path)
    outs = [_cell_output(c) for c in counted]
    exact = (words / words_per_minute(path) + sum(_cell_minutes(c, o) for c, o in zip(counted, outs))
             + sum(exercise_minutes(n) for n in exercises))
    return dict(words=words, code_cells=len(counted), code_lines=main_line_code_lines(path),
                output_lines=sum(o["lines"] for o in outs), table_lines=sum(o["table_lines"] for o in outs),
                figures=sum(o["figures"] for o in outs), panels=sum(o["panels"] for o in outs),
                widgets=sum(o["widgets"] for o in outs),
                exercises=[[n, EXERCISE_KINDS[n], exercise_minutes(n)] for n in exercises],
                minutes_exact=round(exact, 2), minutes=stated_minutes(exact))


def minutes_until(path, text: str) -> float:
    """The time method's minutes of the main line from its start up to and including the first cell holding ``text``.

    Notebook 00 promises the idea of LoRA (the layer, what it adds, why it starts unchanged, a picture of why a
    low rank can be enough) and the count exercises within its first 15 minutes; a test measures it with this.
    """
    cells = main_line(path)
    end = next((i for i, c in enumerate(cells) if text in _source(c)), None)
    if end is None:
        raise ValueError(f"no main-line cell of {Path(path).name} holds {text!r}")
    exercise_names = {m for c in cells if c["cell_type"] == "code" for m in _EXERCISE_VARIABLE.findall(_source(c))}
    minutes = 0.0
    for cell in cells[:end + 1]:
        text_ = _source(cell)
        if cell["cell_type"] == "markdown":
            minutes += len(text_.split()) / words_per_minute(path)
        elif not text_.startswith(INSTALL_CELL_FIRST_LINE) and not _is_exercise_cell(cell, exercise_names):
            minutes += _cell_minutes(cell)
        minutes += sum(exercise_minutes(n) for n in dict.fromkeys(_EXERCISE_CALL.findall(text_)))
    return minutes


def stated_minutes(exact: float) -> int:
    """Minutes as the course states them: rounded up to the whole minute (never less than computed), at least 5.

    ``exact`` is first rounded to 2 decimals (as ``course_times.json`` stores it), so 17.000000001 states 17.
    """
    return max(5, math.ceil(round(exact, 2)))


def estimated_minutes(path) -> int:
    """The estimated time of one notebook, in minutes, as its first cell and the course map state it."""
    return time_breakdown(path)["minutes"]


def _stored_times() -> dict:
    from lora_edu.data import load_json

    return load_json(TIMES_FILE)["notebooks"]


@dataclass(frozen=True)
class Chapter:
    notebook: str
    title: str
    teaches: str
    prerequisites: str
    #: Execution-time budget in seconds on a 2-core machine (notebook 07 is allowed 60 s).
    budget_s: float = 30.0

    @property
    def minutes(self) -> int:
        """Estimated minutes, by the time method, as ``tools/course_times.py`` last computed them."""
        times = _stored_times()
        if self.notebook not in times:
            raise KeyError(f"{self.notebook} has no estimated time yet: run python tools/course_times.py --write")
        return times[self.notebook]["minutes"]

    @property
    def core(self) -> bool:
        """On the core path (taken in order) rather than advanced."""
        return self.notebook[:2] in CORE_PATH


COURSE_MAP = [
    Chapter("00_start_here.ipynb", "Start here", "the idea of LoRA, why low rank can be enough, how the course works", "none"),
    Chapter("01_memory_cost.ipynb", "What fine-tuning costs in memory", "why LoRA exists: weights, gradients, optimizer state, activations", "00"),
    Chapter("02_worked_example.ipynb", "The 4×4 worked example", "ΔW = BA, the forward pass and the loss, by hand and in PyTorch", "00"),
    Chapter("03_gradient_step.ipynb", "One gradient step by hand", "the chain rule for A and B, why B starts at zero, the α/r scale", "02"),
    Chapter("04_rank_and_alpha.ipynb", "Rank and alpha", "choosing r and α with truncated SVD and sliders", "02, 03"),
    Chapter("05_lora_from_scratch.ipynb", "LoRA from scratch", "a LoRALinear module, merging, training on a real task", "03"),
    Chapter("06_peft_comparison.ipynb", "LoRA with Hugging Face PEFT",
            "the same module in PEFT, equal to a stated tolerance; six pitfalls reproduced and fixed", "05"),
    Chapter("07_real_language_model.ipynb", "LoRA on a real language model, offline",
            "a pretrained chat model from a 4-bit file: train, score, merge, forgetting", "06", budget_s=60.0),
    Chapter("08_lora_variants.ipynb", "LoRA variants from scratch: QLoRA, DoRA, PiSSA, LoRA+, rsLoRA",
            "NF4 from normal quantiles, DoRA, PiSSA, LoRA+, rsLoRA, mixed-adapter batches: each checked against bitsandbytes or PEFT",
            "05, 06"),
    Chapter("09_paper_analyses.ipynb", "The paper's analyses on the course's model",
            "the paper's analyses measured: layers × rank, a fixed budget, subspace similarity, learning against forgetting", "04, 05"),
    Chapter("10_classifying_messages.ipynb", "A second payoff: classifying messages",
            "a language model as a classifier: zero-shot against a LoRA adapter on held-out messages, one base and its adapter", "07"),
]


def core_path_minutes(chapters=None) -> int:
    """The stated minutes of the core path's notebooks, summed."""
    return sum(ch.minutes for ch in (COURSE_MAP if chapters is None else chapters) if ch.core)


def course_map_markdown() -> str:
    """The course map as a Markdown table (notebook 00 displays it)."""
    rows = ["| Notebook | What it teaches | Time | Needs |", "|---|---|---|---|"]
    for ch in COURSE_MAP:
        rows.append(f"| `{ch.notebook}` **{ch.title}** | {ch.teaches} | {ch.minutes} min | {ch.prerequisites} |")
    total = sum(ch.minutes for ch in COURSE_MAP)
    last_core = max(ch.notebook[:2] for ch in COURSE_MAP if ch.core)
    rows.append(f"| **Core path, 00–{last_core}** | | **{core_path_minutes()} min** | |")
    rows.append(f"| **Whole course** | | **{total} min** | |")
    return "\n".join(rows)


# --- Execution-time budgets: the one place that conftest.py (test run) and benchmarks/bench_course.py read. ---
#: The course as first released (notebooks 00..06) must execute in this many seconds in all ...
COURSE_BUDGET_BASE_S = 120.0
#: ... where that course has this many notebooks,
COURSE_BUDGET_BASE_NOTEBOOKS = 7
#: and each notebook beyond them adds this much (07 and 08: 120 + 2 × 30 = 180 s).
COURSE_BUDGET_PER_EXTRA_NOTEBOOK_S = 30.0
#: The test run fails only past this multiple of a budget; below it timing is the benchmark's job
#: (a busy machine made notebook 04 take 55.9 s against its 30 s, and that must not fail a test run).
GROSS_REGRESSION_FACTOR = 3.0


def notebook_budget_s(notebook: str, chapters=None) -> float:
    """The budget of ``notebook`` (a file name or path); a notebook not (yet) in the map gets the default."""
    name = notebook.replace("\\", "/").rsplit("/", 1)[-1]
    for ch in COURSE_MAP if chapters is None else chapters:
        if ch.notebook == name:
            return ch.budget_s
    return Chapter.budget_s  # the dataclass default (30 s)


def course_budget_s(chapters=None) -> float:
    """The whole course's budget, derived from how many chapters the map holds (not typed in as 120).

    Not the sum of the notebooks' budgets: each notebook may use up to its own budget, but
    together they must stay within 120 s for the seven notebooks 00..06, plus 30 s for each
    notebook added after them.
    """
    n = len(COURSE_MAP if chapters is None else chapters)
    return COURSE_BUDGET_BASE_S + COURSE_BUDGET_PER_EXTRA_NOTEBOOK_S * max(0, n - COURSE_BUDGET_BASE_NOTEBOOKS)


def time_verdicts(seconds: dict[str, float], whole_course: bool, chapters=None) -> list[tuple[str, str]]:
    """Judge measured execution times: ``(level, message)`` for each notebook, and the course, over budget.

    ``seconds`` maps notebook names (or paths) to seconds; the course total is judged only when
    ``whole_course`` (every notebook ran). Level ``"over"``: over budget, worth a look with
    ``make bench`` but no failure (a busy machine does that). Level ``"gross"``: over
    ``GROSS_REGRESSION_FACTOR`` × the budget, a regression that fails the test run.
    """
    checks = [(nb, s, notebook_budget_s(nb, chapters)) for nb, s in sorted(seconds.items())]
    if whole_course:
        checks.append(("the whole course", sum(seconds.values()), course_budget_s(chapters)))
    verdicts = []
    for what, took, budget in checks:
        if took > GROSS_REGRESSION_FACTOR * budget:
            verdicts.append(("gross", f"{what} took {took:.1f} s, over {GROSS_REGRESSION_FACTOR:g} × its {budget:.0f} s budget"))
        elif took > budget:
            verdicts.append(("over", f"{what} took {took:.1f} s (budget {budget:.0f} s)"))
    return verdicts
