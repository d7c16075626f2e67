"""Learner copies of the course, and the two JupyterLab servers: learner (`make lab`) and instructor.

    python tools/learner_copies.py create               write the missing learner copies into work/
    python tools/learner_copies.py reset 03             restore one learner copy (the old one is backed up)
    python tools/learner_copies.py reset all            restore every learner copy (each one backed up)
    python tools/learner_copies.py lab [JUPYTER_ARGS]   create, then serve work/ to a learner (`make lab`)
    python tools/learner_copies.py instructor [ARGS]    serve the solution notebooks, nbgrader on (`make instructor`)

A learner copy is the student version of a notebook (``tools/student_versions.py``: solutions
replaced by nbgrader's stub, no outputs, no widget state) in the git-ignored folder ``work/``. The
learner works, and JupyterLab autosaves, there; the tracked notebooks are never opened. ``create``
never overwrites a learner's file; ``reset`` keeps the old one as ``<name>.bak-<timestamp>``.

The learner server runs with ``JUPYTER_CONFIG_DIR=work/.jupyter``, filled from
``tools/learner_jupyter/``: nbgrader's server extensions and its JupyterLab extension are off
there, for that server only; the instructor's configuration is not touched. Both servers get
``--allow-root`` when run as root (JupyterLab refuses root otherwise) and ``.venv/bin`` first on
``PATH`` (nbgrader calls ``alembic`` from there). The browser test starts its servers through
:func:`server_command`, so it exercises exactly what ``make lab`` runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from student_versions import student_version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
WORK = ROOT / "work"
LEARNER_CONFIG = ROOT / "tools" / "learner_jupyter"
FIRST_NOTEBOOK = "00_start_here.ipynb"
# Written into work/.jupyter at every start (ours, not the learner's) ...
CONFIG_FILES = ("jupyter_server_config.json", "labconfig/page_config.json")
# ... and seeded once: JupyterLab settings the learner may change afterwards.
SEEDED_DIRS = ("lab/user-settings",)


class UnknownNotebook(ValueError):
    """A notebook name that matches no notebook of the course (the message lists the valid ones)."""


def course_notebooks(src: Path = NOTEBOOKS) -> list[Path]:
    """The course's notebooks, in order."""
    return sorted(Path(src).glob("*.ipynb"))


def write_learner_copy(notebook: Path, dst: Path) -> None:
    """Write the student version of ``notebook`` to ``dst`` (atomically: a learner never sees half a file)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    nbformat.write(student_version(nbformat.read(notebook, as_version=4)), tmp)
    os.replace(tmp, dst)


def create(src: Path = NOTEBOOKS, work: Path = WORK) -> tuple[list[Path], list[Path]]:
    """Write a learner copy of every notebook that has none in ``work`` yet; return (created, kept)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    created, kept = [], []
    for notebook in course_notebooks(src):
        dst = work / notebook.name
        if dst.exists():
            kept.append(dst)
        else:
            write_learner_copy(notebook, dst)
            created.append(dst)
    return created, kept


def notebook_numbers(src: Path = NOTEBOOKS) -> str:
    """The course's notebook numbers, "00, 01, …", for messages that list the valid choices."""
    return ", ".join(p.stem.split("_")[0] for p in course_notebooks(src))


