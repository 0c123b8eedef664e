"""Sphinx configuration: the user guide (Markdown, through MyST) and the API reference (autodoc
and napoleon, from the Google-style docstrings). Build from the repository root with

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import pathlib
import sys
from importlib import metadata

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the source tree, whether or not latentot is installed

project = "latentot"
author = "the latentot authors"
copyright = "the latentot authors"
try:
    release = metadata.version("latentot")
except metadata.PackageNotFoundError:
    release = "0+unknown"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"latentot {release}"
html_static_path: list[str] = []
