"""nbgrader's exchange for a class on one server, where a student can hand in but never read another's work.

nbgrader's own exchange (0.9) trusts every account on the machine more than a class can:

- ``release_assignment`` makes the exchange root world-writable without the sticky bit (mode 0777), so any
  student can rename the course's folder away and put their own in its place, receiving everyone's later
  submissions; and every student's ``submit`` fails unless that root is writable;
- ``submit`` leaves the submission folder world-writable (0777) and its files world-readable (0644): the only
  thing between a student and a classmate's notebook is that the folder's name, which holds a timestamp and a
  random string, is not listed (nbgrader #1225);
- ``collect`` copies whatever the folder holds, following symbolic links as the instructor (a link to the
  instructor's ``source/`` notebook is collected as the student's own), warns but still collects a folder whose
  owner is not the student its name claims (so a student can hand in "as" a classmate, with a later timestamp
  that replaces the classmate's work), and takes the submission time from the folder's name, which the student
  writes.

These subclasses keep nbgrader's commands, files and names, and change only that:

- the exchange root is made by ``deploy/install_class.py`` (root's, 0755) and never changed; ``inbound/`` is the
  instructor's, group the instructors' group, mode 3733: students may create entries in it but not list it, the
  sticky bit stops them renaming or deleting anyone else's, and the setgid bit gives every entry the
  instructors' group;
- :class:`Submit` copies into a folder it made private (0700) first, then leaves it 0750 with files 0640: the
  student and the instructors' group can read it, nobody else can even enter it, whatever its name;
- :class:`Collect` collects only real folders owned by the student they name, copies only regular files and
  folders (links stay links, which the grader refuses with a reason; FIFOs and devices are left out), and
  records when the kernel last saw the folder change (its ctime, which no user can set back) beside the time
  the student claims; the later of the two decides "latest" and "late" (and is what it writes as the collected
  folder's ``timestamp.txt``, which nbgrader reads at every later collect);
- :class:`Collect` also refuses, one folder at a time and with the reason in its log, a folder the instructor cannot
  read, or that holds more than nbgrader's ``max_dir_size`` (counting what a sparse file becomes once copied), more
  than :data:`MAX_ENTRIES` entries or folders deeper than :data:`MAX_DEPTH`: a student writes into inbound/ directly,
  and before, one such folder stopped the whole class's collection or filled the instructor's disk (the independent
  red team, docs/reviews/hub_red_team_independent.md).

Configured for every user by the class's ``nbgrader_config.py`` (``c.ExchangeFactory.submit =
"lora_edu.classroom.exchange.Submit"``, and so on: :data:`lora_edu.classroom.EXCHANGE_FACTORY`, which
``deploy/install_class.py`` writes there).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pwd
import shutil
import stat
from collections import defaultdict

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default import (
    ExchangeCollect,
    ExchangeFetchAssignment,
    ExchangeFetchFeedback,
    ExchangeList,
    ExchangeReleaseAssignment,
    ExchangeReleaseFeedback,
    ExchangeSubmit,
)
from nbgrader.exchange.default.exchange import Exchange
from nbgrader.utils import check_mode, ignore_patterns, parse_utc

#: the modes a handed-in folder and its files keep: the student and the instructors' group, nobody else
SUBMISSION_DIR_MODE, SUBMISSION_FILE_MODE = 0o750, 0o640
#: written beside each collected submission: who handed it in, when (by the kernel's clock), from which folder
COLLECTED_FILE = "collected.json"


class _FixedRoot:
    """The exchange root exists (the class's set-up made it) and is never made world-writable here."""

    def ensure_root(self):
        if not os.path.isdir(self.root):
            self.fail(f"The exchange {self.root} does not exist: the class's set-up makes it (deploy/install_class.py); "
                      "please tell your instructor")


class ReleaseAssignment(_FixedRoot, ExchangeReleaseAssignment):
    """nbgrader's release, without turning the exchange root into mode 0777."""


class ReleaseFeedback(_FixedRoot, ExchangeReleaseFeedback):
    """nbgrader's feedback release (files named by a hash of the submission's secret, in a folder no student can list)."""


class FetchAssignment(_FixedRoot, ExchangeFetchAssignment):
    pass


class FetchFeedback(_FixedRoot, ExchangeFetchFeedback):
    pass


class List(_FixedRoot, ExchangeList):
    pass


class Submit(_FixedRoot, ExchangeSubmit):
    """Hand in into a folder that only the student and the instructors' group can enter."""

    def copy_files(self):
        self.init_release()
        dest = os.path.join(self.inbound_path, self.assignment_filename)
        self.log.info("Source: %s", self.src_path)
        self.log.info("Destination: %s", dest)
        self.check_filename_diff()
        # Private while it fills (copytree copies the student's own, often 0644, modes). mkdir, not chmod: the folder
        # keeps the setgid bit inherited from inbound/, so every file made in it gets the instructors' group (a chmod
        # by the student, who is not in that group, would clear the bit).
        os.mkdir(dest, 0o700)
        self._copy_into(self.src_path, dest)
        secret = self._write_stamps(dest)
        self.set_perms(dest, fileperms=SUBMISSION_FILE_MODE, dirperms=SUBMISSION_DIR_MODE)

        cache = os.path.join(self.cache_path, self.assignment_filename.rsplit("+", 1)[0] if self.add_random_string
                             else self.assignment_filename)
        os.makedirs(self.cache_path, exist_ok=True)
        self.do_copy(self.src_path, cache)
        self._write_stamps(cache, secret)
        self.log.info("Submitted as: %s %s %s", self.coursedir.course_id, self.coursedir.assignment_id, self.timestamp)

    def _copy_into(self, src: str, dest: str) -> None:
        """nbgrader's do_copy (its size limits and ignore patterns), into ``dest``, which exists and keeps its mode.

        Entry by entry, not ``copytree(src, dest, dirs_exist_ok=True)``: that ends by copying ``src``'s mode onto
        ``dest`` (0755, say, for a moment, and without the setgid bit, so later files lose the instructors' group).
        """
        size = self.get_size(src)
        if size > 1000 * self.coursedir.max_dir_size:
            raise RuntimeError(f"Directory size is too big. Size is {size}, maximum size is {1000 * self.coursedir.max_dir_size}")
        ignore = ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                 max_file_size=self.coursedir.max_file_size, log=self.log)
        names = os.listdir(src)
        skipped = ignore(src, names)
        for name in names:
            if name in skipped:
                continue
            source, target = os.path.join(src, name), os.path.join(dest, name)
            if os.path.isdir(source):
                shutil.copytree(source, target, ignore=ignore)
            else:
                shutil.copy2(source, target)

    def _write_stamps(self, folder: str, secret: str | None = None) -> str:
        secret = secret or os.urandom(64).hex()
        for name, text in (("timestamp.txt", self.timestamp), ("submission_secret.txt", secret)):
            with open(os.path.join(folder, name), "w") as fh:
                fh.write(text)
        return secret


