"""The grader against students who try to get marks without the answer, or to hurt others.

One grading run of notebook 00 (exercise: ``lora_params(d, k, r)``) for a class of attackers and honest
students. Each attacker edits only its solution cell (or its submitted files) and must score 0 with a
reason; honest answers, also noisy or slow ones, get full marks; a victim graded in the same run is
unaffected; nothing outside the sandbox changes. The ATTACKS table doubles as the README's list.
"""
import csv
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from course_builder import NOTEBOOKS, ROOT, make_course, submit

from lora_edu.course import exercise_bank
from lora_edu.grade import sandbox
from lora_edu.grade.grader import grade

NB00 = [p for p in NOTEBOOKS if p.name.startswith("00_")]
CELL = "ex00_lora_params"
LIMITS = sandbox.Limits(cpu_seconds=60, wall_seconds=40, call_cpu_seconds=2, cell_cpu_seconds=8, call_wall_seconds=8,
                        cell_wall_seconds=30, idle_seconds=10)
WRONG = "\ndef lora_params(d, k, r):\n    return 0\n"


def _public_answers() -> dict:
    """What a student can precompute from the public seed: the notebook check's own hidden cases."""
    ex = exercise_bank.lora_param_count()
    return {(c["d"], c["k"], c["r"]): ex.reference(**c) for _, c in ex.cases(np.random.default_rng(ex.seed))}


