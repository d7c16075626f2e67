"""Widgets in a real browser: JupyterLab in headless Chromium, driven by Playwright.

For notebooks 04 (rank slider) and 01 (memory calculator) the test starts JupyterLab on a free
localhost port without a token, over a *copy* of the notebooks (JupyterLab autosaves, and the
committed notebooks must stay as they are), runs all cells, checks that no widget failed to
display and no Python error shows, moves a slider with the keyboard, and checks that the label
and the figure change. A screenshot of each lands in test-artifacts/. It uses Debian's chromium
(never a browser that Playwright downloads) and fails at once, saying how to get one, if none
is installed.

The slideshow test presents notebook 04 with jupyterlab-rise as a lecturer does (docs/instructor_guide.md):
run all, RISE's "Render as Reveal Slideshow" with the first cell selected; it checks the reveal.js
slides (one per section, the title first), walks to the rank slider with the presenter's keys, drags
the slider with the mouse and checks that the label and figure change inside the slideshow. The
server gets ``tools/rise_widgets`` on ``JUPYTER_PATH`` as the Makefile gives it to `make lab`.

The learner/instructor tests start JupyterLab exactly as `make lab` and `make instructor` do
(``tools/learner_copies.py``: same command line and configuration, plus a port and no token): on
notebook 00 a learner sees no nbgrader menu, toolbar or panel and no solution code, while the
instructor server shows nbgrader's tools (which proves the learner check can fail).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import learner_copies  # noqa: E402
import slides  # noqa: E402

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
RUN_ALL_TIMEOUT_MS = 120_000


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if not path:
        pytest.fail("No Chromium found for the browser tests. Install Debian's package (`sudo apt-get install chromium`; "
                    "`make test` does it when run as root) or set CHROMIUM=/path/to/chromium. "
                    "These tests never download a browser of their own.", pytrace=False)
    return path


TEST_SERVER_ARGS = ["--no-browser", "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
                    "--ServerApp.disable_check_xsrf=True", "--LabApp.expose_app_in_browser=True"]


def every_cell_in_the_dom(settings_dir: Path) -> None:
    """JupyterLab setting: render every cell (no windowing), so the test sees the whole notebook."""
    tracker = settings_dir / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))


def serve(argv: list[str], env: dict | None, log_path: Path):
    """Start a JupyterLab command line on a free port; yield its URL; stop its process group afterwards."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([*argv, f"--port={port}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
    assert proc.poll() is not None, "the JupyterLab server must be stopped"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a copy of the notebooks; yields its URL, stops it afterwards."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    every_cell_in_the_dom(work / "settings")
    argv = [sys.executable, "-m", "jupyter", "lab", "--allow-root", *TEST_SERVER_ARGS,
            f"--ServerApp.root_dir={work / 'notebooks'}",
            f"--LabApp.user_settings_dir={work / 'settings'}", f"--LabApp.workspaces_dir={work / 'workspaces'}"]
    yield from serve(argv, None, work / "lab.log")


@pytest.fixture(scope="module")
def learner_lab(tmp_path_factory):
    """The `make lab` server (learner copies, learner configuration) over a temporary work folder."""
    work = tmp_path_factory.mktemp("learner") / "work"
    learner_copies.create(learner_copies.NOTEBOOKS, work)  # what `make lab` does before serving
    every_cell_in_the_dom(work / ".jupyter" / "lab" / "user-settings")
    argv, env = learner_copies.server_command("learner", work, extra=TEST_SERVER_ARGS)
    yield from serve(argv, env, work.parent / "lab.log")


