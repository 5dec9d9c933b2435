"""Why the label term helps the cells but hurts the clusters on a real pair of studies.

The real pair ``shared/data/realpairs/zeisel_tasic`` (Zeisel 2015 UMI counts against Tasic
2016 RPKM x 100 pseudo-counts, mouse cortical interneurons; 13 query types with a published
MetaNeighbor match, see its README) is preprocessed as ``bench_min_genes.py --real-pair`` does
(``preprocess_adatas`` with the ``pseudo_sample`` columns, 500 HVGs) and mapped three times:

- ``pairot``: ``init_geom()``, the published label distance (the default);
- ``robust``: ``init_geom(label_distance_mode="robust")``;
- ``cell``: ``init_geom(lambda_label=0, lambda_feature=1)``, the Spearman cell term alone;
- ``auto``: ``init_geom(label_distance_mode="auto")`` (its decision is printed);
- ``auto_choice``: the tested variant of ``auto`` of ``bench_accuracy.py`` (the label
  distance, published or robust, that agrees better with the cell term, at auto's weight);
- ``auto_shrink``: ``auto_choice`` with the weight times that agreement (tested, rejected);
- ``auto_follow``: the two-stage variant of ``bench_accuracy.py`` (rows of ``L`` whose argmin
  is the ``auto`` fit's top-1 refitted at the published weight 1.5; tested and rejected).

Printed, type by type for the 13 scored query types:

1. the top-1 reference type of each variant against the accepted truth, the label term's own
   nearest reference type (argmin of ``L``), the cell term's (argmax of the ``cell`` mapping),
   the per-cell accuracy of each variant (each cell's ``best`` of ``compute_cell_mapping``)
   and the share of the cluster's cells whose ``best`` is the cluster's top-1;
2. the markers each cluster keeps after ``init_geom``'s marker selection, how many genes pass
   each of the three filters (logFC, adj.P.Val, AUROC) in the one-vs-all table, and the share
   of saturated label distances (``L >= 0.999``) per query cluster;
3. for each wrong answer of a label-term variant: ``L`` (and, for ``pairot``, ``D``) to the
   true match and to the chosen one, the genes contributing most to ``L[q, true]``
   (``dm.DEGs_label_distance[q][true]``), why each absent query marker is missing from the
   true match's list (which filter it fails in the reference), and the study log-ratio of its
   expression between the matched clusters;
4. the mass competition of the balanced marginals: which reference types the non-saturated
   label rows claim, and which no row claims;
5. the size of the two terms of the cost for each query cell: the gap in the cell term
   between a cell's best and true reference type against the gap in the label term of its
   cluster's row.

``--resplit K`` redraws the ``pseudo_sample`` split of both studies with K other seeds (4
groups, as the data's README describes) and reports the ``pairot``, ``robust`` and ``auto``
hits: a test of how much the answer rests on the pseudo-replicates. ``--leave-one-out`` fits
``auto`` (and ``pairot``, ``cell`` and ``auto_follow``) once per scored query type with that
type's cells left out of the query, and prints the decision and the hits of the other types:
how stable the rule's decision is.

    python benchmarks/bench_real_pair.py [--pair ../shared/data/realpairs/zeisel_tasic]
        [--resplit 3]

The data never enters the repository; this script only reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import pairot as pr
from pairot.tl._cost._labels import restrict_markers, study_markers

try:  # run as a script from benchmarks/
    from bench_accuracy import auto_choice, auto_follow
except ImportError:  # imported as benchmarks.bench_real_pair
    from .bench_accuracy import auto_choice, auto_follow

DEFAULT_PAIR = Path(__file__).resolve().parents[1] / ".." / "shared/data/realpairs/zeisel_tasic"
COLUMNS = ("cell_type", "cell_type", "pseudo_sample", "pseudo_sample")
VARIANTS = {
    "pairot": {},
    "robust": {"label_distance_mode": "robust"},
    "cell": {"lambda_label": 0.0, "lambda_feature": 1.0},
    "auto": {"label_distance_mode": "auto"},
    "auto_choice": "auto_choice",
    "auto_shrink": "auto_shrink",
    "auto_follow": "auto_follow",
}
#: ``L`` at or above this counts as saturated (the normalization caps ``L`` at 1).
SATURATED = 0.999


# ------------------------------------------------------------------------------- the data
def load(folder: Path):
    import anndata as ad

    query = ad.read_h5ad(folder / "query.h5ad")
    reference = ad.read_h5ad(folder / "reference.h5ad")
    truth = json.loads((folder / "truth.json").read_text())["truth"]
    scored = {q: list(t["accepted"]) for q, t in truth.items() if t["accepted"]}
    return query, reference, scored


def preprocess(query, reference):
    return pr.pp.preprocess_adatas(query, reference, *COLUMNS, n_top_genes=500)


def fit(q, r, kwargs) -> pr.tl.DatasetMap:
    if kwargs in ("auto_choice", "auto_shrink"):
        return fit_choice(q, r, shrink=kwargs == "auto_shrink")
    if kwargs == "auto_follow":  # tested and rejected, see bench_accuracy.auto_follow

        def make():
            fresh = pr.tl.DatasetMap(q, r)
            fresh.init_geom(label_distance_mode="auto")
            return fresh

        dm, confirmed = auto_follow(make(), make)
        dm.auto_choice = {"confirmed rows": confirmed}
        dm.init_problem()
        dm.solve(progress=False)
        return dm
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(**kwargs)
    dm.init_problem()
    dm.solve(progress=False)
    return dm


def fit_choice(q, r, shrink: bool = False) -> pr.tl.DatasetMap:
    """The ``auto_choice`` variant (``shrink``: ``auto_shrink``, its weight times the chosen
    distance's association); its choice and tests in ``dm.auto_choice``."""
    candidates = {}
    for name, kwargs in (("robust", VARIANTS["robust"]), ("pairot", VARIANTS["pairot"])):
        dm = pr.tl.DatasetMap(q, r)
        dm.init_geom(**kwargs)
        candidates[name] = dm.label_distance.to_numpy(dtype=np.float64)
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(**VARIANTS["auto"])
    dm, chosen, tests = auto_choice(dm, candidates, shrink=shrink)
    dm.init_problem()
    dm.solve(progress=False)
    dm.auto_choice = {
        "chosen": chosen,
        "lambda_label": float(dm.geom.lambda_label),
        **{f"{k} (association, p)": (round(a, 4), round(p, 4)) for k, (a, p) in tests.items()},
    }
    return dm


def scores(dm, scored) -> dict:
    """Top-1 per type, hits, per-cell accuracy per type and overall, cells following top-1."""
    mapping = dm.compute_mapping()
    best = mapping.idxmax(axis=1)
    cells = dm.compute_cell_mapping()["best"].astype(str)
    labels = pd.Series(np.asarray(dm.query_labels, dtype=object), index=cells.index)
    per_type, follow = {}, {}
    right = total = 0
    for t, accepted in scored.items():
        own = cells[labels == t]
        per_type[t] = float(own.isin(accepted).mean())
        follow[t] = float((own == best[t]).mean())
        right += int(own.isin(accepted).sum())
        total += own.size
    return {
        "mapping": mapping,
        "best": best,
        "hits": int(sum(best[t] in a for t, a in scored.items())),
        "cell_accuracy": right / total,
        "n_cells": total,
        "per_type": per_type,
        "follow": follow,
    }


def marker_counts(dm) -> tuple[pd.Series, pd.Series]:
    """Markers each cluster keeps after ``init_geom``'s selection (query: top 10 one-vs-all +
    top 3 all-vs-all per similar cluster; reference: the full filtered list)."""
    info1, info2 = dm._info
    params = dm.label_distance_params
    counts = []
    for info, clusters, query, name in (
        (info1, dm.query_clusters, True, "adata1"),
        (info2, dm.reference_clusters, False, "adata2"),
    ):
        markers = study_markers(info["de_ova"], info["de_ava"], params, query=query)
        markers = restrict_markers(markers, clusters, name)
        size = markers.groupby("cluster", observed=False).size()
        size.index = size.index.astype(str)
        counts.append(size.reindex(clusters).fillna(0).astype(int))
    return counts[0], counts[1]


def filter_passes(de_ova: pd.DataFrame) -> pd.DataFrame:
    """Per cluster, the genes passing each marker filter of the one-vs-all table alone and
    all three together (defaults: logFC >= 1, adj.P.Val <= 0.05, AUROC >= 0.6)."""
    table = de_ova.assign(
        logFC_ok=de_ova["logFC"] >= 1.0,
        adjP_ok=de_ova["adj.P.Val"] <= 0.05,
        auroc_ok=de_ova["auroc"] >= 0.6,
    )
    table["all_three"] = table["logFC_ok"] & table["adjP_ok"] & table["auroc_ok"]
    table["cluster"] = table["cluster"].astype(str)
    columns = ["logFC_ok", "adjP_ok", "auroc_ok", "all_three"]
    return table.groupby("cluster")[columns].sum()


def why_absent(gene: str, cluster: str, de_ova: pd.DataFrame) -> str:
    """Why ``gene`` is not in the reference ``cluster``'s marker list: the filters it fails
    in the reference's one-vs-all table (or ``"passes"``)."""
    row = de_ova[(de_ova["gene"].astype(str) == gene) & (de_ova["cluster"].astype(str) == cluster)]
    if row.empty:
        return "not tested"
    row = row.iloc[0]
    fails = []
    if row["logFC"] < 1.0:
        fails.append("logFC" if row["logFC"] >= 0.5 else "not up")
    if row["adj.P.Val"] > 0.05:
        fails.append("adjP")
    if row["auroc"] < 0.6:
        fails.append("AUROC")
    stats = f"logFC {row['logFC']:.2f}, adjP {row['adj.P.Val']:.3f}, AUROC {row['auroc']:.2f}"
    return f"fails {'+'.join(fails) if fails else 'none (passes)'} ({stats})"


def mean_cpm(adata, cells: np.ndarray) -> pd.Series:
    """Mean counts per 10,000 of each gene over ``cells`` (all genes of the raw study)."""
    import scipy.sparse as sp

    X = adata.X[cells]
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = X.astype(np.float64)
    X = X / np.maximum(X.sum(axis=1, keepdims=True), 1) * 1e4
    return pd.Series(X.mean(axis=0), index=adata.var_names)


# ------------------------------------------------------------------------------ sections
def section_types(scored, fits, L, cell_best) -> None:
    print("\n1. top-1 reference type per query type (* = accepted), per-cell accuracy, cells")
    print("   whose best is the cluster's top-1 (follow)")
    header = f"   {'type':6s} {'accepted':22s} {'L argmin':13s} {'cell argmax':13s}"
    for name in fits:
        header += f" {name + ' top-1':14s} {'cells':>5s} {'follow':>6s}"
    print(header)
    for t, accepted in scored.items():
        line = f"   {t:6s} {','.join(accepted):22s}"
        for answer in (L.loc[t].idxmin(), cell_best[t]):
            line += f" {answer + ('*' if answer in accepted else ''):13s}"
        for fit_ in fits.values():
            top = fit_["best"][t]
            line += f" {top + ('*' if top in accepted else ''):14s}"
            line += f" {fit_['per_type'][t]:5.2f} {fit_['follow'][t]:6.2f}"
        print(line)
    print("   totals:")
    for name, fit_ in fits.items():
        print(
            f"   {name:7s} {fit_['hits']:2d}/{len(scored)} clusters, per cell "
            f"{fit_['cell_accuracy']:.3f} over {fit_['n_cells']} cells, mean follow "
            f"{np.mean(list(fit_['follow'].values())):.2f}"
        )


def section_markers(dm, q, r, scored) -> None:
    n_query, n_ref = marker_counts(dm)
    L = dm.label_distance
    saturated = (L >= SATURATED).mean(axis=1)
    constant = L.max(axis=1) - L.min(axis=1) < 1e-9
    passes_q = filter_passes(q.uns["pairot"]["de_ova"])
    passes_r = filter_passes(r.uns["pairot"]["de_ova"])
    sizes_q = pd.Series(np.asarray(dm.query_labels, dtype=object)).value_counts()
    sizes_r = pd.Series(np.asarray(dm.reference_labels, dtype=object)).value_counts()
    print("\n2. markers kept (init_geom's selection), one-vs-all genes passing each filter")
    print("   alone (logFC >= 1 / adjP <= 0.05 / AUROC >= 0.6 / all three), saturated L")
    print(f"   {'query':6s} {'cells':>5s} {'kept':>4s} {'passes':>18s} {'L sat.':>6s}  row")
    for t in dm.query_clusters:
        p = passes_q.loc[t]
        mark = "" if t in scored else " (unscored)"
        print(
            f"   {t:6s} {sizes_q[t]:5d} {n_query[t]:4d} {p.logFC_ok:4d}/{p.adjP_ok:3d}/"
            f"{p.auroc_ok:3d}/{p.all_three:3d} {saturated[t]:6.2f}  "
            f"{'constant (ignored)' if constant[t] else ''}{mark}"
        )
    print(f"   {'reference':12s} {'cells':>5s} {'kept':>4s} {'passes':>18s}")
    for c in dm.reference_clusters:
        p = passes_r.loc[c]
        print(
            f"   {c:12s} {sizes_r[c]:5d} {n_ref[c]:4d} {p.logFC_ok:4d}/{p.adjP_ok:3d}/"
            f"{p.auroc_ok:3d}/{p.all_three:3d}"
        )
    kept = n_query.reindex(list(scored))
    size = sizes_q.reindex(list(scored))
    print(
        f"   scored query types: median {kept.median():.0f} markers kept, "
        f"{int((kept <= 3).sum())} of {len(kept)} keep <= 3; Spearman(cells, markers kept) = "
        f"{size.rank().corr(kept.rank()):.2f}; share of L saturated over all scored rows "
        f"{saturated.reindex(list(scored)).mean():.2f}; constant rows "
        f"{int(constant.reindex(list(scored)).sum())}"
    )


def section_wrong(dm, name, fit_, scored, raw_q, raw_r) -> None:
    L, D = dm.label_distance, dm._rank_distance
    de_r = dm._info[1]["de_ova"]
    wrong = [t for t, a in scored.items() if fit_["best"][t] not in a]
    rows = L.reindex(list(scored))
    print(
        f"\n3. {name}: wrong top-1 answers ({len(wrong)}); scored rows: L saturated "
        f"{(rows >= SATURATED).to_numpy().mean():.2f}, min D per row "
        f"{D.reindex(list(scored)).min(axis=1).min():.2f} to "
        f"{D.reindex(list(scored)).min(axis=1).max():.2f}"
    )
    q_labels = raw_q.obs["cell_type"].astype(str).to_numpy()
    r_labels = raw_r.obs["cell_type"].astype(str).to_numpy()
    for t in wrong:
        chosen, true = fit_["best"][t], scored[t][0]
        line = (
            f"   {t}: chose {chosen} (L {L.loc[t, chosen]:.3f}), true {true} "
            f"(L {L.loc[t, true]:.3f}); L argmin {L.loc[t].idxmin()} ({L.loc[t].min():.3f})"
        )
        if name == "pairot":
            line += f"; D true {D.loc[t, true]:.2f} vs chosen {D.loc[t, chosen]:.2f}"
        print(line)
        if name != "pairot":
            continue
        q_cpm = mean_cpm(raw_q, np.flatnonzero(q_labels == t))
        r_cpm = mean_cpm(raw_r, np.flatnonzero(r_labels == true))
        ratio = np.log2((r_cpm + 0.1) / (q_cpm + 0.1))
        for c in dict.fromkeys((true, chosen)):
            table = dm.DEGs_label_distance[t][c].sort_values("contribution", ascending=False)
            print(f"     genes of L[{t}, {c}], largest contribution first:")
            for gene, row in table.head(6).iterrows():
                ref = "absent" if np.isnan(row["rank_ref"]) else f"rank {row['rank_ref']:.0f}"
                why = why_absent(gene, c, de_r) if np.isnan(row["rank_ref"]) else ""
                print(
                    f"       {gene:10s} query rank {row['rank_query']:.0f} (logFC "
                    f"{row['logFC_query']:.2f}), ref {ref}, contribution "
                    f"{row['contribution']:.2f}; log2 ref/query expr {ratio[gene]:+.2f} {why}"
                )


def study_bias(raw_q, raw_r, scored) -> tuple[pd.Series, float]:
    """The gene-specific study bias: log2 of the mean expression (per 10,000, +0.1) over all
    reference cells / over all query cells (both studies hold the same interneuron classes),
    NaN for genes below 0.5 per 10,000 in either study; and the mean correlation, between
    matched pairs (query type, its first accepted reference type), of the per-pair log2
    ratios over those genes (a shared gene-specific bias makes the pairs' profiles alike)."""
    q_labels = raw_q.obs["cell_type"].astype(str).to_numpy()
    r_labels = raw_r.obs["cell_type"].astype(str).to_numpy()
    ratios = {}
    for t, accepted in scored.items():
        q_cpm = mean_cpm(raw_q, np.flatnonzero(q_labels == t))
        r_cpm = mean_cpm(raw_r, np.flatnonzero(r_labels == accepted[0]))
        ratios[t] = np.log2((r_cpm + 0.1) / (q_cpm + 0.1))
    frame = pd.DataFrame(ratios)
    all_q, all_r = mean_cpm(raw_q, np.arange(raw_q.n_obs)), mean_cpm(raw_r, np.arange(raw_r.n_obs))
    expressed = (all_q > 0.5) & (all_r > 0.5)
    corr = frame[expressed].corr().to_numpy()
    bias = np.log2((all_r + 0.1) / (all_q + 0.1)).where(expressed)
    return bias, float(corr[np.triu_indices_from(corr, 1)].mean())


def section_absent(dm, scored, raw_q, raw_r) -> None:
    """Over all scored types: why the query's markers are absent from the true match's list,
    and whether a gene-specific study bias tells the absent from the present ones."""
    de_r = dm._info[1]["de_ova"]
    gene_bias, consistency = study_bias(raw_q, raw_r, scored)
    reasons: dict[str, int] = {}
    n_markers = n_present = 0
    bias_of = {"present": [], "absent": []}
    for t, accepted in scored.items():
        table = dm.DEGs_label_distance[t][accepted[0]]
        for gene, row in table.iterrows():
            n_markers += 1
            if not np.isnan(row["rank_ref"]):
                n_present += 1
                bias_of["present"].append(gene_bias[gene])
                continue
            bias_of["absent"].append(gene_bias[gene])
            why = why_absent(gene, accepted[0], de_r).split(" (")[0]
            reasons[why] = reasons.get(why, 0) + 1
    print(
        f"\n   all scored types: {n_markers} query markers, {n_present} in the true match's "
        "list; the others fail in the reference:"
    )
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"     {why:28s} {n:3d}")
    known = gene_bias.dropna()
    print(
        "   gene-specific study bias b = log2(reference / query mean expression, all cells), "
        f"{known.size} genes expressed in both: sd {known.std():.2f}, |b| median "
        f"{known.abs().median():.2f}, |b| > 1 for {np.mean(known.abs() > 1):.2f}; the matched "
        f"pairs' log2 ratio profiles correlate {consistency:.2f} on average (a shared bias)"
    )
    for kind, values in bias_of.items():
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        print(
            f"     query markers {kind:7s} in the true list: {values.size:3d} with b, median b "
            f"{np.median(values):+.2f}, share b < -1: {np.mean(values < -1):.2f}"
        )