#: attack -> (solution cell, words the feedback must contain, alternatives split by " | ": what stopped it)
ATTACKS = {
    "replaces ex.check": ("ex0b.check = lambda f: type('R', (), {'score': 1.0, 'mark': lambda s: 1.0})()" + WRONG,
                          "NameError"),
    "patches CheckResult.score": ("import lora_edu.course.exercises as E\nE.CheckResult.score = property(lambda s: 1.0)" + WRONG,
                                  "raised ModuleNotFoundError"),
    "changes the reference": ("import lora_edu as le\nle.exercise_bank.lora_param_count = lambda: None" + WRONG, "raised ModuleNotFoundError"),
    "patches np.allclose and friends": ("import numpy as np\nnp.allclose = lambda *a, **k: True\n"
                                        "np.array_equal = lambda *a, **k: True\nnp.isclose = lambda *a, **k: True" + WRONG,
                                        "wrong values"),
    "hides its result (no number)": ("get_ipython().ast_node_interactivity = 'none'\n"
                                     "get_ipython().display_formatter.formatters['text/plain'].for_type(float, lambda *a: '1.0')\n"
                                     "def lora_params(d, k, r):\n    return None\n", "got None"),
    "forges a displayed 1.0": ("import sys\ndef lora_params(d, k, r):\n    sys.displayhook(1.0)\n    print('PASS 1.0')\n    return 'PASS'\n",
                               "expected a number or an array"),
    "returns a fake tensor": ("class Fake:\n    __module__ = 'torch'\n    def detach(self): return self\n    def cpu(self): return self\n"
                              "    def numpy(self): return self\n    def __array__(self, *a, **k): raise SystemExit\n"
                              "def lora_params(d, k, r):\n    return Fake()\n", "expected a number or an array"),
    "returns an int subclass that equals everything": ("class Eq(int):\n    def __eq__(self, o): return True\n"
                                                       "def lora_params(d, k, r):\n    return Eq(0)\n", "wrong values"),
    "calls the reference from the repository": (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                                                "from lora_edu.course.exercise_bank import lora_param_count\n"
                                                "ref = lora_param_count().reference\ndef lora_params(d, k, r):\n    return ref(d, k, r)\n",
                                                "raised ModuleNotFoundError"),
    "replays the public seed": (f"TABLE = {_public_answers()!r}\n"
                                "def lora_params(d, k, r):\n    return TABLE.get((d, k, r), 0)\n", "hidden case 1"),
    "walks the stack to the checker": ("import inspect\ndef lora_params(d, k, r):\n    for f in inspect.stack():\n"
                                       "        for name in ('expected', 'reference', 'ref', 'answer'):\n"
                                       "            if name in f.frame.f_locals and f.frame.f_locals[name] is not None:\n"
                                       "                v = f.frame.f_locals[name]\n                return v(d=d, k=k, r=r) if callable(v) else v\n"
                                       "    return 0\n", "wrong values"),
    "reads the instructor's source notebook": ("import glob, json\n"
                                               "for p in glob.glob('{course}/source/*/00_*.ipynb') + glob.glob('../../source/*/00_*.ipynb'):\n"
                                               "    for c in json.load(open(p))['cells']:\n"
                                               "        if 'BEGIN SOLUTION' in ''.join(c['source']):\n            exec(''.join(c['source']))\n"
                                               "if 'lora_params' not in globals():" + WRONG.replace("\n", "\n    "), "wrong values"),
    "writes the gradebook and grades files": ("for p in ('{course}/gradebook.db', '{course}/grades.csv', "
                                              "'{course}/submitted/victim/lora/00_start_here.ipynb'):\n"
                                              "    try:\n        open(p, 'w').write('owned')\n    except OSError:\n        pass" + WRONG,
                                              "wrong values"),
    "plants IPython startup files": ("import os\nfor home in (os.path.expanduser('~'), '{home}'):\n"
                                     "    d = os.path.join(home, '.ipython/profile_default/startup')\n    try:\n"
                                     "        os.makedirs(d, exist_ok=True)\n        open(os.path.join(d, '00-owned.py'), 'w').write('raise SystemExit')\n"
                                     "    except OSError:\n        pass" + WRONG, "wrong values"),
    "connects to the network": ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'owned-by-a-student')\n"
                                "except OSError:\n    pass" + WRONG, "wrong values"),
    # "still running": on a machine busy with other work the loop may get under 2 s of CPU in the 8 s wall limit
    "loops forever in its function": ("def lora_params(d, k, r):\n    while True:\n        pass\n", "CPU time | still running"),
    "loops forever at the top of the cell": ("while True:\n    pass" + WRONG, "CPU time | still running"),
    "sleeps forever": ("import time\ndef lora_params(d, k, r):\n    time.sleep(10**6)\n", "still running"),
    "exits the process": ("import os\nos._exit(0)", "did not finish"),
    # the student's process is PID 1 of its namespace, where a signal it sends itself does nothing
    "kills its own process": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "no function named lora_params"),
    "exhausts memory": ("import numpy as np\nblocks = []\nwhile True:\n    blocks.append(np.empty(1 << 27))", "MemoryError"),
    "floods stdout": ("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(200):\n    sys.stdout.write(chunk)",
                      "no function named lora_params"),  # stdout is a pipe the grader drains, keeping the tail
    "forges the report stream": ("import os, json\nfor case in range(6):\n"
                                 "    line = json.dumps({'grade_id': 'ex00_lora_params_check', 'case': case, 'outcome': "
                                 "{'status': 'returned', 'passed': True, 'score': 1.0}}) + '\\n'\n"
                                 "    for fd in range(3, 64):\n        try:\n            os.write(fd, line.encode())\n"
                                 "        except OSError:\n            pass\nos._exit(0)", "could not be read"),
    "plants a key in the kernel keyring": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                           "if libc.syscall(248, b'user', b'owned-by-a-student', b'answers', 7, -4) == -1:\n"
                                           "    raise OSError(ctypes.get_errno(), 'add_key refused')" + WRONG, "raised PermissionError"),
    "forks a swarm of processes": ("import os\nfor _ in range(50):\n    if os.fork() == 0:\n        while True:\n            pass" + WRONG,
                                   "raised PermissionError"),
    "fills the scratch space": ("for i in range(20):\n    open(f'/tmp/fill{i}', 'wb').write(b'x' * (10 << 20))" + WRONG,
                                "raised OSError"),
    "makes memory outside its limits (memfd)": ("import os\nfd = os.memfd_create('hoard')" + WRONG, "raised PermissionError"),
    "sends the grader malformed reports": ("import os, json\nbad = [b'{\"grade_id\": [\"x\"], \"case\": 0}', b'{\"x\": ' + b'9' * 5000 + b'}',"
                                           " b'[1, 2]', b'{\"cell\": 0, \"error\": 5}', b'\\xff\\xfe']\n"
                                           "for fd in range(3, 64):\n    for line in bad:\n        try:\n"
                                           "            os.write(fd, line + b'\\n')\n        except OSError:\n            pass" + WRONG,
                                           "wrong values"),
    "starts a swarm of threads": ("import threading, time\nfor _ in range(200):\n    threading.Thread(target=time.sleep, args=(30,)).start()" + WRONG,
                                  "raised RuntimeError"),
    "hoards System V shared memory": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                      "if libc.shmget(0, 1 << 30, 0o1600) == -1:\n    raise OSError(ctypes.get_errno(), 'shmget refused')" + WRONG,
                                      "raised PermissionError"),
    "outlives the grader (no death signal, no timers)": ("import ctypes, signal, time\nctypes.CDLL(None).prctl(1, 0)\n"
                                                         "signal.setitimer(signal.ITIMER_REAL, 0)\nsignal.setitimer(signal.ITIMER_PROF, 0)\n"
                                                         "time.sleep(987654)", "more than 10 s asleep"),
    "forges huge and formula feedback": ("import os, json\nhuge = {'status': 'raised', 'answer': None, 'error': 'X: ' + 'line\\r\\n=1+1\\n' * 100000, "
                                         "'changed': [], 'notes': [], 'cpu_seconds': 0.0}\n"
                                         "lines = [json.dumps({'grade_id': 'ex00_lora_params_check', 'case': 0, 'outcome': huge}), "
                                         "json.dumps({'grade_id': 'ex00_lora_params_check', 'missing': '=HYPERLINK(\"http://evil\")'})]\n"
                                         "for fd in range(3, 64):\n    try:\n        os.write(fd, ('\\n'.join(lines) + '\\n').encode())\n"
                                         "    except OSError:\n        pass\nos._exit(0)", "no result came back"),
    "truncates the report it writes to": ("import json, os\nfd = json.load(open('/grader/job.json'))['report_fd']\n"
                                          "os.ftruncate(fd, 0)\nos._exit(0)", "raised OSError"),
    "changes the host's device files": ("import os\nos.chmod('/dev/null', 0o666)" + WRONG, "raised PermissionError"),
    "starts io_uring kernel workers": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nparams = ctypes.create_string_buffer(120)\n"
                                       "if libc.syscall(425, 8, params) == -1:\n    raise OSError(ctypes.get_errno(), 'io_uring refused')" + WRONG,
                                       "raised PermissionError"),
    "leases the files the grader reads back": ("import fcntl, json, os\nfd = json.load(open('/grader/job.json'))['report_fd']\n"
                                               "for f in (1, fd):\n    try:\n        fcntl.fcntl(f, fcntl.F_SETLEASE, fcntl.F_WRLCK)\n"
                                               "    except OSError as e:\n        raise OSError(e.errno, 'lease refused')" + WRONG,
                                               "raised OSError | raised PermissionError | raised BlockingIOError"),
    "leaves processes behind": ("import subprocess\nsubprocess.Popen(['sleep', '987654'])" + WRONG, "raised PermissionError"),
    # issue 26: what the second red team found
    "learns expected values from feedback (#3)": ("def lora_params(d, k, r):\n    return r * (d + k) + (0 if (d, k, r) == (4096, 4096, 8) else 1)\n",
                                                  "wrong values on hidden case 1."),
    "leaks the hidden inputs in its error text (#4)": (
        "def lora_params(d, k, r):\n    if (d, k, r) == (4096, 4096, 8):\n        return 65536\n"
        "    raise ValueError(f'hidden inputs d={d} k={k} r={r}')\n", "raised ValueError on hidden case 1"),
    "leaks them in an exception class's name (#4)": (
        "def lora_params(d, k, r):\n    if (d, k, r) == (4096, 4096, 8):\n        return 65536\n"
        "    raise type(f'Hidden_{d}_{k}_{r}', (Exception,), {})()\n", "raised an exception on hidden case 1"),
    "leaks them as its answer (#4)": ("def lora_params(d, k, r):\n    return 65536 if (d, k, r) == (4096, 4096, 8) else [d, k, r]\n",
                                      "wrong shape on hidden case 1"),
    "leaks every case from the job file at cell level (#4)": ("raise ValueError(open('/grader/job.json').read()[-250:])" + WRONG,
                                                              "answer cell 2 raised ValueError"),   # lora_params is 00's second answer cell
    "imports gguf's Q4_1 code (#5)": ("from gguf.quants import dequantize" + WRONG, "raised ModuleNotFoundError"),
    "imports transformers' GGUF dequantizer (#5)": ("from transformers.integrations.gguf.dequant import dequantize" + WRONG,
                                                    "raised ModuleNotFoundError"),
    "imports bitsandbytes' NF4 code (#5)": ("import bitsandbytes.functional" + WRONG, "raised ModuleNotFoundError"),
    "imports peft's LoRA (#5)": ("from peft import LoraConfig, get_peft_model" + WRONG, "raised ImportError | raised ModuleNotFoundError"),
    "floods the report pipe with 18 MiB": ("import os\nchunk = b'9' * (1 << 20)\nfor fd in range(3, 64):\n    try:\n"
                                           "        for _ in range(18):\n            os.write(fd, chunk)\n    except OSError:\n        pass" + WRONG,
                                           "no result came back"),  # past the report's 16 MiB nothing more is read
    "returns a meta tensor": ("import torch\ndef lora_params(d, k, r):\n    return torch.zeros(1, device='meta')\n", "got a meta tensor"),
    "returns a sparse tensor": ("import torch\ndef lora_params(d, k, r):\n    return torch.tensor([[1.0]]).to_sparse()\n",
                                "got a sparse tensor"),
    "breaks the grading script's calling code": ("import answer_calls\nanswer_calls.call = lambda *a, **k: 1 / 0\n"
                                                 "def lora_params(d, k, r):\n    return r * (d + k)\n", "broke the grading script itself"),
}
#: a non-answer cell that took the old grader's ast.parse to ~0.9 GiB per MiB (issue 26); here 2 MiB, read in the sandbox
BOMB_CELL = "x;" * (1 << 20)
HONEST = {
    "honest": "def lora_params(d, k, r):\n    return r * (d + k)\n",
    "honest_noisy": ("import sys, warnings\ndef lora_params(d, k, r):\n    warnings.warn('numbers ahead', UserWarning)\n"
                     "    print('debug', d, k, r, file=sys.stderr)\n    return r * (d + k)\n"),
    "honest_slow": ("import time\ndef lora_params(d, k, r):\n    if d == 4096:  # the visible example: 2.5 s of waiting, as on a busy grader\n"
                    "        time.sleep(2.5)\n    return r * (d + k)\n"),
    "honest_torch": "import torch\ndef lora_params(d, k, r):\n    return torch.tensor(r) * (d + k)\n",
    # right, and prints its (secret) inputs to stderr: full marks, and the feedback does not repeat them
    "honest_leaky": "import sys\ndef lora_params(d, k, r):\n    print('inputs', d, k, r, file=sys.stderr)\n    return r * (d + k)\n",
    # asks torch for threads (a common speed-up line): OpenMP's thread creation, refused by the sandbox, ended the
    # whole process with exit code 1 before OMP_THREAD_LIMIT=1 (independent red team, attack 3)
    "honest_torch_threads": ("import torch\ntorch.set_num_threads(2)\nx = torch.randn(512, 512) @ torch.randn(512, 512)\n"
                             "def lora_params(d, k, r):\n    torch.set_num_threads(4)\n    (x @ x).sum()\n    return r * (d + k)\n"),
    # notebook habits left in the answer cell: a shell escape, %pip, %matplotlib inline raised OSError or
    # NotImplementedError in the sandbox and the def below them never ran (independent red team, attack 5)
    "honest_habits": ("!pip install numpy\n%pip install numpy\nfiles = !ls\n%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                      "plt.plot([1, 2]); plt.show()\ndef lora_params(d, k, r):\n    return r * (d + k)\n"),
    # lines that need the notebook's other cells before the def (the exercise object, the course package): the cell
    # stopped at the first and the def never ran (independent red team, attack 6)
    "honest_context": "print(ex0b)\nimport lora_edu as le\ndef lora_params(d, k, r):\n    return r * (d + k)\n",
}
#: a thread pool cannot start in the sandbox: zero, but the feedback says why (it works in the notebook)
THREAD_POOL = ("from concurrent.futures import ThreadPoolExecutor\ndef lora_params(d, k, r):\n"
               "    with ThreadPoolExecutor(2) as ex:\n        return ex.submit(lambda: r * (d + k)).result()\n")


#: a file name and a student folder's name that are not UTF-8 (independent red team, attack 1)
ODD_NAME = b"/\xff\n\xe2\x80\xae.ipynb"
ODD_STUDENT = b"h\xfeonest"


class _Listener:
    """A TCP server on the host's loopback, counting connections that send the attack's token (there must be none).

    Only those count: on a shared machine, another program that waits for a server of its own may connect to
    whatever now holds its old port.
    """

    TOKEN = b"owned-by-a-student"

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port, self.connections = self.server.getsockname()[1], 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn = self.server.accept()[0]
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                try:
                    self.connections += conn.recv(64).startswith(self.TOKEN)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), NB00)
    listener = _Listener()
    home = Path.home()
    startup = home / ".ipython" / "profile_default" / "startup"
    startup_before = sorted(startup.glob("*")) if startup.exists() else []
    names = {}
    for n, (attack, (code, _)) in enumerate(ATTACKS.items()):
        names[attack] = f"attacker{n:02d}"
        code = code.replace("{course}", str(course)).replace("{home}", str(home)).replace("{port}", str(listener.port))
        submit(course, names[attack], NB00, solutions={CELL: code})
    for name, code in HONEST.items():
        submit(course, name, NB00, solutions={CELL: code})
    submit(course, "victim", NB00, solved=True)  # graded after most attackers (alphabetical order)
    bomb = submit(course, "honest_bomb", NB00, solutions={CELL: HONEST["honest"]}) / NB00[0].name  # honest answers, a bomb beside them
    nb = json.loads(bomb.read_text())
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": BOMB_CELL, "outputs": [], "execution_count": None})
    bomb.write_text(json.dumps(nb))
    # submissions that are not notebooks
    (course / "submitted" / "linked_notebook" / "lora").mkdir(parents=True)
    (course / "submitted" / "linked_notebook" / "lora" / NB00[0].name).symlink_to(course / "source" / "lora" / NB00[0].name)
    (course / "submitted" / "linked_folder").mkdir()
    (course / "submitted" / "linked_folder" / "lora").symlink_to(course / "source" / "lora")
    (course / "submitted" / "huge" / "lora").mkdir(parents=True)
    (course / "submitted" / "huge" / "lora" / NB00[0].name).write_bytes(b"{" + b" " * (40 << 20) + b"}")
    (course / "submitted" / "garbage" / "lora").mkdir(parents=True)
    (course / "submitted" / "garbage" / "lora" / NB00[0].name).write_text('{"cells": [{"cell_type": "code", "source": 5}]}')
    (course / "submitted" / "not_json" / "lora").mkdir(parents=True)
    (course / "submitted" / "not_json" / "lora" / NB00[0].name).write_text('{"cells": [')
    for name, metadata in (("metadata_list", []), ("grade_id_list", {"nbgrader": {"grade_id": ["ex00_lora_params"]}})):
        (course / "submitted" / name / "lora").mkdir(parents=True)
        cells = [{"cell_type": "code", "metadata": metadata, "source": "def lora_params(d, k, r):\n    return 0\n"}]
        (course / "submitted" / name / "lora" / NB00[0].name).write_text(json.dumps({"cells": cells}))
    (course / "submitted" / "hard_link" / "lora").mkdir(parents=True)
    os.link(course / "source" / "lora" / NB00[0].name, course / "submitted" / "hard_link" / "lora" / NB00[0].name)
    (course / "submitted" / "linked_student").symlink_to(course / "submitted" / "victim")
    (course / "submitted" / "fifo" / "lora").mkdir(parents=True)
    os.mkfifo(course / "submitted" / "fifo" / "lora" / NB00[0].name)
    (course / "submitted" / "directory" / "lora" / NB00[0].name).mkdir(parents=True)  # red team 2: a folder named like it
    (course / "submitted" / "utf16" / "lora").mkdir(parents=True)
    (course / "submitted" / "utf16" / "lora" / NB00[0].name).write_bytes(NB00[0].read_text().encode("utf-16"))
    # independent red team: a notebook renamed to a name that is not UTF-8, with a newline and a right-to-left override
    # (`mv 00_start_here.ipynb $'\xff\n\u202e.ipynb'` on the hub) stopped the whole class's CSV files
    odd = submit(course, "odd_file_name", NB00, solutions={CELL: HONEST["honest"]})
    os.rename(odd / NB00[0].name, os.fsencode(odd) + ODD_NAME)
    # ... and a student folder whose name is not UTF-8 (an id is the folder's name): honest answers, full marks
    submit(course, os.fsdecode(ODD_STUDENT), NB00, solutions={CELL: HONEST["honest"]})
    submit(course, "thread_pool", NB00, solutions={CELL: THREAD_POOL})
    victim_file = course / "submitted" / "victim" / "lora" / NB00[0].name
    victim_bytes = victim_file.read_bytes()

    # this run's sandboxes get their script folder below a folder of their own: the leftover check finds only them (the
    # machine may run other graders' sandboxes, with the same command line, at the same time)
    ours = str(tmp_path_factory.mktemp("sandboxes"))
    tempfile.tempdir = ours
    try:
        run = grade(course, "lora", jobs=2, limits=LIMITS)
    finally:
        tempfile.tempdir = None
    marks = {m.student_id: m for m in run.marks if m.grade_id == f"{CELL}_check"}  # the attacked exercise's mark
    with open(course / "grades.csv", newline="", errors="surrogateescape") as f:  # one id is not UTF-8 (ODD_STUDENT)
        rows = list(csv.DictReader(f))
    leftovers = [p for p in Path("/proc").glob("[0-9]*") if (b"987654" in _cmdline(p) or b"/grader/runner.py" in _cmdline(p))
                 and ours in _mounts(p)]
    return dict(run=run, marks=marks, names=names, rows=rows, course=course, listener=listener, leftovers=leftovers,
                startup_after=sorted(startup.glob("*")) if startup.exists() else [], startup_before=startup_before,
                victim_unchanged=victim_file.read_bytes() == victim_bytes)