@pytest.fixture(scope="module")
def instructor_lab(tmp_path_factory):
    """The `make instructor` server over a copy of the solution notebooks (settings kept in the temp folder)."""
    tmp = tmp_path_factory.mktemp("instructor")
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks")
    every_cell_in_the_dom(tmp / "settings")
    argv, env = learner_copies.server_command("instructor", tmp / "notebooks", extra=[
        *TEST_SERVER_ARGS, f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"])
    yield from serve(argv, env, tmp / "lab.log")


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def open_notebook(browser, url: str, notebook: str):
    """Open ``notebook`` and wait until its kernel is connected and idle; return the page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/{notebook}?reset")  # ?reset: no tabs restored from an earlier page
    page.wait_for_selector(".jp-Notebook .jp-CodeCell")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.serviceManager")
    # Wait for the notebook's own kernel: connected and idle (clicking "run all" earlier loses cells).
    page.evaluate("""async () => {
        const widget = window.jupyterapp.shell.currentWidget;
        await widget.context.ready;
        await widget.sessionContext.ready;
        const kernel = () => widget.sessionContext.session && widget.sessionContext.session.kernel;
        for (let i = 0; i < 600; i++) {
            const k = kernel();
            if (k && k.connectionStatus === 'connected' && k.status === 'idle') return;
            await new Promise(r => setTimeout(r, 100));
        }
        throw new Error('the kernel did not become idle');
    }""")
    return page


def run_all(browser, url: str, notebook: str):
    """Open ``notebook``, run every cell, wait until all have run; return the page."""
    page = open_notebook(browser, url, notebook)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""", timeout=RUN_ALL_TIMEOUT_MS)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"failed_{notebook}.png"), full_page=True)
        prompts = page.eval_on_selector_all(".jp-CodeCell .jp-InputArea-prompt", "els => els.map(e => e.textContent)")
        errors = page.eval_on_selector_all(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                           "els => els.map(e => e.innerText.slice(0, 500))")
        pytest.fail(f"not every cell of {notebook} ran: prompts {prompts}; stderr outputs {errors}", pytrace=False)
    return page


def assert_no_errors(page):
    assert page.get_by_text("Error displaying widget").count() == 0
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [errors.nth(i).inner_text()[:300] for i in range(errors.count())]
    assert not [t for t in texts if "Traceback" in t or "Error" in t], texts


def slider_view(page, description: str):
    """The slider with this description, its keyboard handle, and the label and image of its view."""
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=description)).first
    slider.scroll_into_view_if_needed()
    view = slider.locator("xpath=ancestor::div[contains(@class,'lora-edu-view')][1]")
    return slider, view


def move_and_check(page, description: str, label_selector: str, screenshot: str, presses: int = 3) -> dict:
    """Move the slider ``presses`` steps right with the keyboard; wait until the kernel has redrawn."""
    slider, view = slider_view(page, description)
    label, image = view.locator(label_selector).first, view.locator(".widget-output img").first
    readout = slider.locator(".widget-readout")
    image.wait_for()
    before = dict(label=label.inner_text(), image=image.get_attribute("src"), value=readout.inner_text())
    slider.locator(".noUi-handle").focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
    expected = str(int(before["value"]) + presses)
    page.wait_for_function("([el, v]) => el.innerText === v", arg=[readout.element_handle(), expected], timeout=10_000)
    # Each key press is one redraw in the kernel: wait until it is idle again, then compare. Query inside
    # the view each time, since the Output widget replaces its <img> element on every redraw.
    page.wait_for_function(
        """([view, sel, label, src]) => view.querySelector(sel).innerText !== label
              && view.querySelector('.widget-output img').getAttribute('src') !== src
              && [...document.querySelectorAll('.jp-Notebook-ExecutionIndicator')]
                   .some(e => e.dataset.status === 'idle' && e.offsetParent !== null)""",
        arg=[view.element_handle(), label_selector, before["label"], before["image"]], timeout=10_000)
    page.wait_for_timeout(300)  # the last redraw's message reaches the page
    after = dict(label=label.inner_text(), value=readout.inner_text())
    ARTIFACTS.mkdir(exist_ok=True)
    view.screenshot(path=str(ARTIFACTS / screenshot))
    return dict(before=before, after=after)


def check_notebook(browser, lab, notebook: str, slider: str, screenshot: str) -> dict:
    """Run ``notebook`` in the browser, check it is clean, move ``slider``; return what changed."""
    start = time.perf_counter()
    page = run_all(browser, lab, notebook)
    assert_no_errors(page)
    moved = move_and_check(page, slider, ".widget-html", screenshot)
    page.screenshot(path=str(ARTIFACTS / f"page_{screenshot}"))
    page.close()
    print(f"browser test of {notebook} took {time.perf_counter() - start:.1f} s")
    return moved


