#!/usr/bin/env python3
"""Set up one class of the course on this server, as root: python3 deploy/install_class.py --help.

    deploy/install_class.py setup --instructor NAME [options]   the layout below (idempotent)
    deploy/install_class.py students NAME...                      put existing system users in the class
    deploy/install_class.py remove                                undo `setup` (groups, exchange, config, hub state)
    deploy/install_class.py venv [--venv PATH]                     build or update the course's environment only

What `setup` makes (every path is an option; the defaults are for a server that holds one class):

- the course's environment, ``--venv`` (default /opt/lora-edu/venv): built from the lock (lock/full.txt, hashes
  checked, tools/install_locked.sh) when missing, so every user runs the same packages the notebooks were
  executed with, JupyterHub's ``jupyterhub-singleuser`` among them; readable by everyone, writable by root;
- groups ``lora-instructors`` and ``lora-students`` (who may log in, and in which mode);
- nbgrader's exchange, ``--exchange`` (default /srv/nbgrader/exchange), laid out for
  :mod:`lora_edu.classroom.exchange`: the root root's (0755); the course's folder, ``outbound/`` (releases, 0755)
  and ``feedback/`` (0711: a student reads only the page whose secret name they know) the instructor's;
  ``inbound/`` the instructor's with the instructors' group, mode 3733 (hand in, never list; sticky: nobody
  renames or deletes another's folder; setgid: every folder gets the instructors' group);
- the Jupyter configuration both kinds of server read (``--etc``, default /etc/lora-class): ``common/`` (the
  exchange, the course id), ``learner/`` (nbgrader's instructor tools off, its Assignments panel on) and
  ``instructor/`` (all of nbgrader, the course folder); JupyterHub's settings in ``class.json``;
- the kernels' IPython configuration in the environment (``<venv>/etc/ipython``, :data:`KERNEL_CONFIG`);
- the instructor's course folder ``~INSTRUCTOR/<course-id>/`` (nbgrader's ``source/``), home made 0700;
- the hub's state folder, ``--state`` (default /srv/lora-hub, 0700, root's): its database, cookie secret and
  the proxy's process id.

Start the hub with ``deploy/start_hub.sh`` (or the systemd unit deploy/lora-hub.service). docs/instructor_guide.md,
"Running a class", is the walk-through; tests/deploy/test_class_hub.py runs all of it as root on one machine.
"""
from __future__ import annotations

import argparse
import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lora_edu.classroom import EXCHANGE_FACTORY  # noqa: E402  (the one list of the exchange's classes; imports no nbgrader)

DEFAULTS = dict(venv="/opt/lora-edu/venv", exchange="/srv/nbgrader/exchange", etc="/etc/lora-class", state="/srv/lora-hub",
                course_id="lora", instructors_group="lora-instructors", students_group="lora-students",
                port=8000, hub_port=881, proxy_api_port=882)
# nbgrader's JupyterLab plugins a student does not get: the instructor's tools (the Assignments panel and Validate stay)
LEARNER_HIDDEN_PLUGINS = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                          "@jupyter/nbgrader:course-list", "@jupyter/nbgrader:menu")
LEARNER_SERVER_EXTENSIONS = {"nbgrader.server_extensions.formgrader": False, "nbgrader.server_extensions.course_list": False,
                             "nbgrader.server_extensions.assignment_list": True, "nbgrader.server_extensions.validate_assignment": True}
#: JupyterLab saves an open notebook this often (s) in a class: a server that dies loses at most this much typing
AUTOSAVE_SECONDS = 30
PROXY = ROOT / "deploy" / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
#: the interpreter the environment is made from: the system's, which every user can run (pyenv's under /root is not)
BASE_PYTHON = "/usr/bin/python3"


class SetupError(RuntimeError):
    """Something the set-up needs is missing; the message says what to do."""


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        _run("groupadd", "--system", name)
        return grp.getgrnam(name).gr_gid


