"""The documentation site (docs/, issue 28): every public name has an API page, the README's
build command is the one CI runs, and the built site is offline and shows its figures.

The tests on the built site skip where ``docs/_build/html`` is absent: ``.ci/run`` builds the
site with the README's command before it runs the tests. The browser test also skips where
Chromium is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from headless_chromium import chromium, dump_dom

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SITE = DOCS / "_build" / "html"
PUBLIC_MODULES = ("pairot.pp", "pairot.tl", "pairot.pl", "pairot.datasets")
# the tutorial the browser test opens, and the figures it draws at least
TUTORIAL = "tutorials/pbmc_demo.html"
TUTORIAL_FIGURES = 3

sys.path.insert(0, str(DOCS / "_ext"))
import pairot_docs  # noqa: E402 - the site's own extension: how examples are found

needs_site = pytest.mark.skipif(
    not (SITE / "index.html").is_file(),
    reason="the site is not built (run the README's Documentation command first)",
)


def autosummary_entries(text: str) -> dict[str, list[str]]:
    """``{module: [names]}`` listed in the ``autosummary`` directives of an .rst source, each
    under the ``currentmodule`` before it."""
    entries: dict[str, list[str]] = {}
    module = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        found = re.match(r"\.\. currentmodule:: (\S+)", line.strip())
        if found:
            module = found.group(1)
        if line.strip() == ".. autosummary::":
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                item = lines[i].strip()
                if item and not item.startswith(":"):
                    entries.setdefault(module, []).append(item.lstrip("~"))
                i += 1
            continue
        i += 1
    return entries


def test_autosummary_parser():
    text = (
        ".. currentmodule:: a.b\n\n.. autosummary::\n   :toctree: generated\n\n   f\n   G\n"
        "\nprose\n\n.. currentmodule:: c\n\n.. autosummary::\n\n   ~h\n"
    )
    assert autosummary_entries(text) == {"a.b": ["f", "G"], "c": ["h"]}


def test_every_public_name_has_an_api_page():
    """A name in a public module's ``__all__`` without a line in docs/api.rst fails here; so
    does a line for a name that is no longer public."""
    listed = autosummary_entries((DOCS / "api.rst").read_text(encoding="utf-8"))
    assert set(listed) == set(PUBLIC_MODULES)
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        public = set(module.__all__)
        assert public == {n for n in dir(module) if not n.startswith("_")} - _submodules(module)
        names = listed[module_name]
        assert len(names) == len(set(names)), f"{module_name}: a name listed twice"
        missing = sorted(public - set(names))
        stale = sorted(set(names) - public)
        assert missing == [], (
            f"public names of {module_name} without an API page: {missing}; add one line "
            f"each under '.. currentmodule:: {module_name}' in docs/api.rst"
        )
        assert stale == [], f"docs/api.rst lists names {module_name} does not export: {stale}"


def _submodules(module) -> set[str]:
    return {n for n in dir(module) if type(getattr(module, n)).__name__ == "module"}


def public_callables() -> list[tuple[str, object]]:
    """``(full name, object)`` of every public function and class, and of every public
    method of a public class (properties excluded)."""
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj):
                continue
            found.append((f"{module_name}.{name}", obj))
            if inspect.isclass(obj):
                for member in dir(obj):
                    static = inspect.getattr_static(obj, member)
                    if member.startswith("_") or isinstance(static, property):
                        continue
                    found.append((f"{module_name}.{name}.{member}", getattr(obj, member)))
    return found


def test_every_public_callable_has_an_example():
    """Each public function, class and method shows an example on its page: its docstring's
    Examples section, or else the first tutorial cell that calls it (executed at build)."""
    callables = public_callables()
    assert len(callables) > 40
    missing = [
        name
        for name, obj in callables
        if not pairot_docs.has_examples_section((inspect.getdoc(obj) or "").splitlines())
        and pairot_docs.tutorial_example(name) is None
    ]
    assert missing == [], (
        f"no example for {missing}: call them in a tutorial (docs/tutorials/) or add an "
        "Examples section to the docstring"
    )


def test_tutorial_example_lookup():
    """The lookup finds calls through the module and through a variable of the class, and
    not a method of the same name on another class."""
    document, code = pairot_docs.tutorial_example("pairot.pp.preprocess_adatas")
    assert document == "tutorials/pbmc_demo" and "pr.pp.preprocess_adatas(" in code
    document, code = pairot_docs.tutorial_example("pairot.tl.DatasetMap.solve")
    assert document == "tutorials/pbmc_demo" and "dataset_map.solve()" in code
    document, code = pairot_docs.tutorial_example("pairot.tl.AtlasMap.solve")
    assert document == "tutorials/atlas" and "atlas.solve(" in code
    assert pairot_docs.tutorial_example("pairot.tl.DatasetMap.no_such_method") is None
    assert pairot_docs.tutorial_example("pairot.pp.no_such_function") is None


def test_cli_page_reads_the_parser():
    """The command-line page is generated from the parser ``pairot`` itself uses."""
    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    module = re.search(r":module: (\S+)", text).group(1)
    func = re.search(r":func: (\S+)", text).group(1)
    parser = getattr(importlib.import_module(module), func)()
    assert isinstance(parser, argparse.ArgumentParser)
    assert parser.prog == re.search(r":prog: (\S+)", text).group(1) == "pairot"
    from pairot import cli

    assert getattr(cli, func) is cli.build_parser


def _fenced_blocks(text: str, section: str) -> list[tuple[str, list[str]]]:
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [
        (lang, [line for line in block.splitlines() if line.strip()])
        for lang, block in re.findall(r"```(\w*)\n(.*?)```", body, flags=re.DOTALL)
    ]


def test_readme_documentation_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = _fenced_blocks(readme, "Documentation")
    assert [lang for lang, _ in blocks] == ["bash"]
    (command,) = blocks[0][1]
    assert command.startswith('pip install ".[docs]" && sphinx-build -W ')
    assert command.endswith(" docs docs/_build/html")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci.splitlines()
    # the site is built before the tests run, so that the tests below find it
    assert ci.index(command) < ci.index("python -m pytest")
    assert "docs/_build/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_build_configuration_is_offline_and_strict():
    """conf.py: notebooks are executed at build time and a failing cell fails the build; no
    inventory is fetched; the theme bundles its assets."""
    import runpy

    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert conf["nb_execution_mode"] in ("cache", "force")
    assert conf["nb_execution_raise_on_error"] is True
    assert Path(conf["nb_execution_cache_path"]).is_relative_to(DOCS / "_build")
    assert conf["intersphinx_mapping"] == {}
    assert conf["html_theme"] == "furo"
    assert "sphinxarg.ext" in conf["extensions"]


def test_tutorials_are_stored_without_outputs():
    """The tutorials are MyST notebooks executed at build time: their sources hold code
    cells only, and each page of the tutorials' index exists."""
    sources = sorted((DOCS / "tutorials").glob("*.md"))
    notebooks = [p for p in sources if "```{code-cell}" in p.read_text(encoding="utf-8")]
    assert len(notebooks) >= 3
    assert not list((DOCS / "tutorials").glob("*.ipynb"))
    index = (DOCS / "tutorials" / "index.md").read_text(encoding="utf-8")
    for path in notebooks:
        assert f"\n{path.stem}\n" in index, path.name