def section_competition(dm, fits, scored) -> None:
    L = dm.label_distance
    constant = L.max(axis=1) - L.min(axis=1) < 1e-9
    claims: dict[str, list[str]] = {}
    for t in dm.query_clusters:
        if not constant[t]:
            claims.setdefault(L.loc[t].idxmin(), []).append(t)
    n_query = len(dm.query_clusters)
    print(
        f"\n4. balanced marginals: each query type carries 1/{n_query} of the mass, each reference"
    )
    print(
        f"   type 1/{len(dm.reference_clusters)}; reference types claimed (argmin of a "
        "non-constant L row):"
    )
    for c, ts in claims.items():
        print(f"     {c:12s} <- {', '.join(ts)}")
    unclaimed = [c for c in dm.reference_clusters if c not in claims]
    print(f"   unclaimed reference types ({len(unclaimed)}): {', '.join(unclaimed)}")
    rows = [t for t in dm.query_clusters if constant[t]]
    answers = {t: fits["pairot"]["best"][t] for t in rows}
    print(f"   query types with a constant L row ({len(rows)}) and their pairot top-1: {answers}")


def section_scale(dm_cell, dm_label, scored) -> None:
    """Per query cell: the cell-term gap vs the label-term gap in cost units."""
    x, y = dm_cell.geom.x, dm_cell.geom.y
    rho = np.asarray(x, dtype=np.float64) @ np.asarray(y, dtype=np.float64).T
    ref = np.asarray(dm_cell.reference_labels, dtype=object)
    lab = np.asarray(dm_cell.query_labels, dtype=object)
    clusters = dm_cell.reference_clusters
    lam_f = dm_label.geom.lambda_feature
    lam_l = dm_label.geom.lambda_label
    # mean cell-term cost of each query cell to each reference type, at the default weight
    cost = np.stack([lam_f * 0.5 * (1 - rho[:, ref == c].mean(axis=1)) for c in clusters], 1)
    L = dm_label.label_distance
    print("\n5. cost scale (default weights 0.5 / 1.5): per query cell, the cell term's mean")
    print("   cost to its true type minus to its cheapest type, against the label term's")
    print("   1.5 * (L[true] - min L) of its row")
    print(f"   {'type':6s} {'cell gap (median, max)':>24s} {'label gap':>10s} {'row range':>12s}")
    gaps = []
    for t, accepted in scored.items():
        rows = np.flatnonzero(lab == t)
        j = clusters.index(accepted[0])
        gap = cost[rows, j] - cost[rows].min(axis=1)
        gaps.append(gap)
        label_gap = lam_l * (L.loc[t, accepted[0]] - L.loc[t].min())
        spread = lam_l * (L.loc[t].max() - L.loc[t].min())
        print(
            f"   {t:6s} {np.median(gap):12.4f} {gap.max():10.4f} {label_gap:10.3f} {spread:12.3f}"
        )
    gaps = np.concatenate(gaps)
    spread_cell = cost.max(axis=1) - cost.min(axis=1)
    print(
        f"   all scored cells: cell-term gap median {np.median(gaps):.4f}, cell-term range over "
        f"the 23 types median {np.median(spread_cell):.4f} (epsilon 0.05); the label term's "
        f"range of a non-constant row is up to {lam_l:.1f}"
    )


