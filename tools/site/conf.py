"""Sphinx configuration of the course's website; tools/build_site.py (`make site`) stages the sources and runs Sphinx.

Every asset is served from the site itself: the theme's scripts and fonts ship in its package, MathJax 3 in
sphinx-mathjax-offline's, the launch page's script in _static/. Notebooks are never executed here: MyST-NB reads
their stored outputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # tools/, for build_site
import build_site  # noqa: E402

REPO_URL = build_site.repository_url()

project = "LoRA from first principles"
author = 'The "LoRA from first principles" authors'   # as LICENSE names them
copyright = f"2026 {author}; MIT licence"
language = "en"

extensions = ["myst_nb", "sphinx-mathjax-offline"]
# sphinx-mathjax-offline copies MathJax 3 into _static/mathjax and points mathjax_path at it.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_dmath_allow_digits = False   # "$5 and $10" is prose, not math
myst_heading_anchors = 3           # [text](#a-heading) links resolve, as on GitHub
myst_url_schemes = {"http": None, "https": None, "mailto": None}

nb_execution_mode = "off"          # the stored outputs, as nbval checks them
nb_ipywidgets_js = {}              # widgets are live only in a kernel; the pages show their stills
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (the course map's table) with tables and math, as Jupyter shows them
nb_output_stderr = "show"

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]   # notebooks may go from '#' to '###' in a callout

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = [str(HERE / "_static")]
html_css_files = ["course.css"]
html_js_files = ["course.js"]
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    "repository_url": REPO_URL,
    "repository_branch": build_site.BRANCH,
    "use_repository_button": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "navigation_with_keys": False,
    "footer_content_items": ["copyright.html"],
    "navbar_persistent": [],   # the sidebar has the search field; else the theme adds a header bar holding only a second one
}
# The figures are drawn on white; without a default mode the theme's script logs an error on every page.
html_context = {"default_mode": "light"}


def add_launch_links(app, pagename, templatename, context, doctree):
    """Binder, Colab and JupyterHub links on each notebook's page, in the theme's launch menu."""
    if not app.env.doc2path(pagename).as_posix().endswith(".ipynb") or "header_buttons" not in context:
        return
    path = f"{pagename}.ipynb"   # staged as the repository lays it out: notebooks/NN_name.ipynb
    links = build_site.launch_links(REPO_URL, path)
    hub = f"{context['pathto']('launch/jupyterhub')}?path={path}"
    buttons = [
        {"type": "link", "text": "Binder", "tooltip": "Open in Binder (nothing to install)",
         "icon": "_static/images/logo_binder.svg", "url": links["Binder"], "label": "launch-binder"},
        {"type": "link", "text": "Colab", "tooltip": "Open in Google Colab",
         "icon": "_static/images/logo_colab.png", "url": links["Colab"], "label": "launch-colab"},
        {"type": "link", "text": "JupyterHub", "tooltip": "Open in your JupyterHub (nbgitpuller)",
         "icon": "_static/images/logo_jupyterhub.svg", "url": hub, "label": "launch-jupyterhub"},
    ]
    context["header_buttons"].append({"type": "group", "tooltip": "Run this notebook", "icon": "fas fa-rocket",
                                      "buttons": buttons, "label": "launch-buttons"})


def setup(app):
    app.connect("html-page-context", add_launch_links, priority=600)   # after the theme fills header_buttons