class _Resources(HTMLParser):
    """What a browser fetches to show a page: scripts, style sheets, images, frames."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "video", "audio", "embed"):
            self.urls.append(attrs.get("src") or "")
        if tag == "link" and attrs.get("rel") not in ("canonical", "author", "next", "prev"):
            self.urls.append(attrs.get("href") or "")
        if tag == "object":
            self.urls.append(attrs.get("data") or "")


def _external(url: str) -> bool:
    return bool(re.match(r"(?i)^(https?:)?//", url.strip()))


def test_resource_rule():
    page = _Resources()
    page.feed(
        '<script src="_static/a.js"></script><script src="https://cdn.x/m.js"></script>'
        '<link rel="stylesheet" href="//fonts.x/c.css"><img src="data:image/png;base64,A">'
        '<a href="https://example.org">a link is not fetched</a>'
    )
    assert [u for u in page.urls if _external(u)] == ["https://cdn.x/m.js", "//fonts.x/c.css"]


@needs_site
def test_built_site_fetches_nothing_from_the_network():
    """No page of the built site loads a script, style sheet, image or frame from outside the
    site (links a reader may click are allowed), and no style sheet imports one."""
    pages = sorted(SITE.rglob("*.html"))
    assert len(pages) > 30
    offenders = {}
    for path in pages:
        parser = _Resources()
        parser.feed(path.read_text(encoding="utf-8"))
        external = [u for u in parser.urls if _external(u)]
        if external:
            offenders[str(path.relative_to(SITE))] = external
    for path in sorted(SITE.rglob("*.css")):
        text = path.read_text(encoding="utf-8")
        external = re.findall(r"""(?:@import|url\()\s*['"]?((?:https?:)?//[^'")\s]+)""", text)
        if external:
            offenders[str(path.relative_to(SITE))] = external
    assert offenders == {}


@needs_site
def test_built_site_has_every_page():
    """Every public name and every page the issue lists has its page in the built site."""
    for module_name in PUBLIC_MODULES:
        for name in importlib.import_module(module_name).__all__:
            page = SITE / "generated" / f"{module_name}.{name}.html"
            assert page.is_file(), f"{name}: no page in the built site; rebuild it"
    for page in (
        "getting_started",
        "api",
        "cli",
        "method",
        "upstream",
        "large_studies",
        "benchmarks",
        "architecture",
        "tutorials/pbmc_demo",
        "tutorials/cell_mapping",
        "tutorials/atlas",
        "tutorials/building_blocks",
    ):
        assert (SITE / f"{page}.html").is_file(), page
    # the class pages document the inherited methods too (DatasetMap's answers)
    page = (SITE / "generated" / "pairot.tl.DatasetMap.html").read_text(encoding="utf-8")
    for name, _ in public_callables():
        if name.startswith("pairot.tl.DatasetMap."):
            assert f'id="{name}"' in page, name
    cli = (SITE / "cli.html").read_text(encoding="utf-8")
    for option in ("--query-cell-type", "--n-top-genes", "--bootstrap", "--overwrite"):
        assert option in cli, option
    # GitHub-style anchors of docs/method.md, which docstrings cite, exist on the method page
    method = (SITE / "method.html").read_text(encoding="utf-8")
    for anchor in ("gene-filtering", "the-optimal-transport-problem", "rank-convention"):
        assert f'id="{anchor}"' in method, anchor


# In the browser: a copy of the page, whose script lists every image (decoded or not) and
# every URL its DOM loads from, once it has loaded.
_CHECK = """<script>
window.addEventListener("load", () => {
  const urls = [];
  for (const el of document.querySelectorAll("[src], link[href]")) {
    urls.push(el.src || el.href);
  }
  const report = {
    images: Array.from(document.images).map((i) => [i.src, i.complete, i.naturalWidth]),
    urls: urls,
    title: document.title,
  };
  const out = document.createElement("pre");
  out.id = "pairot-check";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""


def _network_requests(net_log: Path) -> list[str]:
    """The URLs the page asked the network stack for, from Chromium's net log: requests
    whose isolation key is the page's (``file://``), not the browser's own background
    requests (which fail anyway: no host resolves)."""
    text = net_log.read_text(encoding="utf-8")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log the browser did not close: events, unterminated
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start
        and str(event["params"].get("network_isolation_key", "")).startswith("file://")
    ]


def _open(page: Path, workdir: Path) -> dict:
    """Open ``page`` in headless Chromium, with no host name resolvable; what it showed,
    loaded and logged."""
    check = page.with_name(f"_check_{page.name}")
    html = page.read_text(encoding="utf-8")
    check.write_text(html.replace("</body>", f"{_CHECK}</body>"), encoding="utf-8")
    workdir.mkdir()
    net_log = workdir / "net.json"
    proc = dump_dom(
        check.as_uri(),
        workdir / "profile",
        # nothing resolves: a request for another host fails, and the net log shows it
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={net_log}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="pairot-check">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert found, proc.stdout[-2000:]
    text = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    report = json.loads(text.replace("&amp;", "&"))
    report["console"] = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    report["network"] = _network_requests(net_log)
    return report


@needs_site
@pytest.mark.skipif(chromium() is None, reason="chromium is not installed")
def test_site_renders_offline_in_headless_chromium(tmp_path):
    """The index and a tutorial open in Chromium with no host name resolvable: the page asks
    the network for nothing, every resource is a local file, the tutorial's figures are
    decoded images, and the pages log no error. A control page that fetches from a CDN is
    caught by the same checks."""
    site = tmp_path / "html"
    shutil.copytree(SITE, site)
    control = site / "control.html"
    control.write_text(
        '<html><head><title>pairot control</title></head><body><img src="_images/'
        f'{next((site / "_images").glob("*.png")).name}">'
        '<script src="https://cdn.example.org/lib.js"></script></body></html>',
        encoding="utf-8",
    )
    report = _open(control, tmp_path / "control")
    assert report["network"] == ["https://cdn.example.org/lib.js"]
    assert "https://cdn.example.org/lib.js" in report["urls"]
    assert [img[1:] for img in report["images"]] == [[True, report["images"][0][2]]]
    assert report["images"][0][2] > 0

    for page, figures in (("index.html", 0), (TUTORIAL, TUTORIAL_FIGURES)):
        report = _open(site / page, tmp_path / f"page-{figures}")
        assert "pairot" in report["title"], report
        assert report["network"] == [], (page, report["network"])
        assert report["urls"], page
        outside = [u for u in report["urls"] if not u.startswith(("file://", "data:"))]
        assert outside == [], (page, outside)
        shown = [img for img in report["images"] if img[0].endswith(".png")]
        assert len(shown) >= figures, (page, report["images"])
        undecoded = [img for img in report["images"] if not (img[1] and img[2] > 0)]
        assert undecoded == [], (page, undecoded)
        assert report["console"] == [], (page, report["console"])
