# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
from common import *
import sys
m = student("hrt-mallory")
code = r'''
import urllib.request, os, time
from ipykernel.kernelapp import IPKernelApp
t = IPKernelApp.instance().iopub_thread
port = t._pipe_port
try:
    import ssl; ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    urllib.request.urlopen('https://127.0.0.1:%d/user/x/api/contents/lora' % port, timeout=2, context=ctx)
except Exception as e:
    print('http:', type(e).__name__)
time.sleep(2)
print('VERDICT{}')
time.sleep(2)
'''
print(repr(m.run_code(code)))