def _mounts(proc: Path) -> str:
    try:
        return (proc / "mountinfo").read_text(errors="replace")
    except OSError:
        return ""


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_scores_zero_with_a_reason(graded, attack):
    mark = graded["marks"][graded["names"][attack]]
    assert mark.score == 0.0, mark
    assert any(reason in mark.message for reason in ATTACKS[attack][1].split(" | ")), mark.message


@pytest.mark.parametrize("student", list(HONEST) + ["victim", "honest_bomb"])
def test_honest_answers_get_full_marks(graded, student):
    mark = graded["marks"][student]
    assert mark.score == mark.max_score == 1.0, mark.message


def test_forged_feedback_is_short_and_never_a_formula(graded):
    with open(graded["course"] / "grades_feedback.csv", newline="", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))  # the csv module refuses fields over 128 KiB
    assert max(len(r["message"]) for r in rows) < 2000
    assert not [r for r in rows if r["message"][:1] in "=+-@"]


def test_warnings_are_reported_not_penalised_and_their_texts_not_repeated(graded):
    message = graded["marks"]["honest_noisy"].message
    assert "UserWarning, printing to stderr" in message and "numbers ahead" not in message


def _numbers(text: str) -> set[int]:
    """The whole numbers of two or more digits in ``text``, "16,777,216" read as one number (not 16, 777 and 216)."""
    return {int(n.replace(",", "")) for n in re.findall(r"(?<![\d.,])(?:\d{1,3}(?:,\d{3})+|\d{2,})(?![\d.]|,\d)", text)}