def test_rank_slider_in_jupyterlab(browser, lab):
    moved = check_notebook(browser, lab, "04_rank_and_alpha.ipynb", "rank r", "browser_04_rank_slider.png")
    # the main line's first rank slider (the real update's; it starts at 8), three key presses to the right
    assert moved["before"]["value"] == "8" and moved["after"]["value"] == "11"
    assert moved["before"]["label"].startswith("r = 8") and moved["after"]["label"].startswith("r = 11")


def test_memory_calculator_in_jupyterlab(browser, lab):
    moved = check_notebook(browser, lab, "01_memory_cost.ipynb", "batch size", "browser_01_calculator.png")
    assert moved["before"]["value"] == "1" and moved["after"]["value"] == "4"
    assert "Peak" in moved["after"]["label"] and moved["after"]["label"] != moved["before"]["label"]
    assert "on a 24 GB card (23.0 GiB usable)" in moved["after"]["label"]  # a card's usable memory (issue 25, item 6)


# ---- live slides: jupyterlab-rise over notebook 04 ------------------------------------------------

RISE_WIDGETS = ROOT / "tools" / "rise_widgets"  # the Makefile puts it on JUPYTER_PATH (see its remoteEntry.js)


@pytest.fixture(scope="module")
def slides_lab(tmp_path_factory):
    """JupyterLab with jupyterlab-rise over a copy of the notebooks, with the JUPYTER_PATH that `make lab` sets."""
    work = tmp_path_factory.mktemp("slides")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    every_cell_in_the_dom(work / "settings")
    env = dict(os.environ, JUPYTER_PATH=os.pathsep.join(filter(None, [str(RISE_WIDGETS), os.environ.get("JUPYTER_PATH")])))
    argv = [sys.executable, "-m", "jupyter", "lab", "--allow-root", *TEST_SERVER_ARGS,
            f"--ServerApp.root_dir={work / 'notebooks'}",
            f"--LabApp.user_settings_dir={work / 'settings'}", f"--LabApp.workspaces_dir={work / 'workspaces'}"]
    yield from serve(argv, env, work / "lab.log")


def slideshow_frame(page, notebook: str):
    """The iframe of RISE's slideshow panel (the /rise/ page), once reveal.js shows a slide."""
    for _ in range(240):
        frame = next((f for f in page.frames if f"/rise/{notebook}" in f.url), None)
        if frame:
            frame.wait_for_selector(".reveal .slides > section.present", timeout=60_000)
            return frame
        page.wait_for_timeout(250)
    pytest.fail(f"RISE:preview opened no slideshow panel for {notebook}", pytrace=False)


SLIDE_OF = """label => {  // [horizontal, vertical] index of the slide holding the slider with this label
    const slider = [...document.querySelectorAll('.widget-slider')]
        .find(s => s.querySelector('.widget-label').textContent.includes(label));
    const slides = [...document.querySelectorAll('.reveal .slides > section')];
    const h = slides.findIndex(s => s.contains(slider));
    return [h, [...slides[h].querySelectorAll(':scope > section')].findIndex(s => s.contains(slider))];
}"""


