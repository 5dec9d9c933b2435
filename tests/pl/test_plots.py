"""Tests of ``pairot.pl``: what the figures show, not only that they are drawn."""

from __future__ import annotations

import inspect
import io

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere in this module

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import PathPatch  # noqa: E402

import pairot.pl as pl  # noqa: E402
from pairot.pl import _utils  # noqa: E402

QUERY = ["CD4+/CD25 T Reg", "B cells", "γδ T (Müller)", "NK bright"]
REFERENCE = ["B", "CD8+/CD45RA+ Naive Cytotoxic", "T reg/Th17", "Mono 14+", "Plasma cells"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def mapping_df() -> pd.DataFrame:
    values = np.array(
        [
            [0.05, 0.10, 0.70, 0.10, 0.05],
            [0.90, 0.02, 0.03, 0.04, 0.01],
            [0.05, 0.40, 0.30, 0.20, 0.05],
            [0.00, 0.35, 0.05, 0.55, 0.05],
        ]
    )
    return pd.DataFrame(
        values,
        index=pd.Index(QUERY, name="query"),
        columns=pd.Index(REFERENCE, name="reference"),
    )


@pytest.fixture
def distance_df(mapping_df) -> pd.DataFrame:
    return pd.DataFrame(
        np.round(2.0 - 2.0 * mapping_df.to_numpy() + 0.013, 3),
        index=mapping_df.index,
        columns=mapping_df.columns,
    )


def _mpl_cell_texts(ax) -> dict[tuple[int, int], str]:
    """Texts written inside the heatmap cells, keyed by (row, column) position."""
    out = {}
    for text in ax.texts:
        x, y = text.get_position()
        out[(round(y), round(x))] = text.get_text()
    return out


def _heatmap_trace(fig: go.Figure) -> go.Heatmap:
    return next(t for t in fig.data if isinstance(t, go.Heatmap))


def _text_trace(fig: go.Figure) -> go.Scatter:
    return next(t for t in fig.data if isinstance(t, go.Scatter) and t.mode == "text")


def _size(obj) -> tuple[float, float]:
    if isinstance(obj, go.Figure):
        return obj.layout.width, obj.layout.height
    return tuple(obj.figure.get_size_inches())


def _long_names(n: int, prefix: str) -> list[str]:
    base = ["CD8+/CD45RA+ Naive Cytotoxic", "Classical monocyte (CD14+/CD16-)", "γδ T cells"]
    return [f"{prefix} {base[k % 3]} subset #{k:02d} ñ" for k in range(n)]


def _random_frame(n_rows: int, n_cols: int, seed: int = 0, long: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = _long_names(n_rows, "q") if long else [f"q{k}" for k in range(n_rows)]
    cols = _long_names(n_cols, "r") if long else [f"r{k}" for k in range(n_cols)]
    return pd.DataFrame(rng.dirichlet(np.ones(n_cols) * 0.3, size=n_rows), index=rows, columns=cols)


# --------------------------------------------------------------------------- values in cells


@pytest.mark.parametrize("function", ["mapping", "distance", "label_distance"])
def test_matplotlib_cells_show_the_data(function, mapping_df):
    kwargs = {"sort_by_score": False} if function == "mapping" else {}
    ax = getattr(pl, function)(mapping_df, backend="matplotlib", **kwargs)
    texts = _mpl_cell_texts(ax)
    expected = {
        (i, j): f"{mapping_df.iat[i, j]:.2f}"
        for i in range(mapping_df.shape[0])
        for j in range(mapping_df.shape[1])
    }
    assert texts == expected
    assert [t.get_text() for t in ax.get_yticklabels()] == QUERY
    assert [t.get_text() for t in ax.get_xticklabels()] == REFERENCE
    np.testing.assert_array_equal(ax.images[0].get_array(), mapping_df.to_numpy())


@pytest.mark.parametrize("function", ["mapping", "distance", "label_distance"])
def test_plotly_cells_show_the_data(function, mapping_df):
    kwargs = {"sort_by_score": False} if function == "mapping" else {}
    fig = getattr(pl, function)(mapping_df, **kwargs)
    assert isinstance(fig, go.Figure)
    heat = _heatmap_trace(fig)
    np.testing.assert_array_equal(np.array(heat.z, dtype=float), mapping_df.to_numpy())
    expected = [[f"{v:.2f}" for v in row] for row in mapping_df.to_numpy()]
    assert [list(row) for row in heat.text] == expected
    labels = _text_trace(fig)
    shown = {(y, x): t for x, y, t in zip(labels.x, labels.y, labels.text, strict=True)}
    assert shown == {(i, j): expected[i][j] for i in range(4) for j in range(5)}
    assert list(fig.layout.yaxis.ticktext) == QUERY
    assert list(fig.layout.xaxis.ticktext) == REFERENCE
    fig.to_json()  # serializable, e.g. for an HTML report


def test_missing_values_leave_cells_empty():
    frame = pd.DataFrame([[0.5, np.nan], [pd.NA, 0.25]], columns=["a", "b"], dtype="Float64")
    ax = pl.mapping(frame, sort_by_score=False, backend="matplotlib")
    assert _mpl_cell_texts(ax) == {(0, 0): "0.50", (1, 1): "0.25"}
    fig = pl.mapping(frame, sort_by_score=False)
    assert [list(r) for r in _heatmap_trace(fig).text] == [["0.50", ""], ["", "0.25"]]
    assert _heatmap_trace(fig).z[0][1] is None
    assert sorted(_text_trace(fig).text) == ["0.25", "0.50"]


def test_text_colour_follows_background_darkness():
    frame = pd.DataFrame([[0.0, 1.0]], index=["q"], columns=["light", "dark"])
    ax = pl.mapping(frame, sort_by_score=False, backend="matplotlib")
    by_cell = {round(t.get_position()[0]): t.get_color() for t in ax.texts}
    assert by_cell == {0: "black", 1: "white"}
    fig = pl.mapping(frame, sort_by_score=False)
    colours = dict(zip(_text_trace(fig).x, _text_trace(fig).textfont.color, strict=True))
    assert colours == {0: "black", 1: "white"}
    # the rule itself: WCAG contrast, white below a relative luminance of ~0.18
    assert list(_utils.text_colors(np.array([[0, 0, 0, 1], [1, 1, 1, 1], [1, 0, 0, 1]]))) == [
        "white",
        "black",
        "black",
    ]
    assert _utils.text_colors(np.array(to_rgba("#a50026"))) == "white"


# --------------------------------------------------------------------------- ordering


def test_order_by_score_rule_on_a_hand_made_table():
    # rows: best columns c2 (0.7), c0 (0.9), c1 (0.4), c3 (0.55)
    values = np.array(
        [
            [0.05, 0.10, 0.70, 0.10, 0.05],
            [0.90, 0.02, 0.03, 0.04, 0.01],
            [0.05, 0.40, 0.30, 0.20, 0.05],
            [0.00, 0.35, 0.05, 0.55, 0.05],
            [0.10, 0.05, 0.60, 0.20, 0.05],  # also prefers c2, more weakly than row 0
        ]
    )
    rows, cols = pl.order_by_score(values)
    # chosen columns by their strongest chooser: c0 (0.9) c2 (0.7) c3 (0.55) c1 (0.4), then
    # the unchosen c4 (own max 0.05)
    assert cols.tolist() == [0, 2, 3, 1, 4]
    # rows by their best column's position, ties by best score: r1 | r0 r4 | r3 | r2
    assert rows.tolist() == [1, 0, 4, 3, 2]
    reordered = values[np.ix_(rows, cols)]
    best = reordered.argmax(axis=1)
    assert np.all(np.diff(best) >= 0)  # a staircase: best matches move right going down


def test_order_by_score_puts_empty_rows_and_columns_last():
    values = np.array([[np.nan, np.nan, np.nan], [0.1, np.nan, 0.8], [0.5, np.nan, 0.2]])
    rows, cols = pl.order_by_score(values)
    assert cols.tolist() == [2, 0, 1]
    assert rows.tolist() == [1, 2, 0]


def test_mapping_sort_by_score_reorders_both_backends(mapping_df):
    expected_rows = ["B cells", "CD4+/CD25 T Reg", "NK bright", "γδ T (Müller)"]
    expected_cols = ["B", "T reg/Th17", "Mono 14+", "CD8+/CD45RA+ Naive Cytotoxic", "Plasma cells"]
    ax = pl.mapping(mapping_df, backend="matplotlib")
    assert [t.get_text() for t in ax.get_yticklabels()] == expected_rows
    assert [t.get_text() for t in ax.get_xticklabels()] == expected_cols
    texts = _mpl_cell_texts(ax)
    for i, row in enumerate(expected_rows):
        for j, col in enumerate(expected_cols):
            assert texts[(i, j)] == f"{mapping_df.loc[row, col]:.2f}"
    fig = pl.mapping(mapping_df)
    assert list(fig.layout.yaxis.ticktext) == expected_rows
    assert list(fig.layout.xaxis.ticktext) == expected_cols
    expected = mapping_df.loc[expected_rows, expected_cols].to_numpy()
    np.testing.assert_array_equal(np.array(_heatmap_trace(fig).z, dtype=float), expected)


# --------------------------------------------------------------------------- colour scales


def test_colour_ranges(mapping_df, distance_df):
    data_max = float(mapping_df.to_numpy().max())
    fig = pl.mapping(mapping_df)
    assert (_heatmap_trace(fig).zmin, _heatmap_trace(fig).zmax) == (0.0, data_max)
    norm = pl.mapping(mapping_df, backend="matplotlib").images[0].norm
    assert (norm.vmin, norm.vmax) == (0.0, data_max)

    fig = pl.mapping(mapping_df, zmin=0.1, zmax=0.5)
    assert (_heatmap_trace(fig).zmin, _heatmap_trace(fig).zmax) == (0.1, 0.5)
    norm = pl.mapping(mapping_df, zmin=0.1, zmax=0.5, backend="matplotlib").images[0].norm
    assert (norm.vmin, norm.vmax) == (0.1, 0.5)

    zeros = mapping_df * 0.0
    assert _heatmap_trace(pl.mapping(zeros)).zmax == 1.0  # nothing above zmin: 0 to 1

    for function, top in ((pl.distance, 2.0), (pl.label_distance, 1.0)):
        heat = _heatmap_trace(function(distance_df))
        assert (heat.zmin, heat.zmax) == (0.0, top)
        norm = function(distance_df, backend="matplotlib").images[0].norm
        assert (norm.vmin, norm.vmax) == (0.0, top)


def test_colormaps_match_between_backends(mapping_df, distance_df):
    greens = matplotlib.colormaps["Greens"]
    assert pl.mapping(mapping_df, backend="matplotlib").images[0].cmap.name.startswith("Greens")
    scale = _heatmap_trace(pl.mapping(mapping_df)).colorscale
    assert scale[0][1] == matplotlib.colors.to_hex(greens(0.0))
    assert scale[-1][1] == matplotlib.colors.to_hex(greens(1.0))
    rdylgn = matplotlib.colormaps["RdYlGn_r"]
    ax = pl.distance(distance_df, backend="matplotlib")
    assert ax.images[0].cmap.name.startswith("RdYlGn_r")
    scale = _heatmap_trace(pl.distance(distance_df)).colorscale
    assert scale[0][1] == matplotlib.colors.to_hex(rdylgn(0.0))  # green: close
    assert scale[-1][1] == matplotlib.colors.to_hex(rdylgn(1.0))  # red: far
    viridis = _heatmap_trace(pl.mapping(mapping_df, colormap="viridis")).colorscale
    assert viridis[0][1] == matplotlib.colors.to_hex(matplotlib.colormaps["viridis"](0.0))


def test_matplotlib_axes_accepts_a_title(mapping_df):
    ax = pl.mapping(mapping_df, sort_by_score=False, backend="matplotlib")
    ax.set_title("query vs reference")
    fig = ax.figure
    fig.canvas.draw()
    title = ax.title.get_window_extent()
    assert title.y1 <= fig.bbox.y1  # the reserved top margin holds the title


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
@pytest.mark.parametrize("function", ["mapping", "distance", "label_distance"])
def test_heatmap_size_grows_with_clusters(function, backend):
    small = _size(getattr(pl, function)(_random_frame(8, 8), backend=backend))
    large = _size(getattr(pl, function)(_random_frame(20, 24), backend=backend))
    # above the minimum size, each extra cluster adds one cell (0.5 inch or 40 px)
    per_cell = 0.5 if backend == "matplotlib" else 40
    assert large[0] - small[0] == pytest.approx(16 * per_cell, rel=0.05)
    assert large[1] - small[1] == pytest.approx(12 * per_cell, rel=0.05)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_sankey_size_grows_with_clusters(backend):
    def diag(n):
        frame = pd.DataFrame(np.eye(n), index=[f"q{k}" for k in range(n)])
        frame.columns = [f"r{k}" for k in range(n)]
        return frame

    small = _size(pl.sankey(diag(3), 1 - diag(3), backend=backend))
    large = _size(pl.sankey(diag(25), 1 - diag(25), backend=backend))
    assert large[1] > small[1] * 2


PLOTS = {
    "mapping": lambda m, d, **kw: pl.mapping(m, **kw),
    "distance": lambda m, d, **kw: pl.distance(d, **kw),
    "label_distance": lambda m, d, **kw: pl.label_distance(d / 2, **kw),
    "sankey": lambda m, d, **kw: pl.sankey(m, d, **kw),
    "sankey_empty": lambda m, d, **kw: pl.sankey(m, d, filter_threshold=0.99, **kw),
}


def _png_pixels(fig) -> tuple[int, int]:
    """Width and height of the PNG that ``savefig`` writes with its default settings."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    height, width = matplotlib.image.imread(buffer).shape[:2]
    return width, height


@pytest.mark.parametrize("name", list(PLOTS))
def test_explicit_size_is_pixels_for_matplotlib(name, mapping_df, distance_df):
    ax = PLOTS[name](mapping_df, distance_df, width=800, height=600, backend="matplotlib")
    fig = ax.figure
    assert fig.dpi == 100
    np.testing.assert_allclose(fig.get_size_inches() * fig.dpi, (800, 600))
    fig.canvas.draw()
    assert fig.canvas.get_width_height() == (800, 600)
    assert _png_pixels(fig) == (800, 600)


@pytest.mark.parametrize("name", list(PLOTS))
def test_explicit_size_is_pixels_for_plotly(name, mapping_df, distance_df):
    fig = PLOTS[name](mapping_df, distance_df, width=800, height=600, backend="plotly")
    assert (fig.layout.width, fig.layout.height) == (800, 600)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
@pytest.mark.parametrize("name", list(PLOTS))
def test_sizes_at_the_limits_and_rounding(name, backend, mapping_df, distance_df):
    for width, height in ((100, 100), (20_000, 150), (777.4, 333.6)):
        out = PLOTS[name](mapping_df, distance_df, width=width, height=height, backend=backend)
        got = _size(out)
        if backend == "matplotlib":
            got = tuple(np.asarray(got) * out.figure.dpi)
            plt.close(out.figure)
        np.testing.assert_allclose(got, (round(width), round(height)))


def test_matplotlib_pixels_do_not_depend_on_the_global_dpi(mapping_df):
    with matplotlib.rc_context({"figure.dpi": 72}):
        ax = pl.mapping(mapping_df, width=800, height=600, backend="matplotlib")
    assert _png_pixels(ax.figure) == (800, 600)


def test_automatic_size_is_unchanged_by_the_pixel_units(mapping_df):
    """``None`` keeps the automatic sizing (0.5 inch, 50 px at 100 dpi, per cluster)."""
    small = pl.distance(_random_frame(8, 8), backend="matplotlib").figure
    large = pl.distance(_random_frame(8, 18), backend="matplotlib").figure
    widths = [f.get_size_inches()[0] * f.dpi for f in (small, large)]
    assert widths[1] - widths[0] == pytest.approx(10 * 50, rel=0.02)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
@pytest.mark.parametrize("name", list(PLOTS))
def test_inches_looking_sizes_are_refused(name, backend, mapping_df, distance_df):
    plot = PLOTS[name]
    with pytest.raises(ValueError, match=r"width=8 is in pixels.*Did you mean width=800\?"):
        plot(mapping_df, distance_df, width=8, height=600, backend=backend)
    with pytest.raises(ValueError, match=r"height=4\.5 is in pixels.*Did you mean height=450\?"):
        plot(mapping_df, distance_df, width=800, height=4.5, backend=backend)
    with pytest.raises(ValueError, match=r"width=-3 is in pixels.*between 100 and 20000 px"):
        plot(mapping_df, distance_df, width=-3, backend=backend)
    with pytest.raises(ValueError, match=r"height=50000 pixels is too large"):
        plot(mapping_df, distance_df, height=50_000, backend=backend)
    with pytest.raises(ValueError, match=r"width must be a finite number of pixels.*nan"):
        plot(mapping_df, distance_df, width=float("nan"), backend=backend)
    with pytest.raises(TypeError, match=r"height must be a number of pixels or None.*'600'"):
        plot(mapping_df, distance_df, height="600", backend=backend)


def test_no_hint_for_a_tiny_size(mapping_df):
    with pytest.raises(ValueError, match="width=0.5 is in pixels") as info:
        pl.mapping(mapping_df, width=0.5)
    assert "Did you mean" not in str(info.value)  # 50 px would be refused too


def test_long_labels_fit_and_do_not_overlap():
    frame = _random_frame(30, 30, long=True)
    ax = pl.mapping(frame, backend="matplotlib")
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    whole = fig.bbox
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert all(
            b.x0 >= whole.x0 - 1 and b.x1 <= whole.x1 + 1 and b.y0 >= whole.y0 - 1 for b in boxes
        )
    # row labels: vertical neighbours do not overlap
    rows = sorted(
        (b for b in (t.get_window_extent(renderer) for t in ax.get_yticklabels())),
        key=lambda b: b.y0,
    )
    assert all(a.y1 <= b.y0 + 0.5 for a, b in zip(rows, rows[1:], strict=False))
    # rotated column labels: neighbouring text lines are separated perpendicular to them
    xs = [t.get_window_extent(renderer).x1 for t in ax.get_xticklabels()]
    spacing = np.diff(xs) / np.sqrt(2)  # distance between parallel 45-degree lines
    font_px = ax.get_xticklabels()[0].get_fontsize() * fig.dpi / 72
    assert np.all(spacing > font_px)
    # the labels do not run into the heatmap
    heat = ax.get_window_extent(renderer)
    assert all(t.get_window_extent(renderer).x1 <= heat.x0 for t in ax.get_yticklabels())
    assert all(t.get_window_extent(renderer).y1 <= heat.y0 for t in ax.get_xticklabels())


def test_plotly_margins_hold_long_labels():
    frame = _random_frame(6, 6, long=True)
    fig = pl.mapping(frame)
    longest = max(len(s) for s in frame.index)
    assert fig.layout.margin.l >= longest * 6  # about 6-7 px per character at 12 px
    assert fig.layout.xaxis.tickangle == -45
    assert fig.layout.margin.b >= longest * 6 * np.sqrt(0.5)


# --------------------------------------------------------------------------- sankey


def _expected_links(mapping_df, distance_df, threshold):
    out = {}
    for q in mapping_df.index:
        for r in mapping_df.columns:
            if mapping_df.loc[q, r] >= threshold:
                out[(q, r)] = (mapping_df.loc[q, r], distance_df.loc[q, r])
    return out


def _link_rgba(d):
    r, g, b, _ = matplotlib.colormaps["RdYlGn_r"](d / 2.0)
    return (r, g, b, 0.7)


@pytest.mark.parametrize("threshold", [0.25, 0.1, 0.5])
def test_plotly_sankey_links(mapping_df, distance_df, threshold):
    fig = pl.sankey(mapping_df, distance_df, filter_threshold=threshold)
    trace = next(t for t in fig.data if isinstance(t, go.Sankey))
    names = list(trace.node.customdata)
    got = {}
    for s, t, v, c in zip(
        trace.link.source, trace.link.target, trace.link.value, trace.link.color, strict=True
    ):
        got[(names[s], names[t])] = (v, c)
    expected = _expected_links(mapping_df, distance_df, threshold)
    assert set(got) == set(expected)
    for pair, (m, d) in expected.items():
        value, colour = got[pair]
        assert value == m
        assert colour == _utils.rgba_string(_link_rgba(d))
    # query nodes on the left, reference nodes on the right
    for s, t in zip(trace.link.source, trace.link.target, strict=True):
        assert trace.node.x[s] < 0.5 < trace.node.x[t]
    queries = {q for q, _ in expected}
    assert {names[k] for k, x in enumerate(trace.node.x) if x < 0.5} == queries
    # a colour bar for the distance, 0 to 2
    marker = next(t for t in fig.data if isinstance(t, go.Scatter)).marker
    assert (marker.cmin, marker.cmax, marker.showscale) == (0.0, 2.0, True)


@pytest.mark.parametrize("threshold", [0.25, 0.1])
def test_matplotlib_sankey_links(mapping_df, distance_df, threshold):
    ax = pl.sankey(mapping_df, distance_df, filter_threshold=threshold, backend="matplotlib")
    bands = [p for p in ax.patches if isinstance(p, PathPatch)]
    expected = _expected_links(mapping_df, distance_df, threshold)
    got = {tuple(p.get_label().split(" -> ")): p for p in bands}
    assert set(got) == set(expected)
    heights = {}
    for pair, (m, d) in expected.items():
        patch = got[pair]
        np.testing.assert_allclose(patch.get_facecolor(), _link_rgba(d))
        ys = patch.get_path().vertices[:, 1]
        heights[pair] = (abs(ys[7] - ys[0]), abs(ys[4] - ys[3]), m)
    # band thickness at both ends is proportional to the mapping score
    ratios = [(left / m, right / m) for left, right, m in heights.values()]
    np.testing.assert_allclose(np.ravel(ratios), ratios[0][0], rtol=1e-9)
    # node labels: every linked cluster, each once, queries on the left
    labels = {t.get_text(): t for t in ax.texts if t.get_text() not in ("query", "reference")}
    assert set(labels) == {q for q, _ in expected} | {r for _, r in expected}
    # colour bar for the distance, 0 to 2
    (cax,) = [a for a in ax.figure.axes if a is not ax]
    (mesh,) = [c for c in cax.collections if c.get_cmap().name.startswith("RdYlGn_r")]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0.0, 2.0)


def test_sankey_aligns_a_reordered_distance(mapping_df, distance_df):
    shuffled = distance_df.iloc[::-1, [3, 0, 4, 1, 2]]
    a = pl.sankey(mapping_df, distance_df)
    b = pl.sankey(mapping_df, shuffled)
    assert a.data[0].link.color == b.data[0].link.color


UPSTREAM_SIGNATURES = {
    "mapping": [
        "data",
        "width",
        "height",
        "zmin",
        "zmax",
        "colormap",
        "sort_by_score",
        "backend",
    ],
    "distance": ["data", "width", "height", "backend"],
    "sankey": ["cluster_mapping", "cluster_distance", "filter_threshold", "width", "height"],
}


@pytest.mark.parametrize("name", list(UPSTREAM_SIGNATURES))
def test_parameters_follow_upstream(name):
    """Upstream's parameters, in upstream's order (positional calls keep their meaning);
    pairot adds ``backend`` to ``sankey``."""
    names = list(inspect.signature(getattr(pl, name)).parameters)
    assert names[: len(UPSTREAM_SIGNATURES[name])] == UPSTREAM_SIGNATURES[name]


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_sankey_accepts_upstream_keywords(mapping_df, distance_df, backend):
    by_name = pl.sankey(
        cluster_mapping=mapping_df,
        cluster_distance=distance_df,
        filter_threshold=0.1,
        width=800,
        height=600,
        backend=backend,
    )
    by_position = pl.sankey(mapping_df, distance_df, 0.1, 800, 600, backend=backend)
    if backend == "plotly":
        assert by_name.to_json() == by_position.to_json()
    else:
        labels = sorted(p.get_label() for p in by_name.patches if isinstance(p, PathPatch))
        expected = _expected_links(mapping_df, distance_df, 0.1)
        assert labels == sorted(f"{q} -> {r}" for q, r in expected)
        np.testing.assert_allclose(by_name.figure.get_size_inches() * 100, (800, 600))


def test_tutorial_calls_of_the_heatmaps(mapping_df, distance_df):
    ax = pl.mapping(mapping_df, sort_by_score=False, backend="matplotlib")
    assert [t.get_text() for t in ax.get_yticklabels()] == QUERY
    ax = pl.distance(distance_df, backend="matplotlib")
    assert ax.images[0].norm.vmax == 2.0
    ax = pl.mapping(data=mapping_df, width=800, height=600, backend="matplotlib")
    np.testing.assert_allclose(ax.figure.get_size_inches() * ax.figure.dpi, (800, 600))


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_sankey_without_links_shows_a_note(mapping_df, distance_df, backend):
    out = pl.sankey(mapping_df, distance_df, filter_threshold=0.95, backend=backend)
    if backend == "plotly":
        assert not [t for t in out.data if isinstance(t, go.Sankey)]
        note = out.layout.annotations[0].text
    else:
        assert not out.patches
        note = " ".join(t.get_text() for t in out.texts)
    assert "0.95" in note and "filter_threshold" in note


def test_sankey_caption_counts_unlinked_clusters(mapping_df, distance_df):
    fig = pl.sankey(mapping_df, distance_df, filter_threshold=0.5)
    captions = [a.text for a in fig.layout.annotations if "not shown" in a.text]
    # links >= 0.5: B cells->B, CD4+/CD25->T reg, NK->Mono: 1 query and 2 reference unlinked
    assert captions and "1 query" in captions[0] and "2 reference" in captions[0]


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_inputs_are_not_modified(mapping_df, distance_df, backend):
    m0, d0 = mapping_df.copy(deep=True), distance_df.copy(deep=True)
    pl.mapping(mapping_df, backend=backend)
    pl.distance(distance_df, backend=backend)
    pl.label_distance(distance_df / 2, backend=backend)
    pl.sankey(mapping_df, distance_df, backend=backend)
    pd.testing.assert_frame_equal(mapping_df, m0)
    pd.testing.assert_frame_equal(distance_df, d0)


@pytest.mark.parametrize("function", ["mapping", "distance", "label_distance"])
def test_errors_heatmaps(function, mapping_df):
    plot = getattr(pl, function)
    with pytest.raises(TypeError, match=r"data must be a pandas DataFrame.*pd\.DataFrame"):
        plot(mapping_df.to_numpy())
    with pytest.raises(TypeError, match="non-numeric columns.*astype"):
        plot(mapping_df.astype(str))
    with pytest.raises(TypeError, match=r"dict of DataFrames.*\['mean'\]"):
        plot({"mean": mapping_df})
    with pytest.raises(ValueError, match=r"backend must be one of \['plotly', 'matplotlib'\]"):
        plot(mapping_df, backend="bokeh")
    with pytest.raises(ValueError, match="empty"):
        plot(mapping_df.iloc[:0])


def test_errors_mapping_options(mapping_df):
    with pytest.raises(ValueError, match="zmax must be larger than zmin"):
        pl.mapping(mapping_df, zmin=0.5, zmax=0.5)
    with pytest.raises(ValueError, match="colormap"):
        pl.mapping(mapping_df, colormap="no-such-map")
    with pytest.raises(ValueError, match="width=-3 is in pixels"):
        pl.mapping(mapping_df, width=-3)


def test_errors_sankey(mapping_df, distance_df):
    with pytest.raises(TypeError, match="cluster_distance must be a pandas DataFrame"):
        pl.sankey(mapping_df, distance_df.to_numpy())
    with pytest.raises(TypeError, match="cluster_mapping must be a pandas DataFrame"):
        pl.sankey([[1.0]], distance_df)
    with pytest.raises(ValueError, match="same clusters.*columns"):
        pl.sankey(mapping_df, distance_df.rename(columns={"B": "B2"}))
    with pytest.raises(ValueError, match="same clusters.*index"):
        pl.sankey(mapping_df, distance_df.iloc[:3])
    with pytest.raises(ValueError, match="backend must be one of"):
        pl.sankey(mapping_df, distance_df, backend="svg")
    with pytest.raises(ValueError, match="filter_threshold"):
        pl.sankey(mapping_df, distance_df, filter_threshold=float("nan"))


def test_plotly_labels_escape_markup():
    """A cluster named like HTML shows as written, not as bold text or a broken tag."""
    names = ['A<b>&"c"', "B"]
    frame = pd.DataFrame([[0.9, 0.1], [0.2, 0.8]], index=names, columns=names)
    fig = pl.mapping(frame, backend="plotly", sort_by_score=False)
    assert list(fig.layout.xaxis.ticktext) == ['A&lt;b&gt;&amp;"c"', "B"]
    sank = pl.sankey(frame, frame, backend="plotly")
    texts = [a.text for a in sank.layout.annotations]
    assert 'A&lt;b&gt;&amp;"c"' in texts
