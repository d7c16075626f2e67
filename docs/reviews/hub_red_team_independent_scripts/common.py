# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
"""The independent red team's scratch class (docs/reviews/hub_red_team_independent.md): run as root, from this folder.
Makes only hrt-* accounts, /srv/hrt-hub and uses /opt/hrt-venv (deploy/install_class.py venv --venv /opt/hrt-venv)."""
import json, sys, os, pwd, subprocess, shutil
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "deploy"))
import hub_driver as hd
hd.PREFIX = "hrt"
SITE = hd.ClassSite(Path("/srv/hrt-hub"))
STATE = Path("/tmp/hrt/state.json")
INSTR = "hrt-instr"
STUDENTS = ["hrt-alice", "hrt-bob", "hrt-mallory", "hrt-zoe"]
VENV = Path("/opt/hrt-venv")

def hub():
    return hd.Hub(SITE, Path("/tmp/hrt/hub.log"))

def student(name):
    pw = json.loads(STATE.read_text())[name]
    s = hd.Student(hub(), name, pw)
    r = s.login(); assert r.status_code == 302, r.status_code
    s.start_server()
    return s

def instructor_env():
    modes = SITE.settings()["jupyter_config"]
    return {"JUPYTER_CONFIG_PATH": f"{modes['instructor']}:{modes['common']}", "PATH": f"{VENV}/bin:/usr/bin:/bin"}

def as_instr(*cmd):
    course = Path(pwd.getpwnam(INSTR).pw_dir) / SITE.course_id
    return hd.as_user(INSTR, *cmd, env=instructor_env(), cwd=course)

import test_class_hub as t  # noqa
NOTEBOOKS = t.NOTEBOOKS

def hand_in(person, how):
    for name in NOTEBOOKS:
        path = f"{SITE.assignment}/{name}"
        person.save_notebook(path, t.answer(person.read_notebook(path), name, how))
    person.assignments("submit", SITE.course_id, SITE.assignment)

def course():
    return Path(pwd.getpwnam(INSTR).pw_dir) / SITE.course_id

LIMITS_PROBE = r'''
import os, json, resource, signal, time
v = {"nproc": resource.getrlimit(resource.RLIMIT_NPROC), "oom_score_adj": open('/proc/self/oom_score_adj').read().strip(),
     "nice": os.nice(0)}
try:
    with open('/proc/self/oom_score_adj', 'w') as fh: fh.write('-1000')
    v["lower_oom"] = "LOWERED to " + open('/proc/self/oom_score_adj').read().strip()
except Exception as e:
    v["lower_oom"] = type(e).__name__
try:
    os.nice(-5); v["raise_priority"] = "RAISED"
except Exception as e:
    v["raise_priority"] = type(e).__name__
kids, err = [], None
for i in range(FORKS):
    try:
        pid = os.fork()
    except OSError as e:
        err = repr(e); break
    if pid == 0:
        time.sleep(30); os._exit(0)
    kids.append(pid)
v["forked"], v["fork_error"] = len(kids), err
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
print("LIMITS" + json.dumps(v))
'''

def trap_code(kind):
    inbound = f"{SITE.exchange}/{SITE.course_id}/inbound"
    instr = pwd.getpwnam(INSTR).pw_dir
    return f'''
import os, glob, shutil, datetime
for old in glob.glob({inbound!r} + '/hrt-mallory+*+trap*'):
    for root, dirs, files in os.walk(old):
        for d in dirs: os.chmod(os.path.join(root, d), 0o700)
    shutil.rmtree(old)
stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f UTC')
f = {inbound!r} + '/hrt-mallory+{SITE.assignment}+' + stamp + '+trap{kind}'
os.mkdir(f)
for nb in {list(NOTEBOOKS)!r}:
    shutil.copy(os.path.expanduser('~/{SITE.assignment}/' + nb), f)
open(f + '/timestamp.txt', 'w').write(stamp)
kind = {kind!r}
if kind == 'unreadable':
    os.chmod(f + '/00_start_here.ipynb', 0o600)
elif kind == 'timestamp':
    open(f + '/timestamp.txt', 'w').write('not a time')
elif kind == 'collectedlink':
    os.symlink({instr!r} + '/lora/gradebook.db', f + '/collected.json')
elif kind == 'sparse':
    with open(f + '/big.bin', 'wb') as fh:
        fh.truncate(300 << 20)
os.chmod(f, 0o750)
print('TRAP', f, os.stat(f + '/00_start_here.ipynb').st_mode & 0o777)
'''