#: what one collected submission may hold besides nbgrader's ``CourseDirectory.max_dir_size`` (its bytes): entries and
#: nesting. A student writes into inbound/ directly, not only through ``nbgrader submit`` and its size check, so
#: collect, which runs as the instructor and writes into the instructor's home, checks again while it copies (a
#: sparse file of 100 GB takes no room in inbound/ and all of it once copied).
MAX_ENTRIES, MAX_DEPTH = 10_000, 16


#: the files collect writes into each collected folder itself (the student's own are left out) and a file nbgrader
#: reads there as the instructor (kept only as a regular file: release_feedback reads it)
COLLECT_WRITES, NBGRADER_READS = (COLLECTED_FILE, "timestamp.txt"), ("submission_secret.txt",)


class RefusedSubmission(Exception):
    """A handed-in folder that collect leaves out; the message says why (the student must hand in again)."""


class _Budget:
    """Bytes and entries a submission may still add while it is copied."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.entries = max_bytes, max_bytes, MAX_ENTRIES

    def take(self, n_bytes: int = 0, entries: int = 0) -> None:
        self.bytes -= n_bytes
        self.entries -= entries
        if self.bytes < 0:
            raise RefusedSubmission(f"it holds more than {self.max_bytes} bytes (CourseDirectory.max_dir_size)")
        if self.entries < 0:
            raise RefusedSubmission(f"it holds more than {MAX_ENTRIES} files and folders")


def _safe_copytree(src: str, dest: str | None, log, budget: _Budget | None = None, depth: int = 0) -> None:
    """Copy folders and regular files; links are copied as links (never followed), anything else is left out.

    Within ``budget`` (bytes read, entries) and :data:`MAX_DEPTH`, else :class:`RefusedSubmission`; an entry the
    instructor cannot read raises ``OSError``. ``dest=None`` only walks and reads (the check before a collection).
    At the top, the student's own :data:`COLLECT_WRITES` are left out (collect writes them: a link there would have
    collect write through it, as the instructor, into any file the link names; a ``timestamp.txt`` that is no time
    stops every later ``nbgrader collect`` of the class, one that links to /dev/zero makes it read forever), and so
    are links named :data:`NBGRADER_READS`.
    """
    budget = budget or _Budget(100_000_000)
    if depth > MAX_DEPTH:
        raise RefusedSubmission(f"its folders are nested deeper than {MAX_DEPTH}")
    if dest is not None:
        os.makedirs(dest)
    with os.scandir(src) as entries:
        for entry in entries:
            budget.take(entries=1)
            target = None if dest is None else os.path.join(dest, entry.name)
            if depth == 0 and (entry.name in COLLECT_WRITES or (entry.name in NBGRADER_READS and entry.is_symlink())):
                if dest is not None and (entry.is_symlink() or entry.name == COLLECTED_FILE):   # nbgrader's timestamp.txt: expected
                    log.warning("Left out %s: collect writes that name itself, or nbgrader reads it as the instructor", entry.path)
            elif entry.is_symlink():
                if target is not None:
                    os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir(follow_symlinks=False):
                _safe_copytree(entry.path, target, log, budget, depth + 1)
            elif entry.is_file(follow_symlinks=False):
                _copy_regular(entry.path, target, budget)
            else:
                log.warning("Left out %s: not a regular file or folder", entry.path)


def _copy_regular(src: str, dest: str | None, budget: _Budget | None = None) -> None:
    """Copy one file opened without following links and without blocking (a FIFO could have replaced it since the scan),
    counting what it reads against ``budget`` (a file that grows while it is copied is stopped at the limit)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            return
        with open(dest, "xb") if dest is not None else contextlib.nullcontext() as fout:
            _copy_counted(fin, fout, budget)


