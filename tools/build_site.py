"""Build the course as a static website: `make site` writes _build/html from the stored, executed notebooks.

Usage: python tools/build_site.py [--out _build/html]      (or `make site`; open _build/html/index.html)

Nothing is executed: the site shows what the notebooks store, the outputs nbval checks. Sphinx reads a staged
copy of the course in _build/site_src, laid out as the repository is (notebooks/, docs/), so that each page's
launch links name the notebook's path in the repository. Staging changes only what a web page cannot show:

- a widget (ipywidgets) lives only in a running kernel. Its stored view is replaced by a line saying so
  (the notebooks store a still picture beside each widget, which the page shows as it is), and a progress
  bar (tqdm) by its final text from the saved widget state. The saved state itself is dropped, so MyST-NB
  loads no widget scripts from a CDN.
- a solution (nbgrader's convention, as tools/student_versions.py reads it) is folded: the cell's source sits
  in a closed <details>, one click opens it. Checks keep their stored output.
- a Markdown link to a repository file that is not a page of the site points at the file in the repository;
  an image the Markdown shows from the repository is copied beside the page, so that the site serves it.

The order of the pages is the course map's (lora_edu/course/course_map.py); a notebook not (yet) in the map
comes after them, and the build says so. The repository's address is read from pyproject.toml's
[project.urls] Repository, the one place it is written. Sphinx's configuration is tools/site/conf.py.

Why Sphinx (with sphinx-book-theme and MyST-NB, Jupyter Book 1's own parts) and not Jupyter Book 2: mystmd
"resolves/downloads your template (default `book-theme`)" when it builds (jupyter-book/mystmd,
docs/theme-developer.md, PR #2566), which a machine that reaches only the package registries cannot do; these
install from PyPI alone (the `site` extra, in the lock).
"""
from __future__ import annotations

import argparse
import copy
import html
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import nbformat
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "tools" / "site"
STAGE = ROOT / "_build" / "site_src"
OUT = ROOT / "_build" / "html"
BRANCH = "main"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SOLUTION_BEGIN = "### BEGIN SOLUTION"   # tools/student_versions.py's marker
# The documents beside the notebooks (every docs/*.md): these first, in this order, then any other by name.
DOCS_ORDER = ["cheat_sheet.md", "instructor_guide.md"]
WIDGET_NOTE = ("Interactive widget: it works when the notebook runs in Jupyter (the launch buttons at the top of "
               "this page open it in Binder, Colab or your JupyterHub).")
SHOW_SOLUTION, HIDE_SOLUTION = "Show the solution", "Hide the solution"


# ---------------------------------------------------------------------------------------------------------------
# The project's home and the launch links


def repository_url(root: Path = ROOT) -> str:
    """The course's home, pyproject.toml's [project.urls] Repository (a GitHub address)."""
    url = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"pyproject.toml's [project.urls] Repository must be https://github.com/OWNER/NAME, got {url!r}: "
                         "Binder and Colab open notebooks from GitHub")
    return url


def pages_url(repo_url: str) -> str:
    """Where GitHub Pages publishes the site (.github/workflows/site.yml): https://OWNER.github.io/NAME/."""
    owner, name = repo_url.removeprefix("https://github.com/").split("/")
    return f"https://{owner.lower()}.github.io/{name}/"


def launch_links(repo_url: str, path: str) -> dict[str, str]:
    """Binder and Colab links that open ``path`` (relative to the repository root), as the README's badges do."""
    owner_name = repo_url.removeprefix("https://github.com/")
    return {
        "Binder": f"https://mybinder.org/v2/gh/{owner_name}/HEAD?labpath={quote(path, safe='')}",
        "Colab": f"https://colab.research.google.com/github/{owner_name}/blob/{BRANCH}/{path}",
    }


def nbgitpuller_link(hub: str, repo_url: str, path: str) -> str:
    """nbgitpuller's link form: the hub clones (or updates) the repository, then opens ``path`` in JupyterLab.

    tools/site/_static/course.js builds the same link in the browser from the hub a reader types in.
    """
    name = repo_url.rsplit("/", 1)[-1]
    query = f"repo={quote(repo_url, safe='')}&urlpath={quote(f'lab/tree/{name}/{path}', safe='')}&branch={BRANCH}"
    return f"{hub.rstrip('/')}/hub/user-redirect/git-pull?{query}"


# ---------------------------------------------------------------------------------------------------------------
# Course order


def course_order(notebooks: list[Path]) -> tuple[list[Path], list[Path]]:
    """(notebooks in the course map's order, notebooks the map does not name, by name)."""
    sys.path.insert(0, str(ROOT))
    from lora_edu.course.course_map import COURSE_MAP

    by_name = {p.name: p for p in notebooks}
    ordered = [by_name[ch.notebook] for ch in COURSE_MAP if ch.notebook in by_name]
    extra = sorted((p for p in notebooks if p not in ordered), key=lambda p: p.name)
    return ordered, extra


