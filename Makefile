# The two commands of the README: `make lab` (set up, open the course) and `make test`
# (set up, run every test). Both set up .venv on first use and re-use it afterwards.
# `make lab` serves learner copies (student versions, in the git-ignored work/), never the tracked
# notebooks; `make instructor` serves the tracked solution notebooks with nbgrader's tools.
VENV := .venv
PY   := $(VENV)/bin/python
# Live widgets in RISE slideshows: jupyterlab-rise's slideshow app lacks the @jupyterlab/console that the
# widget manager imports; tools/rise_widgets provides it there (see its static/remoteEntry.js).
export JUPYTER_PATH := $(CURDIR)/tools/rise_widgets$(if $(JUPYTER_PATH),:$(JUPYTER_PATH))

.PHONY: lab instructor reset test lint setup execute slides student site clean bench lock upgrade test-latest

lab:
	bash tools/setup_env.sh
	$(PY) tools/learner_copies.py lab

## The solution notebooks (notebooks/) with nbgrader's menus and cell toolbar, for instructors.
instructor: setup
	$(PY) tools/learner_copies.py instructor

## Restore a learner copy from the course: make reset NB=03 (or NB=all); the old file is backed up in work/.
reset: setup
	$(PY) tools/learner_copies.py reset $(NB)

test:
	bash tools/setup_env.sh --test-tools
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

## Lint the package, tests and tools (CI runs it as part of `make test`).
lint: setup
	$(VENV)/bin/ruff check .

setup:
	bash tools/setup_env.sh

## The lock (lock/full.txt, lock/runtime.txt; tools/lock.py says what each holds). `make lock` after a change to
## pyproject.toml keeps every pin that still fits; `make upgrade` moves to the newest releases, rebuilds .venv,
## re-executes every notebook, prints each stored output that changed and runs the tests, so that a person decides
## (hold a package back: make upgrade HOLD=pins.txt). The lock changes only through these two.
lock: setup
	$(PY) tools/lock.py

upgrade: setup
	python3 tools/upgrade.py $(if $(HOLD),--hold $(HOLD))

## The tests against the newest releases pyproject.toml allows, in .venv-latest, ignoring the lock: a report of what
## the next upgrade will meet, never a gate (.github/workflows/test-latest.yml runs it weekly, non-blocking).
test-latest:
	bash tools/test_latest.sh $(TESTS)

## Re-execute every notebook in place after a change (stores outputs for GitHub and nbval).
execute: setup
	$(PY) tools/execute_notebooks.py notebooks/*.ipynb

## Slide metadata (RISE) from each notebook's structure (rules: tools/slides.py); `make execute` applies it too.
slides: setup
	$(PY) tools/slides.py notebooks/*.ipynb

## The course as a static website in _build/html (tools/build_site.py): every notebook as stored, executed (nothing
## re-runs), in the course map's order, with search, math, folded solutions and launch links; every asset served by
## the site itself. Open _build/html/index.html, or serve the folder with any web server.
site: setup
	$(PY) tools/build_site.py

## Write student versions (solutions replaced by placeholders) into student/.
student: setup
	$(PY) tools/student_versions.py notebooks student

## Time the course: every notebook 3 times, min/median against the budgets in course_map; writes
## lora_edu/data/bench_course.json. (`make test` fails only on a gross regression: 3 x a budget.)
bench: setup
	$(PY) benchmarks/bench_course.py

clean:
	rm -rf student test-artifacts .venv-latest _build
