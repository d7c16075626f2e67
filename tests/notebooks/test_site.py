"""The course's website (`make site`, tools/build_site.py).

Quick tests of the staging (no Sphinx): widgets, solutions, links, launch links, course order, bad input.

The browser test builds the whole site from the notebooks in the tree (into a temporary folder), serves it on
a localhost port and opens every page in Debian's Chromium (Playwright, never a downloaded browser), with every
request that leaves the site refused and recorded: the site must read offline. On every page: no console
error, no request outside the site, every math element typeset by MathJax, every image loaded. Across the site:
every notebook has a page, in the course map's order; every internal link resolves (file and anchor); every
solution is folded by default and opens with one click; search finds "rank"; each notebook page's launch links
point at pyproject.toml's repository, and the JupyterHub page makes nbgitpuller's link. A screenshot of each
page lands in test-artifacts/site/.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import json
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts" / "site"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# ---------------------------------------------------------------------------------------------------------------
# Staging, without Sphinx


def _widget_state(models: dict) -> dict:
    return {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": models}}


def _view(model_id: str) -> dict:
    return {"application/vnd.jupyter.widget-view+json": {"model_id": model_id, "version_major": 2, "version_minor": 0},
            "text/plain": "HBox(children=(...))"}


def _notebook() -> nbformat.NotebookNode:
    """A small notebook: a slider beside its still, a tqdm bar, a solution, a check, a link."""
    models = {
        "slider": {"model_name": "IntSliderModel", "state": {"value": 4}},
        "bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_pre", "IPY_MODEL_prog", "IPY_MODEL_post"]}},
        "pre": {"model_name": "HTMLModel", "state": {"value": "LoRA\u2007r=1:\u2007100%"}},
        "prog": {"model_name": "FloatProgressModel", "state": {"value": 30.0, "max": 30.0}},
        "post": {"model_name": "HTMLModel", "state": {"value": "\u200730/30\u2007[00:06&lt;00:00]"}},
    }
    nb = nbformat.v4.new_notebook(metadata={"widgets": _widget_state(models)})
    slider = nbformat.v4.new_code_cell("display(view, still(view))", outputs=[
        nbformat.v4.new_output("display_data", data=_view("slider")),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Image>"})])
    bars = nbformat.v4.new_code_cell("train()", outputs=[
        nbformat.v4.new_output("display_data", data=_view("bar")),
        nbformat.v4.new_output("stream", name="stdout", text="done\n")])
    solution = nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
                                         metadata={"nbgrader": {"solution": True, "grade": False, "grade_id": "ex"}})
    check = nbformat.v4.new_code_cell("ex.check(f).mark()", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="[f] ✅ PASSED\n")],
        metadata={"nbgrader": {"solution": False, "grade": True, "grade_id": "ex_check", "points": 1}})
    md_solution = nbformat.v4.new_markdown_cell("The answer is 4.", metadata={"nbgrader": {"solution": True}})
    nb.cells = [nbformat.v4.new_markdown_cell("# 99 · A test\nSee [the layer](../lora_edu/core/lora.py) and "
                                              "[notebook 00](00_start_here.ipynb)."),
                slider, bars, solution, check, md_solution]
    return nb


def test_widgets_become_a_note_or_their_final_text_and_their_state_is_dropped():
    page = build_site.site_notebook(_notebook())
    assert "widgets" not in page.metadata, "saved widget state would make MyST-NB load widget scripts from a CDN"
    slider_outputs = page.cells[1].outputs
    assert [o.output_type for o in slider_outputs] == ["display_data", "display_data"]
    assert slider_outputs[0].data["text/plain"] == build_site.WIDGET_NOTE
    assert "image/png" in slider_outputs[1].data, "the still picture beside a widget stays"
    bar_outputs = page.cells[2].outputs
    assert bar_outputs[0].output_type == "stream"
    assert bar_outputs[0].text.startswith("LoRA r=1: 100%|██████████| 30/30 [00:06<00:00]"), bar_outputs[0].text
    assert not any(build_site.WIDGET_VIEW in o.get("data", {}) for c in page.cells for o in c.get("outputs", []))


def test_solutions_are_folded_and_checks_keep_their_output():
    nb = _notebook()
    page = build_site.site_notebook(nb)
    solution, check, md_solution = page.cells[3], page.cells[4], page.cells[5]
    assert {"hide-input", "solution"} <= set(solution.metadata["tags"])
    assert solution.metadata["mystnb"]["code_prompt_show"] == build_site.SHOW_SOLUTION
    assert check.metadata["tags"] == ["check"] and check.outputs[0].text.startswith("[f] ✅ PASSED"), "shown, wrapped"
    assert md_solution.source.startswith('<details class="solution">') and "open" not in md_solution.source.split("\n")[0]
    assert nb.cells[3].metadata.get("tags") is None and "widgets" in nb.metadata, "the notebook itself is not changed"


def test_links_to_repository_files_point_at_the_repository_and_links_to_pages_stay():
    repo = "https://github.com/someone/course"
    source = ROOT / "notebooks" / "99_test.ipynb"
    fix = build_site.link_fixer_for(source, {(ROOT / "notebooks" / "00_start_here.ipynb").resolve()}, repo)
    text = fix(_notebook().cells[0].source)
    assert f"[the layer]({repo}/blob/main/lora_edu/core/lora.py)" in text
    assert "[notebook 00](00_start_here.ipynb)" in text
    assert fix("[x](https://example.org/a.py) [y](#here) [z](../lora_edu/)") == \
        f"[x](https://example.org/a.py) [y](#here) [z]({repo}/tree/main/lora_edu)"


def test_images_of_the_repository_are_served_by_the_site_not_linked():
    source = ROOT / "notebooks" / "99_test.ipynb"
    assets = set()
    fix = build_site.link_fixer_for(source, set(), "https://github.com/someone/course", assets)
    text = '![a figure](../pyproject.toml) <img src="../LICENSE" width=3> ![web](https://example.org/x.png)'
    assert fix(text) == text, "an image keeps its relative path: stage() copies it to the same place"
    assert assets == {ROOT / "pyproject.toml", ROOT / "LICENSE"}


def test_launch_links_are_the_readmes_badges_for_notebook_00():
    readme = (ROOT / "README.md").read_text()
    links = build_site.launch_links(build_site.repository_url(), "notebooks/00_start_here.ipynb")
    assert f"({links['Binder']})" in readme and f"({links['Colab']})" in readme
    hub = build_site.nbgitpuller_link("https://hub.example.edu/", "https://github.com/o/r", "notebooks/01_x.ipynb")
    assert hub == ("https://hub.example.edu/hub/user-redirect/git-pull?repo=https%3A%2F%2Fgithub.com%2Fo%2Fr"
                   "&urlpath=lab%2Ftree%2Fr%2Fnotebooks%2F01_x.ipynb&branch=main")


def test_readme_links_the_published_site():
    url = build_site.pages_url(build_site.repository_url())
    assert url in (ROOT / "README.md").read_text(), f"README must link the site, {url}"
    assert build_site.pages_url("https://github.com/Lora-Edu/course") == "https://lora-edu.github.io/course/"


def test_the_launch_line_sits_under_the_title():
    nb = _notebook()
    build_site._with_launch_line(nb, "<p>run</p>")
    assert nb.cells[0].source.startswith("# 99 · A test\n\n<p>run</p>\n")


def test_course_order_is_the_maps_and_unmapped_notebooks_come_last(tmp_path):
    from lora_edu.course.course_map import COURSE_MAP

    paths = [tmp_path / ch.notebook for ch in reversed(COURSE_MAP)] + [tmp_path / "zz_new.ipynb", tmp_path / "aa_new.ipynb"]
    ordered, extra = build_site.course_order(paths)
    assert [p.name for p in ordered] == [ch.notebook for ch in COURSE_MAP]
    assert [p.name for p in extra] == ["aa_new.ipynb", "zz_new.ipynb"]


def test_a_repository_url_that_binder_cannot_open_is_refused_with_the_fix(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://example.org/x"\n')
    with pytest.raises(ValueError, match=r"must be https://github\.com/OWNER/NAME"):
        build_site.repository_url(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The built site, in Chromium


class _Anchors(html.parser.HTMLParser):
    """The ids of an HTML file (anchors a link may point at)."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def _ids(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(errors="replace"))
    return frozenset(parser.ids)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built from the tree's notebooks; yields (summary, folder, URL) while a localhost server serves it."""
    tmp = tmp_path_factory.mktemp("site")
    summary = build_site.build(out=tmp / "html", stage_dir=tmp / "src", quiet=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp / "html")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield summary, tmp / "html", f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def site_browser():
    from test_browser import CHROMIUM_FLAGS, find_chromium  # the course's one way to find Debian's chromium

    chromium = find_chromium()
    if not chromium:
        pytest.fail("No Chromium found for the site's browser test. Install Debian's package (`sudo apt-get install "
                    "chromium`) or set CHROMIUM=/path/to/chromium; the test never downloads a browser.", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def _open(browser, base: str, path: str):
    """Open ``path`` of the site with every request outside it refused; return (page, problems)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    problems: list[str] = []

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            problems.append(f"request outside the site: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: r.url.startswith(base) and problems.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.goto(urljoin(base, path), wait_until="load")
    return page, problems


MATH_TYPESET = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    const maths = [...document.querySelectorAll('.math')];
    return {
        math: maths.length,
        typeset: maths.filter(m => m.querySelector('mjx-container') && !m.querySelector('mjx-merror')).length,
        mathjax: !!(window.MathJax && MathJax.version),
    };
}"""

# A Markdown table left as text: a paragraph holding a table's |---| rule (or |—|, once typography has run).
RAW_TABLES = """() => [...document.querySelectorAll('article p')].map(p => p.innerText)
    .filter(t => /\\|\\s*:?(-{3,}|\u2014)/.test(t))"""

IMAGES = """() => [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}))"""


def _pages(out: Path) -> list[str]:
    skip = {"genindex.html"}   # Sphinx's empty index page: no content of the course
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html")
                  if "_static" not in p.parts and p.name not in skip)