#: the students whose code tries to get the secret cases (or the expected values) into their feedback
LEAKERS = [name for name in ATTACKS if "(#3)" in name or "(#4)" in name] + ["honest_leaky"]


@pytest.mark.parametrize("student", LEAKERS)
def test_feedback_never_shows_a_hidden_input_or_an_expected_value(graded, student):
    """Issue 26, attacks 3 and 4: feedback on hidden cases says which case failed and how, nothing the student's code made."""
    from lora_edu.course import exercise_bank as le_bank
    from lora_edu.grade.course_folder import read_source
    from lora_edu.grade.grader import _Notebook

    name = graded["names"].get(student, student)
    cases = _Notebook(read_source(NB00[0]), graded["run"].seed, 0, LIMITS).cases(name)[CELL + "_check"][1:]
    secret = {v for _, c in cases for v in (c["d"], c["k"], c["r"], c["r"] * (c["d"] + c["k"])) if v >= 10}
    messages = " ".join(m.message for m in graded["run"].marks if m.student_id == name)
    # The pass message's fixed sentence (the same for every student: d = k = 4096, 65,536 and 16,777,216) is no leak;
    # left in, it failed this test whenever the random seed gave a hidden case one of its numbers (about 1 run in 11).
    messages = messages.replace(le_bank.lora_param_count().why, "")
    assert secret and not _numbers(messages) & secret, messages


