"""Sphinx configuration of the pairot documentation site.

Build (offline, every warning an error):
``pip install ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html``.
Nothing on the site is fetched from the network: no intersphinx inventories, no CDN assets
(furo bundles its own), no MathJax, matplotlib figures in the tutorials.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

import pairot

DOCS = Path(__file__).resolve().parent

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
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "demo_figures.py"]

# -- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_typehints = "description"  # types from the signatures, beside each parameter
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
PUBLIC_MODULES = ("pairot.pp", "pairot.tl", "pairot.pl", "pairot.datasets")


def _tables() -> list[str]:
    """Public constants whose value is a table: their page shows no value line."""
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if not callable(value) and not isinstance(value, (tuple, str, int, float)):
                names.append(f"{module_name}.{name}")
    return names


autosummary_context = {"no_value": _tables()}
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


def _attribute_doc(module_name: str, name: str) -> list[str] | None:
    """The ``#:`` doc comment of ``name`` where it is defined: the package's private modules."""
    package = importlib.import_module(module_name)
    folder = Path(package.__file__).parent
    for path in sorted(folder.glob("_*.py")):
        sub = f"{module_name}.{path.stem}"
        try:
            docs = ModuleAnalyzer.for_module(sub).find_attr_docs()
        except Exception:  # noqa: BLE001 - a module the analyzer cannot read has no docs
            continue
        if ("", name) in docs:
            return list(docs[("", name)])
    getter = getattr(package, "__getattr__", None)
    if getter is not None and getter.__doc__ and name in getter.__doc__.split("\n", 1)[0]:
        return inspect.cleandoc(getter.__doc__).splitlines()  # a lazily read module attribute
    return None


def _data_docstring(app, what, name, obj, options, lines):
    """Public constants: their own doc comment, never their type's docstring."""
    if what != "data" or not name.startswith("pairot."):
        return
    module_name, _, attr = name.rpartition(".")
    doc = _attribute_doc(module_name, attr)
    if doc is None:
        msg = f"{name} has no doc comment ('#: ...' above its definition)"
        raise ValueError(msg)
    lines[:] = doc


# -- numpy-style sections that napoleon reads otherwise ---------------------------------------
# pairot's docstrings use three forms that numpydoc readers accept and napoleon does not; they
# are rewritten before napoleon sees them (priority 400 < napoleon's 500), so the sources keep
# the form that reads best in a terminal:
# - a Returns / Yields section of plain prose (no "type" line, no indented description):
#   napoleon would make each line a bullet; it becomes one ":returns:" field;
# - a parameter list spread over two lines, the first ending with ",": joined;
# - a paragraph after a Parameters (or other field) section, without a header of its own:
#   napoleon would read it as more parameters.
# Two blank lines end a napoleon section: that is what ends the field lists before these.
_FIELD_SECTIONS = {
    "parameters",
    "other parameters",
    "attributes",
    "raises",
    "warns",
    "receives",
    "keyword arguments",
}
_PROSE_SECTIONS = {"returns": ":returns:", "yields": ":Yields:"}


def _is_header(lines: list[str], i: int) -> bool:
    return (
        i + 1 < len(lines)
        and bool(lines[i].strip())
        and not lines[i].startswith(" ")
        and set(lines[i + 1].strip()) == {"-"}
        and len(lines[i + 1].strip()) >= 3
    )


def _indented(line: str) -> bool:
    return line.startswith(" ") and bool(line.strip())


def _section_end(lines: list[str], start: int) -> int:
    end = start
    while end < len(lines) and not _is_header(lines, end):
        end += 1
    return end


def _rewrite_sections(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _is_header(lines, i):
            out.append(lines[i])
            i += 1
            continue
        name = lines[i].strip().lower()
        body_start = i + 2
        end = _section_end(lines, body_start)
        body = lines[body_start:end]
        if name in _PROSE_SECTIONS:
            text = [line for line in body if line.strip()]
            if len(text) >= 2 and not _indented(text[1]):  # prose, not "type" + description
                while body and not body[-1].strip():
                    body.pop()
                out.extend(["", "", f"{_PROSE_SECTIONS[name]} {body[0].strip()}"])
                out.extend(f"   {line}" if line.strip() else "" for line in body[1:])
                out.append("")
                i = end
                continue
        elif name in _FIELD_SECTIONS:
            out.extend(lines[i : i + 2])
            j = 0
            while j < len(body):
                line = body[j]
                nxt = body[j + 1] if j + 1 < len(body) else ""
                continued = line.rstrip().endswith(",") and not _indented(line)
                if continued and nxt.strip() and not _indented(nxt):
                    body[j + 1] = f"{line.rstrip()} {nxt.strip()}"
                    j += 1
                    continue
                previous_blank = j > 0 and not body[j - 1].strip()
                if previous_blank and line.strip() and not _indented(line) and not _indented(nxt):
                    out.extend(["", *body[j:]])
                    break
                out.append(line)
                j += 1
            i = end
            continue
        out.extend(lines[i:end])
        i = end
    return out


def _numpy_sections(app, what, name, obj, options, lines):
    if name.startswith("pairot."):
        lines[:] = _rewrite_sections(list(lines))


def setup(app):
    app.connect("autodoc-process-docstring", _data_docstring)
    app.connect("autodoc-process-docstring", _numpy_sections, priority=400)
