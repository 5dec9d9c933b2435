"""Sankey diagram: query clusters (left) to reference clusters (right)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import _utils as u
from ._fonts import build_with_fonts

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.axes import Axes

DISTANCE_MAX = 2.0
LINK_ALPHA = 0.7
NODE_COLOR = "#4d4d4d"
MISSING_COLOR = (0.6, 0.6, 0.6, 1.0)


@dataclass
class _Layout:
    """Which links are drawn and where the nodes go (shared by both backends).

    ``links`` has one row per drawn link: ``query``, ``reference`` (names), ``i``, ``j``
    (positions in the input), ``mapping``, ``distance``, ``rgba`` (a 4-tuple, alpha included).
    ``left`` / ``right`` are the input positions of the drawn query / reference clusters, top to
    bottom.
    """

    links: pd.DataFrame
    left: list[int]
    right: list[int]
    rows: list[str]
    cols: list[str]
    n_unlinked_query: int
    n_unlinked_reference: int


def _barycenter_order(nodes, neighbours, position) -> list[int]:
    """Order ``nodes`` by the weighted mean position of their neighbours (stable)."""

    def key(node):
        pairs = neighbours[node]
        total = sum(w for _, w in pairs)
        return sum(position[o] * w for o, w in pairs) / total

    return sorted(nodes, key=key)


def _layout(mapping_values, distance_values, rows, cols, threshold) -> _Layout:
    from matplotlib import colormaps

    cmap = colormaps["RdYlGn_r"]
    finite = np.isfinite(mapping_values)
    keep = finite & (np.where(finite, mapping_values, -np.inf) >= threshold)
    keep &= np.where(finite, mapping_values, 0.0) > 0
    ii, jj = np.nonzero(keep)
    values = mapping_values[ii, jj]
    dists = distance_values[ii, jj]

    by_query: dict[int, list[tuple[int, float]]] = {}
    by_ref: dict[int, list[tuple[int, float]]] = {}
    for i, j, v in zip(ii.tolist(), jj.tolist(), values.tolist()):
        by_query.setdefault(i, []).append((j, v))
        by_ref.setdefault(j, []).append((i, v))
    left = sorted(by_query)
    # Barycenter sweeps (query order fixed first) to limit link crossings.
    pos_left = {node: k for k, node in enumerate(left)}
    right = _barycenter_order(sorted(by_ref), by_ref, pos_left)
    pos_right = {node: k for k, node in enumerate(right)}
    left = _barycenter_order(left, by_query, pos_right)
    pos_left = {node: k for k, node in enumerate(left)}
    right = _barycenter_order(right, by_ref, pos_left)

    rgba = []
    for d in dists:
        if np.isfinite(d):
            r, g, b, _ = cmap(float(np.clip(d / DISTANCE_MAX, 0.0, 1.0)))
            rgba.append((r, g, b, LINK_ALPHA))
        else:
            rgba.append(MISSING_COLOR[:3] + (LINK_ALPHA,))
    links = pd.DataFrame(
        {
            "query": [rows[i] for i in ii],
            "reference": [cols[j] for j in jj],
            "i": ii,
            "j": jj,
            "mapping": values,
            "distance": dists,
            "rgba": rgba,
        }
    )
    return _Layout(
        links=links,
        left=left,
        right=right,
        rows=rows,
        cols=cols,
        n_unlinked_query=len(rows) - len(left),
        n_unlinked_reference=len(cols) - len(right),
    )


def _check_inputs(mapping, distance, filter_threshold, backend):
    m = u.check_frame(mapping, "cluster_mapping")
    d = u.check_frame(distance, "cluster_distance")
    u.check_backend(backend)
    if (
        isinstance(filter_threshold, bool)
        or not isinstance(filter_threshold, int | float | np.integer | np.floating)
        or not math.isfinite(filter_threshold)
    ):
        msg = f"filter_threshold must be a finite number; got {filter_threshold!r}."
        raise ValueError(msg)
    for frame, name in ((mapping, "cluster_mapping"), (distance, "cluster_distance")):
        for axis, labels in (("index", frame.index), ("columns", frame.columns)):
            if labels.has_duplicates:
                dup = labels[labels.duplicated()].unique().tolist()[:5]
                msg = f"{name}.{axis} has duplicated cluster names {dup}; names must be unique."
                raise ValueError(msg)
    for axis in ("index", "columns"):
        a, b = getattr(mapping, axis), getattr(distance, axis)
        if set(a) != set(b):
            only_m = [x for x in a if x not in set(b)][:5]
            only_d = [x for x in b if x not in set(a)][:5]
            msg = (
                f"cluster_mapping and cluster_distance must have the same clusters; their "
                f"{axis} differ (only in cluster_mapping: {only_m}, only in cluster_distance: "
                f"{only_d}). Pass the two tables of the same DatasetMap."
            )
            raise ValueError(msg)
    # align distance to mapping's order (same names, possibly reordered)
    row_pos = pd.Index(distance.index).get_indexer(mapping.index)
    col_pos = pd.Index(distance.columns).get_indexer(mapping.columns)
    return m, d[np.ix_(row_pos, col_pos)]


def _title_note(layout: _Layout, threshold: float) -> str:
    note = f"links: mapping score ≥ {threshold:g} (width); colour: distance"
    parts = []
    if layout.n_unlinked_query:
        parts.append(f"{layout.n_unlinked_query} query")
    if layout.n_unlinked_reference:
        parts.append(f"{layout.n_unlinked_reference} reference")
    if parts:
        note += f"; not shown (no link): {' and '.join(parts)} cluster(s)"
    return note


def _empty_note(threshold: float) -> str:
    return (
        f"No pair of clusters has a mapping score ≥ {threshold:g}.\n"
        "Lower filter_threshold to show links."
    )


def sankey(
    cluster_mapping: pd.DataFrame,
    cluster_distance: pd.DataFrame,
    filter_threshold: float = 0.25,
    width: int | None = None,
    height: int | None = None,
    backend: str = "plotly",
):
    """Sankey diagram from query clusters (left) to reference clusters (right).

    One link per cluster pair whose mapping score is at least ``filter_threshold`` (and
    above 0). Link width is the mapping score; link colour is the distance on the reversed
    red-yellow-green scale from 0 (green, close) to 2 (red, far), explained by a colour bar.
    Only clusters with at least one link are drawn (a caption counts the others). Nodes are
    ordered to limit crossings (barycenter heuristic). With no link above the threshold the
    figure holds a note instead of a diagram.

    Parameters
    ----------
    cluster_mapping
        Mapping scores from ``DatasetMap.compute_mapping()`` (query x reference). Not modified.
        With the default ``"mean"`` mapping a link's width is the share of the reference
        cluster's incoming mass that comes from the query cluster (the links into a
        reference cluster sum to at most 1); with ``"transported_mass"`` it is the share of
        the query cluster's mass sent to the reference cluster (see docs/method.md#outputs).
    cluster_distance
        Distances from ``DatasetMap.compute_distance()``, with the same clusters as
        ``cluster_mapping`` (order may differ). Not modified.
    filter_threshold
        Minimal mapping score for a link (default 0.25).
    width, height
        Figure size in pixels, for both backends (as in upstream pairOT; matplotlib draws at
        100 dpi, so ``width=800`` is 8 inches); 100 to 20,000 px, a smaller value such as
        ``width=8`` raises ``ValueError``. ``None`` (default) grows with the number of clusters
        and the length of their names.
    backend
        ``"plotly"`` (``go.Sankey``, default) or ``"matplotlib"`` (bars and filled bezier
        bands).

    Returns
    -------
    plotly.graph_objects.Figure or matplotlib.axes.Axes

    Raises
    ------
    TypeError
        If ``cluster_mapping`` or ``cluster_distance`` is not a DataFrame of numbers.
    ValueError
        If they hold different clusters, on an unknown ``backend``, or on a ``width`` /
        ``height`` outside 100 to 20,000 pixels.

    Examples
    --------
    >>> pr.pl.sankey(
    ...     cluster_mapping=mapping, cluster_distance=distance, filter_threshold=0.1
    ... )  # doctest: +SKIP
    >>> ax = pr.pl.sankey(
    ...     mapping, distance, width=800, height=600, backend="matplotlib"
    ... )  # doctest: +SKIP
    """
    m, d = _check_inputs(cluster_mapping, cluster_distance, filter_threshold, backend)
    width = u.check_size(width, "width")
    height = u.check_size(height, "height")
    layout = _layout(
        m,
        d,
        u.labels_of(cluster_mapping.index),
        u.labels_of(cluster_mapping.columns),
        float(filter_threshold),
    )
    if backend == "matplotlib":
        texts = [*layout.rows, *layout.cols, _title_note(layout, float(filter_threshold))]
        return build_with_fonts(
            texts, lambda: _sankey_matplotlib(layout, float(filter_threshold), width, height)
        )
    return _sankey_plotly(layout, float(filter_threshold), width, height)


def _node_positions(layout: _Layout, extent: float, gap: float):
    """Node spans ``(top, bottom)`` on each side, in the units of ``extent`` (top = 0).

    Both sides share one value-to-length scale, chosen so that the fuller side fills
    ``extent``; each side is centred vertically.
    """
    links = layout.links
    left_totals = links.groupby("i")["mapping"].sum()
    right_totals = links.groupby("j")["mapping"].sum()
    sides = [
        [float(left_totals[n]) for n in layout.left],
        [float(right_totals[n]) for n in layout.right],
    ]
    scale = min((extent - (len(s) - 1) * gap) / sum(s) for s in sides)
    spans = []
    for totals in sides:
        used = scale * sum(totals) + gap * (len(totals) - 1)
        y = (extent - used) / 2
        side = []
        for t in totals:
            side.append((y, y + scale * t))
            y += scale * t + gap
        spans.append(side)
    return spans[0], spans[1], scale


def _link_spans(layout: _Layout, left_spans, right_spans, scale):
    """Each link's ``(top, bottom)`` at its query end and at its reference end.

    Within a node, links are stacked in the order of the node at their other end, which keeps
    bands from crossing inside a node.
    """
    links = layout.links
    pos_left = {n: k for k, n in enumerate(layout.left)}
    pos_right = {n: k for k, n in enumerate(layout.right)}
    at_left = _stack(links, "i", "j", left_spans, pos_left, pos_right, scale)
    at_right = _stack(links, "j", "i", right_spans, pos_right, pos_left, scale)
    return at_left, at_right


def _stack(links, end: str, other: str, spans, pos_end: dict, pos_other: dict, scale) -> dict:
    """The links' ``(top, bottom)`` at their ``end`` (``"i"``: query, ``"j"``: reference):
    from the top of each node, in the order of the nodes at their ``other`` end."""
    at = {}
    for node, group in links.groupby(end):
        y = spans[pos_end[node]][0]
        for idx in sorted(group.index, key=lambda r: pos_other[links.at[r, other]]):
            h = scale * links.at[idx, "mapping"]
            at[idx] = (y, y + h)
            y += h
    return at


# ----------------------------------------------------------------------------- matplotlib


def _band_path(x0, x1, top0, bottom0, top1, bottom1):
    from matplotlib.path import Path

    xm = (x0 + x1) / 2
    vertices = [
        (x0, top0),
        (xm, top0),
        (xm, top1),
        (x1, top1),
        (x1, bottom1),
        (xm, bottom1),
        (xm, bottom0),
        (x0, bottom0),
        (x0, top0),
    ]
    codes = [
        Path.MOVETO,
        Path.CURVE4,
        Path.CURVE4,
        Path.CURVE4,
        Path.LINETO,
        Path.CURVE4,
        Path.CURVE4,
        Path.CURVE4,
        Path.CLOSEPOLY,
    ]
    return Path(vertices, codes)


def _sankey_matplotlib(layout: _Layout, threshold: float, width, height) -> Axes:
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import PathPatch, Rectangle

    if layout.links.empty:
        fig_w = 6.0 if width is None else width / u.MPL_DPI
        fig_h = 3.0 if height is None else height / u.MPL_DPI
        fig = plt.figure(figsize=(fig_w, fig_h), dpi=u.MPL_DPI)
        ax = fig.add_axes((0.05, 0.05, 0.9, 0.75))
        ax.set_axis_off()
        ax.text(0.5, 0.5, _empty_note(threshold), ha="center", va="center", fontsize=11)
        return ax

    n_nodes = max(len(layout.left), len(layout.right))
    # geometry in inches; the Axes uses inches as data units so the bands keep their shape
    gap = 0.22
    bar = 0.14
    flow_h = max(2.5, n_nodes * u.MPL_CELL)
    flow_w = max(4.0, 0.45 * flow_h)
    # the size set here is provisional: _fit_sankey sets the final one
    fig = plt.figure(figsize=(10.0, flow_h + 2.0), dpi=u.MPL_DPI)
    ax = fig.add_axes((0.3, 0.3, 0.4, 0.4))
    cax = fig.add_axes((0.3, 0.1, 0.4, 0.03))

    left_spans, right_spans, scale = _node_positions(layout, flow_h, gap)
    at_left, at_right = _link_spans(layout, left_spans, right_spans, scale)
    links = layout.links
    for idx in links.index:
        t0, b0 = at_left[idx]
        t1, b1 = at_right[idx]
        patch = PathPatch(
            _band_path(bar, flow_w - bar, t0, b0, t1, b1),
            facecolor=links.at[idx, "rgba"],
            edgecolor="none",
            label=f"{links.at[idx, 'query']} -> {links.at[idx, 'reference']}",
        )
        ax.add_patch(patch)
    for names, spans, x, side in (
        (layout.left, left_spans, 0.0, "left"),
        (layout.right, right_spans, flow_w - bar, "right"),
    ):
        labels = layout.rows if side == "left" else layout.cols
        for node, (top, bottom) in zip(names, spans):
            ax.add_patch(
                Rectangle((x, top), bar, bottom - top, facecolor=NODE_COLOR, edgecolor="none")
            )
            ax.annotate(
                labels[node],
                xy=(x if side == "left" else x + bar, (top + bottom) / 2),
                xytext=(-5 if side == "left" else 5, 0),
                textcoords="offset points",
                ha="right" if side == "left" else "left",
                va="center",
                fontsize=u.MPL_FONT,
                annotation_clip=False,
            )
    ax.set_xlim(0, flow_w)
    header = 0.3  # room inside the Axes, above the nodes, for the side headers
    ax.set_ylim(flow_h, -header)
    ax.set_axis_off()
    ax.text(0.0, -0.06, "query", ha="left", va="bottom", fontsize=u.MPL_FONT + 1, weight="bold")
    ax.text(
        flow_w, -0.06, "reference", ha="right", va="bottom", fontsize=u.MPL_FONT + 1, weight="bold"
    )

    sm = ScalarMappable(norm=Normalize(0.0, DISTANCE_MAX), cmap="RdYlGn_r")
    colorbar = fig.colorbar(sm, cax=cax, orientation="horizontal", alpha=LINK_ALPHA)
    colorbar.set_label("distance (link colour)", fontsize=u.MPL_FONT)
    colorbar.ax.tick_params(labelsize=u.MPL_FONT - 1)
    note = fig.text(0.5, 0.02, _title_note(layout, threshold), ha="center", fontsize=u.MPL_FONT - 1)

    _fit_sankey(fig, ax, cax, note, flow_w, flow_h + header, width, height)
    return ax


def _fit_sankey(fig, ax, cax, note, flow_w, flow_h, width, height):
    """Size the figure and place the Axes, colour bar and caption so that every label fits.

    ``flow_w`` / ``flow_h`` are the diagram's natural size in inches; ``width`` / ``height``
    are pixels (``None``: automatic), converted to inches with the figure's dpi.
    """
    renderer = u.get_renderer(fig)
    dpi = fig.dpi
    box = ax.get_window_extent(renderer)
    tight = ax.get_tightbbox(renderer)
    pad = 0.15
    left = max(box.x0 - tight.x0, 0) / dpi + pad
    right = max(tight.x1 - box.x1, 0) / dpi + pad
    top = max(tight.y1 - box.y1, 0) / dpi + u.MPL_TITLE_SPACE
    ctight = cax.get_tightbbox(renderer)
    cbox = cax.get_window_extent(renderer)
    note_h = note.get_window_extent(renderer).height / dpi
    note_w = note.get_window_extent(renderer).width / dpi
    bar_h = 0.12
    below_bar = max(cbox.y0 - ctight.y0, 0) / dpi
    bottom = 0.25 + bar_h + below_bar + 0.1 + note_h + pad

    if width is None:
        fig_w = max(left + flow_w + right, note_w + 2 * pad, u.MPL_MIN_WIDTH)
        ax_w = flow_w
        left += (fig_w - left - ax_w - right) / 2
    else:
        fig_w = width / dpi
        ax_w = max(fig_w - left - right, 0.1 * fig_w)
    if height is None:
        fig_h = top + flow_h + bottom
        ax_h = flow_h
    else:
        fig_h = height / dpi
        ax_h = max(fig_h - top - bottom, 0.1 * fig_h)

    fig.set_size_inches(fig_w, fig_h)
    ax.set_position((left / fig_w, bottom / fig_h, ax_w / fig_w, ax_h / fig_h))
    cbar_w = min(3.0, ax_w)
    cax.set_position(
        (
            (left + (ax_w - cbar_w) / 2) / fig_w,
            (bottom - 0.25 - bar_h) / fig_h,
            cbar_w / fig_w,
            bar_h / fig_h,
        )
    )
    note.set_position((0.5, pad / fig_h))


# ----------------------------------------------------------------------------- plotly


def _sankey_plotly(layout: _Layout, threshold: float, width, height) -> go.Figure:
    import plotly.graph_objects as go
    from matplotlib import colormaps

    if layout.links.empty:
        fig = go.Figure()
        fig.add_annotation(
            text=_empty_note(threshold).replace("\n", "<br>"),
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            showarrow=False,
            font=dict(size=14),
        )
        fig.update_layout(
            width=round(width or 600),
            height=round(height or 300),
            xaxis=dict(visible=False),
            yaxis=dict(visible=False),
            plot_bgcolor="white",
            paper_bgcolor="white",
        )
        return fig

    links = layout.links
    n_nodes = max(len(layout.left), len(layout.right))
    pad = 18  # pixels between nodes, more than a label's height
    thickness = 14
    flow_h = max(250, n_nodes * u.PX_CELL)
    flow_w = max(420, 0.45 * flow_h)
    left_m = round(u.longest([layout.rows[i] for i in layout.left]) * u.PX_CHAR + 20)
    right_m = round(u.longest([layout.cols[j] for j in layout.right]) * u.PX_CHAR + 20)
    top_m, bottom_m = u.PX_TITLE_SPACE + 20, 120
    fig_w = width or max(left_m + flow_w + right_m, u.PX_MIN_WIDTH)
    fig_h = height or max(top_m + flow_h + bottom_m, u.PX_MIN_HEIGHT)
    plot_h = max(fig_h - top_m - bottom_m, 50)

    # Node positions: plotly reads node.y as the node's centre (fraction of the plot height)
    # and scales values like d3-sankey: the fuller column fills the height minus the pads.
    left_spans, right_spans, _ = _node_positions(layout, float(plot_h), float(pad))
    n_left = len(layout.left)
    node_index = {("q", i): k for k, i in enumerate(layout.left)}
    node_index.update({("r", j): n_left + k for k, j in enumerate(layout.right)})
    names = [layout.rows[i] for i in layout.left] + [layout.cols[j] for j in layout.right]
    spans = left_spans + right_spans
    eps = 1e-3
    node_x = [eps] * n_left + [1 - eps] * len(layout.right)
    node_y = [float(np.clip((t + b) / 2 / plot_h, eps, 1 - eps)) for t, b in spans]

    link_colors = [u.rgba_string(c) for c in links["rgba"]]
    customdata = [
        [u.plotly_text(q), u.plotly_text(r), float(m), (f"{d:.3f}" if np.isfinite(d) else "n/a")]
        for q, r, m, d in zip(
            links["query"], links["reference"], links["mapping"], links["distance"]
        )
    ]
    trace = go.Sankey(
        arrangement="fixed",
        node=dict(
            label=[""] * len(names),
            customdata=[u.plotly_text(name) for name in names],
            hovertemplate="%{customdata}<br>total mapping: %{value:.2f}<extra></extra>",
            x=node_x,
            y=node_y,
            pad=pad,
            thickness=thickness,
            color=NODE_COLOR,
            line=dict(width=0),
        ),
        link=dict(
            source=[node_index[("q", i)] for i in links["i"]],
            target=[node_index[("r", j)] for j in links["j"]],
            value=[float(v) for v in links["mapping"]],
            color=link_colors,
            customdata=customdata,
            hovertemplate=(
                "%{customdata[0]} → %{customdata[1]}<br>mapping: %{customdata[2]:.3f}"
                "<br>distance: %{customdata[3]}<extra></extra>"
            ),
        ),
    )
    cmap = colormaps["RdYlGn_r"]
    scale = [
        [float(t), u.rgba_string(cmap(float(t)), alpha=LINK_ALPHA)] for t in np.linspace(0, 1, 33)
    ]
    colorbar_trace = go.Scatter(
        x=[None],
        y=[None],
        mode="markers",
        marker=dict(
            colorscale=scale,
            cmin=0.0,
            cmax=DISTANCE_MAX,
            color=[0.0],
            showscale=True,
            colorbar=dict(
                title=dict(text="distance (link colour)", side="top"),
                orientation="h",
                x=0.5,
                xanchor="center",
                y=-20 / plot_h,
                yanchor="top",
                len=min(300, flow_w) / max(fig_w - left_m - right_m, 1),
                thickness=12,
            ),
        ),
        hoverinfo="skip",
        showlegend=False,
    )
    fig = go.Figure([trace, colorbar_trace])
    annotations = []
    for k, name in enumerate(names):
        is_left = k < n_left
        annotations.append(
            dict(
                text=u.plotly_text(name),
                x=0 if is_left else 1,
                y=1 - node_y[k],
                xref="paper",
                yref="paper",
                xanchor="right" if is_left else "left",
                xshift=-(thickness / 2 + 5) if is_left else thickness / 2 + 5,
                yanchor="middle",
                showarrow=False,
                font=dict(size=u.PX_FONT),
            )
        )
    for x, text, anchor in ((0, "query", "left"), (1, "reference", "right")):
        annotations.append(
            dict(
                text=f"<b>{text}</b>",
                x=x,
                y=1,
                xref="paper",
                yref="paper",
                xanchor=anchor,
                yanchor="bottom",
                yshift=6,
                showarrow=False,
            )
        )
    annotations.append(
        dict(
            text=_title_note(layout, threshold),
            x=0.5,
            y=0,
            xref="paper",
            yref="paper",
            xanchor="center",
            yanchor="top",
            yshift=-(bottom_m - 22),
            showarrow=False,
            font=dict(size=u.PX_FONT - 1, color="#555555"),
        )
    )
    fig.update_layout(
        width=round(fig_w),
        height=round(fig_h),
        margin=dict(l=left_m, r=right_m, t=top_m, b=bottom_m),
        annotations=annotations,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        plot_bgcolor="white",
        paper_bgcolor="white",
        font=dict(size=u.PX_FONT),
    )
    return fig
