"""The course's estimated times, computed from the notebooks by the time method, and written where they are stated.

Usage: python tools/course_times.py            prints each notebook's main line (words, code cells, exercises)
                                               and its minutes, the core path's total, and what is out of date
       python tools/course_times.py --write    writes the minutes everywhere they are stated
       python tools/course_times.py --check    exits 1 when any stated minute differs from the computation

The method is written once, in ``lora_edu/course/course_map.py`` (its docstring). The places that state its
result: ``lora_edu/data/course_times.json`` (what the course map reads), the "**Estimated time:** N minutes"
line in each notebook's first cell, the README's course table and the instructor guide's first paragraph.
Only those lines change (notebooks are edited as text, so nothing else in them moves). Notebook 00 displays
the course map as a stored output: after a change of minutes, re-execute it
(``python tools/execute_notebooks.py notebooks/00_start_here.ipynb``); the tool says so.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lora_edu.course import course_map as cm  # noqa: E402

TIMES_PATH = ROOT / "lora_edu" / "data" / cm.TIMES_FILE
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "instructor_guide.md"
ESTIMATED = re.compile(r"\*\*Estimated time:\*\* \d+ minutes")
GUIDE_SENTENCE = re.compile(r"The course is self-paced: \d+ minutes for the core path \(notebooks 00–\d\d\), "
                            r"\d+ minutes for all \w+ notebooks")
NUMBER_WORDS = {8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}


def compute() -> dict:
    """Every notebook of the course map: the time method's terms and minutes."""
    notebooks = {ch.notebook: cm.time_breakdown(ROOT / "notebooks" / ch.notebook) for ch in cm.COURSE_MAP}
    core = [name for name in notebooks if name[:2] in cm.CORE_PATH]
    return {
        "method": (f"minutes = main-line words / {cm.WORDS_PER_MINUTE} (/ {cm.FIRST_CONTACT_WORDS_PER_MINUTE} in notebook "
                   f"{', '.join(cm.FIRST_CONTACT_NOTEBOOKS)}, where every term is new) + code lines / {cm.CODE_LINES_PER_MINUTE} "
                   f"+ output lines / {cm.OUTPUT_LINES_PER_MINUTE} (numeric-table lines, {cm.TABLE_LINE_MIN_NUMBERS}+ numbers, "
                   f"/ {cm.TABLE_LINES_PER_MINUTE}) + {cm.MINUTES_PER_FIGURE} per figure + {cm.MINUTES_PER_EXTRA_PANEL} per further panel "
                   f"(at most {cm.MAX_PANELS_PER_FIGURE} panels) + {cm.MINUTES_PER_WIDGET} per widget "
                   f"+ each graded exercise's minutes by kind {cm.KIND_MINUTES}, rounded up to the whole minute "
                   "(lora_edu/course/course_map.py)"),
        "notebooks": notebooks,
        "core_path": {"notebooks": core, "minutes": sum(notebooks[n]["minutes"] for n in core),
                      "minutes_exact": round(sum(notebooks[n]["minutes_exact"] for n in core), 2)},
        "course_minutes": sum(t["minutes"] for t in notebooks.values()),
    }


def readme_row(ch, minutes: int) -> str:
    return f"| `{ch.notebook.removesuffix('.ipynb')}` | {ch.teaches} | {minutes} min |"


def guide_sentence(times: dict) -> str:
    last_core = max(times["core_path"]["notebooks"])[:2]
    n = len(times["notebooks"])
    return (f"The course is self-paced: {times['core_path']['minutes']} minutes for the core path (notebooks 00–{last_core}), "
            f"{times['course_minutes']} minutes for all {NUMBER_WORDS.get(n, str(n))} notebooks")