def test_each_student_gets_cases_of_their_own(graded):
    from lora_edu.grade.course_folder import read_source
    from lora_edu.grade.grader import _Notebook

    notebook = _Notebook(read_source(NB00[0]), graded["run"].seed, 0, LIMITS)
    hidden = [[tuple(sorted(c.items())) for _, c in notebook.cases(s)[CELL + "_check"][1:]] for s in ("honest", "victim")]
    assert hidden[0] != hidden[1]


def test_submissions_that_slept_are_not_graded_again(graded):
    """Issue 26, attack 2: only a submission that waited for a CPU is graded again alone, never one that slept."""
    sleepers = {graded["names"][a] for a in ("sleeps forever", "outlives the grader (no death signal, no timers)")}
    assert not sleepers & {student for student, _ in graded["run"].regraded_alone}


@pytest.mark.parametrize("student,reason", [("linked_notebook", "symbolic links"), ("linked_folder", "is a symbolic link"),
                                            ("huge", "at most 32 MiB"), ("garbage", "answer cells (the ones that said YOUR CODE HERE) are missing"),
                                            ("not_json", "not valid JSON"), ("metadata_list", "are missing"),
                                            ("grade_id_list", "are missing"), ("hard_link", "hard link"),
                                            ("linked_student", "is a symbolic link"), ("fifo", "not a regular file"),
                                            ("directory", "not a regular file"), ("utf16", "not valid JSON"),
                                            ("thread_pool", "cannot start another: compute without threads")])