def resolve(name: str, src: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks that ``name`` means: "all", or one notebook by number ("03"), stem or file name."""
    notebooks = course_notebooks(src)
    if name == "all":
        return notebooks
    key = name.strip()
    key = key[: -len(".ipynb")] if key.endswith(".ipynb") else key
    key = Path(key).name  # "work/03_gradient_step" and "notebooks/03_..." mean the same notebook
    matches = [p for p in notebooks if p.stem == key or (key.isdigit() and p.stem.split("_")[0] == key.zfill(2))]
    if len(matches) != 1:
        names = "\n  ".join(p.name for p in notebooks)
        raise UnknownNotebook(f"no notebook {name!r} in the course. Give a number ({notebook_numbers(src)}), a name, "
                              f"or 'all':\n  {names}")
    return matches


def backup_path(path: Path, now: float | None = None) -> Path:
    """``<name>.bak-YYYYmmdd-HHMMSS`` beside ``path``; a counter is appended if that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate, n = path.with_name(f"{path.name}.bak-{stamp}"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.bak-{stamp}-{n}"), n + 1
    return candidate


def reset(name: str, src: Path = NOTEBOOKS, work: Path = WORK, now: float | None = None) -> list[tuple[Path, Path | None]]:
    """Restore the learner copies that ``name`` means from the course; return (copy, backup or None) pairs."""
    notebooks = resolve(name, src)  # an unknown name fails here, before anything is written
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    done = []
    for notebook in notebooks:
        dst, backup = work / notebook.name, None
        if dst.exists():
            backup = backup_path(dst, now)
            shutil.copy2(dst, backup)
        write_learner_copy(notebook, dst)
        done.append((dst, backup))
    return done


def prepare_learner_config(work: Path = WORK, template: Path = LEARNER_CONFIG) -> Path:
    """Fill ``work/.jupyter`` from the template (config files always, user settings only once); return it."""
    config = Path(work) / ".jupyter"
    for rel in CONFIG_FILES:
        (config / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template / rel, config / rel)
    for rel in SEEDED_DIRS:
        for path in (template / rel).rglob("*"):
            target = config / path.relative_to(template)
            if path.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    return config


def server_command(mode: str, root: Path | None = None, extra: list[str] | tuple[str, ...] = (),
                   env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the learner or instructor JupyterLab server.

    ``root`` is the folder served (learner: ``work/``; instructor: ``notebooks/``); ``extra`` are
    further JupyterLab options (the browser test adds its port and an empty token). The learner's
    ``work/.jupyter`` is prepared here, so calling this is all it takes to reproduce ``make lab``.
    """
    if mode not in ("learner", "instructor"):
        raise ValueError(f"mode must be 'learner' or 'instructor', not {mode!r}")
    root = Path(root if root is not None else (WORK if mode == "learner" else NOTEBOOKS)).resolve()
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if mode == "learner":
        env["JUPYTER_CONFIG_DIR"] = str(prepare_learner_config(root))
    else:
        env.pop("JUPYTER_CONFIG_DIR", None)  # the instructor's own configuration, nbgrader included
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # JupyterLab refuses to run as root without it
    argv += [*extra]
    if (root / FIRST_NOTEBOOK).exists():
        argv.append(str(root / FIRST_NOTEBOOK))  # the page opens on notebook 00
    return argv, env


def _serve(mode: str, root: Path, extra: list[str]) -> None:
    argv, env = server_command(mode, root, extra=extra)
    print(f"{mode} server over {root}: {' '.join(argv[1:])}", flush=True)
    # The instructor's server starts in the repository, where nbgrader's formgrader keeps its
    # gradebook.db (git-ignored there); the learner's in work/.
    os.chdir(ROOT if mode == "instructor" else root)
    os.execvpe(argv[0], argv, env)  # replace this process: Ctrl-C stops JupyterLab directly


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=NOTEBOOKS, help="the course's notebooks (default: notebooks/)")
    parser.add_argument("--work", type=Path, default=WORK, help="the learner copies (default: work/)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", help="write the missing learner copies into work/")
    p_reset = sub.add_parser("reset", help="restore learner copies from the course, backing up the old ones")
    p_reset.add_argument("notebook", nargs="?", help="a number (03), a notebook name, or 'all'")
    sub.add_parser("lab", help="create the missing learner copies, then serve work/ (make lab)")
    sub.add_parser("instructor", help="serve the solution notebooks with nbgrader (make instructor)")
    opts, extra = parser.parse_known_args(args)
    if extra and opts.command not in ("lab", "instructor"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    if opts.command in ("create", "lab"):
        created, kept = create(opts.src, opts.work)
        for path in created:
            print(f"learner copy created: {_show(path)}")
        if kept:
            print(f"learner copies kept (your work is never overwritten; make reset NB=03 restores one): "
                  f"{', '.join(p.name for p in kept)} in {_show(opts.work)}")
    elif opts.command == "reset":
        if not opts.notebook:
            print(f"error: say which notebook to reset: make reset NB=03 (one of {notebook_numbers(opts.src)}) or make reset NB=all",
                  file=sys.stderr)
            return 2
        try:
            done = reset(opts.notebook, opts.src, opts.work)
        except UnknownNotebook as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for path, backup in done:
            saved = f"; your previous version is saved as {_show(backup)}" if backup else ""
            print(f"reset {_show(path)} to the course's version{saved}")
        print("If it is open in JupyterLab, close its tab without saving (or reload the page) to see the reset copy.")
    if opts.command == "lab":
        _serve("learner", opts.work, extra)
    elif opts.command == "instructor":
        _serve("instructor", opts.src, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
