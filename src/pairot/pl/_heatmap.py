"""Heatmaps of cluster-by-cluster tables: mapping scores, distances, label distances."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.colors import Colormap, Normalize

from . import _utils as u
from ._fonts import build_with_fonts

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.axes import Axes


def order_by_score(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column orders that put each query cluster's best match on a diagonal.

    The rule, with ``values`` a rows (query) x columns (reference) table:

    1. each row's *best column* is the column of its highest score (the first one on ties;
       missing values ignored), and its *best score* that score;
    2. columns that are the best column of at least one row come first, ordered by the
       highest best score among the rows that pick them (descending); the other columns follow,
       ordered by their own highest score (descending);
    3. rows are ordered by the position of their best column, then by best score
       (descending).

    Ties keep the input order; rows or columns without any finite value go last. The result is
    a staircase: the strongest match sits top-left, each block of rows sharing a best column
    sits under that column, and a reference cluster that no query cluster prefers ends up on
    the right.

    Parameters
    ----------
    values
        2-D array, rows = query clusters, columns = reference clusters.

    Returns
    -------
    rows, columns
        Integer positions: ``values[np.ix_(rows, columns)]`` is the reordered table.
    """
    values = np.asarray(values, dtype=np.float64)
    n_rows, n_cols = values.shape
    finite = np.where(np.isfinite(values), values, -np.inf)
    has_row = np.isfinite(values).any(axis=1)
    has_col = np.isfinite(values).any(axis=0)
    best_col = np.argmax(finite, axis=1)
    best_score = finite[np.arange(n_rows), best_col]

    # Step 2: columns chosen by some row, by the highest best score among their rows.
    chosen_key = np.full(n_cols, -np.inf)
    chosen = np.zeros(n_cols, dtype=bool)
    for row in np.flatnonzero(has_row):
        col = best_col[row]
        chosen[col] = True
        chosen_key[col] = max(chosen_key[col], best_score[row])
    col_max = finite.max(axis=0)
    # lexsort: last key is primary. Groups: chosen (0), unchosen with values (1), empty (2).
    group = np.where(chosen, 0, np.where(has_col, 1, 2))
    score = np.where(chosen, chosen_key, col_max)
    score = np.where(np.isfinite(score), score, 0.0)
    columns = np.lexsort((np.arange(n_cols), -score, group))

    # Step 3: rows by the position of their best column, then by best score.
    position = np.empty(n_cols, dtype=np.int64)
    position[columns] = np.arange(n_cols)
    row_position = np.where(has_row, position[best_col], n_cols)
    row_score = np.where(has_row, best_score, 0.0)
    rows = np.lexsort((np.arange(n_rows), -row_score, row_position))
    return rows, columns


def _axis_title(index: pd.Index, default: str) -> str:
    name = index.name
    if name is None or (isinstance(name, str) and not name.strip()):
        return default
    text = str(name).replace("_", " ")
    return text if "cluster" in text else f"{text} cluster"


def _heatmap(
    data: pd.DataFrame,
    argument: str,
    *,
    cmap: Colormap,
    vmin: float,
    vmax: float,
    colorbar_title: str,
    width: int | None,
    height: int | None,
    backend: str,
    sort_by_score: bool = False,
):
    values = u.check_frame(data, argument)
    u.check_backend(backend)
    width = u.check_size(width, "width")
    height = u.check_size(height, "height")
    rows = u.labels_of(data.index)
    cols = u.labels_of(data.columns)
    if sort_by_score:
        row_order, col_order = order_by_score(values)
        values = values[np.ix_(row_order, col_order)]
        rows = [rows[i] for i in row_order]
        cols = [cols[j] for j in col_order]
    xlabel = _axis_title(data.columns, "reference cluster")
    ylabel = _axis_title(data.index, "query cluster")
    kwargs = dict(
        values=values,
        rows=rows,
        cols=cols,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        colorbar_title=colorbar_title,
        xlabel=xlabel,
        ylabel=ylabel,
        width=width,
        height=height,
    )
    if backend == "matplotlib":
        texts = [*rows, *cols, xlabel, ylabel, colorbar_title]
        return build_with_fonts(texts, lambda: _heatmap_matplotlib(**kwargs))
    return _heatmap_plotly(**kwargs)


def _cell_font(cell_w_in: float, cell_h_in: float, texts: list[list[str]]) -> float:
    """Font size (points) that fits the longest value text in a cell."""
    n_chars = max((len(t) for row in texts for t in row), default=4)
    by_width = cell_w_in * 72 * 0.85 / (0.62 * max(n_chars, 1))
    by_height = cell_h_in * 72 * 0.6
    return float(np.clip(min(by_width, by_height, u.MPL_CELL_FONT), 4.0, u.MPL_CELL_FONT))