def _copy_counted(fin, fout, budget: _Budget | None) -> None:
    """Read ``fin`` to its end in 1 MiB pieces, each counted against ``budget``; write them to ``fout`` unless None."""
    while chunk := fin.read(1 << 20):
        if budget is not None:
            budget.take(len(chunk))
        if fout is not None:
            fout.write(chunk)


def folder_record(inbound: str, name: str) -> dict | None:
    """What a folder in ``inbound/`` claims (student, time) and what the kernel says (owner, last change); None if unusable."""
    parts = name.rsplit("+", 3)
    path = os.path.join(inbound, name)
    try:
        info = os.lstat(path)
        claimed = parse_utc(parts[2]) if len(parts) >= 3 else None
    except (OSError, ValueError, OverflowError):
        return None
    if claimed is None or not stat.S_ISDIR(info.st_mode):
        return None
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = None
    changed = dt.datetime.fromtimestamp(info.st_ctime, dt.timezone.utc).replace(tzinfo=None)  # nbgrader's naive UTC
    claimed = claimed.replace(tzinfo=None) if claimed.tzinfo is None else claimed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return {"username": parts[0], "filename": name, "owner": owner, "claimed": claimed,
            "changed": changed, "timestamp": max(claimed, changed)}


class Collect(_FixedRoot, ExchangeCollect):
    """Collect only what the named student handed in, copied as data, dated by the kernel's clock."""

    def init_src(self):
        # nbgrader's checks, without its parser, which stops the whole collection at one odd folder name
        if self.coursedir.course_id == "":
            self.fail("No course id specified. Re-run with --course flag.")
        self.course_path = os.path.join(self.root, self.coursedir.course_id)
        self.inbound_path = os.path.join(self.course_path, "inbound")
        if not os.path.isdir(self.inbound_path):
            self.fail(f"Course not found: {self.inbound_path}")
        if not check_mode(self.inbound_path, read=True, execute=True):
            self.fail(f"You don't have read permissions for the directory: {self.inbound_path}")
        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            try:
                self.duedate = gb.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                self.duedate = None
        student_id = self.coursedir.student_id or "*"
        prefix = f"+{self.coursedir.assignment_id}+"
        by_student = defaultdict(list)
        for name in sorted(os.listdir(self.inbound_path)):
            if prefix not in name or (student_id != "*" and not name.startswith(student_id + prefix)):
                continue
            record = folder_record(self.inbound_path, name)
            if record is None:
                self.log.warning("Refused %s: not a folder named <student>+<assignment>+<time>[+random]", name)
            elif record["owner"] != record["username"]:
                self.log.warning("Refused %s: it claims to be %s's but belongs to %s", name, record["username"], record["owner"])
            elif (reason := self._unusable(os.path.join(self.inbound_path, name))) is not None:
                self.log.warning("Refused %s: %s", name, reason)
            else:
                by_student[record["username"]].append(record)
        self.src_records = []
        for records in by_student.values():
            records.sort(key=lambda r: r["timestamp"], reverse=True)
            on_time = [r for r in records if self.duedate is not None and r["timestamp"] <= self.duedate]
            self.src_records.append(on_time[0] if self.before_duedate and on_time else records[0])

    def _budget(self) -> _Budget:
        return _Budget(1000 * self.coursedir.max_dir_size)   # nbgrader's limit (kB) on what submit copies

    def _unusable(self, path: str) -> str | None:
        """Why collect cannot take this folder (too big, too deep, unreadable by the instructor), or None."""
        try:
            _safe_copytree(path, None, self.log, self._budget())
        except (OSError, RefusedSubmission, RecursionError) as exc:
            return f"{exc}; nothing of it is collected (the student must hand in again)"
        return None

    def do_copy(self, src, dest, log=None):
        # A folder that changed since init_src checked it (a student can write into her own folder at any time) is
        # refused here, and what was copied of it removed: one student's folder never stops the class's collection.
        try:
            _safe_copytree(src, dest, self.log, self._budget())
        except (OSError, RefusedSubmission, RecursionError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            self.log.warning("Refused %s: %s; nothing of it is collected (the student must hand in again)",
                             os.path.basename(src), exc)
            return
        record = folder_record(self.inbound_path, os.path.basename(src))
        if record is not None:
            # nbgrader's own record of the time (what a later collect compares): the time that counts, see folder_record
            with open(os.path.join(dest, "timestamp.txt"), "x") as fh:
                fh.write(f"{record['timestamp']:%Y-%m-%d %H:%M:%S.%f} UTC")
            with open(os.path.join(dest, COLLECTED_FILE), "x") as fh:   # "x": never through a link the student left
                json.dump({"student": record["owner"], "folder": record["filename"],
                           "claimed_utc": record["claimed"].isoformat(), "changed_utc": record["changed"].isoformat(),
                           "submitted_utc": record["timestamp"].isoformat(),
                           "due_utc": self.duedate.isoformat() if self.duedate else None}, fh, indent=1)


__all__ = ["Collect", "Exchange", "FetchAssignment", "FetchFeedback", "List", "RefusedSubmission", "ReleaseAssignment",
           "ReleaseFeedback", "Submit", "folder_record"]