def add_to_group(user: str, group: str) -> None:
    if user not in grp.getgrnam(group).gr_mem:
        _run("usermod", "-a", "-G", group, user)


def make_dir(path: Path, mode: int, uid: int = 0, gid: int = 0) -> None:
    """A real folder with exactly this owner and mode (an existing one is corrected, a link refused)."""
    if path.is_symlink():
        raise SetupError(f"{path} is a symbolic link; remove it (the class's folders must be real folders)")
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def readable_by_nobody(path: Path) -> bool:
    """Can an unprivileged account read this (every student must run the course's environment)?"""
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "test", "-r", str(path)]).returncode == 0


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def ensure_venv(venv: Path, base_python: str = BASE_PYTHON) -> None:
    """The course's environment for every user: built from the lock when missing or when the lock changed; the course
    itself re-installed when its files changed (a few seconds). Its interpreter must be one every user can run."""
    python = venv / "bin" / "python"
    lock = _digest([ROOT / "lock" / "full.txt", ROOT / "constraints-cpu.txt"])
    course = _digest(sorted(p for p in (ROOT / "lora_edu").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
                     + [ROOT / "pyproject.toml"])
    stamps = venv / ".class-stamp.json"
    old = json.loads(stamps.read_text()) if stamps.exists() else {}
    leftover = ROOT / "build"          # pip builds the course in the repository's build/; ours to remove only if we made it
    had_build = leftover.exists()
    if not python.exists() or old.get("lock") != lock:
        if not readable_by_nobody(Path(base_python)):
            raise SetupError(f"{base_python} cannot be run by an ordinary user (is it under /root, like pyenv's?): pass "
                             "--base-python with a system Python 3.11+ (Debian: /usr/bin/python3)")
        print(f"install_class: building the course's environment in {venv} from lock/full.txt with {base_python} (a few minutes)")
        shutil.rmtree(venv, ignore_errors=True)
        _run(base_python, "-m", "venv", str(venv))
        subprocess.run(["bash", str(ROOT / "tools" / "install_locked.sh"), str(python), "lock/full.txt"], check=True, cwd=ROOT)
    elif old.get("course") != course:
        print(f"install_class: re-installing the course into {venv} (its files changed)")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--no-build-isolation", "--force-reinstall", "."], check=True, cwd=ROOT)
    write(stamps, json.dumps({"lock": lock, "course": course}))
    if not had_build:
        shutil.rmtree(leftover, ignore_errors=True)
    if not (venv / "bin" / "jupyterhub-singleuser").exists():
        raise SetupError(f"{venv} has no jupyterhub-singleuser: it was not built from the course's lock with the hub extra "
                         "(tools/lock.py includes it); remove it and run again")
    if not readable_by_nobody(python):
        raise SetupError(f"{python} cannot be run by an ordinary user (a folder above it is private, such as /root): "
                         "put the environment where every student can read it, e.g. --venv /opt/lora-edu/venv")


def learner_config(etc: Path) -> None:
    d = etc / "jupyter" / "learner"
    write(d / "jupyter_server_config.json", json.dumps({"ServerApp": {"jpserver_extensions": LEARNER_SERVER_EXTENSIONS}}, indent=1))
    write(d / "labconfig" / "page_config.json", json.dumps({"disabledExtensions": {p: True for p in LEARNER_HIDDEN_PLUGINS}}, indent=1))


def common_config(etc: Path, args) -> None:
    d = etc / "jupyter" / "common"
    factory = "\n".join(f"c.ExchangeFactory.{trait} = {cls!r}" for trait, cls in EXCHANGE_FACTORY.items())
    write(d / "nbgrader_config.py", f'''# Written by deploy/install_class.py: every user's nbgrader in this class (students and instructor).
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = {args.course_id!r}
c.Exchange.root = {str(args.exchange)!r}
# The exchange hardened for a class (lora_edu/classroom/exchange.py says what nbgrader's own allows)
{factory}
''')
    settings = etc / "jupyter" / "lab-settings"
    write(settings / "overrides.json", json.dumps({"@jupyterlab/docmanager-extension:plugin": {"autosaveInterval": AUTOSAVE_SECONDS},
                                                   "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False,
                                                                                                  "fetchNews": "false"}}, indent=1))
    # Kernels talk to their server over Unix sockets in the user's private runtime folder, not TCP on 127.0.0.1: a
    # kernel's IOPub port publishes every cell's code and output to anyone who subscribes, and on one machine every
    # account can reach every loopback port (the red team's finding, docs/reviews/hub_red_team.md).
    write(d / "jupyter_server_config.json", json.dumps({"LabApp": {"app_settings_dir": str(settings)},
                                                        "KernelManager": {"transport": "ipc"}}, indent=1))