def _heatmap_matplotlib(
    *, values, rows, cols, cmap, vmin, vmax, colorbar_title, xlabel, ylabel, width, height
) -> Axes:
    import matplotlib.pyplot as plt

    n_rows, n_cols = values.shape
    # the size set here is provisional: _fit_heatmap sets the final one
    fig = plt.figure(figsize=(8.0, 6.0), dpi=u.MPL_DPI)
    ax = fig.add_axes((0.3, 0.3, 0.4, 0.4))
    cax = fig.add_axes((0.8, 0.3, 0.03, 0.4))
    image = ax.imshow(
        values,
        cmap=cmap.with_extremes(bad="#e6e6e6"),
        norm=Normalize(vmin=vmin, vmax=vmax),
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(np.arange(n_cols), labels=cols)
    ax.set_yticks(np.arange(n_rows), labels=rows)
    ax.tick_params(axis="both", which="major", labelsize=u.MPL_FONT, length=3)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)

    texts = u.format_values(values)
    colors = u.text_colors(u.cell_colors(values, cmap, vmin, vmax))
    cell_texts = []
    for i in range(n_rows):
        for j in range(n_cols):
            if texts[i][j]:
                cell_texts.append(
                    ax.text(
                        j,
                        i,
                        texts[i][j],
                        ha="center",
                        va="center",
                        color=colors[i, j],
                        fontsize=u.MPL_CELL_FONT,
                    )
                )
    colorbar = fig.colorbar(image, cax=cax)
    colorbar.set_label(colorbar_title, fontsize=u.MPL_FONT + 1)
    colorbar.ax.tick_params(labelsize=u.MPL_FONT)

    cell_w, cell_h = _fit_heatmap(fig, ax, cax, n_rows, n_cols, width, height)
    font = _cell_font(cell_w, cell_h, texts)
    for text in cell_texts:
        text.set_fontsize(font)
    return ax


def _fit_heatmap(fig, ax, cax, n_rows, n_cols, width, height) -> tuple[float, float]:
    """Size the figure and place the Axes so that every label fits.

    ``width`` / ``height`` are pixels (``None``: automatic), converted to inches with the
    figure's dpi. Text extents are measured once (they do not depend on the figure size); each
    cell gets ``MPL_CELL`` inches when the size is not given. Returns the cell width and
    height in inches.
    """
    renderer = u.get_renderer(fig)
    dpi = fig.dpi
    box = ax.get_window_extent(renderer)
    # cell texts lie inside the Axes; leave them out of the measurement
    hidden = [t for t in ax.texts if t.get_visible()]
    for t in hidden:
        t.set_visible(False)
    tight = ax.get_tightbbox(renderer)
    for t in hidden:
        t.set_visible(True)
    cbox = cax.get_window_extent(renderer)
    ctight = cax.get_tightbbox(renderer)
    pad = 0.12
    gap, bar = 0.2, 0.18
    left = max(box.x0 - tight.x0, 0) / dpi + pad
    bottom = max(box.y0 - tight.y0, 0) / dpi + pad
    top = max(tight.y1 - box.y1, 0) / dpi + u.MPL_TITLE_SPACE
    right_of_ax = max(tight.x1 - box.x1, 0) / dpi
    right = max(right_of_ax, gap) + bar + max(ctight.x1 - cbox.x1, 0) / dpi + pad

    if width is None:
        ax_w = n_cols * u.MPL_CELL
        fig_w = left + ax_w + right
        if fig_w < u.MPL_MIN_WIDTH:
            extra = u.MPL_MIN_WIDTH - fig_w
            left += extra / 2
            fig_w = u.MPL_MIN_WIDTH
    else:
        fig_w = width / dpi
        ax_w = max(fig_w - left - right, 0.1 * fig_w)
    if height is None:
        ax_h = n_rows * u.MPL_CELL
        fig_h = bottom + ax_h + top
        if fig_h < u.MPL_MIN_HEIGHT:
            extra = u.MPL_MIN_HEIGHT - fig_h
            bottom += extra / 2
            fig_h = u.MPL_MIN_HEIGHT
    else:
        fig_h = height / dpi
        ax_h = max(fig_h - bottom - top, 0.1 * fig_h)

    fig.set_size_inches(fig_w, fig_h)
    ax.set_position((left / fig_w, bottom / fig_h, ax_w / fig_w, ax_h / fig_h))
    bar_h = min(ax_h, 5.0)
    cax.set_position(
        (
            (left + ax_w + max(right_of_ax, gap)) / fig_w,
            (bottom + ax_h - bar_h) / fig_h,
            bar / fig_w,
            bar_h / fig_h,
        )
    )
    return ax_w / n_cols, ax_h / n_rows


