"""What the base model knows: notebook 07's held-out rule, measured once.

Run from the repository root:  .venv/bin/python benchmarks/build_07_task.py
It asks SmolLM2-135M-Instruct every question of lora_edu/data/chat_task.json twice, greedy,
in batches of 64 in the file's order, each set of questions (chat_task.question_set) from its own first question, so that
adding a set leaves the replies to the earlier ones as they were: in its own words (``prose``, chat_task.PROSE_TOKENS new tokens),
and with its reply begun for it with the format's opening ``{"answer": "`` (``in_format``: the
continuation, chat_task.FORMAT_TOKENS new tokens). It writes both to lora_edu/data/chat_task_base.json. lora_edu.lessons.chat_task
keeps only the questions answered right both ways (chat_task.is_right): the task then teaches a format
on facts the model has, and can state in that format. Nothing here looks at a trained model.
Deterministic (one thread, greedy).
"""
from __future__ import annotations

import json
from pathlib import Path

from lora_edu.core import smollm2
from lora_edu.course.seeding import seed_everything
from lora_edu.lessons import chat_task as ct

OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "chat_task_base.json"
BATCH = 64


def main() -> None:
    seed_everything(0)
    model, tokenizer = smollm2.load()
    questions = ct.load_data()["questions"]
    prose, in_format = [], []
    for number in sorted({ct.question_set(q) for q in questions}):
        part = [q["question"] for q in questions if ct.question_set(q) == number]
        for i in range(0, len(part), BATCH):
            chunk = part[i:i + BATCH]
            prose += ct.generate(model, tokenizer, chunk, max_new_tokens=ct.PROSE_TOKENS)
            in_format += ct.generate(model, tokenizer, chunk, max_new_tokens=ct.FORMAT_TOKENS, begin=ct.OPENING, strip=False)
            print(f"{len(prose)}/{len(questions)}", flush=True)
    if [ct.question_set(q) for q in questions] != sorted(ct.question_set(q) for q in questions):
        raise SystemExit("chat_task.json must list its sets in order (set 1's questions first): the replies are stored in that order.")
    right = sum(ct.is_right(r, q["answers"]) for r, q in zip(prose, questions))
    both = sum(ct.is_right(r, q["answers"]) and ct.is_right(ct.field_of(c), q["answers"])
               for r, c, q in zip(prose, in_format, questions))
    OUT.write_text(json.dumps(dict(
        about="How SmolLM2-135M-Instruct answers each question of chat_task.json (benchmarks/build_07_task.py): greedy, "
              "no system turn, in batches of 64 in the file's order, each set from its own first question; 'prose': its own reply; "
              "'in_format': how it continues a reply begun for it with the opening.",
        model=smollm2.FACTS["name"], gguf_sha256=smollm2.FACTS["gguf_sha256"], prose_tokens=ct.PROSE_TOKENS, format_tokens=ct.FORMAT_TOKENS,
        opening=ct.OPENING, n_questions=len(questions), n_right_in_prose=right, n_right_both_ways=both,
        replies={q["question"]: {"prose": r, "in_format": c} for q, r, c in zip(questions, prose, in_format)}),
        indent=1, ensure_ascii=False) + "\n")
    print(f"right in prose: {right} of {len(questions)}; right both ways: {both}")


if __name__ == "__main__":
    main()