#: every kernel of the class's environment reads this (IPython's configuration in ``<venv>/etc/ipython``). ipykernel
#: listens on a TCP port of 127.0.0.1 for its forked subprocesses' output (a PULL socket; KernelManager.transport
#: "ipc" does not move it) and prints any message without its random key, key and content, to the kernel's stderr,
#: which ipykernel 7 forwards into the notebook's output: a classmate could write any text into a running cell of
#: yours ("Bad pipe message: ... MALLORY SAYS: ..."), as often as she liked. This keeps messages with the key (a
#: forked subprocess's output) and drops the rest without a word (the independent red team, issue 28).
KERNEL_CONFIG = """# Written by deploy/install_class.py: every kernel of the class (its environment's IPython configuration).
c = get_config()  # noqa: F821
c.IPKernelApp.exec_lines = ['''
def _lora_class_quiet_pipe():
    from ipykernel.kernelapp import IPKernelApp
    iopub = IPKernelApp.instance().iopub_thread
    pipe = getattr(iopub, "_pipe_in", None)
    if pipe is None:
        return
    def keyed_only(msg):
        if iopub._pipe_flag and iopub._is_master_process() and msg and msg[0] == iopub._pipe_uuid:
            iopub.send_multipart(msg[1:])
    iopub.io_loop.add_callback(pipe.on_recv, keyed_only)
_lora_class_quiet_pipe()
del _lora_class_quiet_pipe
''']
"""


def kernel_config(venv: Path) -> None:
    write(venv / "etc" / "ipython" / "ipython_kernel_config.py", KERNEL_CONFIG)


def instructor_config(etc: Path, course: Path) -> None:
    write(etc / "jupyter" / "instructor" / "nbgrader_config.py",
          f"# Written by deploy/install_class.py: the instructor's course folder.\nc = get_config()  # noqa: F821\n"
          f"c.CourseDirectory.root = {str(course)!r}\n")


def setup(args) -> dict:
    if os.geteuid() != 0:
        raise SetupError("run as root (it creates groups, the exchange and the hub's state folder)")
    try:
        instructor = pwd.getpwnam(args.instructor)
    except KeyError:
        raise SetupError(f"no system user {args.instructor!r}: create it first (useradd -m {args.instructor}; passwd {args.instructor})") from None
    ensure_venv(Path(args.venv), args.base_python)
    proxy = Path(args.proxy)
    if not os.access(proxy, os.X_OK):
        raise SetupError(f"no proxy at {proxy}: run `(cd deploy/proxy && npm ci --omit=dev)` (Node 20+; Debian: apt-get install nodejs npm)")
    igid = ensure_group(args.instructors_group)
    ensure_group(args.students_group)
    add_to_group(args.instructor, args.instructors_group)

    exchange, course_x = Path(args.exchange), Path(args.exchange) / args.course_id
    make_dir(exchange, 0o755)
    make_dir(course_x, 0o755, instructor.pw_uid, igid)
    make_dir(course_x / "outbound", 0o755, instructor.pw_uid, igid)
    make_dir(course_x / "inbound", 0o3733, instructor.pw_uid, igid)
    make_dir(course_x / "feedback", 0o711, instructor.pw_uid, igid)

    home = Path(instructor.pw_dir)
    make_dir(home, 0o700, instructor.pw_uid, instructor.pw_gid)
    course = home / args.course_id
    for sub in ("", "source"):
        make_dir(course / sub, 0o700, instructor.pw_uid, instructor.pw_gid)

    etc = Path(args.etc)
    make_dir(etc, 0o755)
    common_config(etc, args)
    learner_config(etc)
    instructor_config(etc, course)
    kernel_config(Path(args.venv))
    make_dir(Path(args.state), 0o700)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in DEFAULTS or k in ("instructor", "proxy")}
    settings["jupyter_config"] = {mode: str(etc / "jupyter" / mode) for mode in ("common", "learner", "instructor")}
    write(etc / "class.json", json.dumps(settings, indent=1) + "\n")
    print(f"install_class: class {args.course_id!r} set up: instructor {args.instructor}, exchange {course_x}, "
          f"configuration {etc}, hub state {args.state}; start the hub with deploy/start_hub.sh {etc / 'class.json'}")
    return settings


