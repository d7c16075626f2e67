# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
from common import *
m = student("hrt-mallory")
port = SITE.settings()["port"]
code = f'''
import urllib.request, urllib.parse, http.cookiejar, time, re
codes, t0 = [], time.time()
for i in range(12):
    jar = http.cookiejar.CookieJar()
    op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    op.open("http://127.0.0.1:{port}/hub/login").read()
    xsrf = [c.value for c in jar if c.name == "_xsrf"][0]
    data = urllib.parse.urlencode({{"username": "hrt-alice", "password": "guess%d" % i, "_xsrf": xsrf}}).encode()
    try:
        r = op.open("http://127.0.0.1:{port}/hub/login", data); codes.append(r.status)
    except urllib.error.HTTPError as e:
        codes.append(e.code)
print("BRUTE", codes, round((time.time() - t0) / 12, 2), "s per try")
'''
print(m.run_code(code))