@pytest.mark.browser
def test_site_every_page_reads_offline_without_errors(site, site_browser):
    """Every page: no console error, nothing fetched from outside, math typeset, every image loaded; links resolve."""
    summary, out, base = site
    assert not summary["warnings"], "Sphinx warned:\n" + "\n".join(summary["warnings"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems, links, math_total = {}, set(), 0
    for path in _pages(out):
        page, found = _open(site_browser, base, path)
        math = page.evaluate(MATH_TYPESET)
        math_total += math["math"]
        if math["math"]:
            assert math["mathjax"], f"{path}: math but no MathJax"
            if math["typeset"] != math["math"]:
                found.append(f"{math['math'] - math['typeset']} of {math['math']} math elements not typeset")
        found += [f"image did not load: {i['src']}" for i in page.evaluate(IMAGES) if not i["ok"]]
        found += [f"a Markdown table shown as text: {t[:80]}" for t in page.evaluate(RAW_TABLES)]
        for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
            if href.startswith(base):
                links.add((path, href))
        page.screenshot(path=str(ARTIFACTS / (path.replace("/", "__").removesuffix(".html") + ".png")))
        page.close()
        if found:
            problems[path] = found
    assert not problems, json.dumps(problems, indent=1, ensure_ascii=False)
    assert math_total > 0, "no page has math: the MathJax check tested nothing"

    broken = []
    for page_path, href in sorted(links):
        parts = urlsplit(href)
        target = out / unquote(parts.path.removeprefix(urlsplit(base).path))
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{page_path}: {href} (no file)")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids(target):
            broken.append(f"{page_path}: {href} (no anchor #{parts.fragment})")
    assert not broken, "\n".join(broken)


@pytest.mark.browser
def test_site_has_a_page_per_notebook_in_the_course_maps_order(site, site_browser):
    from lora_edu.course.course_map import COURSE_MAP

    summary, out, base = site
    for nb_path in NOTEBOOKS:
        assert (out / "notebooks" / f"{nb_path.stem}.html").is_file(), f"no page for {nb_path.name}"
    page, problems = _open(site_browser, base, "index.html")
    nav = page.eval_on_selector_all("nav.bd-links a.reference.internal", "els => els.map(a => a.getAttribute('href'))")
    in_map = [f"notebooks/{ch.notebook.removesuffix('.ipynb')}.html" for ch in COURSE_MAP if (ROOT / "notebooks" / ch.notebook).exists()]
    shown = [h for h in nav if h.startswith("notebooks/")]
    assert shown[:len(in_map)] == in_map, shown
    assert len(shown) == len(NOTEBOOKS), "every notebook is in the navigation"
    assert not problems, problems


@pytest.mark.browser
@pytest.mark.parametrize("notebook", [p.name for p in NOTEBOOKS])
def test_site_solutions_are_folded_and_open_with_one_click(site, site_browser, notebook):
    summary, out, base = site
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    solutions = [c for c in nb.cells if build_site._is_solution(c) and c.cell_type == "code"]
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and not build_site._is_solution(c)]
    page, problems = _open(site_browser, base, f"notebooks/{notebook.removesuffix('.ipynb')}.html")
    folds = page.locator("div.cell.tag_solution details")
    assert folds.count() == len(solutions)
    assert page.locator("div.cell.tag_solution details[open]").count() == 0, "a solution is open by default"
    for i in range(folds.count()):
        code = folds.nth(i).locator("div.cell_input")
        assert not code.is_visible()
        folds.nth(i).locator("summary").click()
        assert code.is_visible(), "one click opens the solution"
        first_line = solutions[i].source.splitlines()[0].strip()
        assert first_line in code.inner_text()
    for cell in checks:   # each check's stored output is on the page, as the notebook stores it
        for out_ in cell.outputs:
            if out_.output_type == "stream" and out_.text.strip():   # a stream of only a newline shows nothing to find
                assert page.get_by_text(out_.text.strip().splitlines()[0][:60], exact=False).count() >= 1
    assert not problems, problems


@pytest.mark.browser
def test_site_search_finds_rank(site, site_browser):
    summary, out, base = site
    page, problems = _open(site_browser, base, "search.html?q=rank")
    page.wait_for_selector("#search-results ul.search li a", timeout=30_000)
    hits = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(a => a.href)")
    assert any("/notebooks/" in h for h in hits), hits
    assert not problems, problems


@pytest.mark.browser
def test_site_launch_links_open_the_repositorys_notebook(site, site_browser):
    summary, out, base = site
    repo = build_site.repository_url()
    for nb_path in NOTEBOOKS:
        path = f"notebooks/{nb_path.name}"
        page, problems = _open(site_browser, base, f"notebooks/{nb_path.stem}.html")
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))")
        for name, url in build_site.launch_links(repo, path).items():
            assert hrefs.count(url) >= 2, f"{nb_path.name}: the {name} link (launch menu and the line under the title)"
        hub_links = [h for h in hrefs if "launch/jupyterhub.html?path=" in h]
        assert hub_links and all(h.endswith(f"?path={path}") for h in hub_links), hub_links
        page.close()
    # The JupyterHub page makes nbgitpuller's link, as build_site.nbgitpuller_link does, and remembers the hub.
    path = f"notebooks/{NOTEBOOKS[-1].name}"
    page, problems = _open(site_browser, base, f"launch/jupyterhub.html?path={path}")
    page.fill("#hub-url", "https://hub.example.edu/")
    page.click("#hub-form button[type=submit]")
    link = page.locator("#hub-link")
    link.wait_for(state="visible")
    assert link.get_attribute("href") == build_site.nbgitpuller_link("https://hub.example.edu", repo, path)
    page.goto(urljoin(base, f"launch/jupyterhub.html?path=notebooks/{NOTEBOOKS[0].name}"))
    link.wait_for(state="visible")
    assert link.get_attribute("href") == build_site.nbgitpuller_link("https://hub.example.edu", repo,
                                                                      f"notebooks/{NOTEBOOKS[0].name}")
    page.goto(urljoin(base, "launch/jupyterhub.html?path=../../etc/passwd.ipynb"))
    assert page.locator("#hub-path").inner_text() != "../../etc/passwd.ipynb", "a path outside the course is ignored"
    assert not problems, problems
