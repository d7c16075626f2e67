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
    minutes: int
    prerequisites: str


COURSE_MAP = [
    Chapter("00_start_here.ipynb", "Start here", "how the course works, widgets, exercises, notation", 10, "none"),
    Chapter("01_memory_cost.ipynb", "What fine-tuning costs in memory", "why LoRA exists: weights, gradients, optimizer state, activations", 25, "00"),
    Chapter("02_worked_example.ipynb", "The 4×4 worked example", "ΔW = BA, the forward pass and the loss, by hand and in PyTorch", 20, "00"),
    Chapter("03_gradient_step.ipynb", "One gradient step by hand", "the chain rule for A and B, zero initialisation, the α/r scale", 30, "02"),
    Chapter("04_rank_and_alpha.ipynb", "Rank and alpha", "choosing r and α with truncated SVD and sliders", 25, "02, 03"),
    Chapter("05_lora_from_scratch.ipynb", "LoRA from scratch", "a LoRALinear module, merging, training on a real task", 35, "03"),
    Chapter("06_peft_comparison.ipynb", "LoRA with Hugging Face PEFT", "the same module in PEFT, exactly equal, and as fast", 30, "05"),
]


def course_map_markdown() -> str:
    """The course map as a Markdown table (notebook 00 displays it)."""
    rows = ["| Notebook | What it teaches | Time | Needs |", "|---|---|---|---|"]
    for ch in COURSE_MAP:
        rows.append(f"| `{ch.notebook}` **{ch.title}** | {ch.teaches} | {ch.minutes} min | {ch.prerequisites} |")
    total = sum(ch.minutes for ch in COURSE_MAP)
    rows.append(f"| **Whole course** | | **{total} min** | |")
    return "\n".join(rows)
