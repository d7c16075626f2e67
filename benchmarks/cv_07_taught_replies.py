"""Notebook 07: what the model is taught, by three-fold cross-validation on the training questions (declared before it ran).

A record of the search made when set 1's odd half was the held-out set (before set 2, lora_edu/lessons/chat_task.py).
Its ``--held-out`` mode now scores set 2's held-out questions: it must not be run to choose anything.

Run from the repository root (two processes share the work on two cores, then merge):
    .venv/bin/python benchmarks/cv_07_taught_replies.py --only 0,1 --out benchmarks/out/cv_taught_a.json &
    .venv/bin/python benchmarks/cv_07_taught_replies.py --only 2,3 --out benchmarks/out/cv_taught_b.json &
    wait; .venv/bin/python benchmarks/cv_07_taught_replies.py --merge benchmarks/out/cv_taught_a.json benchmarks/out/cv_taught_b.json  # then rm them
    .venv/bin/python benchmarks/cv_07_taught_replies.py --held-out 3     # the chosen setting, once, after the choice
(each process about 11 minutes on an AVX2-only 2-core machine; the record: benchmarks/out/cv_07_taught_replies.json)

Why. benchmarks/cv_07_recipe.py showed that no learning rate or layer count of the declared grid lifts validation
above 53 of 67 replies right in the format; the held-out score stays at 38 of 44 (86 %), 4 points short of issue
27's bar (within 10 points of the base model's 100 %). Its held-out misses are long answers that drift ("The largest
ocean on Earth is the ocean in the ocean"), loop ("author author author") or never close. Two changes to *what is
taught* (not how) address that, each a rule, never a hand edit:

- ``cut``: the taught answer field ends right after the first accepted answer it holds ("The nose is a part of the
  human nose that plays ..." → "The nose"): the model learns to state the answer and close the object;
- ``prose``: training questions whose field, begun in the format, is wrong but whose reply in the model's own
  words is right (25 with no quote mark or new line before the answer) are taught that reply, cut after the answer
  ("The capital of Italy is Rome"): more examples of the format, each a fact the model states in prose, which is
  exactly what the held-out questions test. They only ever join the fitting part, never a validation fold.

Settings (nothing else was tried): 0 the notebook's taught replies; 1 ``cut``; 2 ``cut`` + ``prose``; 3 ``cut`` with
rank 2 (alpha 4, the same alpha/r), less capacity to drift. Everything else is the notebook's recipe (two top layers,
all seven projections, lr 0.004, 60 steps of 8, seed 0). Folds as in cv_07_recipe.py: fold f validates the 67
questions at positions i % 3 == f. A setting's score is its validation replies right in the format, out of 67; the
notebook changes only for a setting strictly better than setting 0. The held-out questions are never touched here.

Result (benchmarks/out/cv_07_taught_replies.json, 2026-12-07, AVX2-only 2-core machine): notebook 52, cut 47,
cut+prose 53, cut with r=2 55 of 67; the rule chose "cut, r=2", which then scored 37 of 44 held-out questions right
in the format (the notebook's recipe: 38). The notebook keeps its taught replies: a better fold score did not carry
to the held-out questions, and no setting of either search reaches issue 27's 40 of 44.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info  # noqa: E402
from cv_07_recipe import FOLDS, folds  # noqa: E402  (the same folds as the recipe search)

from lora_edu.core import smollm2  # noqa: E402
from lora_edu.course.seeding import seed_everything  # noqa: E402
from lora_edu.lessons import chat_task as ct  # noqa: E402

SETTINGS = [{"name": "notebook", "cut": False, "prose": False, "r": 8},
            {"name": "cut", "cut": True, "prose": False, "r": 8},
            {"name": "cut+prose", "cut": True, "prose": True, "r": 8},
            {"name": "cut, r=2", "cut": True, "prose": False, "r": 2}]
LR = 0.004


def cut_after_answer(text: str, answers: list[str]) -> str | None:
    """``text`` up to the end of its first accepted answer (the longest one starting there), or None without one."""
    found = [m for a in answers if (m := re.search(rf"(?<!\w){re.escape(a)}(?!\w)", text, re.IGNORECASE))]
    if not found:
        return None
    start = min(m.start() for m in found)
    return text[:max(m.end() for m in found if m.start() == start)]


def prose_examples() -> list[dict]:
    """Training-half questions wrong in the format's opening but right in prose, taught the prose reply cut after the answer."""
    out = []
    for q in ct.load_data()["questions"]:
        ex = dict(q, base_reply=ct.load_base_replies()["replies"][q["question"]]["prose"])
        field = ct.field_of(ct.load_base_replies()["replies"][q["question"]]["in_format"])
        if ct.held_out_half(q["question"]) or ct.is_right(field, q["answers"]):
            continue
        taught = cut_after_answer(ex["base_reply"], q["answers"])
        if taught and '"' not in taught and "\n" not in taught:
            out.append(dict(ex, base_field=taught))
    return sorted(out, key=lambda ex: ct.question_hash(ex["question"]))


