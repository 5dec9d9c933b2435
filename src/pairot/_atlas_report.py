"""``report.html`` of ``pairot atlas``: one offline page (no script, no network) with the atlas
picture inline as a PNG data URI, the harmonized table, the disagreements, a summary of each
pair and the run's facts. Every string from the data goes through :func:`html.escape`."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from ._report import _e, _key_values, _table, _td

__all__ = ["render_atlas_report", "write_atlas_report"]

#: No script at all: the page is static HTML and inline images.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="pairot $pairot_version">
<title>pairot atlas report</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5em 2em 4em; color: #1f2328; line-height: 1.45; }
h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.subtitle, .note { color: #57606a; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.atlas { max-width: 100%; height: auto; }
code { background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; }
</style>
</head>
<body>
<h1>pairot atlas report</h1>
<p class="subtitle">$subtitle</p>
<p>$headline</p>

<h2>The harmonized cell types</h2>
<figure><img class="atlas" alt="atlas picture: studies as columns, clusters as boxes, links as
lines, one colour per harmonized group" src="data:image/png;base64,$png"></figure>
<p class="note">Each study is a column and each of its clusters a box spanning the harmonized
rows it covers (a coarse cluster spans the rows of its finer partners); each line is a link
(a match passing the mapping threshold in either direction of a fitted pair). One colour per
harmonized group; white dashed boxes are types that only one study has; grey dashed lines are
links dropped because the pair flags one of the clusters as without a match (see
<i>Disagreements</i>). The same picture is <code>atlas.png</code>; draw it in Python with
<code>pr.pl.atlas(pd.read_csv("harmonization.csv"), pd.read_csv("links.csv"))</code>.</p>

<h2>Harmonization table</h2>
<p class="note">One row per harmonized cell type, at the finest level any study resolves
(<code>harmonization.csv</code>): each study's cluster, <code>NONE</code> where it has none,
clusters of one study that nothing tells apart joined as <code>x | y</code>. The relation is
read in the studies' order: <i>one-to-one</i>, <i>split</i> (a later study is finer),
<i>merge</i> (a later study is coarser), <i>complex</i> (both), <i>unique</i> (one study only).
The rule is in docs/method.md, "Many studies (atlas)".</p>
$table

<h2>Disagreements</h2>
$disagreements

<h2>Pairs</h2>
<p class="note">Each fitted pair's mapping in both directions and its distance are in
<code>pairs/&lt;A&gt;__&lt;B&gt;/</code>; the fits themselves are stored in <code>fits/</code>,
where a later run into this folder loads them when the parameters and data are the same.
Below, each pair's best match of every cluster (the "mean" mapping), in both directions.</p>
$pairs

<h2>Studies</h2>
$studies

<h2>Parameters</h2>
$parameters

<h2>Software</h2>
$versions
</body>
</html>
"""
)

_ROW_NUMBERS = {"mean_mapping", "max_distance"}


def _cell(column: str, value) -> str:
    if column in _ROW_NUMBERS or column.startswith("n_"):
        return _td(value, numeric=True)
    if column == "relation":
        return f"<td><b>{_e(value)}</b></td>"
    return _td("" if value is None or (isinstance(value, float) and value != value) else value)


def _harmonization_section(table: pd.DataFrame) -> str:
    columns = [str(c) for c in table.columns]
    rows = [[_cell(c, row[c]) for c in columns] for _, row in table.iterrows()]
    return _table(columns, rows)


def _disagreement_section(disagreements: pd.DataFrame) -> str:
    if disagreements is None or len(disagreements) == 0:
        return "<p>None: every link passing the thresholds was kept.</p>"
    rows = [
        [_td(r["kind"]), _td(r["clusters"]), _td(r["detail"])] for _, r in disagreements.iterrows()
    ]
    return (
        '<p class="note"><i>flagged_but_matched</i>: a match that passes the mapping threshold '
        "but whose pair flags one of its clusters as without a match; the link is dropped. "
        "<i>not_transitive</i>: a cluster linked to two clusters of two other studies that "
        "their own pair does not link. Never resolved silently: check these "
        "(<code>disagreements.csv</code>).</p>\n" + _table(["kind", "clusters", "detail"], rows)
    )


def _best_matches(mapping: pd.DataFrame, distance: pd.DataFrame) -> list[list[str]]:
    rows = []
    for cluster in mapping.index:
        best = mapping.loc[cluster].idxmax()
        rows.append(
            [
                _td(cluster),
                _td(best),
                _td(mapping.at[cluster, best], numeric=True),
                _td(distance.at[cluster, best], numeric=True),
            ]
        )
    return rows


