"""Computations that exist for one notebook's figures and tables, one module per notebook.

``lora_edu.core`` is what a learner would take into a project of their own; this is the course's own
laboratory: the 4×4 worked example (02-03), the rank experiments (04), PEFT's pitfalls reproduced (06), the
chat task (07), the variants' runs (08), the paper's analyses (09), routing customer messages (10), and the small rotated-digits task that
00 and 04-09 share. Like ``core``, nothing here draws (``lora_edu.views`` does), so a benchmark can import it
on a machine without a display.
"""