def _plotly_margins(rows: list[str], cols: list[str]) -> tuple[int, int, int]:
    """Left and bottom margins (pixels) for horizontal row labels and 45-degree column labels,
    and the axis-title allowance."""
    title = 30
    rot = math.sqrt(0.5)
    left = u.longest(rows) * u.PX_CHAR + 18 + title
    # a column label leans left from its tick: keep the leftmost ones inside the figure
    spill = max(
        u.text_units(c) * u.PX_CHAR * rot - (j + 0.5) * u.PX_CELL + 10 for j, c in enumerate(cols)
    )
    left = max(left, spill)
    bottom = u.longest(cols) * u.PX_CHAR * rot + 14 * rot + 18 + title
    return round(left), round(bottom), title


def _heatmap_plotly(
    *, values, rows, cols, cmap, vmin, vmax, colorbar_title, xlabel, ylabel, width, height
) -> go.Figure:
    import plotly.graph_objects as go

    n_rows, n_cols = values.shape
    texts = u.format_values(values)
    colors = u.text_colors(u.cell_colors(values, cmap, vmin, vmax))
    z = np.where(np.isfinite(values), values, None)
    names = np.empty((n_rows, n_cols, 2), dtype=object)
    names[..., 0] = np.array([u.plotly_text(r) for r in rows], dtype=object)[:, None]
    names[..., 1] = np.array([u.plotly_text(c) for c in cols], dtype=object)[None, :]

    heatmap = go.Heatmap(
        z=z.tolist(),
        x=list(range(n_cols)),
        y=list(range(n_rows)),
        text=texts,
        customdata=names.tolist(),
        hovertemplate=(
            f"{ylabel}: %{{customdata[0]}}<br>{xlabel}: %{{customdata[1]}}<br>"
            f"{colorbar_title}: %{{z:.3f}}<extra></extra>"
        ),
        colorscale=u.plotly_colorscale(cmap),
        zmin=vmin,
        zmax=vmax,
        xgap=1,
        ygap=1,
        colorbar=dict(title=dict(text=colorbar_title, side="right"), thickness=16, len=1.0),
    )
    ii, jj = np.nonzero(np.array([[bool(t) for t in row] for row in texts]))
    labels = go.Scatter(
        x=jj.tolist(),
        y=ii.tolist(),
        mode="text",
        text=[texts[i][j] for i, j in zip(ii, jj)],
        textfont=dict(color=[str(colors[i, j]) for i, j in zip(ii, jj)], size=u.PX_CELL_FONT),
        hoverinfo="skip",
        showlegend=False,
        name="values",
    )
    fig = go.Figure([heatmap, labels])

    left, bottom, _ = _plotly_margins(rows, cols)
    right, top = 110, u.PX_TITLE_SPACE
    fig_w = width or max(left + n_cols * u.PX_CELL + right, u.PX_MIN_WIDTH)
    fig_h = height or max(top + n_rows * u.PX_CELL + bottom, u.PX_MIN_HEIGHT)
    fig.update_layout(
        width=round(fig_w),
        height=round(fig_h),
        margin=dict(l=left, r=right, t=top, b=bottom),
        plot_bgcolor="white",
        paper_bgcolor="white",
        font=dict(size=u.PX_FONT),
        xaxis=dict(
            title=dict(text=xlabel),
            tickmode="array",
            tickvals=list(range(n_cols)),
            ticktext=[u.plotly_text(c) for c in cols],
            tickangle=-45,
            range=[-0.5, n_cols - 0.5],
            showgrid=False,
            zeroline=False,
            automargin=True,
            ticks="outside",
            ticklen=3,
        ),
        yaxis=dict(
            title=dict(text=ylabel),
            tickmode="array",
            tickvals=list(range(n_rows)),
            ticktext=[u.plotly_text(r) for r in rows],
            range=[n_rows - 0.5, -0.5],
            showgrid=False,
            zeroline=False,
            automargin=True,
            ticks="outside",
            ticklen=3,
        ),
    )
    return fig


def _check_range(zmin, zmax, values: np.ndarray) -> tuple[float, float]:
    for value, name in ((zmin, "zmin"), (zmax, "zmax")):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float | np.integer | np.floating)
            or not math.isfinite(value)
        ):
            msg = f"{name} must be a finite number or None; got {value!r}."
            raise ValueError(msg)
    low = 0.0 if zmin is None else float(zmin)
    if zmax is None:
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else math.nan
        high = top if top > low else low + 1.0
    else:
        high = float(zmax)
    if not high > low:
        msg = f"zmax must be larger than zmin; got zmin={low!r}, zmax={high!r}."
        raise ValueError(msg)
    return low, high


