"""Fonts for text that matplotlib's default font cannot draw (cluster names in CJK, ...).

matplotlib draws every character with the fonts of ``rcParams["font.family"]`` and prints
one ``UserWarning: Glyph ... missing from font(s)`` per character it cannot draw, each time
the figure is drawn. :func:`build_with_fonts` builds a static figure so that this does not
happen:

- characters the default fonts cover need nothing: the figure is built as usual;
- for the others, an installed font that has them (Noto Sans CJK, for example) is appended
  to the figure's font fallback list, through ``matplotlib.rc_context`` while the figure is
  built (the texts keep that list, so a later ``savefig`` uses it too); the user's global
  ``rcParams`` are not changed;
- characters no installed font has are named once, in a ``pairot`` log warning that says how
  to fix it, and matplotlib's per-glyph warnings are silenced for that figure, also when it
  is drawn or saved later (the figure is a :class:`QuietGlyphFigure`). They are drawn as the
  font's placeholder box.
"""

from __future__ import annotations

import functools
import unicodedata
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import matplotlib as mpl
from matplotlib.figure import Figure

from .._logging import logger

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: matplotlib's own fallback font (since 3.10): a placeholder glyph for every code point, so
#: it is no candidate for drawing a character.
LAST_RESORT = "Last Resort High-Efficiency"

#: Families tried first for characters the default font lacks, best coverage first.
PREFERRED_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Noto Sans CJK HK",
    "Source Han Sans",
    "Source Han Sans JP",
    "Source Han Sans SC",
    "Source Han Sans KR",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Noto Sans",
    "Arial Unicode MS",
    "Microsoft YaHei",
    "Yu Gothic",
    "Malgun Gothic",
    "Hiragino Sans",
    "PingFang SC",
    "Apple SD Gothic Neo",
    "Noto Serif CJK JP",
)

_GLYPH_WARNING = r"Glyph \d+ .*missing from font\(s\)"
_SHOWN = 10  # characters named in the warning


@functools.cache
def _coverage(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for (empty if it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # pragma: no cover - a broken font file
        return frozenset()


def _find(family: str) -> str | None:
    """The file matplotlib would use for ``family``, or None when it has no such font."""
    from matplotlib import font_manager

    try:
        return font_manager.findfont(
            # a list: a lone string would be parsed as a fontconfig pattern
            font_manager.FontProperties(family=[family]),
            fallback_to_default=False,
        )
    except ValueError:
        return None


def _default_paths() -> list[str]:
    """The font files matplotlib draws text with under the current rcParams, in order."""
    paths = [_find(family) for family in mpl.rcParams["font.family"]]
    return [p for p in paths if p is not None]


def _weight(entry) -> float:
    from matplotlib import font_manager

    weight = entry.weight
    if isinstance(weight, str):
        weight = font_manager.weight_dict.get(weight, 400)
    return float(weight)


def font_candidates() -> list[tuple[str, str]]:
    """Installed font families that may stand in, as ``(family, file)``, preferred first.

    One file per family: its upright face closest to regular weight. matplotlib's Last
    Resort font is left out: it draws placeholder boxes, not characters.
    """
    from matplotlib import font_manager

    best: dict[str, tuple[tuple[bool, float], str]] = {}
    for entry in font_manager.fontManager.ttflist:
        if entry.name == LAST_RESORT:
            continue
        key = (entry.style != "normal", abs(_weight(entry) - 400.0))
        if entry.name not in best or key < best[entry.name][0]:
            best[entry.name] = (key, entry.fname)
    ordered = [n for n in PREFERRED_FONTS if n in best]
    ordered += sorted(set(best) - set(ordered))
    return [(name, best[name][1]) for name in ordered]


def _drawable(character: str) -> bool:
    """Whether a character needs a glyph (not whitespace, control or format characters)."""
    return not character.isspace() and unicodedata.category(character)[0] not in "CZ"


def missing_characters(texts: Iterable[str]) -> list[str]:
    """Characters of ``texts`` that none of the default fonts has, in order of appearance."""
    covered = [_coverage(p) for p in _default_paths()]
    missing: dict[str, None] = {}
    for text in texts:
        for character in str(text):
            if (
                character not in missing
                and _drawable(character)
                and not any(ord(character) in c for c in covered)
            ):
                missing[character] = None
    return list(missing)


def choose_fonts(characters: list[str]) -> tuple[list[str], list[str]]:
    """Families that together cover as many of ``characters`` as the installed fonts allow,
    and the characters none of them has."""
    left = {ord(c) for c in characters}
    chosen = []
    for name, path in font_candidates():
        if not left:
            break
        found = left & _coverage(path)
        if found:
            chosen.append(name)
            left -= found
    return chosen, [c for c in characters if ord(c) in left]


def _describe(characters: list[str]) -> str:
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in characters[:_SHOWN])
    more = len(characters) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


class QuietGlyphFigure(Figure):
    """A matplotlib Figure that draws without matplotlib's missing-glyph warnings (pairot
    has said once which characters no installed font has)."""

    def draw(self, renderer):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_GLYPH_WARNING, category=UserWarning)
            return super().draw(renderer)


def build_with_fonts(texts: Iterable[str], build: Callable[[], Axes]) -> Axes:
    """Call ``build()`` (which makes a matplotlib figure and returns its Axes) so that every
    character of ``texts`` is drawn with a font that has it, where one is installed.

    Characters no installed font has give one ``pairot`` warning for the figure, and
    matplotlib's per-glyph warnings are silenced for it (also at a later ``savefig``).
    """
    missing = missing_characters(texts)
    if not missing:
        return build()
    families, uncovered = choose_fonts(missing)
    if uncovered:
        logger.warning(
            "No installed font can draw the characters %s used in this figure's cluster "
            "names; they are drawn as placeholder boxes. Install a font that has them, "
            "for example Noto Sans CJK for Chinese, Japanese and Korean (Debian/Ubuntu: "
            "apt install fonts-noto-cjk), then delete matplotlib's font cache (the "
            "fontlist-*.json file in matplotlib.get_cachedir()) so that matplotlib finds it.",
            _describe(uncovered),
        )
    fallback = [*mpl.rcParams["font.family"], *families]
    with mpl.rc_context({"font.family": fallback}), warnings.catch_warnings():
        if uncovered:
            warnings.filterwarnings("ignore", message=_GLYPH_WARNING, category=UserWarning)
        ax = build()
    if uncovered and type(ax.figure) is Figure:
        ax.figure.__class__ = QuietGlyphFigure
    return ax
