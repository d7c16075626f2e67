"""The course map: one list that notebook 00, the README and the hygiene test all read.

Keeping it here (not typed into each notebook) means the estimated times and titles that
notebook 00 shows are the same ones each notebook states at its top; a test checks that.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    notebook: str
    title: str
    teaches: str
    #: A learner's time for the main line, every graded exercise included (the deep dives come on top); for 04-06
    #: measured against a read-through (docs/reviews/review_04_05_06_round2.md).
    minutes: int
    prerequisites: str
    #: Execution-time budget in seconds on a 2-core machine (notebook 07 is to be allowed 60 s).
    budget_s: float = 30.0


COURSE_MAP = [
    Chapter("00_start_here.ipynb", "Start here", "how the course works, widgets, exercises, notation", 10, "none"),
    Chapter("01_memory_cost.ipynb", "What fine-tuning costs in memory", "why LoRA exists: weights, gradients, optimizer state, activations", 25, "00"),
    Chapter("02_worked_example.ipynb", "The 4×4 worked example", "ΔW = BA, the forward pass and the loss, by hand and in PyTorch", 20, "00"),
    Chapter("03_gradient_step.ipynb", "One gradient step by hand", "the chain rule for A and B, zero initialisation, the α/r scale", 30, "02"),
    Chapter("04_rank_and_alpha.ipynb", "Rank and alpha", "choosing r and α with truncated SVD and sliders", 30, "02, 03"),
    Chapter("05_lora_from_scratch.ipynb", "LoRA from scratch", "a LoRALinear module, merging, training on a real task", 60, "03"),
    Chapter("06_peft_comparison.ipynb", "LoRA with Hugging Face PEFT",
            "the same module in PEFT, equal to a stated tolerance; six pitfalls reproduced and fixed", 30, "05"),
    Chapter("07_real_language_model.ipynb", "LoRA on a real language model, offline",
            "a pretrained chat model from a 4-bit file: train, score, merge, switch adapters, forgetting", 30, "06", budget_s=60.0),
    Chapter("08_lora_variants.ipynb", "LoRA variants from scratch: QLoRA, DoRA, PiSSA, LoRA+, rsLoRA",
            "NF4 from normal quantiles, DoRA, PiSSA, LoRA+, rsLoRA, mixed-adapter batches: each equal to bitsandbytes or PEFT", 40,
            "05, 06"),
    Chapter("09_paper_analyses.ipynb", "The paper's analyses on the course's model",
            "the paper's analyses measured: layers × rank, a fixed budget, subspace similarity, learning against forgetting", 30, "04, 05"),
]


def course_map_markdown() -> str:
    """The course map as a Markdown table (notebook 00 displays it)."""
    rows = ["| Notebook | What it teaches | Time | Needs |", "|---|---|---|---|"]
    for ch in COURSE_MAP:
        rows.append(f"| `{ch.notebook}` **{ch.title}** | {ch.teaches} | {ch.minutes} min | {ch.prerequisites} |")
    total = sum(ch.minutes for ch in COURSE_MAP)
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
