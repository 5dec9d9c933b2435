"""``pr.pl.atlas``: what is drawn is the table, read from the artists (never from rendered text,
so no font matters): one box per cluster, one line per link, one colour per group."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import pairot.pl as pl  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def table():
    """A splits into B's two T types, C joins two clusters into one type, B has a type of
    its own; one link is dropped by a no-match flag."""
    frame = pd.DataFrame(
        {
            "A": ["a1", "a1", "a3", "NONE"],
            "B": ["L1_T1", "L1_T2", "L2_T1", "L2_T2"],
            "C": ["c1 | c1b", "c2", "c3", "NONE"],
            "relation": ["split", "split", "one-to-one", "unique"],
            "group": [0, 0, 1, 2],
            "n_studies": [3, 3, 3, 1],
            "joined": ["C", "", "", ""],
        }
    )
    return frame


@pytest.fixture
def links():
    return pd.DataFrame(
        {
            "study_1": ["A", "A", "A", "A", "A", "B", "B", "B", "A", "B"],
            "cluster_1": ["a1", "a1", "a3", "a1", "a1", "L1_T1", "L1_T1", "L1_T2", "a3", "L2_T2"],
            "study_2": ["B", "B", "B", "C", "C", "C", "C", "C", "C", "C"],
            "cluster_2": ["L1_T1", "L1_T2", "L2_T1", "c1", "c2", "c1", "c1b", "c2", "c3", "c2"],
            "kept": [True] * 9 + [False],
        }
    )


CLUSTERS = {
    ("A", "a1"),
    ("A", "a3"),
    ("B", "L1_T1"),
    ("B", "L1_T2"),
    ("B", "L2_T1"),
    ("B", "L2_T2"),
    ("C", "c1"),
    ("C", "c1b"),
    ("C", "c2"),
    ("C", "c3"),
}
GROUP = {
    **dict.fromkeys(["A:a1", "B:L1_T1", "B:L1_T2", "C:c1", "C:c1b", "C:c2"], 0),
    **dict.fromkeys(["A:a3", "B:L2_T1", "C:c3"], 1),
    "B:L2_T2": 2,
}


def _boxes(ax):
    return {
        p.get_gid()[len("node:") :]: p
        for p in ax.patches
        if isinstance(p, Rectangle) and str(p.get_gid()).startswith("node:")
    }


def _lines(ax, kind):
    return [line for line in ax.lines if str(line.get_gid()).startswith(kind + ":")]


def test_matplotlib_draws_the_table(table, links):
    snapshot = table.copy()
    ax = pl.atlas(table, links, backend="matplotlib")
    boxes = _boxes(ax)
    nodes = [p for p in ax.patches if str(p.get_gid()).startswith("node:")]
    assert len(nodes) == len(CLUSTERS)  # one box per cluster
    assert {tuple(k.split(":", 1)) for k in boxes} == CLUSTERS
    assert len(_lines(ax, "link")) == int(links["kept"].sum())
    assert len(_lines(ax, "dropped")) == int((~links["kept"]).sum())
    drawn = {line.get_gid()[len("link:") :] for line in _lines(ax, "link")}
    expected = {
        f"{r.study_1}:{r.cluster_1}--{r.study_2}:{r.cluster_2}"
        for r in links[links["kept"]].itertuples()
    }
    assert drawn == expected
    # one colour per group, different groups apart; the type of one study only is white
    colour = {k: to_rgba(p.get_facecolor()) for k, p in boxes.items()}
    by_group: dict[int, set] = {}
    for key, group in GROUP.items():
        by_group.setdefault(group, set()).add(colour[key])
    assert all(len(c) == 1 for c in by_group.values())
    assert len({next(iter(c)) for c in by_group.values()}) == 3
    assert colour["B:L2_T2"] == to_rgba("white")
    assert boxes["B:L2_T2"].get_linestyle() == "--"
    for line in _lines(ax, "link"):
        start = line.get_gid()[len("link:") :].split("--")[0]
        assert to_rgba(line.get_color())[:3] == colour[start][:3]
    # the coarse a1 spans both rows of its split, the joined c1 and c1b share row 0
    a1, t1, t2 = boxes["A:a1"], boxes["B:L1_T1"], boxes["B:L1_T2"]
    assert a1.get_y() <= t1.get_y() and a1.get_y() + a1.get_height() >= t2.get_y() + t2.get_height()
    c1, c1b = boxes["C:c1"], boxes["C:c1b"]
    assert c1.get_y() < c1b.get_y() < 1 and c1.get_y() + c1.get_height() <= c1b.get_y()
    pd.testing.assert_frame_equal(table, snapshot)


def test_options_and_the_plotly_backend(table, links):
    between = links["study_1"].eq("A") & links["study_2"].eq("C")
    ax = pl.atlas(
        table, links, links_between="neighbours", show_dropped=False, backend="matplotlib"
    )
    assert len(_lines(ax, "link")) == int((links["kept"] & ~between).sum())
    assert _lines(ax, "dropped") == []
    fig = pl.atlas(table, links)
    names = [s.name for s in fig.layout.shapes]
    assert sorted(n[len("node:") :] for n in names) == sorted(f"{s}:{c}" for s, c in CLUSTERS)
    traces = [t.name for t in fig.data]
    assert sum(t.startswith("link:") for t in traces) == int(links["kept"].sum())
    assert sum(t.startswith("dropped:") for t in traces) == 1
    fills = {s.name: s.fillcolor for s in fig.layout.shapes}
    assert fills["node:A:a1"] == fills["node:C:c2"] != fills["node:A:a3"]
    # with a table (not an AtlasMap) the links must be passed
    with pytest.raises(ValueError, match=r"links=atlas.links\(\)"):
        pl.atlas(table)
    assert len(pl.atlas(table, links, backend="plotly").layout.shapes) == len(CLUSTERS)


def test_errors(table, links):
    with pytest.raises(ValueError, match="no column"):
        pl.atlas(table.drop(columns=["relation"]), links)
    with pytest.raises(TypeError, match="DataFrame of AtlasMap.harmonize"):
        pl.atlas(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="links_between must be one of"):
        pl.atlas(table, links, links_between="some")
    bad = links.assign(study_2="Z")
    with pytest.raises(ValueError, match=r"studies \['Z'\]"):
        pl.atlas(table, bad)
