# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
from common import *
a = student("hrt-alice")
code = "import os, sys, time, multiprocessing as mp\nprint('parent')\npid = os.fork()\nif pid == 0:\n    print('child of the fork'); sys.stdout.flush(); time.sleep(0.5); os._exit(0)\nos.waitpid(pid, 0)\ntime.sleep(1)\nctx = mp.get_context('fork')\np = ctx.Process(target=print, args=('from multiprocessing',)); p.start(); p.join(); time.sleep(1)\nprint('done')"
print(repr(a.run_code(code)))
