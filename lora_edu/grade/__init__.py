"""Marks an instructor can trust: ``python -m lora_edu.grade COURSE_DIR ASSIGNMENT``.

Why not nbgrader's ``autograde`` alone: it runs each submission as the instructor, inside the
course folder, and reads the mark from what the graded cell displays, so code in a solution cell
can replace the check, hide or forge the displayed number, read ``source/`` or write the gradebook.
Here student code runs in a sandbox (:mod:`.sandbox`: bubblewrap, no network, no view of the course
folder or the course package, CPU and memory limits) on cases drawn from a secret seed, and the
marks are computed outside it from plain returned values (:mod:`.grader`).

Modules: :mod:`.course_folder` (nbgrader's layout, read safely), :mod:`.sandbox` (the isolated
process), :mod:`.runner` (the script inside it), :mod:`.grader` (the flow and the CSV files).
"""
