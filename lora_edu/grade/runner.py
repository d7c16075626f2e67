"""Runs inside the grader's sandbox: one student's solution cells, then their functions on the graded cases.

Why a separate, standalone script: the student's code must run in a process that cannot see the
course package (it holds the reference answers), the instructor's files or other students. The
grader copies this file, ``answer_calls.py`` and ``probes.py`` into an otherwise empty folder of the
sandbox. A task that names a probe (notebook 05's classes and functions of a model) is called through
it: the probe exercises the student's answer and returns a record of named numbers.
Everything here is untrusted once the student's first cell has run: the student may change any of
it. That is fine, because only plain data leaves this process, and the grader checks every value
of it against references computed in its own process.

Protocol: a job (JSON) in the read-only file named on the command line; one JSON line per event on
the pipe whose file descriptor the job names: "ready" once set up; then, before any student code, one
"notebook" event (what reading the submitted notebook found: its number of answer cells and which graded
functions it defines in other cells, or an error code); then the cells' errors and the calls' outcomes;
"done" at the end. No line is longer than the job's ``line_bytes``. stdout and stderr are the student's
(the grader keeps their last 4000 bytes).

Why the submitted notebook is read here and not in the grader: it is untrusted, and reading it (JSON,
then Python source) can take gigabytes for a few megabytes of input (issue 26: 8 MiB of ``x;x;...`` took
an ``ast.parse`` to 7.37 GiB). Here that costs the student's own memory and time limits, nobody else's.
"""
import functools
import json
import os
import re
import sys

#: a top-level ``def name(`` or ``class Name`` at the start of a line: which graded functions (or classes, notebook 05's
#: LoRALinear) a notebook defines outside its answer cells
_TOP_LEVEL_DEF = re.compile(r"^(?:(?:async[ \t]+)?def|class)[ \t]+([A-Za-z_]\w*)", re.MULTILINE)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import answer_calls  # noqa: E402  (the copy beside this file)
import probes  # noqa: E402  (the copy beside this file: how a class or a function of a model is exercised)

#: the probes, bound before any student code runs (student code may still change the module they live in: see probes)
PROBES = dict(probes.PROBES)


def _input(plain: dict):
    """An input rebuilt with the Python type it was sent as (int, float, NumPy array or torch tensor)."""
    value = answer_calls.decode(plain)
    origin = plain["origin"]
    if origin == "torch.Tensor":
        import torch
        return torch.from_numpy(value)
    if origin in ("int", "float"):
        return value.item()
    return value


def _source(cell) -> str | None:
    source = cell.get("source")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    return source if isinstance(source, str) else None


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
    return grade_id if type(grade_id) is str else None