def mapping(
    data: pd.DataFrame,
    width: int | None = None,
    height: int | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    colormap: str | Colormap = "Greens",
    sort_by_score: bool = True,
    backend: str = "plotly",
):
    """Heatmap of mapping scores: query clusters (rows) x reference clusters (columns).

    Each cell shows its score with two decimals, in black or white depending on the darkness
    of the cell.

    Parameters
    ----------
    data
        Mapping scores as returned by ``DatasetMap.compute_mapping()``: index = query clusters,
        columns = reference clusters, numbers (higher = closer). Not modified. For the default
        ``"mean"`` mapping read a column: each column sums to 1, and a value near 1 means the
        cells of that reference cluster receive their mass almost entirely from that query
        cluster. For ``"transported_mass"`` read a row: each row sums to 1, and a value near 1
        means the query cluster's cells are transported almost entirely onto that reference
        cluster (see docs/method.md#outputs).
    width, height
        Figure size in pixels, for both backends (as in upstream pairOT): a matplotlib figure
        is drawn at 100 dpi, so ``width=800, height=600`` gives an 8 x 6 inch figure of
        800 x 600 pixels. Accepted: 100 to 20,000 px, rounded to whole pixels; a smaller
        value such as ``width=8`` raises ``ValueError`` (sizes are not inches). ``None``
        (default) grows the figure with the number of clusters (about 40 px for plotly, 0.5
        inch = 50 px for matplotlib, per cluster) plus room for the labels.
    zmin, zmax
        Range of the colour scale. Defaults: 0 and the largest score (1 if no score is above
        ``zmin``).
    colormap
        A matplotlib colormap name or ``Colormap`` (default ``"Greens"``); used by both
        backends.
    sort_by_score
        Reorder rows and columns so that each query cluster's best match lies on a diagonal
        (see :func:`pairot.pl.order_by_score` for the exact rule). ``False`` keeps the order
        of ``data``.
    backend
        ``"plotly"`` (interactive, default) or ``"matplotlib"`` (static).

    Returns
    -------
    plotly.graph_objects.Figure or matplotlib.axes.Axes
        The plotly Figure, or the matplotlib Axes of the heatmap (``ax.set_title("...")``,
        ``ax.figure.savefig("mapping.png")``).

    Examples
    --------
    >>> ax = pr.pl.mapping(mapping, backend="matplotlib")  # doctest: +SKIP
    >>> ax.set_title("query vs reference")  # doctest: +SKIP
    """
    values = u.check_frame(data, "data")
    vmin, vmax = _check_range(zmin, zmax, values)
    cmap = u.get_cmap(colormap)
    return _heatmap(
        data,
        "data",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        colorbar_title="mapping score",
        width=width,
        height=height,
        backend=backend,
        sort_by_score=bool(sort_by_score),
    )


def _distance_heatmap(data, vmax: float, colorbar_title: str, width, height, backend: str):
    """A distance heatmap: red-yellow-green reversed on the fixed range 0 to ``vmax``."""
    return _heatmap(
        data,
        "data",
        cmap=u.get_cmap("RdYlGn_r"),
        vmin=0.0,
        vmax=vmax,
        colorbar_title=colorbar_title,
        width=width,
        height=height,
        backend=backend,
    )


def distance(
    data: pd.DataFrame,
    width: int | None = None,
    height: int | None = None,
    backend: str = "plotly",
):
    """Heatmap of cluster-to-cluster distances (``DatasetMap.compute_distance()``).

    Red-yellow-green reversed colour scale on the fixed range 0 (green, close) to 2 (red,
    far), values printed with two decimals.

    Parameters
    ----------
    data
        Distances, index = query clusters, columns = reference clusters. Not modified.
    width, height
        Figure size in pixels, for both backends (matplotlib draws at 100 dpi); 100 to 20,000
        px. ``None`` (default) grows with the number of clusters.
    backend
        ``"plotly"`` (default) or ``"matplotlib"``.

    Returns
    -------
    plotly.graph_objects.Figure or matplotlib.axes.Axes
    """
    return _distance_heatmap(data, 2.0, "distance", width, height, backend)


def label_distance(
    data: pd.DataFrame,
    width: int | None = None,
    height: int | None = None,
    backend: str = "plotly",
):
    """Heatmap of the label distance (``DatasetMap.label_distance``) between clusters.

    Red-yellow-green reversed colour scale on the fixed range 0 (shared marker genes) to 1
    (nothing shared), values printed with two decimals.

    Parameters
    ----------
    data
        Label distances, index = query clusters, columns = reference clusters. Not modified.
    width, height
        Figure size in pixels, for both backends (matplotlib draws at 100 dpi); 100 to 20,000
        px. ``None`` (default) grows with the number of clusters.
    backend
        ``"plotly"`` (default) or ``"matplotlib"``.

    Returns
    -------
    plotly.graph_objects.Figure or matplotlib.axes.Axes
    """
    return _distance_heatmap(data, 1.0, "label distance", width, height, backend)
