"""Run the grading script in an isolated process: bubblewrap where there is one, with resource limits.

Why bubblewrap: it is the sandbox Flatpak uses, packaged by Debian, Ubuntu and Fedora, and needs
no daemon. The sandbox gets new user, PID, network, IPC, UTS and cgroup namespaces (no network at
all), runs as uid 65534 inside, and sees the system and the Python environment read-only and nothing
else: not the course folder (``source/``, other students, the gradebook), not the instructor's home,
not the course package (so the reference answers cannot be imported), nor PEFT and scikit-learn
(:data:`HIDDEN_PACKAGES` says why). Its only writable places are a 64 MiB tmpfs ``/tmp`` and home,
thrown away at exit; ``/`` is read-only, ``/dev`` has four devices.
A seccomp filter (:mod:`.seccomp`) refuses new processes, keyrings, namespaces and mounts, so the
per-process limits bound the whole submission: CPU time (what an answer is judged by), address space,
file size and open files; a wall-clock limit kills the PID namespace.

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
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from lora_edu.course.exercises import CPU_SECONDS, WALL_SECONDS
from lora_edu.grade import seccomp

HERE = Path(__file__).resolve().parent
#: the files the sandbox gets: the script, and the calling code and probes it shares with the notebooks
SANDBOX_FILES = (HERE / "runner.py", HERE.parent / "course" / "answer_calls.py", HERE.parent / "course" / "probes.py")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), "
                "or pass --no-sandbox where there is none (macOS; the README says what protection remains)")


@dataclass(frozen=True)
class Limits:
    """Limits for one submission's process (all of its notebook's exercises)."""

    cpu_seconds: float = 120.0        # RLIMIT_CPU for the whole process
    call_cpu_seconds: float = CPU_SECONDS    # for each call of a student's function
    cell_cpu_seconds: float = 30.0           # for each solution cell (imports there, such as torch, take a few seconds)
    call_wall_seconds: float = WALL_SECONDS  # a backstop for code that waits; CPU time is what judges an answer
    wall_seconds: float = 120.0       # then the process is killed (an honest notebook needs a few seconds)
    memory_bytes: int = 3 << 30       # RLIMIT_AS: importing torch maps about 0.7 GB
    file_bytes: int = 64 << 20        # RLIMIT_FSIZE: the largest file it may write (its output is a pipe we drain)
    scratch_bytes: int = 64 << 20     # the size of each writable tmpfs in the sandbox (/tmp, its home)
    open_files: int = 256             # RLIMIT_NOFILE
    report_bytes: int = 16 << 20      # the most the grader reads back from its report


DEFAULT_LIMITS = Limits()


@dataclass
class RunResult:
    """What came back: the report's events, a tail of the student's output, and how the process ended."""

    events: list
    output_tail: str
    returncode: int | None
    timed_out: bool
    sandboxed: bool


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


#: packages of the bound environment that student code must not import, each hidden behind an empty folder:
#: the course package (it holds the reference answers), PEFT (its LoRA layer, wrapped in a few lines, would
#: answer notebook 05's build exercises) and scikit-learn (it ships the digits that the capstone's held-out
#: cases come from: an answer could train on them)
HIDDEN_PACKAGES = ("lora_edu", "peft", "sklearn")


def _hidden_package_dirs() -> list[Path]:
    """Where the :data:`HIDDEN_PACKAGES` that are installed live (an editable course package lies outside the environment)."""
    found = []
    for name in HIDDEN_PACKAGES:
        spec = importlib.util.find_spec(name)
        found += [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    return found


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
    for package in _hidden_package_dirs():
        if any(package.is_relative_to(r) for r in _bound_roots() if not r.is_symlink()):
            cmd += ["--tmpfs", str(package), "--remount-ro", str(package)]
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
            "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _set_limits(limits: Limits):
    def apply():  # runs in the child before exec: inherited by bubblewrap and everything inside it
        cpu = int(limits.cpu_seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run(job: dict, *, limits: Limits | None = None, sandboxed: bool = True) -> RunResult:
    """Run ``runner.py`` on ``job`` in a fresh process (sandboxed unless told otherwise); never raises for what the student did."""
    limits = limits or DEFAULT_LIMITS
    with tempfile.TemporaryDirectory(prefix="lora-grade-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        script_dir = tmp / "grader"
        script_dir.mkdir()
        for source in SANDBOX_FILES:
            shutil.copy(source, script_dir / source.name)
        # Pipes, not files: the student's process could truncate, rewrite or lease a file it shares with us.
        report = _Drain(limits.report_bytes, keep="head")
        output = _Drain(4000, keep="tail")
        stack.callback(report.close)
        stack.callback(output.close)
        (script_dir / "job.json").write_text(json.dumps(job | {"report_fd": report.write_fd}))
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
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=output.write_fd, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                pass_fds=tuple(keep), preexec_fn=_set_limits(limits), start_new_session=True)
        report.start()
        output.start()
        student = _StudentProcess(info_read) if sandboxed else None
        if sandboxed:
            os.close(info_write)
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if student is not None:  # it runs in its own session: killpg does not reach it, its pidfd does
                student.kill()
            proc.wait()
        return _read_back(report.result(), output.result(), proc.returncode, timed_out, sandboxed)


class _StudentProcess:
    """The sandboxed process, held by a pidfd from bubblewrap's ``--info-fd`` report, so it can be killed for sure.

    Killing it (PID 1 of its namespace) ends the namespace. A pidfd names exactly that process, never a
    later one that happens to get the same number.
    """

    def __init__(self, info_fd: int):
        self.pidfd: int | None = None
        self._reader = threading.Thread(target=self._read, args=(info_fd,), daemon=True)
        self._reader.start()

    def _read(self, info_fd: int) -> None:
        data = b""
        while b"}" not in data:
            chunk = os.read(info_fd, 4096)
            if not chunk:
                return
            data += chunk
        with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
            self.pidfd = os.pidfd_open(int(json.loads(data[: data.index(b"}") + 1])["child-pid"]))

    def kill(self) -> None:
        self._reader.join(timeout=5)
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            os.close(self.pidfd)


class _Drain:
    """A pipe the child writes and a thread here reads to its end, keeping the first or last ``limit`` bytes."""

    def __init__(self, limit: int, keep: str):
        self.read_fd, self.write_fd = os.pipe()
        self.limit, self.keep, self.data = limit, keep, bytearray()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def start(self) -> None:
        os.close(self.write_fd)  # the child has its copy; EOF comes when the child's copies are closed
        self.write_fd = -1
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self.read_fd, 65536):
            if self.keep == "head":
                self.data += chunk[: max(0, self.limit - len(self.data))]
            else:
                self.data = (self.data + chunk)[-self.limit:]

    def result(self) -> bytes:
        self._thread.join(timeout=10)
        return bytes(self.data)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0 and not self._thread.is_alive():
                with contextlib.suppress(OSError):
                    os.close(fd)


def _read_back(raw: bytes, output: bytes, returncode: int, timed_out: bool, sandboxed: bool) -> RunResult:
    events = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # JSONDecodeError, or an int too long to convert: the student's problem
            continue
        if isinstance(event, dict):
            events.append(event)
    return RunResult(events, output.decode("utf-8", errors="replace"), returncode, timed_out, sandboxed)
