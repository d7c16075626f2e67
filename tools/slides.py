"""Slide metadata for every notebook, derived from its structure, so each one is a live RISE slideshow.

Usage: python tools/slides.py notebooks/*.ipynb            (or `make slides`) writes the metadata
       python tools/slides.py --check notebooks/*.ipynb    reports notebooks whose metadata is out of date
       python tools/slides.py --split notebooks/*.ipynb    splits heading cells of more than 120 words (rule 4)

``jupyterlab-rise`` reads one key per cell, ``metadata.slideshow.slide_type``: ``slide`` (a new
horizontal slide), ``subslide`` (a new screen below the current slide), ``fragment`` (revealed on
the next key press, on the same screen), ``skip`` (hidden), ``notes`` (hidden speaker notes) or
``-`` (continues the current screen). Typing those by hand in every notebook drifts as notebooks
change, so they are *computed* from what the course's notebooks already share (the hygiene test
enforces that structure), and recomputed whenever a notebook is executed
(``tools/execute_notebooks.py``). The rules:

1. **Sections are slides.** The title cell (``# ``) and every ``## `` section start a slide, so the
   slideshow's top row is the notebook's table of contents and → jumps a whole section (including an
   optional deep dive) while Space walks through it; a ``### `` heading starts a subslide. A cell
   with a heading anywhere in it counts as that heading (a heading is never hidden as notes).
2. **One code cell per screen.** A code cell's output (a figure, a table, a widget) fills a screen,
   so a second visible code cell, or prose that comes after one, starts a new subslide. Prose before
   a code cell stays on its screen: it is that cell's lead-in.
3. **A short closing remark is a fragment.** A markdown cell of at most ``SHORT_REMARK_CHARS``
   characters right after a code cell, and not followed by one, comments on the output just shown:
   it appears on the same screen at the next key press, after the audience has looked at the
   output. A short cell followed by code is that code's lead-in ("Now a real update: …"), and one
   that ends with a colon introduces what follows; both open the next screen with their code.
4. **Long prose is speaker notes.** A markdown cell of more than ``LONG_PROSE_WORDS`` words (about
   ten lines on a slide; issue 24) is reading material, which nobody reads from a projector; it
   becomes the speaker's notes for the screen it belongs to: hidden from the audience, and read by the
   presenter in the notebook beside the slideshow (jupyterlab-rise 0.43.1 opens the slideshow in a
   panel next to the notebook; its reveal.js speaker view, key T, is marked broken in its source).
   It stays in the notebook for readers. So is a cell that starts with ``SPEAKER_NOTES_MARK``
   (``**Speaker notes.**``), whatever its length: a hint written for the presenter. Headings never
   become notes: a cell with a heading is a slide however long (the slideshow scrolls, see
   ``RISE_SETTINGS``), so ``--check`` lists heading cells over ``LONG_PROSE_WORDS`` words (split the
   prose after the heading into a cell of its own) without failing on them.
5. **Set-up is skipped.** The install cell, set-up cells (only imports, seeding, print options,
   warning filters, constants, creating an exercise object) and the graded cells of exercises
   (nbgrader's solution and check cells: the exercises are for the lab session, and a projected
   solution would spoil them) are hidden. Hidden cells still run: the instructor runs the whole
   notebook before presenting (docs/instructor_guide.md).

Only ``slideshow.slide_type`` of each cell and the notebook's ``rise`` settings are written; the
result depends on the cells' sources and nbgrader metadata alone (never on outputs), so an executed
notebook and its student version get the same slides, and running the tool twice changes nothing.
"""
from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

import nbformat

from lora_edu.course.course_map import INSTALL_CELL_FIRST_LINE  # written once, in the course map; re-exported here

SLIDE_TYPES = ("slide", "subslide", "fragment", "skip", "notes", "-")
#: A markdown cell of more words than this (not a heading) becomes speaker notes (rule 4).
LONG_PROSE_WORDS = 120
#: A markdown cell that starts with this is speaker notes whatever its length (rule 4).
SPEAKER_NOTES_MARK = "**Speaker notes.**"
#: A markdown cell at most this long, right after a code cell, is a fragment (rule 3).
SHORT_REMARK_CHARS = 300
#: Notebook-level RISE settings (``metadata.rise``, read by jupyterlab-rise over its own defaults):
#: tall slides (a summary with its references, a figure with its code) scroll instead of being cut.
RISE_SETTINGS = {"scroll": True}
#: Calls that only configure the session (rule 5), matched on the called name's last part.
SETUP_CALLS = {"seed_everything", "set_printoptions", "filterwarnings", "simplefilter", "manual_seed",
               "set_num_threads", "set_default_dtype"}
HIDDEN_ROLES = {"install", "setup", "graded", "raw"}


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _heading_levels(text: str) -> list[int]:
    """The levels of the Markdown headings in ``text``, in order (1 for ``# Title``), outside code fences."""
    levels, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else re.match(r"(#{1,6})\s", line)
        if match:
            levels.append(len(match.group(1)))
    return levels


