"""Drive a class on a real JupyterHub from a test, as root: users, the set-up, the hub, students' browsers-without-a-browser.

What a student does goes through the hub exactly as a browser's would: the login form (PAM), the spawn,
the OAuth hop to the student's own server, then that server's REST API (contents), nbgrader's Assignments
extension (fetch, submit, fetch_feedback) and a kernel over its websocket. Nothing is done for a student as root.
The instructor's commands run as the instructor (``runuser``), with the environment the hub gives the
instructor's server.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests
import websocket

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROXY = DEPLOY / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
PREFIX = "lehub"   # every account and group this test makes starts with it, so a re-run can clean a failed run


def free_port(privileged: bool = False, after: int = 0) -> int:
    """A free loopback port: below 1024 (only root can bind: the hub's and the proxy's APIs; ``after`` skips that
    many free ones, so two calls give two ports) or any."""
    if not privileged:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for port in range(900 + 7 * after, 1000):
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free port below 1024 on 127.0.0.1")


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def make_user(name: str) -> str:
    """A system user with a home and a fresh random password (returned)."""
    run("useradd", "--create-home", "--shell", "/bin/bash", name)
    password = secrets.token_urlsafe(12)
    run("chpasswd", input=f"{name}:{password}\n")
    return password


#: the class's environment for the tests when this one is not usable by other accounts (set-up builds it)
TEST_VENV = Path("/opt/lehub-venv")


def venv_for_students() -> Path:
    """The course's environment every student runs: this one where an ordinary user can run it (and read the course
    it imports), else the one `tools/setup_env.sh --test-tools` built from the lock for the class test (TEST_VENV),
    brought up to date with the course's files here (deploy/install_class.py venv: seconds)."""
    here = Path(sys.prefix)
    if all(readable_by_nobody(p) for p in (here / "bin" / "python", ROOT / "lora_edu" / "__init__.py")):
        return here
    done = subprocess.run([sys.executable, str(DEPLOY / "install_class.py"), "venv", "--venv", str(TEST_VENV)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return TEST_VENV


def readable_by_nobody(path: Path) -> bool:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "test", "-r", str(path)]).returncode == 0


def install(site: ClassSite, instructor: str, students: list[str], venv: Path) -> None:
    """deploy/install_class.py setup (ports chosen free here) and students, as an administrator would run them."""
    setup = subprocess.run(
        [sys.executable, str(DEPLOY / "install_class.py"), "setup", "--instructor", instructor, "--venv", str(venv),
         "--exchange", str(site.exchange), "--etc", str(site.etc), "--state", str(site.state), "--course-id", site.course_id,
         "--instructors-group", f"{PREFIX}-instructors", "--students-group", f"{PREFIX}-students",
         "--port", str(free_port()), "--hub-port", str(free_port(True)), "--proxy-api-port", str(free_port(True, after=1))],
        capture_output=True, text=True)
    assert setup.returncode == 0, setup.stderr + setup.stdout
    if students:
        add_students(site, students)


def add_students(site: ClassSite, students: list[str]) -> None:
    added = subprocess.run([sys.executable, str(DEPLOY / "install_class.py"), "students", "--etc", str(site.etc), *students],
                           capture_output=True, text=True)
    assert added.returncode == 0, added.stderr