def read_notebook(path: str, solution_ids: list, functions: list) -> tuple[list, dict]:
    """(the answer cells' sources, the "notebook" event): what the grader needs from the submitted notebook.

    The event holds only an error code or counts and names the grader already knows, never the notebook's text.
    """
    try:
        with open(path, "rb") as f:
            nb = json.loads(f.read().decode("utf-8"))
    except MemoryError:
        return [], {"error": "memory"}
    except (UnicodeDecodeError, ValueError, RecursionError):
        return [], {"error": "json"}
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return [], {"error": "cells"}
    wanted, answers, elsewhere = set(solution_ids), [], set()
    for cell in nb["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code" or _source(cell) is None:
            continue
        if _grade_id(cell) in wanted:
            answers.append(_source(cell))
        else:
            elsewhere.update(m.group(1) for m in _TOP_LEVEL_DEF.finditer(_source(cell)) if m.group(1) in functions)
    del nb
    return answers, {"answer_cells": len(answers), "elsewhere": sorted(elsewhere)}


def _tolerate_notebook_habits(shell) -> None:
    """Let a shell escape, ``%pip`` and ``%matplotlib inline`` in an answer cell do nothing, as they do nothing to a graded value.

    Why (independent red team, attack 5): in the student's kernel they work; here the sandbox starts no process and
    shows no GUI, so ``!pip install ...`` and ``%pip`` raised OSError and ``%matplotlib inline`` NotImplementedError,
    and the rest of the cell, the graded ``def`` among it, never ran: an honest answer scored 0.
    """
    from IPython.utils.text import SList

    def skipped(cmd, *args, **kwargs):
        print(f"grader: skipped the shell command {str(cmd)[:80]!r} (the grader runs none)")

    shell.system = shell.system_piped = shell.system_raw = skipped
    shell.getoutput = lambda cmd, *args, **kwargs: skipped(cmd) or SList()
    shell.enable_gui = lambda gui=None: None


def _define_anyway(shell, source: str, cell_limits: dict) -> None:
    """After an answer cell stopped with an error, run its top-level ``def``, ``class`` and ``import`` statements one by one.

    Why (independent red team, attack 6): the grader runs only the answer cells, so a line that needs the notebook's
    other cells (``print(ex0b)``, ``import lora_edu as le``, a variable of an earlier cell) raised here and the rest of
    the cell, the graded ``def`` below it among it, never ran: an answer that works in the notebook scored 0. The
    error is still reported; each statement gets the cell's limits, and one that fails is skipped.
    """
    import ast

    try:
        tree = ast.parse(shell.transform_cell(source))
    except Exception:  # a cell IPython cannot transform or Python cannot parse: nothing to define
        return
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    for node in (n for n in tree.body if isinstance(n, kinds)):
        try:
            with answer_calls._limits(**cell_limits):
                exec(compile(ast.Module(body=[node], type_ignores=[]), "<answer cell>", "exec"), shell.user_ns)
        except BaseException as exc:
            if isinstance(exc, (answer_calls._OutOfCpu, answer_calls._OutOfWall)):
                return


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    report = os.fdopen(job["report_fd"], "w", buffering=1)
    line_bytes = job.get("line_bytes", 1 << 20)

    def send(**event):
        line = json.dumps(event)
        if len(line) >= line_bytes and isinstance(event.get("outcome"), dict):  # an answer too large to send back
            line = json.dumps(event | {"outcome": event["outcome"] | {"answer": answer_calls._other("too large")}})
        if len(line) < line_bytes:
            report.write(line + "\n")

    # IPython copies a README into a new profile with chmod, which the sandbox refuses: write it first.
    startup = os.path.join(os.environ.get("IPYTHONDIR", os.path.expanduser("~/.ipython")), "profile_default", "startup")
    os.makedirs(startup, exist_ok=True)
    open(os.path.join(startup, "README"), "a").close()
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # nothing to keep, and its writer would be a thread (the sandbox allows none)
    config.InteractiveShell.colors = "NoColor"  # tracebacks land in the grader's log as plain text
    shell = InteractiveShell.instance(config=config)
    _tolerate_notebook_habits(shell)
    # Before any student code runs: the inputs (torch, if they are tensors) and the notebook's imports the
    # student's code names, so that no limit can interrupt an import half-way and no call pays for one.
    inputs = {task["grade_id"]: [{name: _input(plain) for name, plain in case.items()} for case in task["cases"]]
              for task in job["calls"]}
    if any(task.get("probe") for task in job["calls"]):
        import torch  # noqa: F401  (the probes build torch modules: imported now, before any limit can interrupt it)
    send(ready=True)  # set up, before any student code: without this line the sandbox itself is broken
    cells = []
    if job.get("submission"):
        cells, found = read_notebook(os.path.join(os.path.dirname(os.path.abspath(__file__)), job["submission"]),
                                     job["solution_ids"], [task["function"] for task in job["calls"]])
        send(notebook=found)  # the first line after "ready", before any student code: the grader trusts only that one
        if not cells:
            send(done=True)
            return
    code = "\n".join(cells)
    for name, statement in job["prelude"]:  # a name the code never mentions is never used: torch costs seconds to import
        if re.search(rf"\b{re.escape(name)}\b", code):
            exec(statement, shell.user_ns)
    limits = dict(cpu_seconds=job["cpu_seconds"], wall_seconds=job["wall_seconds"])
    cell_limits = dict(cpu_seconds=job["cell_cpu_seconds"], wall_seconds=job.get("cell_wall_seconds", job["wall_seconds"]))
    for index, source in enumerate(cells):
        try:
            with answer_calls._limits(**cell_limits):
                result = shell.run_cell(source, store_history=False)
            error = result.error_before_exec or result.error_in_exec
        except BaseException as exc:  # the limits can fire outside IPython's own handler
            error = exc
        if isinstance(error, answer_calls._OutOfCpu):
            send(cell=index, limit="cpu")
        elif isinstance(error, answer_calls._OutOfWall):
            send(cell=index, limit="wall")
        elif error is not None:
            send(cell=index, error=answer_calls._short(f"{type(error).__name__}: {error}"))
            _define_anyway(shell, source, cell_limits)
    for task in job["calls"]:
        fn = shell.user_ns.get(task["function"])
        if not callable(fn):
            send(grade_id=task["grade_id"], missing=True)
            continue
        target, encoder = fn, None
        if task.get("probe"):  # a class or a function of a model: the probe exercises it and returns a record
            target, encoder = functools.partial(PROBES[task["probe"]], fn), answer_calls.encode_record
        for index, case in enumerate(inputs[task["grade_id"]]):
            try:
                outcome = answer_calls.call(target, case, **limits, encoder=encoder)
            except BaseException as exc:  # the student's code broke the calling machinery itself (not: "no such function")
                send(grade_id=task["grade_id"], broken=answer_calls._short(f"{type(exc).__name__}: {exc}"))
                break
            send(grade_id=task["grade_id"], case=index, outcome=outcome)
            if outcome["status"] in (answer_calls.CPU_LIMIT, answer_calls.WALL_LIMIT):
                break  # the verdict stops at the first failure: a hung function costs one limit, not one per case
    send(done=True)


if __name__ == "__main__":
    main()
