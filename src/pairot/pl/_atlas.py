"""The atlas picture: every study a column, its clusters as boxes, the harmonized links as
lines, each harmonized group in one colour (the table of ``AtlasMap.harmonize``)."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._atlas_table import JOIN, NONE
from . import _utils as u
from ._fonts import build_with_fonts

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.axes import Axes

LINK_COLUMNS = ("study_1", "cluster_1", "study_2", "cluster_2", "kept")
#: Face colour of a type that only one study has (a group of one cluster).
UNIQUE_COLOR = "#ffffff"
UNIQUE_EDGE = "#57606a"
DROPPED_COLOR = "#8c8c8c"
LINKS = ("all", "neighbours")

# geometry, in inches (matplotlib) and scaled to pixels for plotly
_ROW = 0.34  # one harmonized row
_PAD = 0.05  # free space above and below a box inside its rows
_GAP = 1.3  # between two study columns (where the links run)
_HEAD = 0.45  # study names above the columns
_FOOT = 0.45  # caption below
_CHAR = 0.068  # one character of a 8-point label


def _palette(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` qualitative colours (tab20 and then tab20b, repeated when more are needed)."""
    from matplotlib import colormaps

    base = [colormaps["tab20"](k) for k in (*range(0, 20, 2), *range(1, 20, 2))]
    base += [colormaps["tab20b"](k) for k in range(20)]
    return [tuple(map(float, base[k % len(base)])) for k in range(n)]


@dataclass
class AtlasLayout:
    """Where the picture puts everything (shared by both backends; tests read it).

    ``nodes``: one row per box, columns ``study``, ``cluster``, ``x`` (column centre),
    ``y0``, ``y1`` (top and bottom, rows from 0 at the top), ``group``, ``unique``, ``rgba``;
    a cluster covering rows that are not next to each other has one box per run of rows.
    ``links``: one row per drawn line, ``study_1``, ``cluster_1``, ``study_2``,
    ``cluster_2``, ``x1``, ``y1``, ``x2``, ``y2``, ``kept`` (False: dropped by a no-match
    flag), ``group``, ``rgba``. ``studies`` the columns, ``n_rows`` the table's rows.
    """

    nodes: pd.DataFrame
    links: pd.DataFrame
    studies: list[str]
    n_rows: int
    box_width: float
    n_hidden: int
    n_groups: int


def _study_columns(table: pd.DataFrame) -> list[str]:
    missing = [c for c in ("relation", "group") if c not in table.columns]
    if missing:
        msg = (
            f"harmonization must be the table of AtlasMap.harmonize() (or harmonization.csv); "
            f"it has no column(s) {missing}. Pass atlas.harmonize() or pd.read_csv(... "
            "'harmonization.csv')."
        )
        raise ValueError(msg)
    studies = list(table.columns[: list(table.columns).index("relation")])
    if len(studies) < 2:
        msg = (
            f"harmonization has {len(studies)} study column(s) before 'relation' ({studies}); "
            "the table of AtlasMap.harmonize() has one per study, at least two."
        )
        raise ValueError(msg)
    return [str(s) for s in studies]


def _check_inputs(harmonization, links, which: str, show_dropped, backend):
    if hasattr(harmonization, "harmonize") and not isinstance(harmonization, pd.DataFrame):
        if links is None:
            links = harmonization.links()
        harmonization = harmonization.harmonize()
    if not isinstance(harmonization, pd.DataFrame):
        msg = (
            "harmonization must be the DataFrame of AtlasMap.harmonize() or an AtlasMap; got "
            f"{type(harmonization).__name__}."
        )
        raise TypeError(msg)
    if len(harmonization) == 0:
        msg = "harmonization is empty; it needs at least one row (AtlasMap.harmonize())."
        raise ValueError(msg)
    studies = _study_columns(harmonization)
    if links is None:
        msg = (
            "links is None with a harmonization table: pass links=atlas.links() (with the "
            "thresholds given to harmonize()) or links=pd.read_csv('links.csv'), or pass the "
            "AtlasMap itself."
        )
        raise ValueError(msg)
    if not isinstance(links, pd.DataFrame):
        msg = f"links must be a DataFrame (links.csv); got {type(links).__name__}."
        raise TypeError(msg)
    missing = [c for c in LINK_COLUMNS if c not in links.columns]
    if missing:
        msg = f"links has no column(s) {missing}; pass atlas.links() or links.csv."
        raise ValueError(msg)
    unknown = sorted(set(map(str, links["study_1"])) | set(map(str, links["study_2"])))
    unknown = [s for s in unknown if s not in studies]
    if unknown:
        msg = f"links names studies {unknown} that are not columns of harmonization {studies}."
        raise ValueError(msg)
    if which not in LINKS:
        msg = f"links_between must be one of {list(LINKS)}; got {which!r}."
        raise ValueError(msg)
    if not isinstance(show_dropped, bool | np.bool_):
        msg = f"show_dropped must be True or False; got {show_dropped!r}."
        raise TypeError(msg)
    u.check_backend(backend)
    return harmonization, links, studies