# ---------------------------------------------------------------------------------------------------------------
# Notebooks as pages


def _text_of(state: dict, model_id: str) -> str:
    """The visible text of a saved widget: HTML and labels as text, progress bars as a bar, children in order."""
    model = state.get(model_id)
    if model is None:
        return ""
    name, s = model.get("model_name", ""), model.get("state", {})
    if name.endswith("ProgressModel"):
        top = float(s.get("max") or 1) or 1.0
        filled = round(10 * max(0.0, min(1.0, float(s.get("value") or 0) / top)))
        return "|" + "█" * filled + " " * (10 - filled) + "|"
    if name in ("HTMLModel", "LabelModel", "HTMLMathModel"):
        return html.unescape(re.sub(r"<[^>]+>", "", str(s.get("value", ""))))
    children = s.get("children", [])
    return "".join(_text_of(state, c.removeprefix("IPY_MODEL_")) for c in children if isinstance(c, str))


def _is_progress_bar(state: dict, model_id: str) -> bool:
    """A box whose children hold a progress bar and text only (how tqdm.notebook draws)."""
    model = state.get(model_id, {})
    children = [state.get(c.removeprefix("IPY_MODEL_"), {}).get("model_name", "") for c in model.get("state", {}).get("children", [])]
    return any(c.endswith("ProgressModel") for c in children) and all(
        c.endswith("ProgressModel") or c in ("HTMLModel", "LabelModel") for c in children)


def _widget_output(view: dict, state: dict) -> dict:
    """What a web page shows in place of a stored widget view."""
    model_id = view.get("model_id", "")
    if _is_progress_bar(state, model_id):
        text = _text_of(state, model_id).replace("\u2007", " ")
        return nbformat.v4.new_output("stream", name="stdout", text=text + "\n")
    return nbformat.v4.new_output("display_data", data={
        "text/html": f'<p class="widget-note">{html.escape(WIDGET_NOTE)}</p>', "text/plain": WIDGET_NOTE})


def launch_line(repo_url: str, path: str) -> str:
    """The "Run this notebook" line placed under a notebook page's title (the theme's launch menu has the same links)."""
    links = launch_links(repo_url, path)
    hub = f"../launch/jupyterhub.html?path={quote(path, safe='/')}"
    return (f'<p class="launch-links">Run this notebook: <a href="{html.escape(links["Binder"])}">Binder</a> · '
            f'<a href="{html.escape(links["Colab"])}">Colab</a> · <a href="{html.escape(hub)}">your JupyterHub</a></p>')


def _with_launch_line(nb: nbformat.NotebookNode, line: str) -> None:
    """Put ``line`` under the notebook's title (its first '# ' heading), or first if it has none."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"^# .+$", cell.source, re.M):
            cell.source = re.sub(r"^(# .+)$", lambda m: f"{m.group(1)}\n\n{line}\n", cell.source, count=1, flags=re.M)
            return
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(line))


def _fold_markdown_solution(source: str) -> str:
    return (f'<details class="solution">\n<summary>{SHOW_SOLUTION}</summary>\n\n{source}\n\n</details>')


def _is_solution(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution")) or (
        cell.cell_type == "code" and SOLUTION_BEGIN in cell.source)


def site_notebook(nb: nbformat.NotebookNode, link_fixer=None) -> nbformat.NotebookNode:
    """A copy of ``nb`` as its web page shows it: widgets as text or a note, solutions folded, links fixed."""
    nb = copy.deepcopy(nb)
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type == "markdown" and link_fixer is not None:
            cell.source = link_fixer(cell.source)
        if cell.metadata.get("nbgrader", {}).get("grade") and not _is_solution(cell):
            tags = cell.metadata.setdefault("tags", [])
            tags.extend(t for t in ("check",) if t not in tags)   # course.css wraps a check's long lines
        if _is_solution(cell):
            if cell.cell_type == "code":
                tags = cell.metadata.setdefault("tags", [])
                tags.extend(t for t in ("hide-input", "solution") if t not in tags)
                cell.metadata["mystnb"] = {"code_prompt_show": SHOW_SOLUTION, "code_prompt_hide": HIDE_SOLUTION}
            elif cell.cell_type == "markdown":
                cell.source = _fold_markdown_solution(cell.source)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                replacement = _widget_output(data[WIDGET_VIEW], state)
                if replacement.output_type == "stream" and outputs and outputs[-1].output_type == "stream" \
                        and outputs[-1].name == "stdout":
                    outputs[-1].text += replacement.text   # consecutive progress bars read as one block
                elif not (replacement.output_type == "display_data" and outputs
                          and outputs[-1].get("data", {}).get("text/plain") == WIDGET_NOTE):
                    outputs.append(replacement)
            else:
                outputs.append(out)
        cell.outputs = outputs
    return nb


_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")          # [text](target) and ![alt](image)
_IMG_SRC = re.compile(r"""(<img\b[^>]*?\bsrc=["'])([^"']+)(["'])""", re.I)


def link_fixer_for(source_path: Path, pages: set[Path], repo_url: str, assets: set[Path] | None = None):
    """A function that rewrites the relative links of ``source_path``'s Markdown for the site.

    A link to a page stays (Sphinx resolves it); a link to another file of the repository points at that file
    in the repository; an image of the repository is added to ``assets``, which stage() copies into the
    staged tree at the same place, so that the site serves it.
    """
    def local(target: str) -> Path | None:
        if re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", target, re.I):
            return None   # a URL, an anchor on this page, or a site-absolute path
        resolved = (source_path.parent / target.partition("#")[0]).resolve()
        try:
            resolved.relative_to(ROOT)
        except ValueError:
            return None
        return resolved if resolved.exists() else None   # a missing file: Sphinx warns

    def image(m: re.Match) -> str:
        path = local(m.group(2))
        if path is not None and path.is_file() and assets is not None:
            assets.add(path)
        return m.group(0)

    def one(m: re.Match) -> str:
        if m.group(1).startswith("!"):
            return image(m)
        target = m.group(2)
        path = local(target)
        if path is None or path in pages:
            return m.group(0)
        anchor = target.partition("#")[2]
        kind = "tree" if path.is_dir() else "blob"
        rel = path.relative_to(ROOT).as_posix()
        return f"{m.group(1)}{repo_url}/{kind}/{BRANCH}/{rel}{'#' + anchor if anchor else ''}{m.group(3)}"

    def fix(text: str) -> str:
        return _IMG_SRC.sub(image, _LINK.sub(one, text))
    return fix


# ---------------------------------------------------------------------------------------------------------------
# Staging


def _readme_section(readme: str, heading: str) -> str:
    """The body of README's section ``## heading`` (up to the next ``## ``)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    return m.group(1).strip() if m else ""