def cleanup(base: Path) -> None:
    """Everything an earlier run at ``base`` left: the proxy, this test's accounts and groups, the class's files."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((base / "state" / "proxy.pid").read_text()), signal.SIGTERM)
    remove_leftovers()
    if (base / "etc" / "class.json").exists():
        subprocess.run([sys.executable, str(DEPLOY / "install_class.py"), "remove", "--etc", str(base / "etc")], capture_output=True)
    for group in (f"{PREFIX}-instructors", f"{PREFIX}-students"):
        subprocess.run(["groupdel", group], capture_output=True)
    import shutil
    shutil.rmtree(base, ignore_errors=True)


def remove_leftovers() -> None:
    """Users, groups and processes of an earlier run of this test (which may have been killed half-way)."""
    users = [p.pw_name for p in pwd.getpwall() if p.pw_name.startswith(PREFIX)]
    for name in users:
        kill_processes_of(name)
    for name in users:
        run("userdel", "--remove", "--force", name, check=False)


def processes_of(user: str) -> list[int]:
    """The process ids running as ``user`` (one of this test's accounts)."""
    uid, pids = pwd.getpwnam(user).pw_uid, []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
    return pids


def kill_processes_of(user: str) -> None:
    """SIGKILL each process of one of this test's accounts, by its id."""
    for pid in processes_of(user):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class ClassSite:
    """Where one class's files live for the test (a folder every student can traverse: not pytest's tmp_path, which is 0700)."""

    base: Path
    course_id: str = "lora"
    assignment: str = "lora"
    venv: Path = field(default_factory=lambda: Path(sys.prefix))

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def exchange(self) -> Path:
        return self.base / "exchange"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def class_json(self) -> Path:
        return self.etc / "class.json"

    def settings(self) -> dict:
        return json.loads(self.class_json.read_text())


class Hub:
    """The hub process, started as deploy/start_hub.sh starts it, with its log in a file."""

    def __init__(self, site: ClassSite, log: Path):
        self.site, self.log = site, log
        self.proc: subprocess.Popen | None = None
        settings = site.settings()
        self.url = f"http://127.0.0.1:{settings['port']}"

    def start(self, timeout: float = 120) -> None:
        out = open(self.log, "a")
        self.proc = subprocess.Popen(["bash", str(DEPLOY / "start_hub.sh"), str(self.site.class_json)], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.proc.returncode}; its log ends:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/hub/api/", timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the hub did not answer within {timeout} s; its log ends:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the hub process only (SIGTERM, as systemd would): the proxy and the students' servers stay up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop_everything(self) -> None:
        """Stop the hub, then the proxy it left running (its pid file), for the end of the test."""
        self.stop()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.site.state / "proxy.pid").read_text()), signal.SIGTERM)

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class Student:
    """One person at a browser, talking to the hub and then to their own server, as the browser would."""

    def __init__(self, hub: Hub, name: str, password: str):
        self.hub, self.name, self.password = hub, name, password
        self.http = requests.Session()
        self.base = f"{hub.url}/user/{name}"

    # -- the hub --
    def login(self) -> requests.Response:
        self.http.get(f"{self.hub.url}/hub/login", timeout=30)
        xsrf = self.http.cookies.get("_xsrf", path="/hub/")
        return self.http.post(f"{self.hub.url}/hub/login", data={"username": self.name, "password": self.password, "_xsrf": xsrf},
                              timeout=60, allow_redirects=False)

    def hub_api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"X-XSRFToken": self.http.cookies.get("_xsrf", path="/hub/") or ""}
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", headers=headers, timeout=60, **kw)

    def start_server(self, timeout: float = 240) -> float:
        """Ask the hub for this student's server and wait until it answers; return the seconds it took."""
        start = time.monotonic()
        r = self.hub_api("POST", f"/users/{self.name}/server")
        assert r.status_code in (201, 202, 400), (r.status_code, r.text)  # 400: already running
        deadline = start + timeout
        while time.monotonic() < deadline:
            info = self.hub_api("GET", f"/users/{self.name}").json()
            server = (info.get("servers") or {}).get("", {})
            if server.get("ready"):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"{self.name}'s server was not ready after {timeout} s")
        self.open_server()
        return time.monotonic() - start

    def open_server(self) -> None:
        """Follow the OAuth hop from the hub to the server (what opening /user/NAME/lab does), collecting its cookie."""
        r = self.http.get(f"{self.base}/api/status", timeout=60)
        if r.status_code != 200:  # the first visit goes through the hub's OAuth: the page, not the API, starts it
            self.http.get(f"{self.base}/lab", timeout=120)
            r = self.http.get(f"{self.base}/api/status", timeout=60)
        assert r.status_code == 200, (r.status_code, r.text[:300])

    # -- the student's own server --
    def _xsrf(self) -> str:
        for cookie in self.http.cookies:
            if cookie.name == "_xsrf" and cookie.path.startswith(f"/user/{self.name}"):
                return cookie.value
        return self.http.cookies.get("_xsrf", path="/hub/") or ""

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, f"{self.base}{path}", headers={"X-XSRFToken": self._xsrf()}, timeout=kw.pop("timeout", 300), **kw)

    def assignments(self, action: str, course: str, assignment: str) -> list[dict]:
        """nbgrader's Assignments panel: fetch, submit or fetch_feedback; returns the course's assignments as it lists them."""
        r = self.api("POST", f"/assignments/{action}", data={"course_id": course, "assignment_id": assignment})
        assert r.status_code == 200, (action, r.status_code, r.text[:500])
        answer = r.json()
        assert answer.get("success") is True, (self.name, action, str(answer.get("value"))[-2000:])
        return answer["value"]

    def read_notebook(self, path: str) -> dict:
        r = self.api("GET", f"/api/contents/{path}", params={"content": 1})
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r.json()["content"]

    def save_notebook(self, path: str, nb: dict) -> None:
        r = self.api("PUT", f"/api/contents/{path}", json={"type": "notebook", "format": "json", "content": nb})
        assert r.status_code in (200, 201), (path, r.status_code, r.text[:300])

    def save_file(self, path: str, text: str) -> None:
        r = self.api("PUT", f"/api/contents/{path}", json={"type": "file", "format": "text", "content": text})
        assert r.status_code in (200, 201), (path, r.status_code, r.text[:300])

    def run_code(self, code: str, timeout: float = 240) -> str:
        """Run ``code`` in a fresh kernel of this student's server (over its websocket); return what it printed."""
        kernel = self.start_kernel()
        try:
            return self.execute(kernel, code, timeout)
        finally:
            self.api("DELETE", f"/api/kernels/{kernel}")

    def start_kernel(self) -> str:
        r = self.api("POST", "/api/kernels", json={"name": "python3"})
        assert r.status_code == 201, (r.status_code, r.text[:300])
        return r.json()["id"]

    def execute(self, kernel: str, code: str, timeout: float = 240) -> str:
        """Run ``code`` in one of this student's kernels; return what it printed (errors as ``ERROR name: value``)."""
        url = urlparse(self.base)
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies if c.path == "/" or url.path.startswith(c.path.rstrip("/")))
        ws = websocket.create_connection(f"ws://{url.netloc}{url.path}/api/kernels/{kernel}/channels", cookie=cookie,
                                         header={"X-XSRFToken": self._xsrf()}, timeout=timeout)
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"header": {"msg_id": msg_id, "username": self.name, "session": uuid.uuid4().hex, "msg_type": "execute_request",
                                       "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell",
                            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                                        "allow_stdin": False, "stop_on_error": True}}))
        out, deadline = [], time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    out.append("ERROR " + msg["content"]["ename"] + ": " + msg["content"]["evalue"])
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
        finally:
            ws.close()
        raise TimeoutError(f"{self.name}'s kernel did not finish within {timeout} s; printed so far: {''.join(out)[-500:]}")


def as_user(user: str, *cmd: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command as ``user`` (runuser: no password, no PAM session), in their home by default."""
    home = pwd.getpwnam(user).pw_dir
    base = {"HOME": home, "USER": user, "LOGNAME": user, "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in {**base, **(env or {})}.items()], *cmd],
                          cwd=cwd or home, text=True, capture_output=True, timeout=timeout)
