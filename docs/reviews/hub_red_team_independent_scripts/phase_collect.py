# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
"""Collect attacks. Usage: phase_collect.py LABEL"""
import sys, json, time, subprocess
from common import *
label = sys.argv[1]
mallory = student("hrt-mallory")
C = course()
gb = C / "gradebook.db"
out = {}

def reset():
    subprocess.run(["rm", "-rf", str(C / "submitted")], check=True)

def collect():
    d = as_instr("nbgrader", "collect", SITE.assignment)
    text = d.stdout + d.stderr
    got = sorted(p.name for p in (C / "submitted").iterdir()) if (C / "submitted").exists() else []
    lines = [l for l in text.splitlines() if any(k in l for k in ("Refused", "Error", "Traceback", "Invalid", "rror:", "Left out"))]
    return {"rc": d.returncode, "collected": got, "log": lines[-6:]}

for kind in ("unreadable", "timestamp", "collectedlink", "sparse"):
    reset()
    shutil.copy(gb, "/tmp/hrt/gradebook.bak")
    print(mallory.run_code(trap_code(kind)).strip())
    r = {"first": collect()}
    if kind == "timestamp":
        time.sleep(1); r["second"] = collect()
    if kind == "collectedlink":
        head = gb.read_bytes()[:60]
        r["gradebook_head"] = repr(head)
        r["third_collect_after"] = collect()
        shutil.copy("/tmp/hrt/gradebook.bak", gb); subprocess.run(["chown", f"{INSTR}:{INSTR}", str(gb)])
    if kind == "sparse":
        m = C / "submitted" / "hrt-mallory" / SITE.assignment
        r["mallory_collected_bytes"] = subprocess.run(["du", "-sb", str(m)], capture_output=True, text=True).stdout.split("\t")[0] if m.exists() else None
    out[kind] = r
    print(kind, json.dumps(r, indent=1), flush=True)
reset()
Path(f"/tmp/hrt/collect_{label}.json").write_text(json.dumps(out, indent=1))
