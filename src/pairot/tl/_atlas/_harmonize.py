"""From the fitted pairs to one table of harmonized cell types (docs/method.md#many-studies-atlas).

1. **Links.** For each fitted pair and each direction, the matches of
   ``DatasetMap.select_similar_clusters`` (``"mean"`` mapping >= ``threshold_mapping`` and,
   when given, distance <= ``threshold_distance``; ``AtlasMap.harmonize`` applies no
   distance threshold by default, see docs/method.md). Two clusters are linked when the
   match passes in either direction, unless either is flagged "no match" in that pair (then
   the link is dropped and listed among the disagreements). Reciprocal best matches are
   marked (``reciprocal``) but not required: in a split only one subtype can be the coarse
   type's best.
2. **Groups.** The connected components of the links over all studies' clusters.
3. **Rows.** Inside a group, a row is a maximal set of clusters, at most one per study, every
   two of which are linked where their pair was fitted (a maximal clique; clusters of studies
   whose pair was not fitted are assumed compatible). So a coarse cluster linked to two
   finer ones that are not linked to each other lands in two rows: the table is at the finest
   level any study resolves.
4. **Joins.** Rows that differ only in the cluster of one study are joined into one row with
   those clusters as ``"x | y"`` when that study's own DE finds no marker between them (no
   gene passing the marker thresholds in either all-vs-all direction): two clusters of one
   study that nothing tells apart are one type. With markers between them they stay two rows.
5. **Relation**, read in study order as CellHint reads its datasets: each study's
   resolution in the row is 1 / (rows its cell covers; a joined cell is one type); against the
   first study present, ``"one-to-one"`` (all equal), ``"split"`` (a later study is finer:
   it resolves the first study's type into several), ``"merge"`` (a later study is coarser:
   it holds the first study's type together with others), ``"complex"`` (both), ``"unique"``
   (one study only).

Everything is ordered by the studies' order and each study's cluster order, so the table is
deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..._atlas_table import JOIN, NONE
from .._dataset_map import DatasetMap


def links_table(results: dict, threshold_mapping, threshold_distance) -> pd.DataFrame:
    """All candidate links of all fitted pairs, with both mappings, the distance, the
    direction(s) that pass and whether a no-match flag drops the link."""
    rows = []
    for (a, b), result in results.items():
        m_ab = result.mapping(a)
        m_ba = result.mapping(b)
        d_ab = result.distance_from(a)
        forward = DatasetMap.select_similar_clusters(
            m_ab, d_ab, threshold_mapping, threshold_distance, output="table"
        )
        backward = DatasetMap.select_similar_clusters(
            m_ba,
            d_ab.T.rename_axis(index="query", columns="reference"),
            threshold_mapping,
            threshold_distance,
            output="table",
        )
        ab, ba = f"{a}->{b}", f"{b}->{a}"
        passing = {(q, r): ab for q, r in zip(forward["query"], forward["reference"], strict=True)}
        for q, r in zip(backward["reference"], backward["query"], strict=True):
            passing[(q, r)] = "both" if (q, r) in passing else ba
        best_ab = m_ab.idxmax(axis=1)  # each a-cluster's best b-cluster
        best_ba = m_ba.idxmax(axis=1)  # each b-cluster's best a-cluster
        flags_a = _flags(result.unmatched(a))
        flags_b = _flags(result.unmatched(b))
        order_a = {c: i for i, c in enumerate(m_ab.index)}
        order_b = {c: i for i, c in enumerate(m_ab.columns)}
        for (k, c), direction in sorted(
            passing.items(), key=lambda kv: (order_a[kv[0][0]], order_b[kv[0][1]])
        ):
            flagged = [f"{a}:{k}"] * flags_a.get(k, False) + [f"{b}:{c}"] * flags_b.get(c, False)
            rows.append(
                {
                    "study_1": a,
                    "cluster_1": str(k),
                    "study_2": b,
                    "cluster_2": str(c),
                    "mapping_12": float(m_ab.at[k, c]),
                    "mapping_21": float(m_ba.at[c, k]),
                    "distance": float(d_ab.at[k, c]),
                    "direction": direction,
                    "reciprocal": bool(best_ab[k] == c and best_ba[c] == k),
                    "flagged": ", ".join(flagged),
                    "kept": not flagged,
                }
            )
    columns = [
        "study_1",
        "cluster_1",
        "study_2",
        "cluster_2",
        "mapping_12",
        "mapping_21",
        "distance",
        "direction",
        "reciprocal",
        "flagged",
        "kept",
    ]
    return pd.DataFrame(rows, columns=columns)


def _flags(table) -> dict:
    if table is None:
        return {}
    return {str(k): bool(v) for k, v in table["unmatched"].items()}


def _maximal_cliques(
    nodes: list[int], adjacent: Callable[[int, int], bool]
) -> list[tuple[int, ...]]:
    """Bron-Kerbosch with pivoting over ``nodes``, deterministic (nodes in order)."""
    neighbours = {u: {v for v in nodes if v != u and adjacent(u, v)} for u in nodes}
    out: list[tuple[int, ...]] = []

    def expand(r: list[int], p: set[int], x: set[int]) -> None:
        if not p and not x:
            out.append(tuple(sorted(r)))
            return
        pivot = max(sorted(p | x), key=lambda u: len(neighbours[u] & p))
        for v in sorted(p - neighbours[pivot]):
            expand([*r, v], p & neighbours[v], x & neighbours[v])
            p = p - {v}
            x = x | {v}

    expand([], set(nodes), set())
    return sorted(set(out))


def harmonize(
    names: list[str],
    clusters: dict[str, list[str]],
    results: dict,
    *,
    threshold_mapping,
    threshold_distance,
    separated: Callable[[str, str, str], bool] | None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(table, disagreements, links)``; see the module docstring."""
    links = links_table(results, threshold_mapping, threshold_distance)
    nodes = [(s, c) for s in names for c in clusters[s]]
    index = {node: i for i, node in enumerate(nodes)}
    study_of = [s for s, _ in nodes]
    kept = links[links["kept"]]
    linked: dict[frozenset, dict] = {}
    for row in kept.itertuples(index=False):
        u, v = index[(row.study_1, row.cluster_1)], index[(row.study_2, row.cluster_2)]
        linked[frozenset((u, v))] = row._asdict()
    tested_clusters = {}
    for (a, b), result in results.items():
        tested_clusters[frozenset((a, b))] = {
            a: set(map(str, result.mapping_mean.index)),
            b: set(map(str, result.mapping_mean.columns)),
        }

    def tested(u: int, v: int) -> bool:
        (su, cu), (sv, cv) = nodes[u], nodes[v]
        seen = tested_clusters.get(frozenset((su, sv)))
        return seen is not None and cu in seen[su] and cv in seen[sv]

    def compatible(u: int, v: int) -> bool:
        if study_of[u] == study_of[v]:
            return False
        return frozenset((u, v)) in linked or not tested(u, v)

    # groups: connected components of the links
    parent = list(range(len(nodes)))

    def find(u: int) -> int:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for pair in linked:
        u, v = sorted(pair)
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    groups: dict[int, list[int]] = {}
    for u in range(len(nodes)):
        groups.setdefault(find(u), []).append(u)

    rows: list[tuple[int, dict[str, tuple[str, ...]]]] = []  # (group, study -> clusters)
    for group_id, (_, members) in enumerate(sorted(groups.items())):
        if len(members) == 1:
            cliques = [tuple(members)]
        else:
            cliques = _maximal_cliques(members, compatible)
        cells = [{study_of[u]: (nodes[u][1],) for u in clique} for clique in cliques]
        if separated is not None:
            cells = _join(cells, names, clusters, separated)
        rows += [(group_id, cell) for cell in cells]

    table = _table(rows, names, clusters, linked, index, tested)
    disagreements = _disagreements(links, nodes, linked, tested, study_of)
    return table, disagreements, links


