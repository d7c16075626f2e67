"""lora_edu: the shared package of the course "LoRA from first principles".

Every notebook imports it one way, ``import lora_edu as le``, and reaches everything through
``le``: the LoRA API at the top (``le.LoRALinear``, ``le.add_lora``), and each module by its
short name (``le.memory``, ``le.exercise_bank``, ``le.rank_views``). Anything longer than a few
lines, reused across notebooks, or worth a unit test lives here rather than in a notebook cell.

Three kinds of module, three sub-packages:

* ``lora_edu.core``: what a learner would reuse in a project of their own. LoRA layers and
  injection (``lora``), adapter files (``adapters``), PEFT interop (``peft_tools``), the memory model
  (``memory``, ``sharding``), NF4 (``nf4``), the variants' layers (``variants``), low-rank algebra
  (``lowrank``), subspace similarity (``subspace``), FLOP counts and step timings (``timing``), the
  offline SmolLM2 loader (``smollm2``), training the top layers on cached inputs (``layer_cache``).
  No plotting, no widgets: usable from a script or a GPU benchmark.
* ``lora_edu.lessons``: computations that exist for one notebook's figures and tables, one module per
  notebook: the 4×4 worked example (``worked_example``, 02-03), rank experiments (04), PEFT's pitfalls
  reproduced (``pitfalls``, 06), the chat task (07), the variants' runs (08), the paper's analyses (09),
  routing customer messages (``routing_task``, 10),
  and the small rotated-digits task they share (``digits_task``). No plotting either.
* ``lora_edu.views``: figures and widgets built on the core (``plotting``, ``widget_tools``,
  ``memory_views``, ``rank_views``, ``routing_views``).
* ``lora_edu.course``: what makes it a course: exercises and their bank (and ``answer_calls``,
  how a learner's function is called and its answer read), the course map, the environment check,
  seeding.
* ``lora_edu.grade``: the instructors' grader, ``python -m lora_edu.grade COURSE_DIR ASSIGNMENT``
  (student code in a sandbox, marks computed outside it). Not imported by the notebooks.
* ``lora_edu.classroom``: a class on one server: nbgrader's exchange made safe between students, and
  feedback pages from the grader's marks (``python -m lora_edu.classroom feedback``). Needs nbgrader; not
  imported by the notebooks.

Modules load on first use (PEP 562 ``__getattr__``), so ``import lora_edu`` is quick and a GPU
machine without ipywidgets can still import ``lora_edu.core``.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lora-edu")  # the one version, pyproject.toml's
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

#: short name -> the module that defines it (modules) or "module:attribute" (the top-level API)
_LAZY = {
    # core: what a learner would reuse in a project of their own
    **{name: f"lora_edu.core.{name}" for name in
       ("lora", "adapters", "peft_tools", "lowrank", "timing", "sharding", "smollm2", "subspace", "layer_cache")},
    "finetune": "lora_edu.finetune",  # notebook 07's recipe as a command (python -m lora_edu.finetune)
    # lessons: what exists for one notebook's figures and tables (digits_task: the small task 00 and 04-09 share)
    **{name: f"lora_edu.lessons.{name}" for name in
       ("worked_example", "rank_experiments", "pitfalls", "chat_task", "variant_runs", "paper_analyses", "digits_task",
        "routing_task")},
    "paper_views": "lora_edu.views.paper_views",
    **{name: f"lora_edu.views.{name}" for name in ("plotting", "widget_tools", "memory_views", "rank_views", "routing_views")},
    **{name: f"lora_edu.course.{name}" for name in
       ("exercises", "answer_calls", "exercise_bank", "course_map", "env_check", "seeding")},
    "data": "lora_edu.data",
    "memory": "lora_edu.memory",  # lora_edu.core.memory's names, plus the command line (python -m lora_edu.memory)
    **{name: f"lora_edu.core.lora:{name}" for name in
       ("LoRALinear", "add_lora", "merge_lora", "count_parameters", "print_trainable_parameters")},
    **{name: f"lora_edu.course.exercises:{name}" for name in ("CheckResult", "FunctionExercise", "ValueExercise")},
    "nf4": "lora_edu.core.nf4",  # notebook 08: QLoRA's NF4
    **{name: f"lora_edu.core.nf4:{name}" for name in ("nf4_quantize", "nf4_dequantize")},
    "variants": "lora_edu.core.variants",  # notebook 08: LoRA+ groups, mixed-adapter batches
    **{name: f"lora_edu.core.variants:{name}" for name in ("loraplus_param_groups", "mixed_batch_forward")},
    "check_environment": "lora_edu.course.env_check:check_environment",
    "seed_everything": "lora_edu.course.seeding:seed_everything",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'lora_edu' has no attribute {name!r}; see dir(lora_edu) for what it offers")
    module_name, _, attribute = _LAZY[name].partition(":")
    value = importlib.import_module(module_name)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