def test_slideshow_of_04_with_live_sliders(browser, slides_lab):
    notebook = "04_rank_and_alpha.ipynb"
    stored = json.loads((ROOT / "notebooks" / notebook).read_text())
    stale = slides.problems(stored)
    assert not stale, f"{notebook} has no up-to-date slide metadata: run python tools/slides.py notebooks/*.ipynb\n{stale[:3]}"
    start = time.perf_counter()
    page = run_all(browser, slides_lab, notebook)
    assert_no_errors(page)
    # As the instructor guide says: first cell selected, then RISE's button / Alt+R (the command RISE:preview).
    page.evaluate("""async () => {
        const app = window.jupyterapp, panel = app.shell.currentWidget;
        panel.content.activeCellIndex = 0;
        await app.commands.execute('RISE:preview');
    }""")
    frame = slideshow_frame(page, notebook)

    # reveal.js slides: one per title and `## ` section, the title slide showing first.
    kinds = [c["metadata"]["slideshow"]["slide_type"] for c in stored["cells"]]
    assert frame.locator(".reveal .slides > section").count() == kinds.count("slide")
    title = slides._source(stored["cells"][0]).split("\n")[0].removeprefix("# ")
    assert frame.locator(".reveal .slides > section.present h1").first.inner_text().strip() == title
    # The widgets render inside the slideshow (not as the text "VBox(...)") and none failed.
    frame.locator(".widget-slider .widget-label", has_text="rank r").first.wait_for(state="attached", timeout=60_000)
    assert frame.get_by_text("Error displaying widget").count() == 0

    # Walk to the slider's slide with the presenter's keys.
    h, v = frame.evaluate(SLIDE_OF, "rank r")
    assert h > 0, "the rank slider is on a section slide, not on the title"
    frame.locator(".reveal").click(position={"x": 5, "y": 5})  # keyboard focus to the slideshow
    for key, times in (("ArrowRight", h), ("ArrowDown", v)):
        for _ in range(times):
            page.keyboard.press(key)
    frame.wait_for_function("([h, v]) => location.hash === `#/slide-${h}-${v}`", arg=[h, v], timeout=10_000)
    present = frame.locator(".reveal .slides > section.present")
    slider = present.locator(".widget-slider", has=frame.locator(".widget-label", has_text="rank r")).first
    view = slider.locator("xpath=ancestor::div[contains(@class,'lora-edu-view')][1]")
    label, image, readout = view.locator(".widget-html").first, view.locator(".widget-output img").first, slider.locator(".widget-readout")
    image.wait_for()
    assert slider.is_visible()
    before = dict(label=label.inner_text(), image=image.get_attribute("src"), value=readout.inner_text())

    # Drag the handle with the mouse (in a slideshow the arrow keys change slides, even on a slider).
    # reveal.js slides the new slide in: wait until the handle stops moving, or the drag starts beside it.
    handle, previous = slider.locator(".noUi-handle").bounding_box(), None
    while handle != previous:
        page.wait_for_timeout(300)
        previous, handle = handle, slider.locator(".noUi-handle").bounding_box()
    track = slider.locator(".noUi-target").bounding_box()
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 0.1 * track["width"], y, steps=5)
    page.mouse.up()
    # The kernel redraws: the label follows the slider's value and the figure is a new picture. Polled through the
    # locators, which find the elements afresh on every read: an element handle taken right after the drag can go
    # stale when the output re-renders (the test then timed out on a slideshow that had redrawn).
    deadline = time.monotonic() + 30
    while True:
        shown = readout.inner_text()
        if shown != before["value"] and label.inner_text().startswith(f"r = {shown}:") and image.get_attribute("src") != before["image"]:
            break
        assert time.monotonic() < deadline, f"no redraw 30 s after the drag: slider {shown}, label {label.inner_text()[:40]!r}"
        page.wait_for_timeout(250)
    # A drag is several redraws (continuous updates): wait until the kernel, shared by the notebook and the
    # slideshow, is idle, then for the last picture to arrive.
    page.wait_for_function("""() => Array.from(window.jupyterapp.shell.widgets('main'))
        .some(w => w.context && w.context.path.endsWith('04_rank_and_alpha.ipynb') && w.sessionContext
              && w.sessionContext.session && w.sessionContext.session.kernel.status === 'idle')""", timeout=30_000)
    page.wait_for_timeout(1500)
    after = dict(label=label.inner_text(), value=readout.inner_text(), image=image.get_attribute("src"))
    assert after["image"] != before["image"]
    assert int(after["value"]) > int(before["value"]) and after["label"] != before["label"]
    assert before["label"].startswith(f"r = {before['value']}:") and after["label"].startswith(f"r = {after['value']}:")
    assert frame.evaluate("() => location.hash") == f"#/slide-{h}-{v}", "dragging a slider does not change slides"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_04_slideshow.png"))
    page.close()
    print(f"slideshow test of {notebook} took {time.perf_counter() - start:.1f} s; slider {before['value']} -> {after['value']}")


# ---- learner mode (`make lab`) and instructor mode (`make instructor`) ---------------------------