def _heading_level(text: str) -> int:
    """The highest heading level (1 is highest) a cell holds anywhere; 0 if it holds none.

    A heading in the middle of a cell (a section's last paragraph and the next section's title in one
    cell) still makes the cell a slide: a heading is never hidden as notes. ``mid_cell_headings``
    lists such cells, since splitting them lets the slide start at the heading.
    """
    levels = [level for level in _heading_levels(text) if level <= 3]
    return min(levels) if levels else 0


def mid_cell_headings(nb) -> list[int]:
    """Indices of markdown cells with a section heading (``#``–``###``) that is not on their first line."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        text = _source(cell).strip()
        if cell["cell_type"] == "markdown" and _heading_level(text) and not re.match(r"#{1,3}\s", text):
            found.append(i)
    return found


def _called_name(node: ast.AST) -> str:
    """``le.exercise_bank.delta_w`` for a call of it; '' for anything that is not a plain dotted call."""
    if not isinstance(node, ast.Call):
        return ""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _is_setup_value(node: ast.AST) -> bool:
    """A value a set-up cell may assign: a set-up call, a new exercise, or a constant or an attribute."""
    if isinstance(node, ast.Call):
        name = _called_name(node)
        return name.rsplit(".", 1)[-1] in SETUP_CALLS or ".exercise_bank." in f".{name}"
    if isinstance(node, ast.Tuple):
        return all(_is_setup_value(e) for e in node.elts)
    return isinstance(node, (ast.Constant, ast.Attribute, ast.Name))


def is_setup_code(source: str) -> bool:
    """True if every statement only imports, seeds, configures, names a constant or creates an exercise."""
    code = "\n".join(line for line in source.split("\n") if not line.lstrip().startswith(("%", "!")))
    try:
        statements = ast.parse(code).body
    except SyntaxError:
        return False
    for st in statements:
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(st, ast.Expr) and _called_name(st.value).rsplit(".", 1)[-1] in SETUP_CALLS:
            continue
        if isinstance(st, ast.Assign) and _is_setup_value(st.value):
            continue
        return False
    return bool(source.strip())  # only magics counts as set-up; an empty cell does not


def cell_role(cell) -> str:
    """What a cell is, for the rules: heading1/2/3, long/remark/lead-in/prose, install/setup/graded/code, raw."""
    text = _source(cell)
    if cell["cell_type"] == "markdown":
        level = _heading_level(text)
        if level in (1, 2, 3):
            return f"heading{level}"
        stripped = text.strip()
        if len(stripped.split()) > LONG_PROSE_WORDS or stripped.startswith(SPEAKER_NOTES_MARK):
            return "long"
        if len(stripped) <= SHORT_REMARK_CHARS and not stripped.endswith(":"):
            return "remark"
        return "prose"
    if cell["cell_type"] != "code":
        return "raw"
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    if nbgrader.get("solution") or nbgrader.get("grade"):
        return "graded"
    if text.startswith(INSTALL_CELL_FIRST_LINE):
        return "install"
    return "setup" if is_setup_code(text) else "code"


def slide_types(cells) -> list[str]:
    """The slide type of each cell under the rules of the module docstring."""
    roles = [cell_role(cell) for cell in cells]
    shown = [i for i, role in enumerate(roles) if role not in HIDDEN_ROLES and role != "long"]
    next_shown = {i: roles[j] for i, j in zip(shown, shown[1:])}
    types, code_on_screen = [], False
    for i, role in enumerate(roles):
        if role in HIDDEN_ROLES or role == "long":
            types.append("skip" if role in HIDDEN_ROLES else "notes")  # no change to the screen
            continue
        if i == shown[0] or role in ("heading1", "heading2"):
            kind = "slide"
        elif role == "heading3":
            kind = "subslide"
        elif role == "remark" and code_on_screen and next_shown.get(i) != "code":
            types.append("fragment")  # the screen still holds its code cell
            continue
        else:  # code, prose, a lead-in, or a remark before any code on this screen
            kind = "subslide" if code_on_screen else "-"
        types.append(kind)
        code_on_screen = role == "code"
    return types


def apply(nb) -> bool:
    """Write the computed slide types (and ``RISE_SETTINGS``) into ``nb``; return whether anything changed."""
    changed = False
    for cell, kind in zip(nb["cells"], slide_types(nb["cells"])):
        slideshow = cell.setdefault("metadata", {}).setdefault("slideshow", {})
        if slideshow.get("slide_type") != kind:
            slideshow["slide_type"], changed = kind, True
    rise = nb.setdefault("metadata", {}).setdefault("rise", {})
    for key, value in RISE_SETTINGS.items():
        if rise.get(key) != value:
            rise[key], changed = value, True
    return changed


def problems(nb) -> list[str]:
    """What differs from the rules, one line per cell (empty when the metadata is up to date)."""
    found = []
    for i, (cell, kind) in enumerate(zip(nb["cells"], slide_types(nb["cells"]))):
        stored = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        if stored != kind:
            first = _source(cell).strip().split("\n")[0][:50]
            found.append(f"cell {i} ({first!r}): slide_type {stored!r}, the rules give {kind!r}")
    rise = nb.get("metadata", {}).get("rise", {})
    found += [f"notebook metadata rise.{k} is {rise.get(k)!r}, should be {v!r}" for k, v in RISE_SETTINGS.items()
              if rise.get(k) != v]
    return found


def long_slides(nb) -> list[int]:
    """Indices of markdown cells shown on a slide with more than ``LONG_PROSE_WORDS`` words (a heading keeps a cell
    visible); the References close a notebook and are exempt."""
    return [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "markdown"
            and _heading_level(_source(cell)) and len(_source(cell).split()) > LONG_PROSE_WORDS
            and not _source(cell).lstrip().startswith("## References")]


def _cut_points(text: str) -> list[int]:
    """Offsets in ``text`` where a cell may be cut without breaking Markdown: a blank line, the start of a list item,
    or a sentence's end; never inside a code fence, a $$ block, inline $…$ math or a table."""
    points, offset, fenced = [], 0, False
    for line in text.split("\n"):
        stripped = line.strip()
        at = offset
        offset += len(line) + 1
        if stripped.startswith(("```", "~~~")) or stripped.count("$$") % 2:   # a fence, or a $$ that opens or closes
            fenced = not fenced
            continue
        if fenced or stripped.startswith("|"):
            continue
        if not stripped or re.match(r"(-|\*|\d+\.) ", line):   # a blank line, or a list item at the margin
            points.append(at)
        if line.count("$") % 2 == 0 and line.count("`") % 2 == 0:   # sentence ends in plain prose lines
            points += [at + m.end() for m in re.finditer(r"(?<=[a-z0-9%)\]][.!?]) (?=[A-Z*`])", line)]
    return sorted(set(p for p in points if 0 < p < len(text)))