def _title(nb: nbformat.NotebookNode, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^# (.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return fallback


def index_page(repo_url: str, notebooks: list[tuple[str, str]], extra: list[tuple[str, str]], docs: list[str]) -> str:
    """The landing page: what the course is, the course map with links, the documents, and the toctree."""
    sys.path.insert(0, str(ROOT))
    from lora_edu.course.course_map import COURSE_MAP

    readme = (ROOT / "README.md").read_text()
    title = re.search(r"^# (.+)$", readme, re.M).group(1).strip()
    intro = readme.split("\n\n", 1)[1].split("\n\n", 1)[0].strip()
    rows = ["| Notebook | What it teaches | Time | Needs |", "|---|---|---|---|"]
    chapters = {ch.notebook: ch for ch in COURSE_MAP}
    for path, page_title in notebooks:
        ch = chapters[Path(path).name]
        rows.append(f"| [{page_title}]({path}) | {ch.teaches} | {ch.minutes} min | {ch.prerequisites} |")
    total = sum(chapters[Path(p).name].minutes for p, _ in notebooks)
    rows.append(f"| **Whole course** | | **{total} min** | |")
    toc = "\n".join(p for p, _ in notebooks)
    lines = [
        f"# {title}", "", intro, "",
        "The course's one convention for a LoRA layer (PEFT's; notebook 00 sets it out): the weight W is out×in,",
        "A = `lora_A` (r×in) is random at the start and applied first, B = `lora_B` (out×r) is zero at the start",
        "and applied last, and the layer computes",
        "", "$$", r"h = W x + \frac{\alpha}{r} B A x, \qquad \Delta W = B A.", "$$", "",
        "## The course", "",
        "Read the notebooks in order. Each page is a notebook as stored, executed: its figures, tables and the",
        "checks of its exercises are the notebook's own outputs, and each exercise's solution is folded (one",
        "click opens it). Widgets work only in a running notebook: the page shows their still pictures. To run",
        "a notebook, use the launch buttons at the top of its page (Binder, Colab, or your JupyterHub), or",
        f"clone [the repository]({repo_url}) and run `make lab`.", "",
        *rows, "",
    ]
    if extra:
        lines += ["Notebooks not (yet) in the course map:", "", *[f"- [{t}]({p})" for p, t in extra], ""]
    lines += ["```{toctree}", ":caption: The course", ":hidden:", "", toc, *[p for p, _ in extra], "```", ""]
    if docs:
        lines += ["```{toctree}", ":caption: Reference", ":hidden:", "", *docs, "```", ""]
    return "\n".join(lines)


def jupyterhub_page(repo_url: str, first: str) -> str:
    """The page behind each notebook's "JupyterHub" launch link: a hub address in, an nbgitpuller link out.

    ``first`` (the course's first notebook) is the notebook the page opens when its link names none.
    """
    example = nbgitpuller_link("https://hub.example.edu", repo_url, first)
    return f"""---
orphan: true
---
# Open a notebook in your JupyterHub

Many universities and companies run a JupyterHub. With [nbgitpuller](https://nbgitpuller.readthedocs.io)
installed on it (ask its administrators), one link copies the course into your home folder there, or
updates your copy without touching your own changes, and opens the notebook in JupyterLab. Where the hub
lacks the course's packages, the notebook's first cell installs them at the versions the course is tested
with, as on Colab (the hub must have PyTorch).

<form id="hub-form" class="hub-form" data-repo="{html.escape(repo_url)}" data-branch="{BRANCH}">
<p><label for="hub-url">Your JupyterHub's address</label><br>
<input id="hub-url" type="url" placeholder="https://hub.example.edu" required size="40">
<button type="submit">Make the link</button></p>
<p>Notebook: <code id="hub-path">{first}</code></p>
<p id="hub-result" hidden>Open it: <a id="hub-link" href="#">the notebook on your hub</a>
(an instructor can hand this link to a class)</p>
</form>

The address is kept in this browser only. The link has nbgitpuller's form, for example:

```{{container}} hub-example
`{example}`
```
"""


def stage(stage_dir: Path = STAGE) -> dict:
    """Write the site's sources into ``stage_dir``; return what was staged (for the build's summary)."""
    repo_url = repository_url()
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    (stage_dir / "notebooks").mkdir(parents=True)
    ordered, extra = course_order(sorted((ROOT / "notebooks").glob("*.ipynb")))
    docs = sorted((ROOT / "docs").glob("*.md"),
                  key=lambda p: (DOCS_ORDER.index(p.name) if p.name in DOCS_ORDER else len(DOCS_ORDER), p.name))
    pages = {p.resolve() for p in [*ordered, *extra, *docs]}

    entries, assets = [], set()
    for path in [*ordered, *extra]:
        nb = nbformat.read(path, as_version=4)
        page = site_notebook(nb, link_fixer_for(path, pages, repo_url, assets))
        _with_launch_line(page, launch_line(repo_url, f"notebooks/{path.name}"))
        nbformat.write(page, stage_dir / "notebooks" / path.name)
        entries.append((f"notebooks/{path.name}", _title(nb, path.stem)))
    nb_entries, extra_entries = entries[:len(ordered)], entries[len(ordered):]

    doc_entries = []
    if docs:
        (stage_dir / "docs").mkdir()
    for path in docs:
        (stage_dir / "docs" / path.name).write_text(link_fixer_for(path, pages, repo_url, assets)(path.read_text()))
        doc_entries.append(f"docs/{path.name}")
    for asset in sorted(assets):   # images the pages show, at their place in the repository
        target = stage_dir / asset.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(asset, target)
    bibliography = _readme_section((ROOT / "README.md").read_text(), "References (course bibliography)")
    if bibliography:
        (stage_dir / "bibliography.md").write_text("# Course bibliography\n\n" + bibliography + "\n")
        doc_entries.append("bibliography.md")
    (stage_dir / "index.md").write_text(index_page(repo_url, nb_entries, extra_entries, doc_entries))
    (stage_dir / "launch").mkdir()
    (stage_dir / "launch" / "jupyterhub.md").write_text(jupyterhub_page(repo_url, entries[0][0]))
    return {"notebooks": [p for p, _ in nb_entries], "not_in_map": [p for p, _ in extra_entries], "docs": doc_entries}


def build(out: Path = OUT, stage_dir: Path = STAGE, quiet: bool = False) -> dict:
    """Stage the course and run Sphinx into ``out``; return the summary (pages, warnings, seconds)."""
    start = time.perf_counter()
    staged = stage(stage_dir)
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(CONF_DIR), "-E", "-q",
           "-d", str(stage_dir.parent / "site_doctrees"), str(stage_dir), str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    warnings = [line for line in run.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    if run.returncode != 0:
        raise RuntimeError(f"sphinx-build failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    if not quiet and run.stderr.strip():
        print(run.stderr, file=sys.stderr, end="")
    return {**staged, "warnings": warnings, "seconds": time.perf_counter() - start, "out": str(out)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the site goes (default _build/html)")
    args = parser.parse_args(argv)
    summary = build(args.out.resolve())
    for path in summary["not_in_map"]:
        print(f"site: {path} is not in the course map (lora_edu/course/course_map.py); its page comes last")
    print(f"site: {len(summary['notebooks']) + len(summary['not_in_map'])} notebooks and {len(summary['docs'])} documents "
          f"in {summary['seconds']:.1f} s, {len(summary['warnings'])} warnings; open {summary['out']}/index.html")


if __name__ == "__main__":
    main()