def _join(cells: list[dict], names, clusters, separated) -> list[dict]:
    """Join rows that differ only in one study's cluster, when that study's DE cannot tell
    the clusters apart."""
    for s in names:
        order = {c: i for i, c in enumerate(clusters[s])}
        by_rest: dict[tuple, list[int]] = {}
        for k, cell in enumerate(cells):
            if s in cell and len(cell) > 1:
                rest = tuple(sorted((t, v) for t, v in cell.items() if t != s))
                by_rest.setdefault(rest, []).append(k)
        merged: dict[int, int] = {}
        for ks in by_rest.values():
            if len(ks) < 2:
                continue
            # union-find over the rows of this group, joined where the clusters are not separated
            root = {k: k for k in ks}

            def find(k, root=root):
                while root[k] != k:
                    k = root[k]
                return k

            for i, k1 in enumerate(ks):
                for k2 in ks[i + 1 :]:
                    together = all(
                        not separated(s, x, y) for x in cells[k1][s] for y in cells[k2][s]
                    )
                    if together and find(k1) != find(k2):
                        root[max(find(k1), find(k2))] = min(find(k1), find(k2))
            for k in ks:
                merged[k] = find(k)
        if not merged:
            continue
        out: dict[int, dict] = {}
        for k, cell in enumerate(cells):
            target = merged.get(k, k)
            if target not in out:
                out[target] = dict(cell)
            elif target != k:
                joined = set(out[target][s]) | set(cell[s])
                out[target][s] = tuple(sorted(joined, key=order.get))
        cells = [out[k] for k in sorted(out)]
    return cells


