# ruff: noqa  (scratch scripts of a review, kept to reproduce it)
from common import *
for name, how in (("hrt-alice", "honest"), ("hrt-bob", "wrong"), ("hrt-mallory", "honest"), ("hrt-zoe", "honest")):
    s = student(name)
    s.assignments("fetch", SITE.course_id, SITE.assignment)
    hand_in(s, how)
    print(name, "submitted")