def _cells(table: pd.DataFrame, study: str) -> list[list[str]]:
    """Each row's clusters of ``study`` (none, one, or several joined ones)."""
    joined = (
        table["joined"].fillna("").astype(str).map(lambda t: {s.strip() for s in t.split(",")})
        if "joined" in table.columns
        else pd.Series([set()] * len(table), index=table.index)
    )
    out = []
    for cell, join in zip(table[study].tolist(), joined.tolist(), strict=True):
        if cell is None or (isinstance(cell, float) and math.isnan(cell)) or str(cell) == NONE:
            out.append([])
        elif study in join:
            out.append(str(cell).split(JOIN))
        else:
            out.append([str(cell)])
    return out


def _runs(slots: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Touching or overlapping ``(top, bottom)`` slots merged into runs."""
    out: list[list[float]] = []
    for top, bottom in sorted(slots):
        if out and top <= out[-1][1] + 1e-9:
            out[-1][1] = max(out[-1][1], bottom)
        else:
            out.append([top, bottom])
    return [(a, b) for a, b in out]


def _to_bool(values: pd.Series) -> np.ndarray:
    return np.array(
        [v if isinstance(v, bool | np.bool_) else str(v).strip().lower() == "true" for v in values]
    )


def atlas_layout(
    harmonization: pd.DataFrame,
    links: pd.DataFrame,
    studies: list[str],
    *,
    links_between: str = "all",
    show_dropped: bool = True,
) -> AtlasLayout:
    """The boxes and lines of :func:`atlas` (inputs checked)."""
    table = harmonization.reset_index(drop=True)
    groups = table["group"].tolist()
    group_order = list(dict.fromkeys(groups))
    size = {}
    for study in studies:
        for k, cell in enumerate(_cells(table, study)):
            for cluster in cell:
                size.setdefault(groups[k], set()).add((study, cluster))
    unique_groups = {g for g in group_order if len(size.get(g, ())) <= 1}
    colored = [g for g in group_order if g not in unique_groups]
    colors = dict(zip(colored, _palette(len(colored)), strict=True))

    width = max(
        1.5,
        _CHAR * max(len(c) for s in studies for cell in _cells(table, s) for c in cell) + 0.3,
    )
    x_of = {s: k * (width + _GAP) + width / 2 for k, s in enumerate(studies)}
    nodes = []
    slot: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for study in studies:
        where: dict[str, list[tuple[float, float]]] = {}
        for k, cell in enumerate(_cells(table, study)):
            for part, cluster in enumerate(cell):
                top = k + part / len(cell)
                bottom = k + (part + 1) / len(cell)
                where.setdefault(cluster, []).append((top, bottom))
                slot.setdefault((study, cluster), {})[k] = (top, bottom)
        for cluster, slots in where.items():
            group = groups[min(int(t) for t, _ in slots)]
            unique = group in unique_groups
            for top, bottom in _runs(slots):
                pad = min(_PAD / _ROW, 0.15 * (bottom - top))
                nodes.append(
                    {
                        "study": study,
                        "cluster": cluster,
                        "x": x_of[study],
                        "y0": top + pad,
                        "y1": bottom - pad,
                        "group": group,
                        "unique": unique,
                        "rgba": _rgba(UNIQUE_COLOR) if unique else colors[group],
                    }
                )
    node_frame = pd.DataFrame(
        nodes, columns=["study", "cluster", "x", "y0", "y1", "group", "unique", "rgba"]
    )
    group_of = {(r.study, r.cluster): r.group for r in node_frame.itertuples(index=False)}
    position = {s: k for k, s in enumerate(studies)}
    drawn, hidden = [], 0
    kept = _to_bool(links["kept"])
    for row, keep in zip(links.itertuples(index=False), kept, strict=True):
        s1, c1, s2, c2 = str(row.study_1), str(row.cluster_1), str(row.study_2), str(row.cluster_2)
        if (s1, c1) not in slot or (s2, c2) not in slot:
            hidden += 1  # a cluster not in the table (another table's links)
            continue
        if not keep and not show_dropped:
            continue
        if links_between == "neighbours" and abs(position[s1] - position[s2]) != 1:
            hidden += 1
            continue
        if position[s1] > position[s2]:
            s1, c1, s2, c2 = s2, c2, s1, c1
        shared = sorted(set(slot[(s1, c1)]) & set(slot[(s2, c2)]))
        k1 = shared[0] if shared else min(slot[(s1, c1)])
        k2 = shared[0] if shared else min(slot[(s2, c2)])
        y1 = sum(slot[(s1, c1)][k1]) / 2
        y2 = sum(slot[(s2, c2)][k2]) / 2
        group = group_of[(s1, c1)]
        drawn.append(
            {
                "study_1": s1,
                "cluster_1": c1,
                "study_2": s2,
                "cluster_2": c2,
                "x1": x_of[s1] + width / 2,
                "y1": y1,
                "x2": x_of[s2] - width / 2,
                "y2": y2,
                "kept": bool(keep),
                "group": group,
                "rgba": colors.get(group, _rgba(UNIQUE_EDGE)) if keep else _rgba(DROPPED_COLOR),
            }
        )
    link_frame = pd.DataFrame(
        drawn,
        columns=[
            "study_1",
            "cluster_1",
            "study_2",
            "cluster_2",
            "x1",
            "y1",
            "x2",
            "y2",
            "kept",
            "group",
            "rgba",
        ],
    )
    return AtlasLayout(
        nodes=node_frame,
        links=link_frame,
        studies=studies,
        n_rows=len(table),
        box_width=width,
        n_hidden=hidden,
        n_groups=len(group_order),
    )


def _rgba(color: str) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return tuple(map(float, to_rgba(color)))


def _s_curve(x1, y1, x2, y2, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A smooth S-curve (cubic bezier with horizontal ends) from ``(x1, y1)`` to ``(x2, y2)``."""
    t = np.linspace(0.0, 1.0, n)
    xm = (x1 + x2) / 2
    bx = (1 - t) ** 3 * x1 + 3 * (1 - t) ** 2 * t * xm + 3 * (1 - t) * t**2 * xm + t**3 * x2
    by = (1 - t) ** 3 * y1 + 3 * (1 - t) ** 2 * t * y1 + 3 * (1 - t) * t**2 * y2 + t**3 * y2
    return bx, by


def _path(x1, y1, x2, y2, box_width: float) -> tuple[np.ndarray, np.ndarray]:
    """A link's line: an S-curve between neighbouring columns; between columns further
    apart, down into the free space under the first end's row, along it past the columns in
    between (through the gaps between their boxes), and up to the other end."""
    if x2 - x1 <= _GAP + 1e-9:
        return _s_curve(x1, y1, x2, y2)
    lane = math.floor(y1) + 1.0  # the boundary below the first end's row
    a = x1 + _GAP / 2
    b = x2 - _GAP / 2
    xs1, ys1 = _s_curve(x1, y1, a, lane)
    xs2, ys2 = _s_curve(b, lane, x2, y2)
    return np.concatenate([xs1, xs2]), np.concatenate([ys1, ys2])


def _caption(layout: AtlasLayout) -> str:
    n_types = int(layout.nodes.drop_duplicates(["study", "cluster"]).shape[0])
    n_unique = int(
        layout.nodes.loc[layout.nodes["unique"]].drop_duplicates(["study", "cluster"]).shape[0]
    )
    kept = int(layout.links["kept"].sum())
    dropped = len(layout.links) - kept
    text = (
        f"{n_types} clusters, {layout.n_rows} harmonized rows in {layout.n_groups} groups "
        f"(one colour each; white boxes: {n_unique} type(s) of one study only); {kept} links"
    )
    if dropped:
        text += f", {dropped} dropped by a no-match flag (grey, dashed)"
    if layout.n_hidden:
        text += f"; {layout.n_hidden} links between non-neighbouring studies not drawn"
    return text


def atlas(
    harmonization,
    links: pd.DataFrame | None = None,
    *,
    links_between: str = "all",
    show_dropped: bool = True,
    width: int | None = None,
    height: int | None = None,
    backend: str = "plotly",
):
    """The harmonized cell types of many studies at a glance.

    Each study is a column (in the table's order), each of its clusters a box spanning the
    harmonized rows it covers (a coarse cluster spans the rows of its finer partners; clusters
    joined as ``"x | y"`` share their row), and each link between two clusters (the matches
    that made the table) a line. All boxes and lines of one harmonized group have one colour;
    a type that only one study has (``relation == "unique"``) is a white box with a dashed
    outline, and a link dropped because its pair flags a cluster as without a match is a grey
    dashed line.

    Parameters
    ----------
    harmonization
        The table of :meth:`pairot.tl.AtlasMap.harmonize` (or ``harmonization.csv`` of
        ``pairot atlas``), or an ``AtlasMap`` (its ``harmonize()`` is drawn). Not modified.
    links
        The candidate links (:meth:`pairot.tl.AtlasMap.links`, ``links.csv``); required with
        a table, ``None`` with an ``AtlasMap``: its ``links()``.
    links_between
        ``"all"`` (default): every link, those between studies that are not neighbours as
        longer curves; ``"neighbours"``: only links between neighbouring columns.
    show_dropped
        Draw the links dropped by a no-match flag (grey, dashed; default True).
    width, height
        Figure size in pixels for both backends (100 to 20,000; ``None``: grows with the
        studies, the rows and the longest cluster name).
    backend
        ``"plotly"`` (default) or ``"matplotlib"``.

    Returns
    -------
    plotly.graph_objects.Figure or matplotlib.axes.Axes
        With matplotlib, every box is a ``Rectangle`` whose ``gid`` is
        ``"node:<study>:<cluster>"`` and every line a ``Line2D`` with ``gid``
        ``"link:..."`` (kept) or ``"dropped:..."``; with plotly, boxes are layout shapes
        named so and lines scatter traces named so.

    Examples
    --------
    >>> table = atlas_map.harmonize()  # doctest: +SKIP
    >>> pr.pl.atlas(table, backend="matplotlib")  # doctest: +SKIP
    """
    table, link_table, studies = _check_inputs(
        harmonization, links, links_between, show_dropped, backend
    )
    width = u.check_size(width, "width")
    height = u.check_size(height, "height")
    layout = atlas_layout(
        table, link_table, studies, links_between=links_between, show_dropped=show_dropped
    )
    if backend == "matplotlib":
        texts = [*studies, *layout.nodes["cluster"].tolist(), _caption(layout)]
        return build_with_fonts(texts, lambda: _atlas_matplotlib(layout, width, height))
    return _atlas_plotly(layout, width, height)


def _extent(layout: AtlasLayout) -> tuple[float, float]:
    """The picture's data extent in inches: width, height (rows + head + caption)."""
    n = len(layout.studies)
    return n * layout.box_width + (n - 1) * _GAP, layout.n_rows * _ROW


def _atlas_matplotlib(layout: AtlasLayout, width, height) -> Axes:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    data_w, data_h = _extent(layout)
    fig_w = data_w + 0.4 if width is None else width / u.MPL_DPI
    caption = textwrap.fill(_caption(layout), width=max(30, int(fig_w / 0.058)))
    foot = 0.2 + 0.16 * (caption.count("\n") + 1)
    fig_h = data_h + _HEAD + foot if height is None else height / u.MPL_DPI
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=u.MPL_DPI)
    left = 0.2 / fig_w if width is None else 0.02
    ax = fig.add_axes((left, foot / fig_h, 1 - 2 * left, 1 - (_HEAD + foot) / fig_h))
    ax.set_xlim(-0.05, data_w + 0.05)
    ax.set_ylim(layout.n_rows, 0)  # row 0 at the top
    ax.set_axis_off()
    scale = _ROW  # rows -> inches for the label size
    font = max(5.0, min(u.MPL_FONT - 1, 72 * scale * 0.55))
    for row in layout.links.itertuples(index=False):
        xs, ys = _path(row.x1, row.y1, row.x2, row.y2, layout.box_width)
        ax.plot(
            xs,
            ys,
            color=row.rgba,
            linewidth=1.6 if row.kept else 1.0,
            linestyle="-" if row.kept else "--",
            alpha=0.85,
            zorder=1,
            gid=f"{'link' if row.kept else 'dropped'}:{row.study_1}:{row.cluster_1}"
            f"--{row.study_2}:{row.cluster_2}",
        )
    for row in layout.nodes.itertuples(index=False):
        ax.add_patch(
            Rectangle(
                (row.x - layout.box_width / 2, row.y0),
                layout.box_width,
                row.y1 - row.y0,
                facecolor=row.rgba,
                edgecolor=UNIQUE_EDGE if row.unique else "#3d3d3d",
                linestyle="--" if row.unique else "-",
                linewidth=1.0,
                zorder=2,
                gid=f"node:{row.study}:{row.cluster}",
            )
        )
        rgba = np.array([row.rgba])
        ax.text(
            row.x,
            (row.y0 + row.y1) / 2,
            row.cluster,
            ha="center",
            va="center",
            fontsize=font,
            color=u.text_colors(rgba)[0],
            zorder=3,
            clip_on=True,
        )
    for study in layout.studies:
        x = layout.nodes.loc[layout.nodes["study"] == study, "x"].iloc[0]
        ax.text(x, -0.15, study, ha="center", va="bottom", fontsize=u.MPL_FONT + 1, weight="bold")
    fig.text(0.5, 0.08 / fig_h, caption, ha="center", va="bottom", fontsize=u.MPL_FONT - 2)
    return ax


