"""Helpers shared by the ``pairot.pl`` figures: input checks, colours, text and figure sizes."""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Colormap, to_hex

BACKENDS = ("plotly", "matplotlib")

# Sizes given by the caller (``width`` / ``height``) are pixels for both backends, as in
# upstream pairOT. matplotlib figures are made at the fixed resolution ``MPL_DPI``, so a figure
# asked for 800 px wide is 8 inches wide at 100 dpi (``fig.get_size_inches() * fig.dpi``);
# ``savefig(dpi=...)`` can still write it at another resolution.
MPL_DPI = 100.0
MIN_PIXELS = 100  # smallest accepted width / height: a smaller value is most likely inches
MAX_PIXELS = 20_000  # largest accepted width / height

# Internal figure geometry: matplotlib in inches, plotly in pixels.
MPL_CELL = 0.5  # one cluster (row or column) of a heatmap, or one Sankey node slot
MPL_FONT = 9.0  # tick labels, node labels
MPL_CELL_FONT = 8.0  # values printed in heatmap cells
MPL_TITLE_SPACE = 0.45  # kept free above the Axes for an ``ax.set_title(...)``
MPL_MIN_WIDTH = 4.0
MPL_MIN_HEIGHT = 3.0
PX_CELL = 40
PX_FONT = 12
PX_CELL_FONT = 11
PX_CHAR = 7.0  # generous mean width of one character at ``PX_FONT`` (Arial / Open Sans)
PX_TITLE_SPACE = 60
PX_MIN_WIDTH = 450
PX_MIN_HEIGHT = 350


def plotly_text(name) -> str:
    """A cluster name as literal plotly text: plotly reads ``<b>``, ``<br>`` and entities in
    labels as formatting, so ``<``, ``>`` and ``&`` are escaped to show the name as written."""
    return html.escape(str(name), quote=False)


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise ``ValueError``."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        msg = f"backend must be one of {list(BACKENDS)}; got {backend!r}."
        raise ValueError(msg)
    return backend


def check_frame(data, argument: str) -> np.ndarray:
    """Check that ``data`` is a non-empty DataFrame of numbers; return a float64 copy of it.

    Missing values (``NaN``, ``pd.NA``) are kept as ``NaN``. The input is never modified.
    """
    if not isinstance(data, pd.DataFrame):
        if isinstance(data, dict):
            fix = (
                "compute_mapping(aggregation_method=None) returns a dict of DataFrames: pass "
                f"one of them, e.g. {argument}['mean']."
            )
        else:
            fix = "Wrap an array with pd.DataFrame(values, index=row_names, columns=column_names)."
        msg = (
            f"{argument} must be a pandas DataFrame (clusters x clusters, e.g. the result of "
            f"DatasetMap.compute_mapping()); got {type(data).__name__}. {fix}"
        )
        raise TypeError(msg)
    bad = [
        f"{column!r} ({dtype})"
        for column, dtype in data.dtypes.items()
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        msg = (
            f"{argument} must hold numbers only; non-numeric columns: {shown}. Convert them "
            f"with {argument}.astype(float)."
        )
        raise TypeError(msg)
    if data.shape[0] == 0 or data.shape[1] == 0:
        msg = f"{argument} is empty (shape {data.shape}); it needs at least one row and column."
        raise ValueError(msg)
    return data.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)


def check_size(value, argument: str) -> int | None:
    """``None``, or a figure size in pixels between ``MIN_PIXELS`` and ``MAX_PIXELS``.

    Returns the size rounded to whole pixels. A value below ``MIN_PIXELS`` (``width=8``) is
    refused with a hint that sizes are pixels, not inches.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        msg = (
            f"{argument} must be a number of pixels or None; got {value!r} "
            f"({type(value).__name__})."
        )
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"{argument} must be a finite number of pixels or None; got {value!r}."
        raise ValueError(msg)
    limits = f"between {MIN_PIXELS} and {MAX_PIXELS} px"
    if value < MIN_PIXELS:
        hint = ""
        if value > 0 and MIN_PIXELS <= value * MPL_DPI <= MAX_PIXELS:
            hint = f" Did you mean {argument}={value * MPL_DPI:g}?"
        msg = (
            f"{argument}={value!r} is in pixels, for both backends (matplotlib figures are "
            f"drawn at {MPL_DPI:g} dpi); give a size {limits}, or None for an automatic size."
            f"{hint}"
        )
        raise ValueError(msg)
    if value > MAX_PIXELS:
        msg = (
            f"{argument}={value!r} pixels is too large; give a size {limits}, or None for an "
            "automatic size."
        )
        raise ValueError(msg)
    return round(float(value))


def get_cmap(colormap: str | Colormap, argument: str = "colormap") -> Colormap:
    """A matplotlib colormap from its name (``"Greens"``) or the Colormap itself."""
    if isinstance(colormap, Colormap):
        return colormap
    try:
        return mpl.colormaps[colormap]
    except (KeyError, TypeError, ValueError):
        msg = (
            f"{argument} must be a matplotlib colormap name (e.g. 'Greens', 'viridis') or a "
            f"matplotlib.colors.Colormap; got {colormap!r}."
        )
        raise ValueError(msg) from None


def plotly_colorscale(cmap: Colormap, n: int = 33) -> list[list]:
    """The matplotlib colormap as a plotly colorscale (``n`` evenly spaced stops)."""
    return [[float(t), to_hex(cmap(float(t)))] for t in np.linspace(0.0, 1.0, n)]


def relative_luminance(rgba: np.ndarray) -> np.ndarray:
    """WCAG relative luminance of RGB(A) colours with channels in [0, 1] (last axis)."""
    rgb = np.asarray(rgba, dtype=np.float64)[..., :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def text_colors(rgba: np.ndarray) -> np.ndarray:
    """``"white"`` on dark backgrounds, ``"black"`` on light ones (string array).

    The colour with the larger WCAG contrast ratio wins: white when the background's relative
    luminance is below about 0.18.
    """
    luminance = relative_luminance(rgba)
    white = (luminance + 0.05) ** 2 < 0.05 * 1.05
    return np.where(white, "white", "black")


def cell_colors(values: np.ndarray, cmap: Colormap, vmin: float, vmax: float) -> np.ndarray:
    """RGBA colours of ``values`` on ``cmap`` between ``vmin`` and ``vmax`` (clipped)."""
    scaled = (np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin)
    return cmap(np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0))


def format_value(value: float) -> str:
    """Two decimals; empty for missing values; no ``-0.00``."""
    if not np.isfinite(value):
        return "" if np.isnan(value) else str(value)
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def format_values(values: np.ndarray) -> list[list[str]]:
    return [[format_value(v) for v in row] for row in values]


def text_units(text: str) -> float:
    """Width of ``text`` in mean character widths (East Asian wide characters count double)."""
    return float(sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text))


def longest(labels: Sequence[str]) -> float:
    return max((text_units(s) for s in labels), default=0.0)


def labels_of(index: pd.Index) -> list[str]:
    return [str(v) for v in index]


def rgba_string(rgba, alpha: float | None = None) -> str:
    r, g, b, a = (float(c) for c in rgba)
    a = a if alpha is None else alpha
    return f"rgba({round(r * 255)}, {round(g * 255)}, {round(b * 255)}, {a:g})"


def get_renderer(fig):
    """The renderer used to measure text extents of a matplotlib Figure."""
    canvas = fig.canvas
    if hasattr(canvas, "get_renderer"):
        return canvas.get_renderer()
    return fig._get_renderer()  # non-Agg canvases (pdf, svg, cairo)
