"""``report.html``: one self-contained, offline HTML page summarizing a pairot run.

The page inlines plotly.js once (no CDN, no network access) and draws the interactive
figures of :mod:`pairot.pl` (``backend="plotly"``) from their JSON. Every string that comes
from the user's data (cluster and gene names, parameters, file names) goes through
:func:`html.escape`; figure JSON is embedded with ``<``, ``>`` and ``&`` written as JSON
``\\u`` escapes, so no data value can close a ``<script>`` element.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["render_report", "write_report"]

_PLOT_CONFIG = {"responsive": True, "displaylogo": False}

_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'"
)

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="pairot $pairot_version">
<title>$title</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1150px; padding: 1.5em 2em 4em; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.1em; }
h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.subtitle { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.genes { font-size: 0.88em; margin: 0.3em 0; }
details > summary { cursor: pointer; color: #0969da; }
.plot { width: 100%; min-height: 420px; margin: 0.5em 0 1.5em; }
.note { color: #57606a; font-size: 0.92em; }
.warn { color: #9a6700; }
code { background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; }
</style>
<script type="text/javascript">$plotlyjs</script>
</head>
<body>
<h1>$title</h1>
<p class="subtitle">$subtitle</p>

<h2>How to read this report</h2>
<ul>
<li><b>Mapping</b> (green heatmap, higher = closer; the <code>"mean"</code> mapping of
<code>mapping.parquet</code>): every reference cell receives transported mass from the query
cells. The value in row k (a query cluster) and column c (a reference cluster) is the share
of that mass coming from query cluster k, averaged over the cells of reference cluster c, so
each column sums to 1 (with the reference marginal enforced, tau_b = 1, the default). A value
near 1 means the cells of the reference cluster receive their mass almost entirely from that
query cluster. Read it down a column. With the default balanced marginals (every cluster
carries the same total mass) it equals the transported mass below times the number of
reference clusters over the number of query clusters; with other marginals the two
differ.</li>
<li><b>Two more mappings</b>, as tables in this folder:
<code>mapping_transported_mass.parquet</code>, the share of each query cluster's mass that
goes to each reference cluster (each row sums to 1 with tau_a = 1; a value near 1 means the
query cluster's cells are transported almost entirely onto that reference cluster), and
<code>mapping_jensen_shannon.parquet</code>, one minus the Jensen-Shannon distance between
where a query cluster's share of the mass lands among the reference cells and the cells of
the reference cluster (1 = only on them, and evenly).</li>
<li><b>Distance</b> (red-yellow-green heatmap, lower = closer): the plan-weighted mean transport
cost between the cells of the two clusters, from 0 (identical) to 2 (unrelated). It mixes a
cell-to-cell expression distance (Spearman) with the clusters' marker-gene distance.</li>
<li><b>Sankey</b>: links from query clusters (left) to reference clusters (right) whose mapping
is at least $threshold_mapping, coloured by distance.</li>
<li><b>Suggested matches</b>: for each query cluster, the reference clusters with mapping
&ge; $threshold_mapping (their cells receive at least that share of their mass from the query
cluster) and distance &le; $threshold_distance, best mapping first. The genes behind a match
are the query cluster's top marker genes (pseudobulk DE, one-vs-all, by logFC) with their rank
in the reference cluster's marker list: shared top markers support the match; <i>absent</i>
means the gene is not a marker of the reference cluster. Ranks start at 1 (1 = the cluster's
top marker), as in <code>DatasetMap.DEGs_label_distance</code>; the <code>rank</code> column
of <code>matches.csv</code> counts each query cluster's matches from 1 (1 = its best
match).</li>
<li><b>Query clusters without a match</b> (<code>unmatched.csv</code>): a query cluster is
flagged when, solved again with the query marginal relaxed, it keeps less than a set share of
its mass (its cells find no partner worth their cost) and its best mapping is well below the
other query clusters' typical best mapping (no reference cluster draws its mass mainly from
it). The <code>score</code> is below 1 exactly for flagged clusters (lower = more novel). A
flag is a lead to check, not proof of a new cell type.</li>
<li>The tables behind the figures are in this folder: <code>mapping.parquet</code>,
<code>distance.parquet</code>, <code>label_distance.parquet</code>,
<code>matches.csv</code>, <code>cells.parquet</code> (the per-cell mapping of the query
cells); parameters, versions and timings in <code>run.json</code>.</li>
</ul>

<h2>Suggested matches</h2>
$matches

<h2>Query clusters without a match</h2>
$unmatched

<h2>Mapping</h2>
$mapping_plot
<h2>Distance</h2>
$distance_plot
<h2>Sankey</h2>
$sankey_plot
<h2>Per-cell mapping</h2>
$cells
<h2>Label distance</h2>
<p class="note">Normalized marker-rank distance between query and reference clusters (0 = the
same marker genes in the same order, 1 = unrelated); it enters the transport cost.</p>
$label_distance_plot
$label_diagnostics

<h2>Data</h2>
$data

<h2>Parameters</h2>
$parameters

<h2>Software</h2>
$versions
</body>
</html>
"""
)