def _atlas_plotly(layout: AtlasLayout, width, height) -> go.Figure:
    import plotly.graph_objects as go

    px = 96.0  # pixels per inch of the layout
    data_w, data_h = _extent(layout)
    fig = go.Figure()
    for row in layout.links.itertuples(index=False):
        xs, ys = _path(row.x1, row.y1, row.x2, row.y2, layout.box_width)
        name = (
            f"{'link' if row.kept else 'dropped'}:{row.study_1}:{row.cluster_1}"
            f"--{row.study_2}:{row.cluster_2}"
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=name,
                showlegend=False,
                line={
                    "color": u.rgba_string(row.rgba, 0.85),
                    "width": 2 if row.kept else 1.2,
                    "dash": "solid" if row.kept else "dash",
                },
                hoverinfo="text",
                text=u.plotly_text(
                    f"{row.study_1}: {row.cluster_1} — {row.study_2}: {row.cluster_2}"
                    + ("" if row.kept else " (dropped: no-match flag)")
                ),
            )
        )
    shapes, annotations = [], []
    for row in layout.nodes.itertuples(index=False):
        shapes.append(
            {
                "type": "rect",
                "name": f"node:{row.study}:{row.cluster}",
                "x0": row.x - layout.box_width / 2,
                "x1": row.x + layout.box_width / 2,
                "y0": row.y0,
                "y1": row.y1,
                "fillcolor": u.rgba_string(row.rgba),
                "line": {
                    "color": UNIQUE_EDGE if row.unique else "#3d3d3d",
                    "width": 1,
                    "dash": "dash" if row.unique else "solid",
                },
                "layer": "above",
            }
        )
        rgba = np.array([row.rgba])
        annotations.append(
            {
                "x": row.x,
                "y": (row.y0 + row.y1) / 2,
                "text": u.plotly_text(row.cluster),
                "showarrow": False,
                "font": {"size": 11, "color": u.text_colors(rgba)[0]},
            }
        )
    for study in layout.studies:
        x = layout.nodes.loc[layout.nodes["study"] == study, "x"].iloc[0]
        annotations.append(
            {
                "x": x,
                "y": -0.1,
                "yanchor": "bottom",
                "text": f"<b>{u.plotly_text(study)}</b>",
                "showarrow": False,
                "font": {"size": 13},
            }
        )
    fig.update_layout(
        shapes=shapes,
        annotations=annotations,
        width=width or int(px * (data_w + 0.5)),
        height=height or int(px * (data_h + _HEAD + _FOOT) + 40),
        plot_bgcolor="white",
        margin={"l": 20, "r": 20, "t": 50, "b": 50},
        xaxis={"visible": False, "range": [-0.05, data_w + 0.05]},
        yaxis={"visible": False, "range": [layout.n_rows, -0.6]},
        title={
            "text": u.plotly_text(_caption(layout)),
            "font": {"size": 11},
            "y": 0.02,
            "yanchor": "bottom",
        },
    )
    return fig
