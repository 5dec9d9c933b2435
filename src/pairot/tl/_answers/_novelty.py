"""Query clusters without a counterpart in the reference ("no match").

The balanced plan must send every query cluster's mass somewhere, so a query cluster whose
type the reference lacks still gets a best reference cluster; only its scores are weaker. This
module turns that into a flag with a score, from figures the method already has:

- ``retained``: solve again with the query marginal relaxed (unbalanced OT, ``tau_a < 1``)
  and take, per query cluster, the share of the transported mass it keeps relative to its
  share of the marginal (1 = keeps its mass; lower = its cells find no partner, more novel);
- ``mapping_ratio``: its best ``"mean"`` mapping over the median best mapping of the other
  query clusters (1 = as well mapped as a typical cluster; lower = it is not the main source
  of any reference cluster, more novel);
- ``distance_ratio``: the cluster's distance to its closest reference cluster over the median
  of that figure among the other query clusters (higher = farther than a typical match);
- ``feature_ratio``: the expression (Spearman) part of that distance over the mean expression
  cost between the cells of the query cluster itself (higher = farther than its own spread);
- ``label_distance``: the label distance to the closest reference cluster (0 to 1).

Which of them flags is decided in :func:`flag`, with thresholds calibrated on simulated
pairs (``benchmarks/bench_novelty.py``; docs/method.md#unmatched-query-clusters).

The reference side (``side="reference"``) is the same rule mirrored on the same fit: the
extra solve relaxes ``tau_b``, the shares are of ``b``, the mapping read is the reverse
``"mean"`` (the fit's ``"transported_mass"`` transposed), and the distances and label
distances are read down the columns. ``AtlasMap`` flags both studies of a pair with it.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd

logger = logging.getLogger("pairot")

#: The component columns of :meth:`pairot.tl.DatasetMap.unmatched_clusters`, in order.
COMPONENTS = (
    "retained",
    "mapping_ratio",
    "best_reference",
    "best_mapping",
    "closest_reference",
    "best_distance",
    "distance_ratio",
    "feature_ratio",
    "label_distance",
)


def within_cluster_cost(x: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Mean feature distance ``0.5 * (1 - x_i . x_j)`` over the pairs of distinct cells of
    each cluster (NaN for a cluster with fewer than two cells).

    With ``S`` the sum of a cluster's unit feature vectors, the sum of ``x_i . x_j`` over
    ordered pairs ``i != j`` is ``|S|^2 - sum_i |x_i|^2``: one pass, no cell-pair matrix.
    """
    x = np.asarray(x, dtype=np.float64)
    sums = np.zeros((n_clusters, x.shape[1]))
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    norms = np.bincount(codes, weights=np.einsum("ij,ij->i", x, x), minlength=n_clusters)
    pairs = counts * (counts - 1.0)
    inner = np.einsum("ij,ij->i", sums, sums) - norms
    mean_inner = np.divide(inner, pairs, out=np.full(n_clusters, np.nan), where=pairs > 0)
    return 0.5 * (1.0 - mean_inner)


#: Per side: the tau the extra solve relaxes, the other side, and the index name.
_SIDES = {
    "query": {"tau": "tau_a", "other": "reference", "source": "source"},
    "reference": {"tau": "tau_b", "other": "query", "source": "destination"},
}


def relaxed_retained(dataset_map, tau: float, side: str = "query") -> np.ndarray:
    """Per cluster of ``side``: (its share of the plan's mass) / (its share of its marginal,
    ``a`` for the query, ``b`` for the reference), from a second solve of ``dataset_map``'s
    problem with that side's marginal relaxed to ``tau`` (the other tau as fitted).

    The caller's object is not changed: the solve runs on a shallow copy that shares the
    geometry (read only) and gets its own problem and solution.
    """
    problem = dataset_map.ot_prob
    relaxed = copy.copy(dataset_map)
    query = side == "query"
    tau_a, tau_b = (tau, problem.tau_b) if query else (problem.tau_a, tau)
    relaxed.init_problem(tau_a=tau_a, tau_b=tau_b, a=problem.a.copy(), b=problem.b.copy())
    name = _SIDES[side]["tau"]
    logger.info("Solving again with %s=%g to find %s clusters without a match.", name, tau, side)
    relaxed.solve(
        progress=dataset_map._progress,
        block_memory_budget=dataset_map._block_memory_budget,
        devices=dataset_map._devices,
    )
    if not bool(relaxed.ot_solution.converged):
        logger.warning(
            "The relaxed solve (%s=%g) of unmatched_clusters did not converge; the "
            "retained shares are approximate.",
            name,
            tau,
        )
    geom = dataset_map.geom
    mass = relaxed._aggregate()["mass"].sum(axis=1 if query else 0)
    codes, weights = (geom.query_codes, problem.a) if query else (geom.ref_codes, problem.b)
    source = np.bincount(codes, weights=weights, minlength=mass.size)
    share = mass / mass.sum()
    return np.divide(share, source, out=np.full(mass.size, np.nan), where=source > 0)