def planned_edits(times: dict) -> dict[Path, str]:
    """Each file whose stated minutes differ from ``times``, with its new text."""
    edits = {}
    stored = json.loads(TIMES_PATH.read_text(encoding="utf-8")) if TIMES_PATH.is_file() else None
    if stored != times:
        edits[TIMES_PATH] = json.dumps(times, indent=1, ensure_ascii=False) + "\n"
    for ch in cm.COURSE_MAP:
        path = ROOT / "notebooks" / ch.notebook
        text = path.read_text(encoding="utf-8")
        found = ESTIMATED.findall(text)
        if len(found) != 1:
            raise SystemExit(f"{path.name}: expected one '**Estimated time:** N minutes' line in its first cell, found {len(found)}")
        new = ESTIMATED.sub(f"**Estimated time:** {times['notebooks'][ch.notebook]['minutes']} minutes", text)
        if new != text:
            edits[path] = new
    readme = README.read_text(encoding="utf-8")
    new = readme
    for ch in cm.COURSE_MAP:
        stem = re.escape(ch.notebook.removesuffix(".ipynb"))
        row = re.compile(rf"^\| `{stem}` \|.*\| \d+ min \|$", re.M)
        if not row.search(new):
            raise SystemExit(f"README.md: no row for {ch.notebook} in the course table (| `{stem}` | … | N min |)")
        new = row.sub(readme_row(ch, times["notebooks"][ch.notebook]["minutes"]).replace("\\", "\\\\"), new)
    if new != readme:
        edits[README] = new
    guide = GUIDE.read_text(encoding="utf-8")
    if not GUIDE_SENTENCE.search(guide):
        raise SystemExit("docs/instructor_guide.md: no sentence 'The course is self-paced: N minutes for the core path "
                         "(notebooks 00–NN), M minutes for all … notebooks'")
    new = GUIDE_SENTENCE.sub(guide_sentence(times), guide)
    if new != guide:
        edits[GUIDE] = new
    return edits


def report(times: dict) -> str:
    lines = [f"{'notebook':<30} {'words':>6} {'code':>5} {'out':>5} {'table':>5} {'panel':>5} {'wdg':>3} {'exercises':>9} {'exact':>6} {'stated':>6}"
             "  exercises (kind minutes)"]
    for name, t in times["notebooks"].items():
        ex = ", ".join(f"{n} ({m})" for n, _, m in t["exercises"]) or "-"
        flag = "" if t["words"] <= cm.MAIN_LINE_MAX_WORDS else f"  [main line over {cm.MAIN_LINE_MAX_WORDS} words]"
        lines.append(f"{name:<30} {t['words']:>6} {t['code_lines']:>5} {t['output_lines']:>5} {t['table_lines']:>5} {t['panels']:>5} {t['widgets']:>3} "
                     f"{sum(m for *_, m in t['exercises']):>9} "
                     f"{t['minutes_exact']:>6.1f} {t['minutes']:>6}  {ex}{flag}")
    core = times["core_path"]
    verdict = "within" if core["minutes"] <= cm.CORE_PATH_MAX_MINUTES else "OVER"
    lines.append(f"core path ({', '.join(n[:2] for n in core['notebooks'])}): {core['minutes']} min stated "
                 f"({core['minutes_exact']:.1f} exact), {verdict} {cm.CORE_PATH_MAX_MINUTES}; whole course {times['course_minutes']} min")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    unknown = [a for a in argv if a not in ("--write", "--check")]
    if unknown:
        print(f"unknown arguments {unknown}; usage: python tools/course_times.py [--write | --check]", file=sys.stderr)
        return 2
    times = compute()
    print(report(times))
    stored = json.loads(TIMES_PATH.read_text(encoding="utf-8")) if TIMES_PATH.is_file() else {"notebooks": {}}
    minutes_changed = any(stored["notebooks"].get(name, {}).get("minutes") != t["minutes"] for name, t in times["notebooks"].items())
    edits = planned_edits(times)
    for path in edits:
        print(f"{'writing' if '--write' in argv else 'out of date:'} {path.relative_to(ROOT)}")
    if "--write" in argv:
        for path, text in edits.items():
            path.write_text(text, encoding="utf-8")
        if minutes_changed:
            print("notebook 00 shows the course map as a stored output: re-execute it "
                  "(python tools/execute_notebooks.py notebooks/00_start_here.ipynb)")
        return 0
    if edits:
        print("run: python tools/course_times.py --write", file=sys.stderr)
    return 1 if edits and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
