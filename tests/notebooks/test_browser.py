"""Widgets in a real browser: JupyterLab in headless Chromium, driven by Playwright.

For notebooks 04 (rank slider) and 01 (memory calculator) the test starts JupyterLab on a free
localhost port without a token, over a *copy* of the notebooks (JupyterLab autosaves, and the
committed notebooks must stay as they are), runs all cells, checks that no widget failed to
display and no Python error shows, moves a slider with the keyboard, and checks that the label
and the figure change. A screenshot of each lands in test-artifacts/. It uses Debian's chromium
(never a browser that Playwright downloads) and fails at once, saying how to get one, if none
is installed.
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
import urllib.request
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a copy of the notebooks; yields its URL, stops it afterwards."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    settings = work / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))  # every cell in the DOM
    port = free_port()
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={work / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
         f"--LabApp.user_settings_dir={work / 'settings'}", f"--LabApp.workspaces_dir={work / 'workspaces'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
                pytest.fail(f"JupyterLab did not start:\n{(work / 'lab.log').read_text()[-3000:]}")
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
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def run_all(browser, url: str, notebook: str):
    """Open ``notebook``, run every cell, wait until all have run; return the page."""
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
    assert moved["before"]["value"] == "4" and moved["after"]["value"] == "7"
    assert moved["before"]["label"].startswith("r = 4") and moved["after"]["label"].startswith("r = 7")


def test_memory_calculator_in_jupyterlab(browser, lab):
    moved = check_notebook(browser, lab, "01_memory_cost.ipynb", "batch size", "browser_01_calculator.png")
    assert moved["before"]["value"] == "1" and moved["after"]["value"] == "4"
    assert "Peak" in moved["after"]["label"] and moved["after"]["label"] != moved["before"]["label"]