def test_submissions_that_are_not_plain_notebooks_score_zero(graded, student, reason):
    mark = graded["marks"][student]
    assert mark.score == 0.0 and reason in mark.message, mark.message


def test_file_names_that_are_not_utf8_are_shown_escaped_and_the_csv_files_are_written(graded):
    """Independent red team, attack 1: before the fix no CSV file was written, for anyone, on every retry."""
    mark = graded["marks"]["odd_file_name"]
    assert mark.score == 0.0 and "was not submitted (found \\xff\\n\\u202e.ipynb: rename it" in mark.message, mark.message
    odd_student = os.fsdecode(ODD_STUDENT)
    assert graded["marks"][odd_student].score == 1.0, graded["marks"][odd_student].message
    feedback = (graded["course"] / "grades_feedback.csv").read_bytes()
    assert b"\\xff\\n\\u202e.ipynb" in feedback and b"\xff" not in feedback
    totals = (graded["course"] / "grades_totals.csv").read_bytes()
    assert b"\r\n" + ODD_STUDENT + b"," in totals  # the id is written back as the folder's own bytes


def test_nothing_outside_the_sandbox_changed(graded):
    course = graded["course"]
    assert not (course / "gradebook.db").exists()
    assert graded["victim_unchanged"]
    assert graded["listener"].connections == 0
    assert graded["startup_after"] == graded["startup_before"]
    assert not graded["leftovers"], "processes started by a submission outlived it"
    assert not list(course.rglob("*owned*"))
    assert "owned-by-a-student" not in Path("/proc/keys").read_text()