def _table(rows, names, clusters, linked, index, tested) -> pd.DataFrame:
    order = {s: {c: i for i, c in enumerate(clusters[s])} for s in names}
    # how many rows of its group each cluster appears in
    appears: dict[tuple[int, str, str], int] = {}
    for group, cell in rows:
        for s, cs in cell.items():
            for c in cs:
                appears[(group, s, c)] = appears.get((group, s, c), 0) + 1

    def sort_key(row):
        group, cell = row
        return (group, tuple(sorted(index[(s, c)] for s, cs in cell.items() for c in cs)))

    records = []
    for group, cell in sorted(rows, key=sort_key):
        present = [s for s in names if s in cell]
        # a joined cell is one type: its resolution is 1 / the rows it covers
        resolution = {s: 1 / max(appears[(group, s, c)] for c in cell[s]) for s in present}
        if len(present) == 1:
            relation = "unique"
        else:
            first = resolution[present[0]]
            finer = any(resolution[s] > first for s in present[1:])
            coarser = any(resolution[s] < first for s in present[1:])
            relation = {
                (False, False): "one-to-one",
                (True, False): "split",
                (False, True): "merge",
                (True, True): "complex",
            }[(finer, coarser)]
        members = [index[(s, c)] for s in present for c in cell[s]]
        row_links = [
            linked[frozenset((u, v))]
            for i, u in enumerate(members)
            for v in members[i + 1 :]
            if frozenset((u, v)) in linked
        ]
        n_tested = sum(tested(u, v) for i, u in enumerate(members) for v in members[i + 1 :])
        record = {
            s: JOIN.join(sorted(cell[s], key=order[s].get)) if s in cell else NONE for s in names
        }
        record.update(
            {
                "relation": relation,
                "group": group,
                "n_studies": len(present),
                "n_links": len(row_links),
                "n_tested": int(n_tested),
                "n_reciprocal": sum(bool(r["reciprocal"]) for r in row_links),
                "mean_mapping": float(
                    np.mean([max(r["mapping_12"], r["mapping_21"]) for r in row_links])
                )
                if row_links
                else np.nan,
                "max_distance": float(max(r["distance"] for r in row_links))
                if row_links
                else np.nan,
                "joined": ", ".join(s for s in present if len(cell[s]) > 1),
            }
        )
        records.append(record)
    table = pd.DataFrame.from_records(records)
    table.index.name = "row"
    return table


def _disagreements(links, nodes, linked, tested, study_of) -> pd.DataFrame:
    """Where the pairs disagree: a no-match flag against a passing match (the link is
    dropped), and two clusters linked through a third cluster that their own pair, fitted,
    does not link, while neither has any partner in the other's study (with a partner, the
    third cluster is simply coarser: a split)."""
    out = []
    for row in links[~links["kept"]].itertuples(index=False):
        out.append(
            {
                "kind": "flagged_but_matched",
                "clusters": f"{row.study_1}:{row.cluster_1}; {row.study_2}:{row.cluster_2}",
                "detail": (
                    f"the pair ({row.study_1}, {row.study_2}) passes the thresholds (mapping "
                    f"{row.mapping_12:.2f} / {row.mapping_21:.2f}, distance {row.distance:.2f}) "
                    f"but flags {row.flagged} as without a match: no link."
                ),
            }
        )
    neighbours: dict[int, list[int]] = {}
    for pair in linked:
        u, v = sorted(pair)
        neighbours.setdefault(u, []).append(v)
        neighbours.setdefault(v, []).append(u)
    for v in sorted(neighbours):
        around = sorted(neighbours[v])
        for i, u in enumerate(around):
            for w in around[i + 1 :]:
                if (
                    study_of[u] == study_of[w]
                    or study_of[u] == study_of[v]
                    or study_of[w] == study_of[v]
                ):
                    continue
                # explained by v being coarser when u or w has a partner in the other's study
                explained = any(study_of[x] == study_of[w] for x in neighbours[u]) or any(
                    study_of[x] == study_of[u] for x in neighbours[w]
                )
                if tested(u, w) and frozenset((u, w)) not in linked and not explained:
                    (su, cu), (sv, cv), (sw, cw) = nodes[u], nodes[v], nodes[w]
                    out.append(
                        {
                            "kind": "not_transitive",
                            "clusters": f"{su}:{cu}; {sv}:{cv}; {sw}:{cw}",
                            "detail": (
                                f"{sv}:{cv} is linked to {su}:{cu} and to {sw}:{cw}, which the "
                                f"pair ({su}, {sw}) does not link, nor either of them to any "
                                f"cluster of the other study: {sv}:{cv} is coarser than two "
                                "types each study lacks, or the pairs disagree."
                            ),
                        }
                    )
    return pd.DataFrame(out, columns=["kind", "clusters", "detail"])
