"""Cluster names in scripts matplotlib's default font lacks: a font that has them is used when
one is installed; otherwise pairot says so once per figure and matplotlib's per-glyph
warnings stay silent."""

from __future__ import annotations

import io
import logging
import pickle
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import pairot.pl as pl  # noqa: E402
from pairot._run import _save_figure  # noqa: E402
from pairot.pl import _fonts  # noqa: E402

CJK = ["T細胞", "B세포"]
PAIROT_MESSAGE = "No installed font can draw the characters"


@pytest.fixture(autouse=True)
def _default_font_and_close_figures():
    """matplotlib's default font (DejaVu Sans, shipped with matplotlib) whatever a
    matplotlibrc on this machine says; figures closed afterwards."""
    with matplotlib.rc_context({"font.family": ["sans-serif"], "font.sans-serif": ["DejaVu Sans"]}):
        yield
    plt.close("all")


def tables(query, reference=("T cells", "B cells")):
    index = pd.Index(list(query), name="query")
    columns = pd.Index(list(reference), name="reference")
    mapping = pd.DataFrame([[0.9, 0.1], [0.2, 0.8]], index=index, columns=columns)
    distance = pd.DataFrame([[0.3, 1.5], [1.6, 0.4]], index=index, columns=columns)
    return mapping, distance


def default_covers(character: str) -> bool:
    path = font_manager.findfont(font_manager.FontProperties(family=["DejaVu Sans"]))
    return ord(character) in FT2Font(path).get_charmap()


FIGURES = {
    "mapping": lambda m, d: pl.mapping(m, backend="matplotlib"),
    "distance": lambda m, d: pl.distance(d, backend="matplotlib"),
    "label_distance": lambda m, d: pl.label_distance(d / 2, backend="matplotlib"),
    "sankey": lambda m, d: pl.sankey(m, d, backend="matplotlib"),
}


def draw(make, mapping, distance):
    """Build and save a figure; return it, its glyph warnings and the pairot records."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ax = make(mapping, distance)
        ax.figure.savefig(io.BytesIO(), format="png")
        ax.figure.savefig(io.BytesIO(), format="svg")
    glyphs = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    return ax, glyphs


def test_matplotlib_warns_per_glyph_without_pairot():
    """The problem being fixed: plain matplotlib warns once per missing CJK character."""
    assert not default_covers("細")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = plt.figure()
        fig.text(0.5, 0.5, "T細胞")
        fig.savefig(io.BytesIO(), format="png")
    assert any("missing from font" in str(w.message) for w in caught)


@pytest.mark.parametrize("kind", sorted(FIGURES))
def test_no_font_has_the_glyphs(kind, monkeypatch, caplog):
    """Simulate a machine without any CJK font: one pairot warning naming the characters and
    the fix, no matplotlib glyph warning, neither while building nor when saving."""
    monkeypatch.setattr(_fonts, "font_candidates", lambda: [])
    before = dict(matplotlib.rcParams)
    with caplog.at_level(logging.WARNING, logger="pairot"):
        ax, glyphs = draw(FIGURES[kind], *tables(CJK))
        ax.figure.savefig(io.BytesIO(), format="png")
    assert glyphs == []
    records = [r for r in caplog.records if r.name == "pairot"]
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert message.startswith(PAIROT_MESSAGE)
    for character in "細胞세포":
        assert repr(character) in message
    assert "U+7D30" in message
    assert "Noto Sans CJK" in message and "fonts-noto-cjk" in message
    assert dict(matplotlib.rcParams) == before  # the user's settings are untouched


def test_no_font_stays_quiet_after_pickling_and_through_the_cli_writer(
    monkeypatch, caplog, tmp_path
):
    monkeypatch.setattr(_fonts, "font_candidates", lambda: [])
    mapping, distance = tables(CJK)
    with caplog.at_level(logging.WARNING, logger="pairot"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ax = pl.mapping(mapping, backend="matplotlib")
            again = pickle.loads(pickle.dumps(ax.figure))
            again.savefig(io.BytesIO(), format="png")
            # the command line saves its figures with _run._save_figure
            _save_figure(pl.distance(distance, backend="matplotlib"), tmp_path / "d.png")
    assert [w for w in caught if "missing from font" in str(w.message)] == []
    assert sum(PAIROT_MESSAGE in r.getMessage() for r in caplog.records) == 2  # two figures
    assert (tmp_path / "d.png").read_bytes().startswith(b"\x89PNG")


def _bundled_candidates() -> list[tuple[str, str]]:
    """pairot's candidate fonts restricted to the files matplotlib ships itself: the same on
    every machine, whatever else is installed."""
    bundled = str(Path(matplotlib.get_data_path(), "fonts"))
    return [(name, path) for name, path in _fonts.font_candidates() if path.startswith(bundled)]


def _check_figures_use(name, families, caplog):
    """Every figure kind draws ``name`` with the default fonts followed by ``families``: no
    glyph warning, no pairot message, the user's rcParams unchanged."""
    before = matplotlib.rcParams["font.family"]
    for kind, make in FIGURES.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pairot"):
            ax, glyphs = draw(make, *tables([name, "B cells"]))
        assert glyphs == [], kind
        assert [r for r in caplog.records if r.name == "pairot"] == [], kind
        texts = [t for t in ax.figure.findobj(Text) if name in t.get_text()]
        assert texts, kind
        for text in texts:
            assert text.get_fontfamily() == [*before, *families], kind
    assert matplotlib.rcParams["font.family"] == before