def split_long(nb) -> int:
    """Rule 4 for heading cells: keep the heading and a lead of at most ``LONG_PROSE_WORDS`` words in the cell, and
    move the rest, unchanged, into a markdown cell of its own right after it (speaker notes when long). Returns how
    many cells were split.

    The text a reader sees is the same, in the same order; only the cell boundaries move (a cut falls at a blank
    line, a list item or a sentence's end). A cell whose heading and first sentence alone are too long is left for a
    person to shorten (``long_slides`` still lists it); so are graded cells (nbgrader's ids name them).
    """
    split, i = 0, 0
    while i < len(nb["cells"]):
        cell = nb["cells"][i]
        if i in long_slides(nb) and not cell.get("metadata", {}).get("nbgrader"):
            text = _source(cell)
            fits = [p for p in _cut_points(text) if len(text[:p].split()) <= LONG_PROSE_WORDS
                    and any(not _heading_level(line) for line in text[:p].strip().split("\n") if line.strip())]
            if fits:
                cell["source"] = text[:fits[-1]].rstrip()
                nb["cells"].insert(i + 1, nbformat.v4.new_markdown_cell(text[fits[-1]:].strip()))
                split += 1
        i += 1
    return split


def summary(nb) -> str:
    counts = Counter(c["metadata"].get("slideshow", {}).get("slide_type") for c in nb["cells"])
    return ", ".join(f"{counts[t]} {name}" for t, name in
                     (("slide", "slides"), ("subslide", "subslides"), ("fragment", "fragments"),
                      ("notes", "notes"), ("skip", "skipped")))


def main(argv: list[str]) -> int:
    check, split = "--check" in argv, "--split" in argv
    paths = [Path(a) for a in argv if a not in ("--check", "--split")]
    if not paths:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
    if missing:
        print(f"not notebooks: {', '.join(missing)} (pass .ipynb files, e.g. notebooks/*.ipynb)", file=sys.stderr)
        return 2
    stale = 0
    for path in sorted(paths):
        nb = nbformat.read(path, as_version=4)
        if check:
            found = problems(nb)
            stale += bool(found)
            print(f"{path}: " + ("up to date" if not found else "OUT OF DATE\n  " + "\n  ".join(found)))
        else:
            cut = split_long(nb) if split else 0
            changed = apply(nb) or bool(cut)
            if changed:
                nbformat.write(nb, path)
            print(f"{path}: {summary(nb)} ({'updated' if changed else 'unchanged'})")
        long = long_slides(nb)
        if long:
            print(f"  note: cells {', '.join(map(str, long))} are slides of more than {LONG_PROSE_WORDS} words: keep the heading "
                  "and a short lead in the cell, and move the rest into a cell of its own (it becomes speaker notes)")
        mid = mid_cell_headings(nb)
        if mid:
            print(f"  note: cells {', '.join(map(str, mid))} have a heading after their first line, so each is a slide "
                  "from its first line (split such a cell at the heading to start the slide there)")
    if stale:
        print(f"run: python tools/slides.py {' '.join(str(p) for p in sorted(paths))}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
