"""A class on one server: nbgrader's exchange made safe between students, and feedback from the trusted grader.

Modules: :mod:`.exchange` (nbgrader's exchange, hardened: who may read, change and collect a submission),
:mod:`.feedback` (the grader's reasons as nbgrader feedback files, lateness, the class's report).
The deployment itself (JupyterHub, its proxy, users, the layout on disk) is ``deploy/``; its guide is
docs/instructor_guide.md, "Running a class".
"""

#: nbgrader's ExchangeFactory traits -> the class's hardened exchange (what deploy/install_class.py configures);
#: written here, not imported from .exchange, so that the set-up runs before nbgrader is installed
EXCHANGE_FACTORY = {trait: f"lora_edu.classroom.exchange.{name}" for trait, name in (
    ("release_assignment", "ReleaseAssignment"), ("release_feedback", "ReleaseFeedback"),
    ("fetch_assignment", "FetchAssignment"), ("fetch_feedback", "FetchFeedback"), ("list", "List"),
    ("submit", "Submit"), ("collect", "Collect"))}
