"""pairot's own Sphinx extension: what autodoc needs to read pairot's docstrings as written.

- public constants get their ``#:`` doc comment, never their type's docstring;
- numpy-style forms that napoleon reads otherwise are rewritten before it sees them;
- ``docs/method.md#anchor`` in a docstring becomes a link to that section of the method page;
- a public function, class or method whose docstring has no Examples section gets one: the
  first tutorial cell that calls it, linked to the tutorial where it runs with its output
  (the tutorials are executed at build time, so these examples cannot go stale).
  tests/test_docs_site.py checks that every public name has an example either way.
"""

from __future__ import annotations

import importlib
import inspect
import re
from functools import cache
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent
TUTORIALS = DOCS / "tutorials"
PUBLIC_MODULES = ("pairot.pp", "pairot.tl", "pairot.pl", "pairot.datasets")


# -- examples from the tutorials -------------------------------------------------------------
@cache
def tutorial_cells() -> tuple[tuple[str, str, str], ...]:
    """``(document, notebook text, cell code)`` of every code cell of the tutorials, in the
    order of the tutorials' index."""
    index = (TUTORIALS / "index.md").read_text(encoding="utf-8")
    order = re.findall(r"^(\w+)$", index.split("```{toctree}", 1)[1], flags=re.MULTILINE)
    cells = []
    for stem in order:
        text = (TUTORIALS / f"{stem}.md").read_text(encoding="utf-8")
        for code in re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.DOTALL):
            cells.append((f"tutorials/{stem}", text, code.rstrip()))
    return tuple(cells)


def _call_pattern(name: str, notebook: str) -> re.Pattern | None:
    """How a tutorial's code refers to the public name ``name`` (``pairot.pp.f``,
    ``pairot.tl.Class``, ``pairot.tl.Class.method``), or None where it cannot."""
    parts = name.split(".")
    if len(parts) == 3:  # pairot.<module>.<name>
        return re.compile(rf"\bpr\.{parts[1]}\.{parts[2]}\b")
    if len(parts) == 4:  # pairot.<module>.<Class>.<method>: through a variable of that class
        owner = rf"pr\.{parts[1]}\.{parts[2]}"
        variables = re.findall(rf"^(\w+)\s*=\s*{owner}\(", notebook, flags=re.MULTILINE)
        alternatives = [rf"\b{v}\.{parts[3]}\(" for v in variables]
        alternatives.append(rf"\b{owner}\.{parts[3]}\(")  # a static or class method
        return re.compile("|".join(alternatives))
    return None


def tutorial_example(name: str) -> tuple[str, str] | None:
    """``(document, code)`` of the first tutorial cell that uses ``name``, or None."""
    for document, notebook, code in tutorial_cells():
        pattern = _call_pattern(name, notebook)
        if pattern is not None and pattern.search(code):
            return document, code
    return None


def has_examples_section(lines: list[str]) -> bool:
    return any(
        line.strip() == "Examples" and set(nxt.strip()) == {"-"}
        for line, nxt in zip(lines, lines[1:])
    )


def _add_example(app, what, name, obj, options, lines):
    if what not in ("function", "method", "class", "data") or not name.startswith("pairot."):
        return
    if has_examples_section(lines):
        return
    found = tutorial_example(name)
    if found is None:
        return
    document, code = found
    lines.extend(
        [
            "",
            "Examples",
            "--------",
            f"From :doc:`/{document}`, where it runs with its output:",
            "",
            ".. code-block:: python",
            "",
            *(f"    {line}" if line.strip() else "" for line in code.splitlines()),
            "",
        ]
    )


# -- docs/method.md#anchor -> a link ---------------------------------------------------------
_METHOD_CITATION = re.compile(r"(?<![`\w/])docs/method\.md#([\w-]+)")


def _method_links(app, what, name, obj, options, lines):
    """``docs/method.md#anchor`` outside ``literals`` links to the method page's section; the
    generated API pages sit one folder below the site's root."""
    if not name.startswith("pairot."):
        return
    for i, line in enumerate(lines):
        parts = line.split("``")
        for j in range(0, len(parts), 2):  # the even parts are outside literals
            parts[j] = _METHOD_CITATION.sub(
                lambda m: f"`docs/method.md#{m.group(1)} <../method.html#{m.group(1)}>`__",
                parts[j],
            )
        lines[i] = "``".join(parts)


# -- public constants ------------------------------------------------------------------------
def _attribute_doc(module_name: str, name: str) -> list[str] | None:
    """The ``#:`` doc comment of ``name`` where it is defined: the package's private modules."""
    from sphinx.pycode import ModuleAnalyzer

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
#   napoleon would read it as more parameters;
# - a property or attribute whose first line holds a colon ("What X holds: ..."): napoleon
#   would read the part before the colon as its type; such a docstring (plain text, no
#   section) is kept as it is written (saved before napoleon, put back after it).
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


_PLAIN_ATTRIBUTES: dict[str, list[str]] = {}


def _numpy_sections(app, what, name, obj, options, lines):
    if not name.startswith("pairot."):
        return
    lines[:] = _rewrite_sections(list(lines))
    plain = not any(_is_header(lines, i) for i in range(len(lines)))
    if what in ("attribute", "property") and lines and ":" in lines[0] and plain:
        _PLAIN_ATTRIBUTES[name] = list(lines)


def _plain_attributes(app, what, name, obj, options, lines):
    if name in _PLAIN_ATTRIBUTES:
        lines[:] = _PLAIN_ATTRIBUTES.pop(name)


def no_value_names() -> list[str]:
    """Public constants whose value is a table: their page shows no value line."""
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if not callable(value) and not isinstance(value, (tuple, str, int, float)):
                names.append(f"{module_name}.{name}")
    return names


def setup(app):
    app.connect("autodoc-process-docstring", _data_docstring, priority=390)
    app.connect("autodoc-process-docstring", _numpy_sections, priority=400)
    app.connect("autodoc-process-docstring", _add_example, priority=410)
    app.connect("autodoc-process-docstring", _method_links, priority=420)
    app.connect("autodoc-process-docstring", _plain_attributes, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
