"""Run the grading script in an isolated process: bubblewrap where there is one, with resource limits.

Why bubblewrap: it is the sandbox Flatpak uses, packaged by Debian, Ubuntu and Fedora, and needs
no daemon. The sandbox gets new user, PID, network, IPC, UTS and cgroup namespaces (no network at
all), runs as uid 65534 inside, and sees the system and the Python environment read-only and nothing
else: not the course folder (``source/``, other students, the gradebook), not the instructor's home,
not the course package (so the reference answers cannot be imported), nor the libraries that would do an
exercise in one call (:data:`HIDDEN_MODULES`). Its only writable places are a
64 MiB tmpfs ``/tmp`` and home, thrown away at exit; ``/`` is read-only, ``/dev`` has four devices.
A seccomp filter (:mod:`.seccomp`) refuses new processes, keyrings, namespaces and mounts, so the
per-process limits bound the whole submission: CPU time (what an answer is judged by), address space,
file size and open files; a wall-clock limit kills the PID namespace, and so does an idle limit: the
grader watches the process's scheduler statistics (``/proc/<pid>/schedstat``: time on a CPU, time
waiting for one) and stops it once it has spent ``idle_seconds`` asleep, neither computing nor waiting
for a CPU (issue 26: a submission that ignored its timers and slept cost 120 s per notebook, twice).
The same numbers tell the grader whether a submission stopped by a wall-clock limit was starved of CPU
(worth grading again alone) or slept (not), and how much time each student's code used (:class:`Usage`).

Nothing the process writes is held unbounded here: its report is read line by line as it arrives
(lines over ``report_line_bytes`` are dropped, and everything past ``report_bytes``), each line is
handed on at once, and only the last 4000 bytes of its output are kept.

Without bubblewrap (macOS, or a Linux without it) the grader refuses unless told ``--no-sandbox``;
then it still runs each submission in its own process with the same limits, an empty home and a clean
environment, but that process can read what the instructor can read (see the README).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

from lora_edu.course.exercises import CPU_SECONDS
from lora_edu.grade import seccomp
from lora_edu.grade.course_folder import MAX_NOTEBOOK_BYTES

HERE = Path(__file__).resolve().parent
#: the files the sandbox gets: the script, and the calling code and probes it shares with the notebooks. They are
#: copied into the sandbox's own folder, so they are there although the course package they come from is hidden;
#: none of them imports anything of the course (``answer_calls`` needs NumPy, ``probes`` torch).
SANDBOX_FILES = (HERE / "runner.py", HERE.parent / "course" / "answer_calls.py", HERE.parent / "course" / "probes.py")
#: modules the sandbox hides from student code (their files are covered by an empty, read-only mount): the course
#: package (the references, and the course's own solutions: LoRALinear and add_lora, the NF4 and Q4_1 code), and
#: libraries that do an exercise in one call: gguf and transformers' GGUF reader (Q4_1, notebook 07), bitsandbytes
#: (NF4, notebook 08), peft (LoRA layers and their injection, notebook 05), and scikit-learn (it ships the digits
#: that the capstone's held-out cases come from: an answer could train on them). The grader always grades a graded
#: course.
HIDDEN_MODULES = ("lora_edu", "gguf", "transformers.integrations.gguf", "bitsandbytes", "peft", "sklearn")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), "
                "or pass --no-sandbox where there is none (macOS; the README says what protection remains)")


@dataclass(frozen=True)
class Limits:
    """Limits for one submission's process (all of its notebook's exercises)."""

    cpu_seconds: float = 120.0        # RLIMIT_CPU for the whole process
    call_cpu_seconds: float = CPU_SECONDS    # for each call of a student's function
    cell_cpu_seconds: float = 30.0           # for each solution cell (imports there, such as torch, take a few seconds)
    call_wall_seconds: float = 10.0   # a backstop for code that waits; CPU time is what judges an answer
    cell_wall_seconds: float = 60.0   # for each solution cell (an import of torch waits for the disk)
    idle_seconds: float = 20.0        # asleep (not computing, not waiting for a CPU) after set-up: then the process is killed
    wall_seconds: float = 120.0       # then the process is killed (an honest notebook needs a few seconds)
    student_seconds: float = 120.0    # a student's own time (CPU + asleep) over all notebooks (an honest course: ~12 s); then no more
    memory_bytes: int = 3 << 30       # RLIMIT_AS: importing torch maps about 0.7 GB
    file_bytes: int = 64 << 20        # RLIMIT_FSIZE: the largest file it may write (its output is a pipe we drain)
    scratch_bytes: int = 64 << 20     # the size of each writable tmpfs in the sandbox (/tmp, its home)
    open_files: int = 256             # RLIMIT_NOFILE
    report_bytes: int = 16 << 20      # the most the grader reads of its report (the rest is drained and dropped)
    report_line_bytes: int = 1 << 20    # the longest report line read (notebook 05's capstone record, ~28,000 numbers, is ~600 KB)
    report_lines: int = 10_000        # the most report lines read (an honest notebook sends a few hundred); each costs a parse


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Usage:
    """Where the student's process spent its time, from the kernel's scheduler statistics (seconds).

    ``queued`` (runnable, waiting for a CPU: the machine's doing) is what separates a process starved by
    others from one that slept (``asleep``: neither on a CPU nor queued for one: the student's doing).
    """

    seconds: float   # wall-clock, since the process started
    cpu: float       # on a CPU
    queued: float    # waiting in a run queue for a CPU

    @property
    def asleep(self) -> float:
        return max(0.0, self.seconds - self.cpu - self.queued)

    @property
    def own(self) -> float:
        """The time the student's code took for itself: computing or asleep, not waiting for a CPU."""
        return self.cpu + self.asleep

    def starved(self) -> bool:
        """Did it wait for a CPU at least as long as it slept, and for a quarter of its life or more?"""
        return self.queued >= max(self.asleep, 0.25 * self.seconds)


@dataclass
class RunResult:
    """What came back: the report's events, a tail of the student's output, and how the process ended.

    ``events`` holds the report's events when ``run`` was given no ``on_event`` (at most 1000 of them);
    ``stopped`` is "wall" or "idle" when the grader killed the process for that limit; ``usage`` is None
    where the kernel gives no scheduler statistics.
    """

    events: list
    output_tail: str
    returncode: int | None
    timed_out: bool
    sandboxed: bool
    stopped: str | None = None
    usage: Usage | None = None


def bubblewrap() -> str | None:
    return shutil.which("bwrap")


def _bound_roots() -> list[Path]:
    """What the sandbox sees read-only: the system, and the Python environment running the grader."""
    roots = [Path(p) for p in ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/alternatives")]
    roots += [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    return [p for p in dict.fromkeys(roots) if os.path.lexists(p)]


def check_not_exposed(folder: Path) -> None:
    """Refuse a course folder the sandbox would see (it must see only the system and the Python environment)."""
    folder = folder.resolve()
    for root in _bound_roots():
        if root.is_dir() and not root.is_symlink() and folder.is_relative_to(root.resolve()):
            raise ValueError(f"the course folder {folder} is inside {root}, which the sandbox shows to student code; "
                             "move the course folder elsewhere (for example into your home directory)")


@cache
def _hidden_paths() -> tuple[Path, ...]:
    """The files and folders of :data:`HIDDEN_MODULES` that lie inside what the sandbox sees (others it never sees).

    Found without importing anything: every copy of the top-level package on the import path, then the dotted
    path below it. Every copy, not only the one this process imports (independent red team, attack 2): the grader
    run from a repository checkout (``python -m lora_edu.grade`` there) imports the checkout's ``lora_edu``, which
    the sandbox never sees, while the same interpreter's site-packages may hold an installed copy (the hub's
    environment does), which the sandbox sees and the student's code imported, references and all.
    """
    found = []
    for name in HIDDEN_MODULES:
        top, *rest = name.split(".")
        bases = []
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            bases += [Path(p) for p in spec.submodule_search_locations or []] or ([Path(spec.origin)] if spec.origin else [])
        for entry in _import_folders():
            folder = Path(entry or ".")
            bases += [folder / top, folder / f"{top}.py", *folder.glob(f"{top}.*.so")] if folder.is_dir() else []
        for base in dict.fromkeys(bases):
            path = base.joinpath(*rest)
            for candidate in (path, path.with_suffix(".py")) if rest else (path,):
                if candidate.exists():
                    found.append(candidate.resolve())
    roots = [r for r in _bound_roots() if not r.is_symlink()]
    return tuple(p for p in dict.fromkeys(found) if any(p.is_relative_to(r.resolve()) for r in roots))


def _import_folders() -> list[str]:
    """Where a copy of a module may lie that the sandbox's Python finds, or that student code can put on its path:
    this interpreter's import path, its environment's site-packages and those of the base interpreter (a virtual
    environment's own path leaves them out, but the sandbox sees that interpreter's whole prefix)."""
    sites = getattr(site, "getsitepackages", None)
    folders = [*sys.path] + ([*sites(), *sites([sys.base_prefix])] if sites else [])
    return list(dict.fromkeys(folders))


def _bwrap_command(bwrap: str, script_dir: Path, seccomp_fd: int | None, info_fd: int, limits: Limits) -> list[str]:
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
           "--die-with-parent", "--new-session", "--as-pid-1", "--cap-drop", "ALL"]
    for writable in ("/tmp", "/home/student"):  # the only writable places, small, in memory, thrown away; mounted
        cmd += ["--size", str(limits.scratch_bytes), "--tmpfs", writable]  # first, so a bind below /tmp (a venv there) stays
    for root in _bound_roots():
        if root.is_symlink():
            cmd += ["--symlink", os.readlink(root), str(root)]
        else:
            cmd += ["--ro-bind", str(root), str(root)]
    for hidden in _hidden_paths():
        if hidden.is_dir():
            cmd += ["--tmpfs", str(hidden), "--remount-ro", str(hidden)]
        else:  # a single-file module: an empty file in its place
            cmd += ["--ro-bind", "/dev/null", str(hidden)]
    cmd += ["--proc", "/proc"]
    for device in ("null", "zero", "random", "urandom"):  # a few devices, not a writable /dev (no chmod: see seccomp)
        cmd += ["--dev-bind", f"/dev/{device}", f"/dev/{device}"]
    cmd += ["--ro-bind", str(script_dir), "/grader", "--remount-ro", "/", "--chdir", "/home/student", "--clearenv"]
    for name, value in _environment("/home/student").items():
        cmd += ["--setenv", name, value]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    cmd += ["--info-fd", str(info_fd)]  # bubblewrap tells the student's process id there: the grader kills it by pidfd
    return cmd + [sys.executable, "-I", "-B", "/grader/runner.py", "/grader/job.json"]


def _environment(home: str) -> dict:
    return {"HOME": home, "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib", "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OMP_THREAD_LIMIT": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _set_limits(limits: Limits):
    def apply():  # runs in the child before exec: inherited by bubblewrap and everything inside it
        cpu = int(limits.cpu_seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run(job: dict, *, limits: Limits | None = None, sandboxed: bool = True, submission: BinaryIO | None = None,
        on_event: Callable[[dict], None] | None = None, on_idle: Callable[[], None] | None = None) -> RunResult:
    """Run ``runner.py`` on ``job`` in a fresh process (sandboxed unless told otherwise); never raises for what the student did.

    ``submission``, an open file, is copied (at most ``MAX_NOTEBOOK_BYTES``, never parsed here) beside the script
    as ``submission.ipynb``; the job names it. ``on_event`` gets each event of the report as it arrives, in the
    reading thread; without it the events are returned (at most 1000). ``on_idle`` is called (once) when the
    process, set up, has slept for :data:`IDLE_WINDOW` seconds in a row: the grader then lets another one start.
    """
    limits = limits or DEFAULT_LIMITS
    with tempfile.TemporaryDirectory(prefix="lora-grade-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        script_dir = tmp / "grader"
        script_dir.mkdir()
        for source in SANDBOX_FILES:
            shutil.copy(source, script_dir / source.name)
        if submission is not None:
            with open(script_dir / "submission.ipynb", "wb") as f:
                _copy_at_most(submission, f, MAX_NOTEBOOK_BYTES)
            job = job | {"submission": "submission.ipynb"}
        # Pipes, not files: the student's process could truncate, rewrite or lease a file it shares with us.
        events: list = []
        report = _Lines(limits.report_bytes, limits.report_line_bytes, limits.report_lines,
                        on_event or (lambda e: len(events) < 1000 and events.append(e)))
        output = _Tail(4000)
        stack.callback(report.close)
        stack.callback(output.close)
        (script_dir / "job.json").write_text(json.dumps(job | {"report_fd": report.write_fd, "line_bytes": limits.report_line_bytes}))
        keep = [report.write_fd]
        if sandboxed:
            bwrap = bubblewrap()
            if bwrap is None:
                raise RuntimeError(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}")
            program = seccomp.filter_program()
            seccomp_fd = None
            if program is not None:
                (tmp / "seccomp.bpf").write_bytes(program)
                seccomp_fd = stack.enter_context(open(tmp / "seccomp.bpf", "rb")).fileno()
                keep.append(seccomp_fd)
            info_read, info_write = os.pipe()
            stack.callback(os.close, info_read)
            keep.append(info_write)
            cmd, cwd, env = _bwrap_command(bwrap, script_dir, seccomp_fd, info_write, limits), None, {"PATH": "/usr/bin:/bin"}
        else:
            home = tmp / "home"
            home.mkdir()
            cmd = [sys.executable, "-I", "-B", str(script_dir / "runner.py"), str(script_dir / "job.json")]
            cwd, env = home, _environment(str(home))
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=output.write_fd, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                pass_fds=tuple(keep), preexec_fn=_set_limits(limits), start_new_session=True)
        report.start()
        output.start()
        student = _StudentProcess(info_read) if sandboxed else None
        if sandboxed:
            os.close(info_write)
        stopped, usage = None, None
        try:
            stopped, usage = _watch(proc, student, report, start, limits, on_idle)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if student is not None:  # it runs in its own session: killpg does not reach it, its pidfd does
                student.kill()
            proc.wait()
        report.join()
        return RunResult(events, output.text(), proc.returncode, stopped == "wall", sandboxed, stopped, usage)


#: seconds a process must have been (mostly) asleep before ``run`` calls its ``on_idle``
IDLE_WINDOW = 2.0


def _watch(proc: subprocess.Popen, student, report: _Lines, start: float, limits: Limits,
           on_idle: Callable[[], None] | None) -> tuple[str | None, Usage | None]:
    """Wait for the process, every quarter second reading its scheduler statistics; kill it past the wall or idle limit.

    Returns why it was stopped ("wall", "idle" or None) and its last :class:`Usage` (None without statistics).
    """
    usage, at_ready, recent, sampled = None, None, [], False
    while True:
        try:
            proc.wait(timeout=0.25)
            if not sampled:   # it ended before the first sample: its whole (short) life counts as its own time
                elapsed = time.monotonic() - start
                usage = Usage(elapsed, elapsed, 0.0)
            return None, usage
        except subprocess.TimeoutExpired:
            pass
        pid = student.pid if student is not None else proc.pid
        sample = _schedstat(pid) if pid else None
        sampled = True
        if sample is not None:
            usage = Usage(time.monotonic() - start, *sample)
            if at_ready is None and report.ready:
                at_ready = usage
            if at_ready is not None and on_idle is not None:
                recent = [(t, a) for t, a in recent if usage.seconds - t <= IDLE_WINDOW] + [(usage.seconds, usage.asleep)]
                span = usage.seconds - recent[0][0]
                if span >= 0.8 * IDLE_WINDOW and usage.asleep - recent[0][1] >= 0.8 * span:
                    on_idle()
                    on_idle = None
        if time.monotonic() - start >= limits.wall_seconds:
            return "wall", usage
        if usage is not None and at_ready is not None and usage.asleep - at_ready.asleep >= limits.idle_seconds:
            return "idle", usage


def _schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting for one) over the process's threads, or None (no such process or statistics)."""
    cpu = queued = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/schedstat", "rb") as f:
                on_cpu, waiting, _ = f.read().split()
            cpu, queued = cpu + int(on_cpu), queued + int(waiting)
    except (OSError, ValueError):
        return None
    return cpu / 1e9, queued / 1e9


def _copy_at_most(source: BinaryIO, target: BinaryIO, limit: int) -> None:
    """Copy in 1 MiB chunks, never more than ``limit`` bytes (the file was checked, but it could still grow)."""
    left = limit
    while left > 0 and (chunk := source.read(min(left, 1 << 20))):
        target.write(chunk)
        left -= len(chunk)


class _StudentProcess:
    """The sandboxed process, held by a pidfd from bubblewrap's ``--info-fd`` report, so it can be killed for sure.

    Killing it (PID 1 of its namespace) ends the namespace. A pidfd names exactly that process, never a
    later one that happens to get the same number.
    """

    def __init__(self, info_fd: int):
        self.pidfd: int | None = None
        self.pid: int | None = None
        self._reader = threading.Thread(target=self._read, args=(info_fd,), daemon=True)
        self._reader.start()

    def _read(self, info_fd: int) -> None:
        data = b""
        while b"}" not in data and len(data) < 4096:
            chunk = os.read(info_fd, 4096)
            if not chunk:
                return
            data += chunk
        with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
            pid = int(json.loads(data[: data.index(b"}") + 1])["child-pid"])
            self.pidfd = os.pidfd_open(pid)
            self.pid = pid

    def kill(self) -> None:
        self._reader.join(timeout=5)
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            os.close(self.pidfd)


class _Pipe:
    """A pipe the child writes and a thread here reads to its end (EOF comes when the child's copies are closed)."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def start(self) -> None:
        os.close(self.write_fd)  # the child has its copy
        self.write_fd = -1
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self.read_fd, 65536):
            self.take(chunk)

    def take(self, chunk: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def join(self) -> None:
        self._thread.join(timeout=10)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0 and not self._thread.is_alive():
                with contextlib.suppress(OSError):
                    os.close(fd)


class _Tail(_Pipe):
    """The student's stdout and stderr: only the last ``limit`` bytes are kept."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.data = limit, bytearray()

    def take(self, chunk: bytes) -> None:
        self.data = (self.data + chunk[-self.limit:])[-self.limit:]

    def text(self) -> str:
        self.join()
        return bytes(self.data).decode("utf-8", errors="replace")


class _Lines(_Pipe):
    """The report: split into lines as it arrives, each parsed (if short enough) and handed on at once.

    At most ``line_bytes`` are buffered (a longer line is skipped to its end) and at most ``total_bytes`` in
    ``max_lines`` lines are read (the rest is drained and dropped), so a flood costs a bounded amount of memory,
    not its size, and a bounded number of parses: 16 MiB of empty lines or ``{}`` cost the grader's process about
    3 s of CPU a submission (holding the GIL its other threads need) before lines were counted (independent red team).
    """

    def __init__(self, total_bytes: int, line_bytes: int, max_lines: int, on_event: Callable[[dict], None]):
        super().__init__()
        self.total_bytes, self.line_bytes, self.max_lines, self.on_event = total_bytes, line_bytes, max_lines, on_event
        self.seen, self.lines, self.line, self.skipping, self.ready = 0, 0, bytearray(), False, False

    def take(self, chunk: bytes) -> None:
        if self.seen >= self.total_bytes or self.lines >= self.max_lines:
            return
        chunk = chunk[: self.total_bytes - self.seen]
        self.seen += len(chunk)
        *complete, rest = chunk.split(b"\n", self.max_lines - self.lines)
        if len(complete) >= self.max_lines - self.lines:  # the last line allowed; what follows it is dropped
            complete, rest = complete[: self.max_lines - self.lines], b""
        self.lines += len(complete)
        for piece in complete:
            if not self.skipping and len(self.line) + len(piece) < self.line_bytes:
                self._event(bytes(self.line + piece))
            self.line.clear()
            self.skipping = False
        if not self.skipping and len(self.line) + len(rest) < self.line_bytes:
            self.line += rest
        else:
            self.line.clear()
            self.skipping = True

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError, MemoryError):  # not JSON, an int too long to convert: the student's problem
            return
        if isinstance(event, dict):
            if event.get("ready") is True:  # the first one is the runner's, before any student code
                self.ready = True
            try:
                self.on_event(event)
            except Exception as exc:  # a bug of ours on a strange event must not stop the draining (the child would block)
                print(f"grader: an event of the report could not be taken ({type(exc).__name__}: {exc})", file=sys.stderr)
