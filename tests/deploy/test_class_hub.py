"""A class on a real JupyterHub, end to end, as root on this machine (issue 28, items 2 and 4).

System users (an instructor and six students) are created with useradd; deploy/install_class.py sets the class
up; deploy/start_hub.sh starts JupyterHub 6 with configurable-http-proxy on 127.0.0.1. The instructor releases
notebooks 00 and 02; each student logs in through the hub's login page, gets a server, fetches, works in a kernel
(that runs as the student), and submits through nbgrader's Assignments extension:

- alice is honest, bob is wrong, dave hands in a wrong version then an honest one (the latest counts);
- mallory attacks: from her kernel she tries to list and read the exchange, her classmates' work, the instructor's
  files, the hub's secrets and the proxy's API, to use her server's token on others, to hand in as alice (a
  folder named for alice with a later time) and to hand in links to the instructor's source; her answer cells try
  the same at grading time;
- erin hands in after the due date a malformed notebook and an oversized one;
- the hub is restarted between the first submissions and the later ones.

The instructor collects, grades with the trusted grader (``python -m lora_edu.grade``), writes feedback from its
reasons and releases it; students fetch it. A second test drives Debian's Chromium through the login page to a
running notebook, and kills that student's server to show the autosaved notebook survives.

Everything this makes starts with ``lehub`` (accounts, groups) or lives in /srv/lehub-test, and is removed at the
end and at the start of the next run. Needs root, Linux, bubblewrap, Node (deploy/proxy, `npm ci`) and chromium:
``make test`` installs them (tools/setup_env.sh --test-tools).
"""
from __future__ import annotations

import concurrent.futures
import csv
import datetime as dt
import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hub_driver as hd  # noqa: E402

pytestmark = [pytest.mark.hub, pytest.mark.slow]

if sys.platform != "linux" or os.geteuid() != 0:
    pytest.skip("the class test creates system users and runs the hub as root (Linux): run it as root (CI does)", allow_module_level=True)

SITE = Path("/srv/lehub-test")
INSTRUCTOR = "lehub-instr"
STUDENTS = ("alice", "bob", "mallory", "dave", "erin", "frank")
NOTEBOOKS = ("00_start_here.ipynb", "02_worked_example.ipynb")
BIG = 33 << 20   # an oversized notebook: over the grader's 32 MiB


def user(short: str) -> str:
    return f"lehub-{short}"


def _need(path: Path | str, what: str) -> None:
    if not (Path(path).exists() or shutil.which(str(path))):
        pytest.fail(f"{what} is missing: run `bash tools/setup_env.sh --test-tools` (as root it installs it)")


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """The class: users, the set-up, the instructor's release, the hub running. Torn down whatever happens."""
    _need("bwrap", "bubblewrap (the grader's sandbox)")
    _need(hd.PROXY, "configurable-http-proxy (deploy/proxy: npm ci)")
    hd.cleanup(SITE)
    logs = tmp_path_factory.mktemp("hub")
    site = hd.ClassSite(SITE)
    SITE.mkdir(parents=True)
    os.chmod(SITE, 0o755)
    hub = None
    try:
        passwords = {name: hd.make_user(name) for name in (INSTRUCTOR, *map(user, STUDENTS))}
        hd.install(site, INSTRUCTOR, [user(s) for s in STUDENTS], hd.venv_for_students())
        release(site)
        hub = hd.Hub(site, logs / "hub.log")
        hub.start()
        yield site, hub, passwords, logs
    finally:
        if hub is not None:
            hub.stop_everything()
            artifacts = hd.ROOT / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            shutil.copy(hub.log, artifacts / "hub.log")
        hd.cleanup(SITE)


def instructor_env(site: hd.ClassSite) -> dict:
    modes = site.settings()["jupyter_config"]
    return {"JUPYTER_CONFIG_PATH": f"{modes['instructor']}:{modes['common']}", "PATH": f"{site.settings()['venv']}/bin:/usr/bin:/bin"}