def components(
    dataset_map, mapping: pd.DataFrame, distance: pd.DataFrame, tau: float, side: str = "query"
):
    """The per-cluster figures the rule reads (see the module docstring), for the clusters of
    ``side``. ``mapping`` is the fit's ``"mean"`` for the query side and its
    ``"transported_mass"`` for the reference side (transposed here: the reverse reading's
    ``"mean"``, docs/method.md#unmatched-query-clusters); ``distance`` the fit's distance."""
    geom = dataset_map.geom
    label = dataset_map.label_distance
    query = side == "query"
    m = mapping.to_numpy(dtype=np.float64)
    d = distance.to_numpy(dtype=np.float64)
    lab = label.to_numpy(dtype=np.float64)
    if not query:
        m, d, lab = m.T, d.T, lab.T
    best = np.nanargmax(m, axis=1)
    rows = np.arange(m.shape[0])
    closest = np.nanargmin(d, axis=1)
    best_distance = d[rows, closest]
    others = np.array(
        [np.median(np.delete(best_distance, k)) if m.shape[0] > 1 else np.nan for k in rows]
    )
    distance_ratio = np.divide(
        best_distance, others, out=np.full(rows.size, np.nan), where=others > 0
    )
    feature_part = best_distance - geom.lambda_label * lab[rows, closest]
    x, codes = (geom.x, geom.query_codes) if query else (geom.y, geom.ref_codes)
    internal = geom.lambda_feature * within_cluster_cost(x, codes, rows.size)
    feature_ratio = np.divide(
        feature_part, internal, out=np.full(rows.size, np.nan), where=internal > 0
    )
    best_mapping = m[rows, best]
    typical = np.array(
        [np.median(np.delete(best_mapping, k)) if m.shape[0] > 1 else np.nan for k in rows]
    )
    mapping_ratio = np.divide(
        best_mapping, typical, out=np.full(rows.size, np.nan), where=typical > 0
    )
    other = _SIDES[side]["other"]
    columns = np.asarray(mapping.columns if query else mapping.index, dtype=object)
    table = pd.DataFrame(
        {
            "retained": relaxed_retained(dataset_map, tau, side),
            "mapping_ratio": mapping_ratio,
            f"best_{other}": columns[best],
            "best_mapping": best_mapping,
            f"closest_{other}": columns[closest],
            "best_distance": best_distance,
            "distance_ratio": distance_ratio,
            "feature_ratio": feature_ratio,
            "label_distance": lab.min(axis=1),
        },
        index=pd.Index(mapping.index if query else mapping.columns, name=side),
    )
    return table[columns_of(side)]


def columns_of(side: str) -> list[str]:
    """The component columns of ``unmatched_clusters(side)``, in order."""
    other = _SIDES[side]["other"]
    return [c.replace("reference", other) if side != "query" else c for c in COMPONENTS]


def unmatched_table(
    dataset_map,
    mapping: pd.DataFrame,
    distance: pd.DataFrame,
    *,
    tau_a: float,
    min_retained: float,
    max_mapping_ratio: float,
    side: str = "query",
) -> pd.DataFrame:
    """``DatasetMap.unmatched_clusters``: the components and the flag (arguments checked);
    ``tau_a`` relaxes the marginal of ``side`` (``tau_b`` of the extra solve for the
    reference side)."""
    table = components(dataset_map, mapping, distance, tau_a, side)
    return flag(
        table,
        tau_a=tau_a,
        min_retained=min_retained,
        max_mapping_ratio=max_mapping_ratio,
        side=side,
    )


