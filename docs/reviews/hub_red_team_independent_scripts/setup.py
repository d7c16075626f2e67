# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
from common import *
import test_class_hub as t  # noqa  (skips if not root; we are root)
hd.cleanup(SITE.base)
SITE.base.mkdir(parents=True); os.chmod(SITE.base, 0o755)
pw = {n: hd.make_user(n) for n in [INSTR, *STUDENTS]}
STATE.write_text(json.dumps(pw))
hd.install(SITE, INSTR, STUDENTS, VENV)
t.INSTRUCTOR = INSTR
orig = t.as_instructor
home = Path(pwd.getpwnam(INSTR).pw_dir)
source = home / SITE.course_id / "source" / SITE.assignment
source.mkdir(parents=True)
for name in t.NOTEBOOKS:
    shutil.copy(hd.ROOT / "notebooks" / name, source / name)
subprocess.run(["chown", "-R", f"{INSTR}:{INSTR}", str(source.parent)], check=True)
for cmd in (("nbgrader", "generate_assignment", SITE.assignment), ("nbgrader", "release_assignment", SITE.assignment)):
    d = as_instr(*cmd); assert d.returncode == 0, d.stderr[-2000:]
h = hub(); h.start()
print("hub up at", h.url, "pid", h.proc.pid)