def as_instructor(site: hd.ClassSite, *cmd: str) -> subprocess.CompletedProcess:
    course = Path(pwd.getpwnam(INSTRUCTOR).pw_dir) / site.course_id
    done = hd.as_user(INSTRUCTOR, *cmd, env=instructor_env(site), cwd=course)
    assert done.returncode == 0, f"{' '.join(cmd)} failed as the instructor:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def release(site: hd.ClassSite) -> None:
    """The instructor's part before class: source notebooks, nbgrader's student versions, the release."""
    home = Path(pwd.getpwnam(INSTRUCTOR).pw_dir)
    source = home / site.course_id / "source" / site.assignment
    source.mkdir(parents=True)
    for name in NOTEBOOKS:
        shutil.copy(hd.ROOT / "notebooks" / name, source / name)
    subprocess.run(["chown", "-R", f"{INSTRUCTOR}:{INSTRUCTOR}", str(source.parent)], check=True)
    as_instructor(site, "nbgrader", "generate_assignment", site.assignment)
    as_instructor(site, "nbgrader", "release_assignment", site.assignment)


# -- what students write ----------------------------------------------------------------------------------------------


def _solutions(name: str) -> dict[str, str]:
    nb = json.loads((hd.ROOT / "notebooks" / name).read_text())
    out = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            src = "".join(cell["source"])
            out[meta["grade_id"]] = "\n".join(line for line in src.splitlines() if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
    return out


def answer(nb: dict, name: str, how: str) -> dict:
    """The fetched notebook with its answer cells filled in: "honest", "wrong" or "attack"."""
    solutions = _solutions(name)
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("solution"):
            continue
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if how == "honest":
            cell["source"] = solutions[meta["grade_id"]]
        elif how == "wrong":
            cell["source"] = src.replace("raise NotImplementedError()", "return -1.0")
        else:  # at grading time, in the sandbox: look for the instructor's and classmates' files, return nonsense
            cell["source"] = src.replace("raise NotImplementedError()", ATTACK_AT_GRADING)
    return nb


ATTACK_AT_GRADING = """import os, glob
    found = glob.glob('/home/*/lora/source/*/*.ipynb') + glob.glob('/home/*/lora/*') + glob.glob('/srv/lehub-test/*/*/*/*')
    leaked = [open(p).read(100) for p in found if os.path.isfile(p)]
    return len(leaked) + 12345"""


def read_verdict(out: str) -> dict:
    """The JSON verdict the attack probe prints, without what her kernel printed after it.

    Her port scan also knocks on her own kernel's subprocess-output pipe (a ZMQ PULL socket on 127.0.0.1), and
    ipykernel reports the malformed message it got ("Bad pipe message: [...]") on the kernel's stderr, which can
    arrive after the verdict: only the first JSON value after the marker is the verdict.
    """
    verdict, _ = json.JSONDecoder().raw_decode(out.split("VERDICT", 1)[1])
    return verdict


def attack_probe(site: hd.ClassSite, alice_folder: str) -> str:
    """Python for mallory's kernel: try everything a student should not be able to do; print one JSON verdict."""
    s = site.settings()
    instr = pwd.getpwnam(INSTRUCTOR).pw_dir
    alice = pwd.getpwnam(user("alice")).pw_dir
    inbound = f"{site.exchange}/{site.course_id}/inbound"
    reads = [f"{alice}/lora/00_start_here.ipynb", f"{alice}/.local/share/jupyter/nbgrader_cache",
             f"{inbound}/{alice_folder}/00_start_here.ipynb", f"{inbound}/{alice_folder}/submission_secret.txt",
             f"{instr}/lora/source/lora/00_start_here.ipynb", f"{instr}/lora/gradebook.db", f"{instr}/lora/grading_run.json",
             f"{instr}/lora/grades.csv", f"{instr}/lora/submitted", f"{site.state}/jupyterhub_cookie_secret",
             f"{site.state}/jupyterhub.sqlite", f"{site.state}/proxy.pid"]
    lists = [inbound, f"{inbound}/{alice_folder}", f"{site.exchange}/{site.course_id}/feedback", alice, instr, str(site.state)]
    return f"""
import glob, json, os, shutil, urllib.request, urllib.error
verdict = {{"read": {{}}, "list": {{}}, "environ": [], "http": {{}}, "write": {{}}}}
for p in {reads!r}:
    try:
        with open(p, 'rb') as f:
            verdict['read'][p] = 'READ ' + repr(f.read(40))
    except Exception as e:
        verdict['read'][p] = type(e).__name__
for d in {lists!r}:
    try:
        verdict['list'][d] = 'LISTED ' + repr(os.listdir(d)[:5])
    except Exception as e:
        verdict['list'][d] = type(e).__name__
me = os.getuid()
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        if os.stat('/proc/' + pid).st_uid != me:
            text = open('/proc/' + pid + '/environ', 'rb').read()
            verdict['environ'].append(pid + ' ' + repr(text[:60]))
    except Exception:
        pass
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None   # a redirect (to the login page) is an answer: record its status, do not follow it
import ssl
_any_cert = ssl.create_default_context()
_any_cert.check_hostname, _any_cert.verify_mode = False, ssl.CERT_NONE   # she trusts anything; the servers do not trust her
opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=_any_cert))
def http(name, url, headers={{}}, timeout=10):
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            verdict['http'][name] = r.status
    except urllib.error.HTTPError as e:
        verdict['http'][name] = e.code
    except Exception as e:
        verdict['http'][name] = type(e).__name__
token = {{'Authorization': 'token ' + os.environ.get('JUPYTERHUB_API_TOKEN', '')}}
http('proxy_api_routes', 'https://127.0.0.1:{s['proxy_api_port']}/api/routes')
http('hub_api_all_users', 'http://127.0.0.1:{s['port']}/hub/api/users', token)
http('hub_api_alice', 'http://127.0.0.1:{s['port']}/hub/api/users/{user('alice')}', token)
http('hub_api_new_token_for_alice', 'http://127.0.0.1:{s['port']}/hub/api/users/{user('alice')}/tokens', token)
http('alice_server_via_proxy', 'http://127.0.0.1:{s['port']}/user/{user('alice')}/api/contents/lora', token)
http('instructor_server_via_proxy', 'http://127.0.0.1:{s['port']}/user/{INSTRUCTOR}/api/contents/lora/source', token)
ports = set()   # every TCP port listening on 127.0.0.1 (/proc/net/tcp is world-readable): the servers of classmates among them
for line in open('/proc/net/tcp').read().splitlines()[1:]:
    local, state = line.split()[1], line.split()[3]
    if state == '0A' and local.startswith('0100007F:'):
        ports.add(int(local.split(':')[1], 16))
for port in sorted(ports):   # kernels' ZMQ ports and the like do not speak HTTP: one short try each
    for scheme in ('http', 'https'):   # the students' servers speak TLS (internal_ssl) and ask for a client certificate
        for who in ('{user('alice')}', '{INSTRUCTOR}'):
            key = 'port_' + str(port) + '_' + scheme + '_' + who
            http(key, scheme + '://127.0.0.1:' + str(port) + '/user/' + who + '/api/contents/lora', token, 2)
            if not isinstance(verdict['http'][key], int):
                break   # no HTTP answer here: do not wait on this port again for the second name
for name, target in (('rename_course', '{site.exchange}/{site.course_id}'), ('rename_alice', '{inbound}/{alice_folder}')):
    try:
        os.rename(target, target + '.stolen')
        verdict['write'][name] = 'RENAMED'
    except Exception as e:
        verdict['write'][name] = type(e).__name__
try:
    shutil.rmtree('{inbound}/{alice_folder}')
    verdict['write']['delete_alice'] = 'DELETED'
except Exception as e:
    verdict['write']['delete_alice'] = type(e).__name__
print('VERDICT' + json.dumps(verdict))
"""


COLLECTED = "collected.json"


def forge(site: hd.ClassSite) -> str:
    """Python for mallory's kernel: hand in as alice (a later time), hand in links to the instructor's source (with a
    timestamp.txt that is no time and a link where collect writes its record), and two folders collect must refuse."""
    inbound = f"{site.exchange}/{site.course_id}/inbound"
    instr = pwd.getpwnam(INSTRUCTOR).pw_dir
    return f"""
import os, shutil
stamp = '2099-01-01 00:00:00.000000 UTC'
forged = '{inbound}/{user('alice')}+{site.assignment}+' + stamp + '+forged'
os.mkdir(forged)
for nb in {list(NOTEBOOKS)!r}:
    shutil.copy(os.path.expanduser('~/lora/' + nb), forged)
open(forged + '/timestamp.txt', 'w').write(stamp)
links = '{inbound}/{user('mallory')}+{site.assignment}+' + stamp + '+links'
os.mkdir(links)
for nb in {list(NOTEBOOKS)!r}:
    os.symlink('{instr}/lora/source/{site.assignment}/' + nb, links + '/' + nb)
open(links + '/timestamp.txt', 'w').write('not a time')   # nbgrader read it at every later collect and stopped there
os.symlink('{instr}/lora/gradebook.db', links + '/{COLLECTED}')   # collect wrote its record through this, as the instructor
os.chmod(links, 0o755)
# folders collect must refuse one by one (the independent red team): one the instructor cannot read (it stopped the
# whole collection), one that a sparse file makes 200 MB once copied (nothing in inbound/, the instructor's disk after)
for kind in ('unreadable', 'sparse'):
    trap = '{inbound}/{user('mallory')}+{site.assignment}+2000-01-01 00:00:00.000000 UTC+trap-' + kind
    os.mkdir(trap)
    with open(trap + '/00_start_here.ipynb', 'wb') as f:
        f.truncate(200 << 20) if kind == 'sparse' else f.write(b'{{}}')
    os.chmod(trap + '/00_start_here.ipynb', 0o600 if kind == 'unreadable' else 0o640)
print('FORGED')
"""


# -- the test ---------------------------------------------------------------------------------------------------------


def test_a_class_end_to_end(klass):
    site, hub, passwords, logs = klass
    students = {short: hd.Student(hub, user(short), passwords[user(short)]) for short in STUDENTS if short != "frank"}
    teacher = hd.Student(hub, INSTRUCTOR, passwords[INSTRUCTOR])

    # A wrong password and an account outside the class are refused at the login page.
    assert hd.Student(hub, user("alice"), "not-her-password").login().status_code == 403
    assert hd.Student(hub, "nobody", "x").login().status_code == 403

    # Everyone logs in through the login form and gets a server (at once, as a class does).
    def arrive(person: hd.Student) -> float:
        r = person.login()
        assert r.status_code == 302, (person.name, r.status_code, r.text[:300])
        return person.start_server()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        starts = dict(zip([*students, "instructor"], pool.map(arrive, [*students.values(), teacher])))
    print("server start times (s):", {k: round(v, 1) for k, v in starts.items()})

    # Modes: a student's server has no formgrader and hides nbgrader's instructor plugins; the instructor's has it.
    alice = students["alice"]
    assert alice.api("GET", "/formgrader").status_code == 404
    lab = alice.api("GET", "/lab").text
    assert "@jupyter/nbgrader:formgrader" in lab and "@jupyter/nbgrader:create-assignment" in lab  # listed as disabled
    assert teacher.api("GET", "/formgrader").status_code == 200

    # Fetch, and each kernel runs as its student.
    for person in students.values():
        listing = person.assignments("fetch", site.course_id, site.assignment)
        assert any(a["assignment_id"] == site.assignment for a in listing), listing
        who = person.run_code("import os, pwd; print(pwd.getpwuid(os.geteuid()).pw_name, os.getuid())")
        assert who.split()[0] == person.name, who

    # A kernel's channels are Unix sockets in the student's private runtime folder: no TCP port of a student listens
    # but the student's server itself (a kernel's IOPub port on 127.0.0.1 would publish its code and output to anyone).
    kernel = alice.start_kernel()
    assert alice.execute(kernel, "print(1 + 1)").strip() == "2"
    ports = listening_ports(alice.name)
    runtime = Path(pwd.getpwnam(alice.name).pw_dir) / ".local/share/jupyter/runtime"
    assert [json.loads(f.read_text())["transport"] for f in runtime.glob("kernel-*.json")] == ["ipc"]
    # her server's HTTP port, and at most ipykernel's pipe for subprocesses' output (a PULL socket: it only receives,
    # and drops any message without the kernel's random 16-byte key); with TCP there would be five more, IOPub among them
    assert sorted("singleuser" if "jupyterhub-singleuser" in c else "kernel" for c in ports.values()) in (
        ["singleuser"], ["kernel", "singleuser"]), ports
    # That pipe printed any message without the key into her running cell's output: mallory wrote there at will
    # (the independent red team). The class's kernel configuration drops such messages without a word.
    busy = concurrent.futures.ThreadPoolExecutor(1).submit(alice.execute, kernel, "import time\nprint('a')\ntime.sleep(6)\nprint('b')")
    time.sleep(2)
    assert students["mallory"].run_code(PIPE_INJECTION).startswith("PUSHED"), "mallory's push did not run"
    assert busy.result(timeout=240) == "a\nb\n"
    # Her processes carry the class's per-student limits (ClassSpawner): processes, out-of-memory priority, niceness.
    for pid in hd.processes_of(alice.name):
        limits = open(f"/proc/{pid}/limits").read()
        assert re.search(r"Max processes\s+512\s+512", limits) and open(f"/proc/{pid}/oom_score_adj").read().strip() == "500", pid
    alice.api("DELETE", f"/api/kernels/{kernel}")

    def hand_in(short: str, how: str) -> None:
        person = students[short]
        for name in NOTEBOOKS:
            path = f"{site.assignment}/{name}"
            person.save_notebook(path, answer(person.read_notebook(path), name, how))
        person.assignments("submit", site.course_id, site.assignment)

    hand_in("alice", "honest")
    hand_in("bob", "wrong")
    inbound = site.exchange / site.course_id / "inbound"
    alice_folder = next(p.name for p in inbound.iterdir() if p.name.startswith(user("alice") + "+"))
    instructors = grp.getgrnam("lehub-instructors").gr_gid
    for path in (inbound / alice_folder, *(inbound / alice_folder).iterdir()):   # the student and the instructors, nobody else
        info = os.stat(path)
        assert (info.st_mode & 0o777, info.st_gid) == (0o750 if path.is_dir() else 0o640, instructors), path

    # mallory: everything a student should not be able to do, from her kernel.
    mallory = students["mallory"]
    out = mallory.run_code(attack_probe(site, alice_folder))
    verdict = read_verdict(out)
    print("attack verdict:", json.dumps(verdict, indent=1))
    assert not [p for p, v in verdict["read"].items() if v.startswith("READ")], verdict["read"]
    assert not [p for p, v in verdict["list"].items() if v.startswith("LISTED")], verdict["list"]
    assert verdict["environ"] == [], verdict["environ"]
    assert verdict["write"] == {"rename_course": "PermissionError", "rename_alice": "PermissionError",
                                "delete_alice": "PermissionError"}, verdict["write"]
    named = {k: v for k, v in verdict["http"].items() if not k.startswith("port_")}
    # the proxy's API asks for a client certificate from the hub's CA (internal_ssl): without one, no HTTP answer at all
    assert not isinstance(named.pop("proxy_api_routes"), int), verdict["http"]
    assert named == {"hub_api_all_users": 403, "hub_api_alice": 404, "hub_api_new_token_for_alice": 403,
                     "alice_server_via_proxy": 403, "instructor_server_via_proxy": 403}, verdict["http"]
    # every server listening on loopback, asked directly for alice's and the instructor's files with mallory's token:
    # a redirect to the login page, a refusal, "not here", or no HTTP at all; never the files
    assert not [k for k, v in verdict["http"].items() if k.startswith("port_") and v == 200], verdict["http"]
    assert mallory.run_code(forge(site)).strip() == "FORGED"
    hand_in("mallory", "attack")

    # The hub restarts mid-class: servers, sessions and submissions stay.
    hub.stop()
    hub.start()
    hand_in("dave", "wrong")
    time.sleep(1.1)  # nbgrader's timestamps have microseconds; the kernel's ctime too, but be clear about "later"
    hand_in("dave", "honest")

    # The due date passes; erin hands in late, a malformed notebook and an oversized one.
    due = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    as_instructor(site, "nbgrader", "db", "assignment", "add", site.assignment, f"--duedate={due:%Y-%m-%d %H:%M:%S} UTC")
    time.sleep(1.1)
    erin = students["erin"]
    erin.save_file(f"{site.assignment}/00_start_here.ipynb", '{"cells": [ this is not json')
    big = answer(erin.read_notebook(f"{site.assignment}/02_worked_example.ipynb"), "02_worked_example.ipynb", "honest")
    big["cells"][0].setdefault("metadata", {})["padding"] = "x" * BIG
    erin.save_notebook(f"{site.assignment}/02_worked_example.ipynb", big)
    erin.assignments("submit", site.course_id, site.assignment)

    # The instructor collects (refusing what mallory forged), grades, writes and releases feedback.
    collected = as_instructor(site, "nbgrader", "collect", site.assignment)
    log = collected.stdout + collected.stderr
    assert re.search(rf"Refused .*{user('alice')}\+.*forged: it claims to be {user('alice')}'s but belongs to {user('mallory')}", log), log
    assert re.search(r"Refused .*trap-unreadable: .*Permission denied", log), log   # refused alone; the class is collected
    assert re.search(r"Refused .*trap-sparse: it holds more than", log), log
    assert (Path(pwd.getpwnam(INSTRUCTOR).pw_dir) / site.course_id / "gradebook.db").read_bytes().startswith(b"SQLite format 3")
    again = as_instructor(site, "nbgrader", "collect", site.assignment)   # reads each collected timestamp.txt: mallory's too
    assert "Invalid timestamp" not in again.stdout + again.stderr
    course = Path(pwd.getpwnam(INSTRUCTOR).pw_dir) / site.course_id
    graded = as_instructor(site, "python", "-m", "lora_edu.grade", str(course), site.assignment)
    print(graded.stdout[-2000:])
    as_instructor(site, "python", "-m", "lora_edu.classroom", "feedback", str(course), site.assignment)
    as_instructor(site, "nbgrader", "release_feedback", site.assignment)

    totals = {row["student_id"]: float(row["score"]) for row in csv.DictReader(open(course / "grades_totals.csv"))}
    top = 4.0  # notebooks 00 and 02: two graded cells each, one point each
    assert totals == {user("alice"): top, user("bob"): 0.0, user("mallory"): 0.0, user("dave"): top, user("erin"): 0.0}, totals
    rows = list(csv.DictReader(open(course / "grades_feedback.csv")))
    reasons = {(r["student_id"], r["notebook"]): r["message"] for r in rows}
    assert "symbolic links are not accepted" in reasons[(user("mallory"), "00_start_here.ipynb")]
    assert "not valid JSON" in reasons[(user("erin"), "00_start_here.ipynb")]
    assert "the grader reads at most 32 MiB" in reasons[(user("erin"), "02_worked_example.ipynb")]
    report = {r["student_id"]: r for r in csv.DictReader(open(course / "class_report.csv"))}
    late = {s: float(report[user(s)]["minutes_late"]) > 0 for s in ("alice", "bob", "mallory", "dave", "erin")}
    assert late == {"alice": False, "bob": False, "dave": False, "erin": True, "mallory": True}, report  # mallory's folder claims 2099

    # Students fetch their feedback; it holds their marks and reasons and no hidden case.
    seed = json.loads((course / "grading_run.json").read_text())["seed"]
    hidden = hidden_cases(course / "source" / site.assignment, seed, [user(s) for s in STUDENTS])
    for short, expected in (("alice", "4 / 4"), ("bob", "0 / 2"), ("dave", "2 / 2"), ("erin", "0 / 2")):
        person = students[short]
        person.assignments("fetch_feedback", site.course_id, site.assignment)
        pages = person.run_code("import glob; [print(p) for p in sorted(glob.glob('lora/feedback/*/*.html'))]").splitlines()
        assert len(pages) == 2, (short, pages)
        text = "".join(person.api("GET", f"/api/contents/{p}", params={"content": 1, "type": "file", "format": "text"}).json()["content"]
                       for p in pages)
        assert str(seed) not in text
        for shown in hidden:
            assert shown not in text, (short, shown)
        if short == "alice":
            assert text.count("correct") >= 4 and "<strong>late</strong>" not in text and "on time" in text
        if short == "erin":
            assert "<strong>late</strong>" in text
        assert expected.split(" / ")[1] in text

    # After grading, mallory still reaches none of the grader's secrets.
    again = read_verdict(mallory.run_code(attack_probe(site, alice_folder)))
    assert not [p for p, v in again["read"].items() if v.startswith("READ")], again["read"]


PIPE_INJECTION = """
import zmq
ports = set()
for line in open('/proc/net/tcp').read().splitlines()[1:]:
    f = line.split()
    if f[3] == '0A' and f[1].startswith('0100007F:'):
        ports.add(int(f[1].split(':')[1], 16))
ctx = zmq.Context()
for p in sorted(ports):
    s = ctx.socket(zmq.PUSH)
    s.linger = 1000
    s.connect('tcp://127.0.0.1:%d' % p)
    try:
        s.send_multipart([b'x' * 16, b'MALLORY WROTE THIS'], flags=zmq.NOBLOCK)
    except zmq.Again:
        pass
    s.close()
ctx.term()
print('PUSHED', len(ports))
"""


def listening_ports(name: str) -> dict[int, str]:
    """The TCP ports ``name``'s processes listen on, each with the command line of the process holding it."""
    uid, inodes = pwd.getpwnam(name).pw_uid, {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[7]) == uid:
                inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    found = {}
    for pid in hd.processes_of(name):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            command = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:200]
        except OSError:
            continue
        for link in links:
            inode = link[len("socket:["):-1] if link.startswith("socket:[") else None
            if inode in inodes:
                found[inodes[inode]] = command
    return found