def flag(
    table: pd.DataFrame,
    *,
    tau_a: float,
    min_retained: float,
    max_mapping_ratio: float,
    side: str = "query",
) -> pd.DataFrame:
    """Apply the rule to the component table; add ``unmatched``, ``score`` and ``reason``.

    A query cluster is unmatched when both hold: its ``retained`` share is below
    ``min_retained`` (its cells find no partner once they may stay untransported) and its
    ``mapping_ratio`` is below ``max_mapping_ratio`` (it is not the main source of any
    reference cluster). ``score = max(retained / min_retained, mapping_ratio /
    max_mapping_ratio)``: flagged exactly when ``score < 1``; lower is more novel. The
    reference side (``side="reference"``) reads the same rule from its mirrored components.
    """
    out = table.copy()
    retained = out["retained"].to_numpy(dtype=np.float64)
    ratio = out["mapping_ratio"].to_numpy(dtype=np.float64)
    score = np.fmax(retained / min_retained, ratio / max_mapping_ratio)
    unmatched = score < 1  # NaN (e.g. a single query cluster) never flags
    reasons = [
        _reason(row, bool(flagged), tau_a, min_retained, max_mapping_ratio, side)
        for (_, row), flagged in zip(out.iterrows(), unmatched, strict=True)
    ]
    out.insert(0, "reason", reasons)
    out.insert(0, "score", score)
    out.insert(0, "unmatched", unmatched)
    return out


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _reason(
    row, flagged: bool, tau_a: float, min_retained: float, max_ratio: float, side: str = "query"
) -> str:
    words = _SIDES[side]
    other = words["other"]
    if not np.isfinite(row["retained"]) or not np.isfinite(row["mapping_ratio"]):
        return f"not assessed: it needs at least two {side} clusters to compare with."
    kept = (
        f"keeps {_percent(row['retained'])} of its share of the mass when the {side} "
        f"marginal is relaxed ({words['tau']}={tau_a:g})"
    )
    mapped = (
        f"its best mapping ({row['best_mapping']:.2f}, to {row[f'best_{other}']!r}) is "
        f"{_percent(row['mapping_ratio'])} of the other {side} clusters' typical best mapping"
    )
    closest = (
        f"its closest {other} cluster {row[f'closest_{other}']!r} is "
        f"{row['distance_ratio']:.1f}x farther than the typical match (distance "
        f"{row['best_distance']:.2f})"
    )
    low_kept = row["retained"] < min_retained
    low_mapping = row["mapping_ratio"] < max_ratio
    if flagged:
        return (
            f"no match: it {kept}, below {_percent(min_retained)}, and {mapped}, below "
            f"{_percent(max_ratio)}; {closest}."
        )
    if low_kept:
        return (
            f"matched: it {kept}, below {_percent(min_retained)}, but {mapped}, not below "
            f"{_percent(max_ratio)} (it is the main {words['source']} of that cluster); "
            f"{closest}."
        )
    if low_mapping:
        return (
            f"matched: {mapped}, below {_percent(max_ratio)}, but it {kept}, not below "
            f"{_percent(min_retained)} (its cells find partners); {closest}."
        )
    return f"matched: it {kept} and {mapped}."


def mark_unmatched(matches: pd.DataFrame, unmatched, query_order: list) -> pd.DataFrame:
    """``select_similar_clusters(..., unmatched=...)``: add ``unmatched`` and ``reason`` to
    the match table, and one row (``reference`` None, ``rank`` 0) for each flagged query
    cluster without a match, in the query clusters' order."""
    if not isinstance(unmatched, pd.DataFrame) or not {"unmatched", "reason"} <= set(
        unmatched.columns
    ):
        msg = (
            "unmatched must be the DataFrame returned by DatasetMap.unmatched_clusters() "
            f"(columns 'unmatched' and 'reason'), got {type(unmatched).__name__}"
            + (f" with columns {list(unmatched.columns)}" if hasattr(unmatched, "columns") else "")
            + "; pass dataset_map.unmatched_clusters() or None."
        )
        raise TypeError(msg)
    missing = [q for q in query_order if q not in unmatched.index]
    if missing:
        msg = (
            f"unmatched has no row for query cluster(s) {missing[:5]}; pass the "
            "unmatched_clusters() of the DatasetMap that produced mapping and distance."
        )
        raise ValueError(msg)
    flags = unmatched["unmatched"].astype(bool)
    table = matches.copy()
    table["unmatched"] = table["query"].map(flags).astype(bool)
    table["reason"] = [unmatched.at[q, "reason"] if flags[q] else "" for q in table["query"]]
    listed = set(table["query"])
    extra = pd.DataFrame(
        [
            {
                "query": q,
                "reference": None,
                "mapping": np.nan,
                "distance": np.nan,
                "rank": 0,
                "unmatched": True,
                "reason": unmatched.at[q, "reason"],
            }
            for q in query_order
            if flags[q] and q not in listed
        ],
        columns=table.columns,
    )
    if extra.empty:
        return table.reset_index(drop=True)
    order = {q: k for k, q in enumerate(query_order)}
    table = pd.concat([table, extra], ignore_index=True)
    table["rank"] = table["rank"].astype(np.int64)
    key = table["query"].map(order)
    return table.iloc[np.lexsort((table["rank"].to_numpy(), key.to_numpy()))].reset_index(drop=True)
