"""Sphinx configuration of the pairot documentation site.

Build (offline, every warning an error):
``pip install ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html``.
Nothing on the site is fetched from the network: no intersphinx inventories, no CDN assets
(furo bundles its own), no MathJax, matplotlib figures in the tutorials.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pairot

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import pairot_docs  # noqa: E402 - pairot's own extension, in docs/_ext

project = "pairot"
author = "the pairot developers"
copyright = "the pairot developers"  # noqa: A001 - Sphinx's name
release = version = pairot.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "myst_nb",  # MyST Markdown pages and notebooks (it loads myst_parser)
    "sphinxarg.ext",  # the command line's options, from pairot.cli.build_parser
    "pairot_docs",  # docstrings as written, examples from the tutorials (docs/_ext)
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# -- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_typehints = "description"  # types from the signatures, beside each parameter
autodoc_typehints_format = "short"
autodoc_typehints_description_target = "documented"  # no "Return type: None" lines
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
autosummary_context = {"no_value": pairot_docs.no_value_names()}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_preprocess_types = False
# type names in docstrings and annotations are plain text: nothing resolves them offline
# (no intersphinx), so they are not cross-referenced
nitpicky = False
intersphinx_mapping: dict = {}

# -- MyST and notebooks ----------------------------------------------------------------------
myst_heading_anchors = 6  # GitHub-style anchors: docs/method.md#gene-filtering keeps working
myst_enable_extensions = ["colon_fence", "deflist"]
nb_execution_mode = "cache"  # executed at build time; cached under docs/_build
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True  # a notebook cell that fails fails the build
nb_execution_timeout = 600
nb_execution_show_tb = True
nb_merge_streams = True
# progress bars (tqdm, for terminals) and tqdm's note about missing Jupyter widgets go to
# stderr: the pages show the results, not the bars
nb_output_stderr = "remove"

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"pairot {release}"
html_static_path: list[str] = []
html_copy_source = False
html_show_sourcelink = False
# MathJax (from a CDN) is only linked from pages that hold math, and none does:
# tests/test_docs_site.py checks that no built page links anything outside the site

# "--out" stays two hyphens (option names in help texts), not an en dash
smartquotes_action = "qe"