def resplit(query, reference, scored, n: int) -> None:
    print(f"\n6. pseudo-replicates: the pseudo_sample split redrawn ({n} other seeds)")
    for seed in range(2, 2 + n):
        q0, r0 = query.copy(), reference.copy()
        for k, adata in enumerate((q0, r0)):
            rng = np.random.default_rng(100 * seed + k)
            adata.obs["pseudo_sample"] = pd.Categorical(
                (np.argsort(rng.permutation(adata.n_obs)) % 4).astype(str)
            )
        q, r = preprocess(q0, r0)
        line = f"   split seed {seed}:"
        for name in ("pairot", "robust", "auto", "auto_follow"):
            dm = fit(q, r, VARIANTS[name])
            s = scores(dm, scored)
            line += f" {name} {s['hits']}/{len(scored)}, per cell {s['cell_accuracy']:.3f};"
        print(line)


def leave_one_out(q, r, scored) -> None:
    """``auto`` with one scored query type left out at a time."""
    print("\n7. auto with one scored query type left out (the others scored)")
    labels = q.obs["cell_type"].astype(str)
    for t in scored:
        others = {k: a for k, a in scored.items() if k != t}
        dm = fit(q[(labels != t).to_numpy()], r, VARIANTS["auto"])
        s = scores(dm, others)
        d = dm.label_distance_params["auto_decision"]
        wrong = [k for k in others if s["best"][k] not in others[k]]
        print(
            f"   without {t:6s}: {d['label_distance']}, lambda_label {d['lambda_label']:.4f}, "
            f"p {d['p_value']:.3f}; {s['hits']}/{len(others)} clusters, per cell "
            f"{s['cell_accuracy']:.3f}; wrong {wrong}"
        )
        for name in ("pairot", "cell", "auto_follow"):
            dm = fit(q[(labels != t).to_numpy()], r, VARIANTS[name])
            s = scores(dm, others)
            wrong = [k for k in others if s["best"][k] not in others[k]]
            print(
                f"   {'':15s}{name}: {s['hits']}/{len(others)} clusters, "
                f"per cell {s['cell_accuracy']:.3f}; wrong {wrong}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", type=Path, default=DEFAULT_PAIR)
    parser.add_argument("--resplit", type=int, default=0, help="redraw the pseudo-samples")
    parser.add_argument("--leave-one-out", action="store_true", help="auto without each type")
    args = parser.parse_args()
    logging.getLogger("pairot").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if not (args.pair / "truth.json").exists():
        parser.error(f"no real pair at {args.pair}; pass --pair shared/data/realpairs/<pair>")
    start = time.perf_counter()
    query, reference, scored = load(args.pair)
    q, r = preprocess(query, reference)
    dms = {name: fit(q, r, kwargs) for name, kwargs in VARIANTS.items()}
    fits = {name: scores(dm, scored) for name, dm in dms.items()}
    L = dms["pairot"].label_distance
    section_types(scored, fits, L, fits["cell"]["best"])
    section_markers(dms["pairot"], q, r, scored)
    for name in ("pairot", "robust"):
        section_wrong(dms[name], name, fits[name], scored, query, reference)
    section_absent(dms["pairot"], scored, query, reference)
    section_competition(dms["pairot"], fits, scored)
    section_scale(dms["cell"], dms["pairot"], scored)
    print(f"\n   auto decided: {dms['auto'].label_distance_params['auto_decision']}")
    for name in ("auto_choice", "auto_shrink"):
        print(f"   {name} chose: {dms[name].auto_choice}")
    if args.resplit:
        resplit(query, reference, scored, args.resplit)
    if args.leave_one_out:
        leave_one_out(q, r, scored)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