NBGRADER_UI = """() => ({
    menus: [...document.querySelectorAll('.lm-MenuBar-itemLabel')].map(e => e.textContent)
              .filter(t => /nbgrader/i.test(t)),
    sidebar: [...document.querySelectorAll('.jp-SideBar .lm-TabBar-tab')].map(e => e.title || e.textContent)
              .filter(t => /nbgrader|assignment|formgrader/i.test(t)),
    plugins: window.jupyterapp.listPlugins()
              .filter(id => id.startsWith('@jupyter/nbgrader') && window.jupyterapp.isPluginActivated(id)),
    commands: window.jupyterapp.commands.listCommands().filter(c => c.startsWith('nbgrader:')),
    toolbar: [...document.querySelectorAll('.jp-NotebookPanel-toolbar .jp-Toolbar-item')].map(e => e.textContent.trim())
              .filter(t => /validate|nbgrader/i.test(t)),
    elements: document.querySelectorAll('[class*=nbgrader]').length,
})"""


def http_status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code


def test_learner_sees_a_learner_copy_without_solutions_or_nbgrader(browser, learner_lab):
    notebook = "00_start_here.ipynb"
    with urllib.request.urlopen(f"{learner_lab}/api/contents/{notebook}", timeout=10) as response:
        served = json.load(response)["content"]
    code = [c["source"] for c in served["cells"] if c["cell_type"] == "code"]
    assert not [src for src in code if "### BEGIN SOLUTION" in src or "### END SOLUTION" in src]
    assert any("raise NotImplementedError()" in src for src in code), "the learner copy has nbgrader's stub"
    assert "widgets" not in served["metadata"] and not any(c.get("outputs") for c in served["cells"])
    assert http_status(f"{learner_lab}/formgrader") == 404, "nbgrader's server extensions are off for learners"

    page = run_all(browser, learner_lab, notebook)
    assert_no_errors(page)
    assert page.evaluate(NBGRADER_UI) == dict(menus=[], sidebar=[], plugins=[], commands=[], toolbar=[], elements=0)
    text = page.locator(".jp-Notebook").inner_text()
    assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
    assert "NOT ATTEMPTED YET" in text, "the untouched exercise runs and reports 'not attempted'"
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".jp-Cell").first.scroll_into_view_if_needed()  # run-all left the page at the end
    page.screenshot(path=str(ARTIFACTS / "browser_00_learner.png"))
    exercise = page.locator(".jp-CodeCell", has_text="raise NotImplementedError()").first
    exercise.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser_00_learner_exercise.png"))

    # The solution stays one call away: a new cell with ex0b.solution() prints it.
    page.evaluate("""async () => {
        const app = window.jupyterapp, panel = app.shell.currentWidget;
        panel.content.activeCellIndex = panel.content.widgets.length - 1;
        await app.commands.execute('notebook:insert-cell-below');
        panel.content.activeCell.model.sharedModel.setSource('ex0b.solution()');
        await app.commands.execute('notebook:run-cell');
    }""")
    last = page.locator(".jp-CodeCell").last
    last.locator(".jp-OutputArea-output", has_text="One solution for").wait_for(timeout=30_000)
    assert "return r * (d + k)" in last.inner_text()
    page.close()


def test_instructor_sees_the_solutions_and_nbgraders_tools(browser, instructor_lab):
    """The counter-check: the same probe finds nbgrader's menu, panel and cell tools here."""
    assert http_status(f"{instructor_lab}/formgrader") != 404
    page = open_notebook(browser, instructor_lab, "00_start_here.ipynb")
    page.wait_for_function("() => document.querySelectorAll('.lm-MenuBar-itemLabel').length > 0")
    ui = page.evaluate(NBGRADER_UI)
    assert ui["menus"] == ["Nbgrader"] and ui["sidebar"] and ui["toolbar"] == ["Validate"] and ui["elements"] > 0
    assert "@jupyter/nbgrader:create-assignment" in ui["plugins"] and "nbgrader:open-formgrader" in ui["commands"]
    assert "### BEGIN SOLUTION" in page.locator(".jp-Notebook").inner_text()
    page.get_by_text("Nbgrader", exact=True).click()  # open the menu for the screenshot
    page.locator(".lm-Menu").first.wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_00_instructor.png"))
    page.close()