def hidden_cases(source: Path, seed: int, students: list[str]) -> list[str]:
    """The hidden cases this grading run drew for these students (from its seed and each student's id), as the
    feedback would show inputs: none may appear."""
    from lora_edu.course.exercises import _show_inputs
    from lora_edu.grade import sandbox
    from lora_edu.grade.course_folder import read_source
    from lora_edu.grade.grader import _Notebook

    shown = []
    for i, path in enumerate(sorted(source.glob("*.ipynb"))):
        notebook = _Notebook(read_source(path), seed, i, sandbox.DEFAULT_LIMITS)
        for cases in (c for student in students for c in notebook.cases(student).values()):
            visible = _show_inputs(cases[0][1]) if cases else ""   # cases[0] is the visible example, which feedback may show
            shown += [s for _, inputs in cases[1:] if "=" in (s := _show_inputs(inputs)) and s != visible]  # values, not just shapes
    return shown


# -- a real browser -----------------------------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.mark.browser
def test_browser_login_to_a_running_notebook_and_a_killed_server_keeps_the_autosave(klass):
    """frank logs in through the hub's login page in Chromium, types in a notebook and runs it; JupyterLab autosaves;
    his server is killed (SIGKILL, as the out-of-memory killer would); restarted, it opens his typed work."""
    site, hub, passwords, logs = klass
    browser_path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        pytest.fail("No Chromium: install Debian's package (apt-get install chromium; `make test` does it as root) or set CHROMIUM",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    frank = hd.Student(hub, user("frank"), passwords[user("frank")])
    marker = f"frank_was_here_{os.getpid()}"
    notebook = Path(pwd.getpwnam(frank.name).pw_dir) / site.assignment / "00_start_here.ipynb"
    artifacts = hd.ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    assert frank.login().status_code == 302   # frank's assignment first, through his server's Assignments extension
    frank.start_server()
    frank.assignments("fetch", site.course_id, site.assignment)
    docmanager = frank.api("GET", "/lab/api/settings/@jupyterlab/docmanager-extension:plugin").json()
    # the class's setting (install_class.py's overrides.json becomes the schema's default), not JupyterLab's 120 s
    assert docmanager["schema"]["properties"]["autosaveInterval"]["default"] == 30, docmanager["schema"]["properties"]["autosaveInterval"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        try:
            page.goto(f"{hub.url}/hub/login", timeout=60_000)
            page.fill("#username_input", frank.name)
            page.fill("#password_input", frank.password)
            page.click("#login_submit")
            page.wait_for_url(re.compile(rf".*/user/{frank.name}/lab.*"), timeout=240_000)  # the hub's OAuth hop, then JupyterLab
            page.wait_for_selector(".jp-LabShell", timeout=120_000)
            page.goto(f"{frank.base}/lab/tree/{site.assignment}/00_start_here.ipynb", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.locator(".jp-Notebook .jp-CodeCell").first.locator(".jp-InputPrompt").click()   # select it (command mode)
            page.keyboard.press("b")       # a new cell below, as a learner adds one
            page.keyboard.press("Enter")   # edit it
            page.keyboard.type(f"{marker} = 1\nprint('ran as', __import__('getpass').getuser())")
            page.keyboard.press("Shift+Enter")
            # A running kernel, as frank. A Shift+Enter pressed while the page is still connecting to its new kernel can be
            # lost (the cell stays "[ ]:", seen once in a CI run): run the typed cell again, as a learner would.
            typed = page.locator(".jp-Notebook .jp-CodeCell").nth(1)
            for attempt in range(3):
                try:
                    page.wait_for_selector(f"text=ran as {frank.name}", timeout=60_000 * (attempt + 1))
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    # A dialog may be what stopped the run (seen once in a full local run on the busy machine, its text not
                    # recorded): say what it asks and take its default answer, as a learner would, then run the cell again.
                    dialog = page.locator(".jp-Dialog")
                    if dialog.count() and dialog.first.is_visible():
                        print("JupyterLab showed a dialog:", " ".join(dialog.first.inner_text().split())[:300])
                        page.screenshot(path=str(artifacts / f"hub_dialog_{attempt}.png"))
                        dialog.first.locator(".jp-mod-accept").first.click()
                        page.wait_for_selector(".jp-Dialog", state="detached", timeout=30_000)
                    typed.locator(".jp-InputPrompt").click()
                    page.keyboard.press("Shift+Enter")
            page.screenshot(path=str(artifacts / "hub_notebook.png"))
            deadline = time.monotonic() + 120   # autosave: every 30 s in a class (deploy/install_class.py)
            while marker not in notebook.read_text() and time.monotonic() < deadline:
                time.sleep(2)
            assert marker in notebook.read_text(), "JupyterLab did not autosave the notebook within 120 s"

            hd.kill_processes_of(frank.name)   # the server and its kernel die at once, unsaved state and all
            frank.hub_api("DELETE", f"/users/{frank.name}/server")   # the hub's "stop my server", then start again
            frank.start_server()
            page.goto(f"{frank.base}/lab/tree/{site.assignment}/00_start_here.ipynb", timeout=120_000)
            page.wait_for_selector(f".jp-Notebook :text('{marker}')", timeout=120_000)
            page.screenshot(path=str(artifacts / "hub_notebook_after_kill.png"))
        except Exception:
            page.screenshot(path=str(artifacts / "hub_notebook_failed.png"))
            raise
        finally:
            browser.close()