def _pair_section(result) -> str:
    atlas = result.atlas
    status = {(r["query"], r["reference"]): r["status"] for r in result.summary["pairs"]}
    parts = []
    for a, b in atlas.pairs:
        kept = result.links[
            result.links["kept"].astype(bool)
            & (
                ((result.links["study_1"] == a) & (result.links["study_2"] == b))
                | ((result.links["study_1"] == b) & (result.links["study_2"] == a))
            )
        ]
        flagged = []
        if result.parameters.unmatched:
            for side, other in ((a, b), (b, a)):
                table = atlas.unmatched(side, other)
                flagged += [f"{side}: {c}" for c in table.index[table["unmatched"].astype(bool)]]
        mapping = atlas.mapping(a, b)
        parts.append(
            f"<h3>{_e(a)} &harr; {_e(b)}</h3>\n<p>{_e(status.get((a, b), '?'))} "
            f"({_e(a)} as the query of the fit); {mapping.shape[0]} x {mapping.shape[1]} "
            f"clusters; {len(kept)} link(s); without a match: "
            f"{_e(', '.join(map(str, flagged)) or 'none')}.</p>"
        )
        for x, y in ((a, b), (b, a)):
            parts.append(
                f'<p class="note">{_e(x)} &rarr; {_e(y)}</p>\n'
                + _table(
                    [f"{x} cluster", f"best {y} cluster", "mapping", "distance"],
                    _best_matches(atlas.mapping(x, y), atlas.distance(x, y)),
                )
            )
    return "\n".join(parts)


def _studies_section(result, run_info: Mapping[str, Any] | None) -> str:
    files = dict((run_info or {}).get("files", {}))
    p = result.parameters
    rows = []
    for name, facts in result.summary["studies"].items():
        rows.append(
            [
                _td(name),
                _td(files.get(name, "")),
                _td(facts["n_cells"], numeric=True),
                _td(facts["n_cells_fit"], numeric=True),
                _td(facts["n_clusters"], numeric=True),
                _td(p.cell_type[name]),
                _td(p.sample[name]),
                _td(p.counts[name]),
            ]
        )
    header = ["study", "file", "cells", "cells fitted", "clusters", "cell type", "sample", "counts"]
    return _table(header, rows) + (
        f"<p>{result.summary['n_shared_genes']:,} shared genes, "
        f"{result.summary['n_hvgs']:,} highly variable genes.</p>"
    )


def render_atlas_report(
    *,
    result,
    png: bytes,
    parameters: Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> str:
    """The report of one ``pairot atlas`` run (an :class:`pairot._atlas_run.AtlasResult`
    and the atlas picture as PNG bytes) as a self-contained HTML string."""
    from . import __version__

    s = result.summary
    table = result.table.copy()
    table.attrs = {}
    relations = ", ".join(f"{v} {k}" for k, v in s["relations"].items())
    headline = (
        f"{len(s['studies'])} studies, {s['n_rows']} harmonized cell types in "
        f"{s['n_groups']} groups ({relations}); {s['n_links']} links, "
        f"{s['n_links_dropped']} dropped by a no-match flag, {s['n_disagreements']} "
        f"disagreement(s); pairs: {s['n_pairs_fitted']} fitted, {s['n_pairs_loaded']} loaded "
        "from an earlier run."
    )
    subtitle = [
        f"pairot {__version__}",
        datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "studies: " + ", ".join(s["studies"]),
    ]
    shown = {
        k: (json.dumps(v) if isinstance(v, dict | list) else v)
        for k, v in dict(parameters or {}).items()
    }
    return _PAGE.substitute(
        csp=_CSP,
        pairot_version=_e(__version__),
        subtitle=" &middot; ".join(_e(x) for x in subtitle),
        headline=_e(headline),
        png=base64.b64encode(png).decode("ascii"),
        table=_harmonization_section(table),
        disagreements=_disagreement_section(result.disagreements),
        pairs=_pair_section(result),
        studies=_studies_section(result, run_info),
        parameters=_key_values(shown),
        versions=_key_values(versions),
    )


def write_atlas_report(path: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the report (arguments of :func:`render_atlas_report`) and write it to ``path``."""
    path = Path(path)
    path.write_text(render_atlas_report(**kwargs), encoding="utf-8")
    return path