def taught(examples: list[dict], cut: bool) -> list[dict]:
    return [dict(ex, base_field=cut_after_answer(ex["base_field"], ex["answers"])) if cut else ex for ex in examples]


def run(indices: list[int], out: Path) -> None:
    seed_everything(0)
    base, tok = smollm2.load()
    train = ct.load_task()["train"]
    extra = prose_examples()
    machine = machine_info()   # once: it times a matmul, and the record is rewritten after every run
    rows = []
    for i in indices:
        setting = SETTINGS[i]
        recipe = dict(ct.RECIPE, r=setting["r"], alpha=2 * setting["r"])
        for f, (fit, val) in enumerate(folds(train)):
            fit = fit + (extra if setting["prose"] else [])
            start = time.process_time()
            fit_data = ct.CachedBatch(base, recipe["top_layers"], ct.encode(tok, taught(fit, setting["cut"])))
            model = ct.prepare(base, "LoRA", 0, recipe)
            ct.train(model, fit_data, steps=recipe["steps"], lr=LR, batch_size=recipe["batch_size"], seed=0)
            train_s = time.process_time() - start
            replies = ct.generate(model, tok, [ex["question"] for ex in val])
            scores = ct.score(replies, val)
            row = dict(setting=setting["name"], fold=f, n_fit=len(fit), n_val=len(val), train_s=round(train_s, 1),
                       right_count=round(scores["right_in_format"] * len(val)), format_count=round(scores["format"] * len(val)),
                       replies=replies)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "replies"}), flush=True)
            out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


RECORD = Path(__file__).resolve().parent / "out" / "cv_07_taught_replies.json"


def held_out(index: int) -> None:
    """The setting ``index`` trained on all the training questions and scored once on the held-out questions (seed 0),
    added to the record: run only after the choice, which it cannot change."""
    seed_everything(0)
    base, tok = smollm2.load()
    task, setting = ct.load_task(), SETTINGS[index]
    recipe = dict(ct.RECIPE, r=setting["r"], alpha=2 * setting["r"])
    train = task["train"] + (prose_examples() if setting["prose"] else [])
    model = ct.prepare(base, "LoRA", 0, recipe)
    ct.train(model, ct.CachedBatch(base, recipe["top_layers"], ct.encode(tok, taught(train, setting["cut"]))),
             steps=recipe["steps"], lr=LR, batch_size=recipe["batch_size"], seed=0)
    replies = ct.generate(model, tok, [ex["question"] for ex in task["held_out"]])
    scores = ct.score(replies, task["held_out"])
    record = json.loads(RECORD.read_text())
    record["held_out_of_chosen"] = dict(setting=setting["name"], n=len(replies), machine=machine_info(),
                                        right_count=round(scores["right_in_format"] * len(replies)),
                                        format_count=round(scores["format"] * len(replies)), replies=replies)
    RECORD.write_text(json.dumps(record, indent=1))
    print(f"{setting['name']}: held-out {record['held_out_of_chosen']['right_count']}/{len(replies)} right in the format")


def merge(parts: list[Path]) -> None:
    rows = [r for p in parts for r in json.loads(p.read_text())["rows"]]
    totals = {s["name"]: sum(r["right_count"] for r in rows if r["setting"] == s["name"]) for s in SETTINGS}
    n = {s["name"]: sum(r["n_val"] for r in rows if r["setting"] == s["name"]) for s in SETTINGS}
    for name in totals:
        print(f"{name:12} {totals[name]}/{n[name]} right in the format")
    best = max(totals, key=lambda name: (totals[name], name == "notebook"))
    chosen = best if totals[best] > totals["notebook"] else "notebook"
    print("chosen:", chosen)
    RECORD.write_text(json.dumps({"about": __doc__.strip().splitlines()[0], "settings": SETTINGS, "folds": FOLDS, "lr": LR,
                                  "machine": json.loads(parts[0].read_text())["machine"], "rows": rows,
                                  "right_of_67": totals, "chosen": chosen}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="0,1,2,3")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cv_07_taught_replies.json"))
    parser.add_argument("--merge", nargs="+", type=Path)
    parser.add_argument("--held-out", type=int, metavar="SETTING")
    args = parser.parse_args()
    if args.held_out is not None:
        held_out(args.held_out)
    elif args.merge:
        merge(args.merge)
    else:
        run([int(i) for i in args.only.split(",")], args.out)