def test_an_installed_font_has_the_glyphs(caplog):
    """Whatever fonts this machine has: DejaVu Sans lacks the hiragana 'の' and matplotlib
    ships STIXGeneral, which has it, so some installed font covers it. The fonts pairot
    chooses do cover it (which ones depends on the machine: a CJK font where one is
    installed), and every figure kind uses them after the default font."""
    name = "CD4のT"
    assert not default_covers("の")
    if not any(ord("の") in _fonts._coverage(path) for _, path in _fonts.font_candidates()):
        # a matplotlib packaged without its own fonts, on a machine without a CJK font: the
        # no-font path is pinned by test_no_font_has_the_glyphs
        pytest.skip("no installed font covers 'の' on this machine")
    families, uncovered = _fonts.choose_fonts(["の"])
    assert uncovered == []
    paths = dict(_fonts.font_candidates())
    assert families and ord("の") in _fonts._coverage(paths[families[-1]])
    _check_figures_use(name, families, caplog)


def test_the_bundled_font_is_chosen_among_matplotlibs_own(monkeypatch, caplog):
    """With the candidates restricted to the fonts matplotlib ships (the same everywhere),
    pairot picks STIXGeneral for 'の'."""
    candidates = _bundled_candidates()
    if "STIXGeneral" not in dict(candidates):  # a matplotlib packaged without its fonts
        pytest.skip("this matplotlib does not ship STIXGeneral")
    monkeypatch.setattr(_fonts, "font_candidates", lambda: candidates)
    assert _fonts.choose_fonts(["の"]) == (["STIXGeneral"], [])
    _check_figures_use("CD4のT", ["STIXGeneral"], caplog)


def test_a_font_found_for_cjk_is_used(monkeypatch, caplog):
    """Simulate an installed CJK font (a STIXGeneral file pretending to cover everything): it
    is appended to the figure's fallback list and pairot says nothing."""
    stix = font_manager.findfont(font_manager.FontProperties(family=["STIXGeneral"]))
    real = _fonts._coverage
    cjk = {ord(c) for name in CJK for c in name}
    monkeypatch.setattr(_fonts, "font_candidates", lambda: [("STIXGeneral", stix)])
    monkeypatch.setattr(
        _fonts, "_coverage", lambda path: real(path) | (cjk if path == stix else set())
    )
    with caplog.at_level(logging.WARNING, logger="pairot"), warnings.catch_warnings():
        # the stand-in does not really have the glyphs: matplotlib's warnings are expected
        warnings.simplefilter("ignore")
        ax = pl.mapping(tables(CJK)[0], backend="matplotlib")
    assert type(ax.figure) is matplotlib.figure.Figure  # no silencing: a font was found
    assert [r for r in caplog.records if r.name == "pairot"] == []
    labels = [t for t in ax.get_yticklabels() if t.get_text() in CJK]
    assert len(labels) == 2
    assert all(t.get_fontfamily()[-1] == "STIXGeneral" for t in labels)


def test_latin_greek_names_change_nothing(caplog):
    """Names the default font covers keep the default font and give no message."""
    with caplog.at_level(logging.WARNING, logger="pairot"):
        ax, glyphs = draw(FIGURES["mapping"], *tables(["γδ T (Müller)", "CD4+/CD25 Treg"]))
    assert glyphs == []
    assert [r for r in caplog.records if r.name == "pairot"] == []
    assert type(ax.figure) is matplotlib.figure.Figure
    assert {tuple(t.get_fontfamily()) for t in ax.get_yticklabels()} == {
        tuple(matplotlib.rcParams["font.family"])
    }