def test_grades_csv_has_the_documented_columns_and_one_row_per_student_and_cell(graded):
    rows = graded["rows"]
    assert list(rows[0]) == ["student_id", "notebook", "grade_id", "score", "max_score"]
    students = len(ATTACKS) + len(HONEST) + 2 + 12 + 3
    graded_cells = sorted({r["grade_id"] for r in rows})  # notebook 00's graded cells, the attacked one among them
    assert CELL + "_check" in graded_cells and len(rows) == students * len(graded_cells)
    assert len(graded["marks"]) == students
    attacked = [r for r in rows if r["grade_id"] == CELL + "_check"]
    assert {r["student_id"] for r in attacked if float(r["score"]) > 0} == set(HONEST) | {"victim", "honest_bomb",
                                                                                          os.fsdecode(ODD_STUDENT)}


def test_each_run_draws_fresh_secret_cases(tmp_path):
    from lora_edu.grade.course_folder import read_source
    from lora_edu.grade.grader import _Notebook

    first, second = (_Notebook(read_source(NB00[0]), seed, 0, LIMITS) for seed in (1, 2))
    public = exercise_bank.lora_param_count().cases(np.random.default_rng(1234))
    cases = [first.cases("alice")[CELL + "_check"], second.cases("alice")[CELL + "_check"], public]
    hidden = [[tuple(sorted(c.items())) for _, c in cs[1:]] for cs in cases]
    assert hidden[0] != hidden[1] and hidden[0] != hidden[2]