def students(args) -> None:
    settings = json.loads((Path(args.etc) / "class.json").read_text())
    for name in args.names:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            raise SetupError(f"no system user {name!r}: create it first (useradd -m {name}; passwd {name})") from None
        if grp.getgrgid(user.pw_gid).gr_name == settings["instructors_group"] or name in grp.getgrnam(settings["instructors_group"]).gr_mem:
            raise SetupError(f"{name} is an instructor of this class; a student account must be another account")
        make_dir(Path(user.pw_dir), 0o700, user.pw_uid, user.pw_gid)  # Debian's useradd leaves homes 0755: readable by classmates
        add_to_group(name, settings["students_group"])
    print(f"install_class: {len(args.names)} student(s) in {settings['students_group']}, homes private (0700)")


def remove(args) -> None:
    """Undo `setup` (not the users, not the environment, not the instructor's course folder)."""
    path = Path(args.etc) / "class.json"
    settings = json.loads(path.read_text()) if path.exists() else {k: str(v) for k, v in DEFAULTS.items()}
    for key in ("state", "etc"):
        shutil.rmtree(settings[key], ignore_errors=True)
    shutil.rmtree(Path(settings["exchange"]) / settings["course_id"], ignore_errors=True)
    for group in (settings["students_group"], settings["instructors_group"]):
        subprocess.run(["groupdel", group], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="make the class's layout (idempotent)")
    p.add_argument("--instructor", required=True, help="the instructor's system user (must exist)")
    for key, value in DEFAULTS.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    p.add_argument("--proxy", default=str(PROXY), help="configurable-http-proxy (default: deploy/proxy's, from npm ci)")
    p.add_argument("--base-python", default=BASE_PYTHON, help="the Python the environment is made from (default: the system's)")
    v = sub.add_parser("venv", help="build or update the course's environment only (setup does it too)")
    v.add_argument("--venv", default=DEFAULTS["venv"])
    v.add_argument("--base-python", default=BASE_PYTHON)
    s = sub.add_parser("students", help="put existing system users in the class (and make their homes private)")
    s.add_argument("names", nargs="+")
    s.add_argument("--etc", default=DEFAULTS["etc"])
    r = sub.add_parser("remove", help="undo setup (users, the environment and course folders stay)")
    r.add_argument("--etc", default=DEFAULTS["etc"])
    args = parser.parse_args(argv)
    try:
        if args.command == "venv":
            ensure_venv(Path(args.venv), args.base_python)
        else:
            {"setup": setup, "students": students, "remove": remove}[args.command](args)
    except (SetupError, subprocess.CalledProcessError) as exc:
        detail = f"{exc}" if isinstance(exc, SetupError) else f"{' '.join(exc.cmd)} failed: {exc.stderr.strip()}"
        print(f"install_class: error: {detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
