"""``report.html``: self-contained (offline), escaped, and rendered by a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from headless_chromium import chromium, dump_dom
from plotly.offline import get_plotlyjs

import pairot as pr
from pairot._report import render_report
from pairot._run import DEMO_COLUMNS, RunParameters, run_pipeline, write_outputs
from pairot.datasets import pbmc_demo

matplotlib.use("Agg")

FIGURE_IDS = ("pairot-mapping", "pairot-distance", "pairot-sankey", "pairot-label-distance")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report of a full run on the demo pair."""
    folder = tmp_path_factory.mktemp("report")
    query, reference = pbmc_demo()
    parameters = RunParameters(**DEMO_COLUMNS)
    result = run_pipeline(query, reference, parameters, progress=False)
    write_outputs(result, folder, run_info={"command": "test"})
    return folder / "report.html"


def _plotlyjs_banner() -> str:
    """The first line of plotly.js that names its version (e.g. ``* plotly.js v3.0.1``)."""
    return next(line for line in get_plotlyjs().splitlines() if "plotly.js v" in line)


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    # nothing is loaded from elsewhere: in the markup (script bodies removed), no element
    markup = re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", text, flags=re.DOTALL)
    # has a src/href/data attribute (but the inline PNG images, data: URIs) and no attribute
    # points to http(s)
    inline = re.sub(r'\bsrc="data:image/png;base64,[A-Za-z0-9+/=]*"', "", markup)
    assert re.findall(r"<[a-z]+\b[^>]*\b(?:src|href|data)\s*=", inline) == []
    assert re.findall(r"https?:", markup) == []
    assert "<link" not in markup
    assert "cdn.plot.ly" not in markup
    # plotly.js itself is inlined, exactly once, and draws the four figures
    assert text.count(_plotlyjs_banner()) == 1
    assert len(text) > len(get_plotlyjs())
    assert text.count("Plotly.newPlot(") == len(FIGURE_IDS)
    for div_id in FIGURE_IDS:
        assert f'<div id="{div_id}" class="plot"></div>' in text
    # a content security policy forbids any network access even from plotly.js
    assert "connect-src 'none'" in text


def test_report_content(report):
    text = report.read_text(encoding="utf-8")
    assert "<title>pairot report</title>" in text
    assert "How to read this report" in text
    for section in ("Suggested matches", "Data", "Parameters", "Software"):
        assert f"<h2>{section}</h2>" in text
    # the matches table names the matched pairs and the genes behind them
    assert "<td>CD19+ B</td><td>CD19+ B</td>" in text
    assert "top 10 query markers" in text
    assert "<th>rank in reference</th>" in text
    # cluster names with "/" and "+" are escaped text, data summaries are there
    assert "CD4+/CD45RO+ Memory" in text
    assert "<td>cells (input)</td>" in text
    assert "<td>epsilon</td><td>0.05</td>" in text