def test_the_course_folder_must_stay_out_of_the_sandbox(tmp_path):
    inside = Path(os.environ.get("VIRTUAL_ENV", Path(__import__("sys").prefix))) / "course-inside-venv"
    with pytest.raises(ValueError, match="which the sandbox shows to student code"):
        sandbox.check_not_exposed(inside)


def test_the_readme_counts_these_attackers():
    assert f"a class of {len(ATTACKS)} attackers" in (ROOT / "README.md").read_text()


def test_a_second_installed_copy_of_the_course_is_hidden_too(tmp_path, monkeypatch):
    """Independent red team, attack 2: the grader run from a repository checkout with an interpreter whose site-packages
    also holds the course (the hub's environment) hid only the copy it imported, which the sandbox never sees; the
    installed copy stayed importable, and a cheater's answer called the bank's reference for full marks.

    Here a folder stands for that site-packages: it holds a copy of the package, the sandbox sees it (as it sees the
    environment) and it is on the grader's import path after the checkout.
    """
    site_dir = tmp_path / "site-packages"
    shutil.copytree(ROOT / "lora_edu", site_dir / "lora_edu", ignore=shutil.ignore_patterns("__pycache__"))
    bound = sandbox._bound_roots()
    monkeypatch.setattr(sandbox, "_bound_roots", lambda: [*bound, site_dir])
    monkeypatch.syspath_prepend(str(ROOT))  # the checkout first, as `python -m lora_edu.grade` run there has it
    monkeypatch.setattr("sys.path", [*__import__("sys").path, str(site_dir)])
    sandbox._hidden_paths.cache_clear()
    try:
        assert (site_dir / "lora_edu").resolve() in sandbox._hidden_paths()
        course = make_course(tmp_path / "course", NB00)
        cheat = (f"import sys\nsys.path.insert(0, {str(site_dir)!r})\n"
                 "from lora_edu.course.exercise_bank import lora_param_count\nref = lora_param_count().reference\n"
                 "def lora_params(d, k, r):\n    return ref(d=d, k=k, r=r)\n")
        submit(course, "cheater", NB00, solutions={CELL: cheat})
        submit(course, "honest", NB00, solutions={CELL: HONEST["honest"]})
        run = grade(course, "lora", jobs=2, limits=LIMITS)
    finally:
        sandbox._hidden_paths.cache_clear()
    marks = {m.student_id: m for m in run.marks if m.grade_id == f"{CELL}_check"}
    assert marks["cheater"].score == 0.0 and "ModuleNotFoundError" in marks["cheater"].message, marks["cheater"].message
    assert marks["honest"].score == 1.0, marks["honest"].message


def test_a_flood_of_short_report_lines_is_cut_at_the_line_limit():
    """Independent red team, attack 4: 16 MiB of ``{}`` lines were 5.6 million parses in the grader's process (about
    3 s of its CPU a submission); now at most ``report_lines`` lines are read, whatever the chunks."""
    got = []
    lines = sandbox._Lines(16 << 20, 1 << 20, 100, got.append)
    for chunk in (b'{"a": 1}\n' * 30, b'{"a": 2}\n{"a"', b': 3}\n' + b"{}\n" * 100_000, b'{"a": 4}\n'):
        lines.take(chunk)
    assert len(got) == 100 and got[:32] == [{"a": 1}] * 30 + [{"a": 2}, {"a": 3}] and lines.lines == 100
    assert sandbox.DEFAULT_LIMITS.report_lines >= 1000  # an honest notebook sends a few hundred lines at most
