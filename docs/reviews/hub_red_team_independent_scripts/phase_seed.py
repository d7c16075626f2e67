# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
"""The seed in ps. Usage: phase_seed.py LABEL [seed|seedfile|none]"""
import sys, json, threading, time
from common import *
label, how = sys.argv[1], sys.argv[2]
mallory = student("hrt-mallory")
C = course()
d = as_instr("nbgrader", "collect", SITE.assignment); assert d.returncode == 0, d.stderr[-1500:]
spy = r'''
import os, time, glob
seen, tried = set(), set()
end = time.time() + 150
while time.time() < end:
    for p in glob.glob('/proc/[0-9]*/cmdline'):
        try:
            c = open(p, 'rb').read().replace(b'\0', b' ').decode(errors='replace')
        except Exception:
            continue
        if 'lora_edu.grade' in c or 'bwrap' in c or 'runner.py' in c:
            seen.add(c[:300])
    for p in glob.glob('/tmp/lora-grade-*') + glob.glob('/tmp/lora-grade-*/grader/job.json'):
        try:
            open(p).read(10); tried.add(p + ' READ')
        except Exception as e:
            tried.add(p + ' ' + type(e).__name__)
    if any('lora_edu.grade' in s for s in seen) and time.time() > end - 120:
        pass
    time.sleep(0.2)
print('SEEN', len(seen)); [print('CMD', s) for s in sorted(seen)]; [print('TMP', s) for s in sorted(tried)][:10]
'''
res = {}
th = threading.Thread(target=lambda: res.setdefault("spy", mallory.run_code(spy, 300))); th.start(); time.sleep(3)
args = {"seed": ["--seed", "424242"], "seedfile": ["--seed-file", str(C / "seed.txt")], "none": []}[how]
if how == "seedfile":
    (C / "seed.txt").write_text("424242"); os.chmod(C / "seed.txt", 0o600); subprocess.run(["chown", f"{INSTR}:{INSTR}", str(C / "seed.txt")])
g = as_instr("python", "-m", "lora_edu.grade", str(C), SITE.assignment, "--jobs", "1", *args)
print("grade rc", g.returncode, g.stdout[-600:], g.stderr[-600:])
th.join()
spy_out = res["spy"]
print(spy_out[:3000])
leak = "424242" in spy_out
Path(f"/tmp/hrt/seed_{label}_{how}.json").write_text(json.dumps({"grade_rc": g.returncode, "seed_seen_by_mallory": leak, "spy": spy_out[:4000]}, indent=1))
print("SEED SEEN BY MALLORY:", leak)