def test_report_escapes_user_strings():
    nasty_query = 'A<b>&"c"'
    nasty_ref = "R'<script>alert(1)</script>"
    index = pd.Index([nasty_query, "plain q"], name="query")
    columns = pd.Index([nasty_ref, "plain r"], name="reference")
    mapping = pd.DataFrame([[0.9, 0.1], [0.1, 0.9]], index=index, columns=columns)
    distance = pd.DataFrame([[0.3, 1.7], [1.7, 0.3]], index=index, columns=columns)
    matches = pd.DataFrame(
        {
            "query": [nasty_query, "plain q"],
            "reference": [nasty_ref, "plain r"],
            "mapping": [0.9, 0.9],
            "distance": [0.3, 0.3],
            "rank": [1, 1],
        }
    )
    genes = pd.DataFrame(
        {
            "rank_query": [1, 2],
            "logFC_query": [2.5, 1.5],
            "rank_ref": [3.0, np.nan],
            "logFC_ref": [2.0, np.nan],
        },
        index=pd.Index(["G<1>&", "HLA-A"], name="gene"),
    )
    html_text = render_report(
        mapping=mapping,
        distance=distance,
        matches=matches,
        deg_tables={(nasty_query, nasty_ref): genes},
        label_distance=pd.DataFrame([[0.1, 1.0], [1.0, 0.2]], index=index, columns=columns),
        parameters={"query_cell_type": "<col>", "threshold_mapping": 0.25},
        run_info={"command": "run", "query": "/data/<q>&.h5ad"},
        summary={"query": {"n_cells": 10, "n_clusters": 2}},
    )
    assert "A&lt;b&gt;&amp;&quot;c&quot;" in html_text
    assert "R&#x27;&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "G&lt;1&gt;&amp;" in html_text
    assert "&lt;col&gt;" in html_text
    assert "/data/&lt;q&gt;&amp;.h5ad" in html_text
    # the raw strings appear nowhere, not even inside the figures' JSON
    for raw in (nasty_query, "A<b>", "alert(1)</script>", "G<1>", "<col>", "<q>"):
        assert raw not in html_text, raw
    # in the figures' JSON the name is plotly text with <, > and & escaped (pl.plotly_text)
    assert "\\u0026lt;script\\u0026gt;alert(1)" in html_text
    assert "<td><i>absent</i></td>" in html_text  # gene not among the reference markers
    assert html_text.count("<script>alert") == 0


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    proc = dump_dom(report.as_uri(), tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # every figure was drawn: plotly's SVG inside each figure's div, heatmap traces in the
    # mapping and distance divs
    starts = [dom.index(f'id="{div_id}"') for div_id in FIGURE_IDS]
    ends = [*starts[1:], len(dom)]
    for div_id, start, end in zip(FIGURE_IDS, starts, ends):
        segment = dom[start:end]
        assert 'class="main-svg"' in segment, div_id
        if div_id in ("pairot-mapping", "pairot-distance"):
            assert 'class="hm"' in segment, div_id
    assert "CD14+ Monocyte" in dom
    # the page logged nothing to the console: no uncaught error, no blocked request
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert "Uncaught" not in proc.stderr


def _text(report: Path) -> str:
    return " ".join(report.read_text(encoding="utf-8").split())


def test_report_says_what_each_mapping_means(report):
    """The "mean" mapping is read per reference cell (columns sum to 1), not as where the
    query cluster's cells go; the transported-mass table is the one read along rows."""
    text = _text(report)
    mean = text[text.index("<b>Mapping</b>") : text.index("<b>Two more mappings</b>")]
    assert "averaged over the cells of reference cluster c" in mean
    assert "each column sums to 1" in mean
    assert (
        "the cells of the reference cluster receive their mass almost entirely from that query "
        "cluster" in mean
    )
    assert "Read it down a column" in mean
    assert "equals the transported mass below times the number of reference clusters" in mean
    assert "transported almost entirely onto" not in mean
    others = text[text.index("<b>Two more mappings</b>") : text.index("<b>Distance</b>")]
    assert "share of each query cluster's mass that goes to each reference cluster" in others
    assert "each row sums to 1" in others
    assert "mapping_jensen_shannon.parquet" in others


def test_report_ranks_start_at_one(report):
    """Every gene table starts with the query cluster's top marker, shown as rank 1, and the
    text says so."""
    text = report.read_text(encoding="utf-8")
    assert "Ranks start at 1 (1 = the cluster's top marker)" in _text(report)
    tables = re.findall(r'<table class="genes">\n<tr>.*?</tr>\n<tr>(.*?)</tr>', text)
    assert len(tables) >= 4
    for first_row in tables:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", first_row)
        assert cells[1] == "1", first_row  # rank in query
    ranks = re.findall(r'<table class="genes">.*?</table>', text, flags=re.DOTALL)
    shown = [
        int(v)
        for table in ranks
        for row in re.findall(r"<tr>(.*?)</tr>", table)[1:]
        for v in re.findall(r'<td class="num">(\d+)</td>', row)[:2]
    ]
    assert min(shown) == 1


def _figures(html_text: str) -> dict[str, dict]:
    """The plotly figures of a report, by the id of the div they are drawn into."""
    import json
    import re

    found = re.findall(r'var fig = (.*?);\n  Plotly\.newPlot\("([\w-]+)"', html_text)
    return {div: json.loads(text) for text, div in found}


def test_heatmaps_share_one_order_and_the_page_width():
    """Mapping, distance and label distance are drawn in the mapping's staircase order, the
    same rows and columns in all three, and fill the page's width."""
    rng = np.random.default_rng(0)
    queries, references = ["q0", "q1", "q2", "q3"], ["r0", "r1", "r2"]
    mapping = pd.DataFrame(rng.uniform(size=(4, 3)), index=queries, columns=references)
    mapping.loc["q0", "r2"], mapping.loc["q3", "r0"] = 6.0, 5.0  # far from the diagonal
    distance = pd.DataFrame(rng.uniform(0, 2, (4, 3)), index=queries, columns=references)
    label = pd.DataFrame(rng.uniform(size=(4, 3)), index=queries, columns=references)
    matches = pr.tl.DatasetMap.select_similar_clusters(mapping, distance, output="table")
    html_text = render_report(
        mapping=mapping, distance=distance, matches=matches, label_distance=label
    )
    figures = _figures(html_text)
    rows, cols = pr.pl.order_by_score(mapping.to_numpy())
    expected_y = [queries[i] for i in rows]
    expected_x = [references[j] for j in cols]
    assert expected_x[0] == "r2" and expected_y[0] == "q0"  # the reorder is not the identity
    for div, table in (
        ("pairot-mapping", mapping),
        ("pairot-distance", distance),
        ("pairot-label-distance", label),
    ):
        trace, layout = figures[div]["data"][0], figures[div]["layout"]
        x = [layout["xaxis"]["ticktext"][int(v)] for v in trace["x"]]
        y = [layout["yaxis"]["ticktext"][int(v)] for v in trace["y"]]
        assert x == expected_x, div
        assert y == expected_y, div
        np.testing.assert_allclose(
            np.asarray(trace["z"], dtype=float), table.loc[expected_y, expected_x].to_numpy()
        )
        assert figures[div]["layout"].get("width") is None  # page-wide
        assert figures[div]["layout"].get("autosize") is True


def test_report_explains_unmatched_query_clusters():
    index = pd.Index(["T cell", "Novel<x>"], name="query")
    columns = pd.Index(["T", "B", "NK", "Mono"], name="reference")
    mapping = pd.DataFrame(
        [[0.9, 0.05, 0.03, 0.02], [0.12, 0.3, 0.08, 0.01]], index=index, columns=columns
    )
    distance = pd.DataFrame(
        [[0.3, 1.5, 1.6, 1.7], [1.4, 0.9, 1.6, 1.8]], index=index, columns=columns
    )
    matches = pd.DataFrame(
        {"query": ["T cell"], "reference": ["T"], "mapping": [0.9], "distance": [0.3], "rank": [1]}
    )
    unmatched = pd.DataFrame(
        {
            "unmatched": [False, True],
            "score": [1.9, 0.55],
            "reason": ["matched: fine.", "no match: it keeps 31% of its share <b>"],
        },
        index=index,
    )
    page = render_report(
        mapping=mapping,
        distance=distance,
        matches=matches,
        unmatched=unmatched,
        unmatched_markers={"Novel<x>": ["GENE1", "GENE2"]},
        parameters={"threshold_mapping": 0.25, "threshold_distance": 1.0},
    )
    section = page.split("<h2>Query clusters without a match</h2>")[1].split("<h2>")[0]
    assert "Novel&lt;x&gt;" in section and "T cell" not in section
    assert "no match: it keeps 31% of its share &lt;b&gt;" in section
    assert "score 0.550" in section
    # the three best candidates by mapping, each with the threshold that rejects it
    assert section.index(">B<") < section.index(">T<") < section.index(">NK<")
    assert "Mono" not in section
    assert "passes both thresholds" in section  # B: 0.3 >= 0.25 and 0.9 <= 1.0
    assert "mapping 0.120 &lt; 0.25; distance 1.400 &gt; 1" in section  # T
    assert "GENE1, GENE2" in section
    empty = render_report(
        mapping=mapping,
        distance=distance,
        matches=matches,
        unmatched=unmatched.assign(unmatched=False),
    )
    assert "No query cluster is flagged" in empty


def test_report_per_cell_section(report):
    """Per query cluster, the distribution of its cells' best reference clusters, the split
    flag, and the demo's UMAP coloured by transferred label and by confidence."""
    text = report.read_text(encoding="utf-8")
    section = text[text.index("<h2>Per-cell mapping</h2>") : text.index("<h2>Label distance</h2>")]
    assert "<th>best reference cluster of its cells</th>" in section
    assert "<td>CD19+ B</td>" in section and "CD19+ B 100%" in section
    assert "not a classifier&#x27;s probability" in section or "not a classifier's" in section
    assert "at least 25% of its cells" in section
    assert section.count('src="data:image/png;base64,') == 1
    assert "<code>X_umap</code>" in section and "all 340 cells" in section


def test_report_scatter_subsamples_large_queries():
    from pairot import _report

    rng = np.random.default_rng(0)
    n = _report.MAX_SCATTER_POINTS + 5_000
    clusters = ["A", "B/1", "best"]
    best = pd.Categorical.from_codes(rng.integers(-1, 3, n), categories=clusters)
    cells = pd.DataFrame({"best": best, "probability": rng.uniform(size=n)})
    counts = pd.DataFrame([[10, 3, 0], [0, 0, 7]], index=["q1", "q2"], columns=clusters)
    summary = pd.DataFrame({"n_cells": [13, 7], "split": [True, False]}, index=["q1", "q2"])
    html = _report._cell_section(summary, counts, cells, ("X_tsne", rng.normal(size=(n, 2))))
    assert f"a random subsample of 50,000 of the {n:,} cells (seed 0)" in html
    assert "A 77%, B/1 23%" in html
    assert "whose cells split between reference clusters: q1." in html
    assert _report._cell_section(None, None, None, None).count("--no-cells") == 1