def _e(value: Any) -> str:
    """HTML-escape any value as text (quotes included)."""
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 3) -> str:
    """A number as escaped text: integers as such, floats with ``digits`` decimals."""
    if value is None or isinstance(value, bool | str):
        return "&mdash;" if value is None else _e(value)
    if isinstance(value, int | np.integer):
        return _e(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if math.isnan(number):
        return "&mdash;"
    if number and abs(number) < 10.0**-digits:
        return _e(f"{number:.{digits}g}")
    return _e(f"{number:.{digits}f}")


def _safe_json(value: Any) -> str:
    """JSON for a ``<script>`` element: ``<``, ``>``, ``&`` and line separators escaped."""
    text = value if isinstance(value, str) else json.dumps(value)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _plot(figure, div_id: str) -> str:
    """A ``<div>`` and the inline script that draws a plotly figure into it."""
    return (
        f'<div id="{div_id}" class="plot"></div>\n'
        "<script>(function () {\n"
        f"  var fig = {_safe_json(figure.to_json())};\n"
        f'  Plotly.newPlot("{div_id}", fig.data, fig.layout, {_safe_json(_PLOT_CONFIG)});\n'
        "})();</script>"
    )


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    """An HTML table; ``header`` is escaped here, ``rows`` must hold escaped HTML already."""
    cls = f' class="{css}"' if css else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table{cls}>\n<tr>{head}</tr>\n{body}\n</table>"


def _td(value: Any, numeric: bool = False, digits: int = 3) -> str:
    if numeric:
        return f'<td class="num">{_number(value, digits)}</td>'
    return f"<td>{_e(value)}</td>"


def _rank(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td><i>absent</i></td>"
    return f'<td class="num">{int(value)}</td>'


def _gene_table(genes: pd.DataFrame) -> str:
    rows = [
        [
            _td(gene),
            _rank(row.get("rank_query")),
            _rank(row.get("rank_ref")),
            _td(row.get("logFC_query"), numeric=True, digits=2),
            _td(row.get("logFC_ref"), numeric=True, digits=2),
        ]
        for gene, row in genes.iterrows()
    ]
    header = ["gene", "rank in query", "rank in reference", "logFC query", "logFC reference"]
    return _table(header, rows, css="genes")


def _shared_genes(genes: pd.DataFrame, n: int = 5) -> str:
    if "rank_ref" not in genes.columns:
        return ""
    shared = genes.index[genes["rank_ref"].notna()].astype(str)[:n]
    return ", ".join(_e(g) for g in shared) if len(shared) else "<i>none of the top markers</i>"


_INTERVAL_COLUMNS = (
    "mapping_low",
    "mapping_high",
    "distance_low",
    "distance_high",
    "top_share",
)


def _interval(match, column: str) -> str:
    """``value [low, high]`` in one numeric cell."""
    low, high = match[f"{column}_low"], match[f"{column}_high"]
    return f'<td class="num">{_number(match[column])} [{_number(low)}, {_number(high)}]</td>'


def _interval_note(matches: pd.DataFrame) -> str:
    """What the intervals of the match table are, and what they are not."""
    attrs = matches.attrs if isinstance(matches.attrs, Mapping) else {}
    n = attrs.get("n_bootstrap")
    level = attrs.get("confidence")
    what = attrs.get("resample")
    detail = []
    if n:
        detail.append(f"{int(n)} resamples")
    if what:
        detail.append("of the " + " and the ".join(str(w) for w in what))
    if level:
        detail.append(f"{100 * float(level):g}% percentile intervals")
    detail = f" ({', '.join(detail)})" if detail else ""
    return (
        '<p class="note">Brackets: the range of the mapping and the distance when the cells '
        "of every cluster and the samples (donors) behind the marker genes are resampled and "
        f"the transport solved again{_e(detail)}; top-match share: the share of resamples in "
        "which this reference cluster is the query cluster's best match. They show how much "
        "the estimates move under resampling, given the annotations and the method; they are "
        "not p-values, their coverage is not calibrated, and they include neither annotation "
        "errors nor the choice of epsilon, genes or thresholds "
        "(docs/method.md, Confidence of each match).</p>"
    )


def _matches_section(
    matches: pd.DataFrame,
    mapping: pd.DataFrame,
    label_distance: pd.DataFrame | None,
    deg_tables: Mapping[tuple[str, str], pd.DataFrame],
) -> str:
    rows = []
    intervals = all(column in matches.columns for column in _INTERVAL_COLUMNS)
    for _, match in matches.iterrows():
        q, r = str(match["query"]), str(match["reference"])
        genes = deg_tables.get((q, r))
        if genes is None or genes.empty:
            gene_cell = "<td><i>no marker genes</i></td>"
        else:
            gene_cell = (
                f"<td>{_shared_genes(genes)}<details><summary>top {len(genes)} query markers"
                f"</summary>{_gene_table(genes)}</details></td>"
            )
        label = (
            label_distance.loc[q, r]
            if label_distance is not None
            and q in label_distance.index
            and r in label_distance.columns
            else None
        )
        if intervals:
            values = [
                _interval(match, "mapping"),
                _interval(match, "distance"),
                _td(match["top_share"], numeric=True, digits=2),
            ]
        else:
            values = [_td(match["mapping"], numeric=True), _td(match["distance"], numeric=True)]
        rows.append([_td(q), _td(r), *values, _td(label, numeric=True), gene_cell])
    header = [
        "query cluster",
        "reference cluster",
        *(
            ["mapping [interval]", "distance [interval]", "top-match share"]
            if intervals
            else ["mapping", "distance"]
        ),
        "label distance",
        "shared top markers (query markers ranked in the reference)",
    ]
    parts = [_interval_note(matches)] if intervals else []
    parts.append(_table(header, rows) if rows else "<p>No pair passes both thresholds.</p>")
    matched = set(matches["query"].astype(str)) if len(matches) else set()
    unmatched = [str(q) for q in mapping.index if str(q) not in matched]
    if unmatched:
        parts.append(
            '<p class="warn">Query clusters without a suggested match (no reference cluster '
            "passes both thresholds; look at their rows in the heatmaps): "
            + ", ".join(_e(q) for q in unmatched)
            + ".</p>"
        )
    return "\n".join(parts)


def _rejected_by(mapping: float, distance: float, threshold_mapping, threshold_distance) -> str:
    """Which threshold of ``select_similar_clusters`` a (query, reference) pair fails."""
    failed = []
    if threshold_mapping is not None and not mapping >= threshold_mapping:
        failed.append(f"mapping {mapping:.3f} < {threshold_mapping:g}")
    if threshold_distance is not None and not distance <= threshold_distance:
        failed.append(f"distance {distance:.3f} > {threshold_distance:g}")
    return "; ".join(failed) if failed else "passes both thresholds"


def _unmatched_section(
    unmatched: pd.DataFrame | None,
    mapping: pd.DataFrame,
    distance: pd.DataFrame,
    markers: Mapping[str, list[str]],
    threshold_mapping: float | None,
    threshold_distance: float | None,
    n_candidates: int = 3,
) -> str:
    if unmatched is None:
        return "<p>&mdash; (not computed)</p>"
    flagged = [q for q in unmatched.index if bool(unmatched.at[q, "unmatched"])]
    if not flagged:
        return (
            "<p>No query cluster is flagged: every one keeps its mass when the query marginal "
            "is relaxed, or is the main source of a reference cluster (see "
            "<code>unmatched.csv</code> for the scores).</p>"
        )
    parts = [
        '<p class="warn">Flagged (no counterpart found in the reference): '
        + ", ".join(_e(q) for q in flagged)
        + ".</p>"
    ]
    for q in flagged:
        row = unmatched.loc[q]
        rows = []
        if q in mapping.index:
            candidates = mapping.loc[q].sort_values(ascending=False, kind="stable")
            for r, value in candidates.head(n_candidates).items():
                d = float(distance.loc[q, r])
                rows.append(
                    [
                        _td(r),
                        _td(value, numeric=True),
                        _td(d, numeric=True),
                        _td(_rejected_by(float(value), d, threshold_mapping, threshold_distance)),
                    ]
                )
        table = _table(["candidate reference cluster", "mapping", "distance", "rejected by"], rows)
        genes = markers.get(str(q), [])
        gene_text = ", ".join(_e(g) for g in genes) if genes else "<i>no marker genes</i>"
        parts.append(
            f"<h3>{_e(q)}</h3>\n<p><b>no match</b> (score {_number(row['score'])}): "
            f"{_e(row['reason'])}</p>\n<p>Best candidates, by mapping:</p>\n{table}\n"
            f"<p>Top marker genes of {_e(q)} (query one-vs-all list, best first): "
            f"{gene_text}</p>"
        )
    return "\n".join(parts)


#: At most this many cells are drawn in the report's embedding scatter plots.
MAX_SCATTER_POINTS = 50_000
#: Colours of the stacked bars (reference clusters by rank within a row, then "other").
_BAR_COLOURS = ("#2da44e", "#0969da", "#bf8700", "#8250df", "#afb8c1")


def _share_bar(shares: pd.Series, n_show: int = 4) -> str:
    """An inline stacked bar of a row of shares (largest first), and its text."""
    shares = shares[shares > 0].sort_values(ascending=False, kind="stable")
    shown = shares.iloc[:n_show]
    other = float(shares.iloc[n_show:].sum())
    parts, text = [], []
    for k, (name, share) in enumerate(list(shown.items()) + [("other", other)]):
        if share <= 0:
            continue
        colour = _BAR_COLOURS[min(k, len(_BAR_COLOURS) - 1)]
        label = f"{name} {100 * share:.0f}%"
        parts.append(
            f'<span title="{_e(label)}" style="display:inline-block;height:0.9em;'
            f'width:{100 * share:.2f}%;background:{colour}"></span>'
        )
        text.append(_e(label))
    bar = (
        '<div style="width:16em;background:#f6f8fa;line-height:0;white-space:nowrap">'
        + "".join(parts)
        + "</div>"
    )
    return f"<td>{bar}{', '.join(text) or '&mdash;'}</td>"


def _scatter_png(cells: pd.DataFrame, name: str, points: np.ndarray) -> tuple[str, int]:
    """Two scatter plots of the query cells on an embedding, coloured by transferred label and
    by confidence, as base64 PNG; and the number of cells drawn (a seeded subsample of at most
    :data:`MAX_SCATTER_POINTS`)."""
    import base64
    import io

    import matplotlib.pyplot as plt

    n = len(points)
    keep = np.arange(n)
    if n > MAX_SCATTER_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(n, MAX_SCATTER_POINTS, replace=False))
    xy = points[keep]
    best = cells["best"].iloc[keep]
    confidence = cells["probability"].to_numpy(dtype=np.float64)[keep]
    clusters = list(cells["best"].cat.categories)
    size = max(0.5, min(8.0, 3e4 / max(len(keep), 1)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    try:
        colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
        colours = np.concatenate([colours, plt.get_cmap("tab20b")(np.linspace(0, 1, 20))])
        codes = best.cat.codes.to_numpy()
        missing = codes < 0
        if missing.any():
            left.scatter(*xy[missing].T, s=size, c="#d0d7de", linewidths=0, label="no mass")
        for k, cluster in enumerate(clusters):
            chosen = codes == k
            if chosen.any():
                left.scatter(
                    *xy[chosen].T,
                    s=size,
                    color=colours[k % len(colours)],
                    linewidths=0,
                    label=cluster,
                )
        left.set_title("transferred label (best reference cluster)")
        left.legend(
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=7,
            markerscale=max(1.0, 6 / size),
            frameon=False,
        )
        dots = right.scatter(
            *xy.T, s=size, c=confidence, cmap="viridis", vmin=0, vmax=1, linewidths=0
        )
        figure.colorbar(dots, ax=right, label="confidence (probability of the best cluster)")
        right.set_title("confidence")
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{name} 1")
            ax.set_ylabel(f"{name} 2")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii"), len(keep)


def _cell_section(
    cell_summary: pd.DataFrame | None,
    cell_counts: pd.DataFrame | None,
    cells: pd.DataFrame | None,
    embedding: tuple[str, np.ndarray] | None,
) -> str:
    """The per-cell mapping section: per query cluster, where its cells' best reference
    clusters go, and the embedding scatter plots."""
    if cell_summary is None or cell_counts is None:
        return "<p>&mdash; (not computed: <code>--no-cells</code>)</p>"
    parts = [
        '<p class="note">Each query cell gets a distribution over the reference clusters: '
        "the share of its transported mass landing on each (<code>cells.parquet</code>: one "
        "row per query cell, one column per reference cluster, then <code>best</code>, "
        "<code>probability</code>, <code>entropy</code> in nats and "
        "<code>entropy_normalized</code> in [0, 1]). It is the transport plan's conditional, "
        "shaped by epsilon and the balanced marginals, not a classifier's probability. Below, "
        "for each query cluster, how its cells' best reference clusters are distributed. A "
        "cluster is flagged <b>split</b> when the second most frequent best cluster holds at "
        "least 25% of its cells (and at least 5 cells): its cells go to two different "
        "reference clusters, which the cluster-level mapping averages away.</p>"
    ]
    rows = []
    for cluster, row in cell_summary.iterrows():
        counts = cell_counts.loc[cluster].astype(np.float64)
        total = counts.sum()
        shares = counts / total if total > 0 else counts * 0.0
        rows.append(
            [
                _td(cluster),
                _td(int(row["n_cells"]), numeric=True),
                _share_bar(shares),
                "<td><b>split</b></td>" if bool(row["split"]) else "<td></td>",
            ]
        )
    header = ["query cluster", "cells", "best reference cluster of its cells", "split"]
    parts.append(_table(header, rows))
    splits = [str(c) for c in cell_summary.index[cell_summary["split"].to_numpy(dtype=bool)]]
    if splits:
        parts.append(
            '<p class="warn">Query clusters whose cells split between reference clusters: '
            + ", ".join(_e(c) for c in splits)
            + ".</p>"
        )
    if cells is not None and embedding is not None:
        name, points = embedding
        png, drawn = _scatter_png(cells, name, points)
        sampled = (
            f"a random subsample of {drawn:,} of the {len(points):,} cells (seed 0)"
            if drawn < len(points)
            else f"all {drawn:,} cells"
        )
        parts.append(
            f'<figure><img alt="query cells on {_e(name)}" style="max-width:100%" '
            f'src="data:image/png;base64,{png}"><figcaption class="note">Query cells on '
            f"<code>{_e(name)}</code> (its first two dimensions; {_e(sampled)}), coloured by "
            "transferred label (the best reference cluster) and by confidence (the probability "
            "of that cluster).</figcaption></figure>"
        )
    return "\n".join(parts)


def _small_clusters_note(records) -> str:
    """The clusters below ``min_cells``, apart from the others, with what was done."""
    if not records:
        return ""
    done = {
        "drop": "left out of the transport",
        "merge": "merged into {merged_into}",
        "keep": "kept (its share of the mass shifts the other scores)",
    }
    rows = [
        [
            _td(r.get("side")),
            _td(r.get("cluster")),
            _td(r.get("n_cells"), numeric=True),
            _td(done.get(r.get("action"), str(r.get("action"))).format(**r)),
        ]
        for r in records
    ]
    return (
        '<p class="warn">Clusters too small to carry their share of the mass (balanced '
        "marginals give every cluster the same share, 1/K, whatever its size; below "
        "<code>--min-cells</code> a cluster has no marker genes to be matched by):</p>"
        + _table(["study", "cluster", "cells", "what was done"], rows)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _label_diagnostics_section(rows: Any) -> str:
    """The table of ``DatasetMap.label_term_diagnostics`` (empty without it)."""
    if not rows:
        return ""
    columns = [
        ("query cluster", "query_cluster"),
        ("cells", "n_cells"),
        ("markers kept", "n_markers"),
        ("share of L at 1", "saturated_share"),
        ("label term's nearest", "label_nearest"),
        ("cells' nearest", "cell_nearest"),
        ("disagree", "disagree"),
    ]
    body = [
        [_td(row.get(key), numeric=_is_number(row.get(key))) for _, key in columns]
        for row in rows
        if isinstance(row, Mapping)
    ]
    note = (
        '<p class="note">How much evidence each query cluster\'s row of the label term has '
        "(markers kept, share of its row at 1; a constant row has no nearest cluster and does "
        "not move the cells) and whether its nearest reference cluster is the one its cells "
        "resemble most. The label term moves all cells of a cluster together: rows with few "
        "markers or a disagreement deserve a look.</p>"
    )
    return note + _table([label for label, _ in columns], body)


def _data_section(summary: Mapping[str, Any]) -> str:
    studies = [s for s in ("query", "reference") if isinstance(summary.get(s), Mapping)]
    rows = []
    fields = [
        ("cells (input)", "n_cells"),
        ("cells in the OT fit", "n_cells_fit"),
        ("genes (input)", "n_genes"),
        ("clusters", "n_clusters"),
    ]
    for label, key in fields:
        if any(key in summary[s] for s in studies):
            rows.append([_td(label)] + [_td(summary[s].get(key), numeric=True) for s in studies])
    parts = [_table(["", *studies], rows)] if studies else []
    extra = []
    for label, key in (("genes expressed in both studies", "n_shared_genes"), ("HVGs", "n_hvgs")):
        if key in summary:
            extra.append([_td(label), _td(summary[key], numeric=True)])
    sinkhorn = summary.get("sinkhorn")
    if isinstance(sinkhorn, Mapping):
        extra.append([_td("Sinkhorn iterations"), _td(sinkhorn.get("n_iterations"), True)])
        extra.append([_td("Sinkhorn converged"), _td(sinkhorn.get("converged"))])
        extra.append(
            [_td("final marginal error"), _td(sinkhorn.get("final_error"), True, digits=3)]
        )
        if sinkhorn.get("sparse"):
            extra.append(
                [_td("cell pairs in active blocks"), _td(sinkhorn.get("active_share"), True)]
            )
            extra.append(
                [
                    _td("plan mass of the skipped blocks, at most"),
                    _td(sinkhorn.get("skipped_mass_bound"), True, digits=3),
                ]
            )
    decision = summary.get("label_distance_decision")
    if isinstance(decision, Mapping):  # label_distance_mode="auto"
        extra.append([_td("label distance (auto)"), _td(decision.get("label_distance"))])
        extra.append([_td("lambda_label (auto)"), _td(decision.get("lambda_label"), True)])
        extra.append([_td("why (auto)"), _td(decision.get("reason"))])
    if extra:
        parts.append(_table(["", "value"], extra))
    parts.append(_small_clusters_note(summary.get("small_clusters")))
    for s in studies:
        clusters = summary[s].get("cells_per_cluster_fit")
        if isinstance(clusters, Mapping) and clusters:
            table = _table(
                ["cluster", "cells in the OT fit"],
                [[_td(c), _td(n, numeric=True)] for c, n in clusters.items()],
            )
            parts.append(f"<details><summary>{_e(s)} clusters</summary>{table}</details>")
    return "\n".join(parts)


def _key_values(values: Mapping[str, Any] | None) -> str:
    if not values:
        return "<p>&mdash;</p>"
    rows = [
        [_td(k), _td(json.dumps(v) if isinstance(v, list | dict) else v)] for k, v in values.items()
    ]
    return _table(["name", "value"], rows)


def common_order(
    mapping: pd.DataFrame, distance: pd.DataFrame, label_distance: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The three tables in the mapping's staircase order (:func:`pairot.pl.order_by_score`),
    so that a cluster sits in the same row and column of every heatmap."""
    from .pl._heatmap import order_by_score

    rows, cols = order_by_score(mapping.to_numpy(dtype=np.float64))
    queries, references = mapping.index[rows], mapping.columns[cols]
    mapping = mapping.loc[queries, references]
    distance = distance.loc[queries, references]
    if label_distance is not None and set(label_distance.index) == set(queries):
        if set(label_distance.columns) == set(references):
            label_distance = label_distance.loc[queries, references]
    return mapping, distance, label_distance


def _page_wide(figure):
    """A plotly heatmap that fills the report's width (its height stays that of its rows)."""
    figure.update_layout(width=None, autosize=True)
    return figure


def _threshold(parameters: Mapping[str, Any], key: str, default: float) -> float | None:
    value = parameters.get(key, default)
    return None if value is None else float(value)


def render_report(
    *,
    mapping: pd.DataFrame,
    distance: pd.DataFrame,
    matches: pd.DataFrame,
    deg_tables: Mapping[tuple[str, str], pd.DataFrame] | None = None,
    summary: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    label_distance: pd.DataFrame | None = None,
    versions: Mapping[str, str] | None = None,
    run_info: Mapping[str, Any] | None = None,
    title: str = "pairot report",
    unmatched: pd.DataFrame | None = None,
    unmatched_markers: Mapping[str, list[str]] | None = None,
    cell_summary: pd.DataFrame | None = None,
    cell_counts: pd.DataFrame | None = None,
    cells: pd.DataFrame | None = None,
    embedding: tuple[str, np.ndarray] | None = None,
) -> str:
    """The report of one run as a self-contained HTML string.

    Parameters
    ----------
    mapping, distance
        Query x reference tables of ``compute_mapping()`` (``"mean"``) and
        ``compute_distance()``.
    matches
        Output of ``select_similar_clusters(..., output="table")`` (columns ``query,
        reference, mapping, distance``).
    deg_tables
        For each ``(query, reference)`` match, the genes behind it: a slice of
        ``DatasetMap.DEGs_label_distance[query][reference]`` (indexed by gene, columns
        ``rank_query, logFC_query, rank_ref, logFC_ref``; ranks from 1, shown as given).
    summary
        Data summaries (``query``/``reference`` dicts with ``n_cells``, ``n_cells_fit``,
        ``n_genes``, ``n_clusters``; ``n_shared_genes``, ``n_hvgs``, ``sinkhorn``).
    parameters
        Run parameters, shown as a table; ``threshold_mapping`` and ``threshold_distance``
        (defaults 0.25 and 1.0) also set the Sankey filter and the text.
    label_distance
        The label distance matrix, drawn when given.
    versions
        Package versions.
    run_info
        Extra facts shown under the title (e.g. ``command``, ``query``, ``reference``).
    title
        The page title.
    unmatched
        Output of ``DatasetMap.unmatched_clusters`` (columns ``unmatched``, ``score``,
        ``reason``), shown per flagged query cluster with its three best candidates by
        mapping and the threshold that rejects each; ``None``: the section says so.
    unmatched_markers
        For each flagged query cluster, its top marker genes, best first.
    cell_summary, cell_counts
        ``DatasetMap.cell_mapping_summary()`` and ``DatasetMap.best_cluster_shares()`` of
        the query: the per-cell mapping section (a dash when ``None``).
    cells, embedding
        ``DatasetMap.compute_cell_mapping()`` of the query and ``(obsm key, cells x 2
        coordinates)`` in the same cell order: the scatter plots by transferred label and by
        confidence (at most :data:`MAX_SCATTER_POINTS` cells, a seeded subsample).

    Returns
    -------
    The HTML page.
    """
    from plotly.offline import get_plotlyjs

    from . import __version__, pl

    parameters = dict(parameters or {})
    threshold_mapping = float(parameters.get("threshold_mapping", 0.25))
    threshold_distance = float(parameters.get("threshold_distance", 1.0))

    plotlyjs = get_plotlyjs().replace("</script", "<\\/script")
    subtitle = [f"pairot {__version__}", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")]
    for key in ("command", "query", "reference"):
        if run_info and run_info.get(key) is not None:
            subtitle.append(f"{key}: {run_info[key]}")
    # one row and column order for every heatmap: the mapping's diagonal order
    mapping, distance, label_distance = common_order(mapping, distance, label_distance)
    label_plot = (
        _plot(
            _page_wide(pl.label_distance(label_distance, backend="plotly")),
            "pairot-label-distance",
        )
        if label_distance is not None
        else "<p>&mdash;</p>"
    )
    return _PAGE.substitute(
        csp=_CSP,
        pairot_version=_e(__version__),
        title=_e(title),
        subtitle=" &middot; ".join(_e(s) for s in subtitle),
        plotlyjs=plotlyjs,
        threshold_mapping=_e(f"{threshold_mapping:g}"),
        threshold_distance=_e(f"{threshold_distance:g}"),
        matches=_matches_section(matches, mapping, label_distance, deg_tables or {}),
        unmatched=_unmatched_section(
            unmatched,
            mapping,
            distance,
            unmatched_markers or {},
            _threshold(parameters, "threshold_mapping", 0.25),
            _threshold(parameters, "threshold_distance", 1.0),
        ),
        mapping_plot=_plot(
            _page_wide(pl.mapping(mapping, sort_by_score=False, backend="plotly")),
            "pairot-mapping",
        ),
        distance_plot=_plot(_page_wide(pl.distance(distance, backend="plotly")), "pairot-distance"),
        sankey_plot=_plot(
            pl.sankey(mapping, distance, filter_threshold=threshold_mapping, backend="plotly"),
            "pairot-sankey",
        ),
        label_distance_plot=label_plot,
        cells=_cell_section(cell_summary, cell_counts, cells, embedding),
        data=_data_section(summary or {}),
        label_diagnostics=_label_diagnostics_section((summary or {}).get("label_term_diagnostics")),
        parameters=_key_values(parameters),
        versions=_key_values(versions),
    )


def write_report(path: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the report (see :func:`render_report` for the arguments) and write it to ``path``.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    path.write_text(render_report(**kwargs), encoding="utf-8")
    return path
