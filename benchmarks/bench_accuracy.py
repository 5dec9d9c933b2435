"""Top-1 accuracy of the label distances: the published one, the robust one, and none.

For every regime and seed: draw a study pair (``pairot.datasets.simulate_pair``, or split the
bundled PBMC data with ``pairot.datasets.pbmc_demo``), run ``preprocess_adatas`` (300 HVGs),
then fit the map three times:

- ``default``: ``init_geom()`` (``label_distance_mode="pairot"``, the published method);
- ``robust``: ``init_geom(label_distance_mode="robust")``;
- ``spearman``: ``init_geom(lambda_label=0)``, the Spearman cell term alone;
- ``cell``: ``init_geom(lambda_label=0, lambda_feature=1)``, the cell term alone at the full
  weight (the issue-26 definition; with ``lambda_label=0`` the weight only rescales epsilon);
- ``auto``: ``init_geom(label_distance_mode="auto")``; the goal table after the summary counts,
  per regime, the seeds on which it is below the better of ``default`` and ``cell``, for the
  clusters and for the cells;
- ``auto_choice``: a tested variant of ``auto`` (see docs/method.md#automatic-label-distance):
  the same weights, but the label distance (published or robust) whose rows agree better with
  the cell term (:func:`~pairot.tl._cost._auto_label_distance.choose`), or none when neither
  agrees beyond chance; built by the script from the ``auto`` fit's geometry (where it picks
  what ``auto`` picked, the geometry is ``auto``'s and its row is copied);
- ``auto_shrink``: ``auto_choice`` with the weight times the chosen distance's agreement;
- ``auto_confirm``, ``auto_confirm0``, ``auto_confirm_nogate``, ``auto_mean``, ``auto_follow``,
  ``auto_mean_follow``: tested and rejected variants of ``auto`` that give rows of ``L`` the
  published weight 1.5 where the cells confirm them, or average the two label distances (see
  :func:`auto_confirm`, :func:`auto_mean`, :func:`auto_follow` and
  docs/method.md#automatic-label-distance);

and count the query clusters whose best ``"mean"`` mapping score is their true reference
cluster (top-1 correct), and the query cells (of the scored clusters) whose ``best`` in
``compute_cell_mapping()`` is their cluster's true reference cluster (``cells``). Truth: the
simulator's truth table (``uns["simulation"]["truth"]``): the same fine type, or, in
``coarse_reference``, the parent lineage the reference is labelled with. In ``missing_type``
the query type without a counterpart is left out of the score (its best match is always wrong
by construction; whether it is flagged unmatched is ``bench_novelty.py``'s question). For the
PBMC pairs the truth is the same ``bulk_labels`` name in both halves.

``--variants`` also scores the other label distances that were measured on the way to the
robust mode (built here from the same DE tables and put into the same geometry).

    python benchmarks/bench_accuracy.py [--regimes plentiful,few_samples,...] [--seeds 10]
        [--variants] [--methods default,robust,cell,auto,auto_choice] [--csv rows.csv]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

import pairot as pr
from pairot.tl._cost._auto_label_distance import cell_term_summary, choose
from pairot.tl._cost._label_distance import marker_lists, normalize_label_distance
from pairot.tl._cost._robust_label_distance import robust_label_distance

N_TOP_GENES = 300

#: Noisy studies: low library sizes, weak type programs, study and donor effects, high
#: dispersion. The stressed regimes start from here.
NOISY = {
    "n_cells_query": 600,
    "n_cells_reference": 800,
    "n_genes": 1500,
    "n_cell_types": 10,
    "mean_library_size": 800.0,
    "marker_log_fold_change": (0.5, 1.2),
    "n_markers_type": 8,
    "n_markers_lineage": 15,
    "study_effect_sd": 0.4,
    "donor_effect_sd": 0.2,
    "dispersion": 0.4,
}

#: name -> (description, simulate_pair arguments, or ("pbmc", pseudo-donors per study))
#: The diverged_markers regime (real_like starts from it).
DIVERGED = {
    **NOISY,
    "n_cells_query": 250,
    "n_cells_reference": 700,
    "n_genes": 3000,
    "n_cell_types": 16,
    "n_lineages": 3,
    "n_reference_only_types": 6,
    "n_markers_type": 40,
    "n_markers_lineage": 60,
    "marker_log_fold_change": (0.5, 1.5),
    "marker_divergence": 0.4,
    "mean_library_size": 4000.0,
    "min_cells_per_type": 10,
    "type_imbalance": 3.0,
    "donor_effect_sd": 0.0,
}

REGIMES = {
    "plentiful": (
        "simulator defaults (8 types, 20 markers per type, 4 donors), 800 + 800 cells",
        {"n_cells_query": 800, "n_cells_reference": 800, "n_genes": 1000},
    ),
    "fine_powered": (
        "8 subtypes in 2 lineages (60 lineage genes), 3 type genes each (log-FC 0.6-1.2), "
        "8 donors, 2000 + 2000 cells",
        {
            "n_cells_query": 2000,
            "n_cells_reference": 2000,
            "n_genes": 1500,
            "n_cell_types": 8,
            "n_lineages": 2,
            "n_markers_lineage": 60,
            "n_markers_type": 3,
            "marker_log_fold_change": (0.6, 1.2),
            "mean_library_size": 800.0,
            "n_samples_query": 8,
            "n_samples_reference": 8,
            "study_effect_sd": 0.4,
            "dispersion": 0.4,
        },
    ),
    "noisy": ("noisy studies, 10 types, 8 markers per type, 4 donors, 600 + 800 cells", NOISY),
    "few_samples": (
        "noisy, 2 donors per study",
        {**NOISY, "n_samples_query": 2, "n_samples_reference": 2},
    ),
    "small_clusters": (
        "noisy, 12 types in 250 + 300 cells (10-30 cells per cluster)",
        {
            **NOISY,
            "n_cells_query": 250,
            "n_cells_reference": 300,
            "n_cell_types": 12,
            "min_cells_per_type": 10,
            "type_imbalance": 3.0,
        },
    ),
    "few_markers": ("noisy, 3 markers per type", {**NOISY, "n_markers_type": 3}),
    "fine_subtypes": (
        "noisy, 10 subtypes in 2 lineages (30 lineage genes), 3 type genes each",
        {**NOISY, "n_lineages": 2, "n_markers_lineage": 30, "n_markers_type": 3},
    ),
    "coarse_reference": (
        "noisy, 9 fine query types, reference labelled by its 3 lineages (truth: the parent)",
        {**NOISY, "scenario": "coarse_reference", "n_cell_types": 9, "n_lineages": 3},
    ),
    "missing_type": (
        "noisy, one query type absent from the reference (similarity 0.5 to its nearest "
        "type; left out of the score)",
        {**NOISY, "scenario": "missing_type", "missing_type_similarity": 0.5},
    ),
    "tiny": (
        "noisy, 6 types, 3 markers per type, 2 donors, 240 + 240 cells (the CI test's regime)",
        {
            **NOISY,
            "n_cells_query": 240,
            "n_cells_reference": 240,
            "n_genes": 800,
            "n_cell_types": 6,
            "n_markers_type": 3,
            "n_samples_query": 2,
            "n_samples_reference": 2,
        },
    ),
    # what the real Zeisel-Tasic pair has (docs/method.md#accuracy-on-real-studies)
    "pseudo_samples": (
        "small_clusters with random pseudo-samples (no donor effect): 12 types, 10-30 cells",
        {
            **NOISY,
            "n_cells_query": 250,
            "n_cells_reference": 300,
            "n_cell_types": 12,
            "min_cells_per_type": 10,
            "type_imbalance": 3.0,
            "donor_effect_sd": 0.0,
        },
    ),
    "protocol": (
        "noisy, reference full-length reads as round(100 x RPKM) at 4x the depth, "
        "gene-specific study bias sd 0.65",
        {
            **NOISY,
            "reference_protocol": "full_length",
            "mean_library_size_reference": 3200.0,
            "study_effect_sd": 0.65,
        },
    ),
    "reference_only": (
        "noisy, 12 types of which 4 only in the reference (8 query types)",
        {**NOISY, "n_cell_types": 12, "n_reference_only_types": 4},
    ),
    "diverged_markers": (
        "16 types in 3 lineages, 6 only in the reference, 40 type genes (log-FC 0.5-1.5) of "
        "which 40% mark another type in the reference, 10-30 cells, pseudo-samples, "
        "4,000 UMI per cell",
        DIVERGED,
    ),
    "real_like": (
        "diverged_markers with a full-length reference at 4x the depth as round(100 x RPKM) "
        "and a gene-specific study bias of sd 0.65",
        {
            **DIVERGED,
            "reference_protocol": "full_length",
            "mean_library_size_reference": 16000.0,
            "study_effect_sd": 0.65,
        },
    ),
    "pbmc": ("pbmc68k_reduced split in two, 4 pseudo-donors per study (8 types)", ("pbmc", 4)),
    "pbmc_2donors": (
        "pbmc68k_reduced split in two, 2 pseudo-donors per study (10 types)",
        ("pbmc", 2),
    ),
}
DEFAULT_REGIMES = [name for name in REGIMES if name != "tiny"]


# ------------------------------------------------------------------------------- the data
def study_pair(regime: str, seed: int):
    """``(query, reference, truth)``: the raw pair and a Series query -> true reference
    cluster (``""`` for none)."""
    _, spec = REGIMES[regime]
    if isinstance(spec, tuple):
        query, reference = pr.datasets.pbmc_demo(seed, n_samples=spec[1])
        clusters = [str(c) for c in query.obs["cell_type"].cat.categories]
        return query, reference, pd.Series(clusters, index=clusters, dtype=object)
    kwargs = dict(spec)
    n_query, n_ref = kwargs.pop("n_cells_query"), kwargs.pop("n_cells_reference")
    n_genes = kwargs.pop("n_genes")
    query, reference = pr.datasets.simulate_pair(
        n_query, n_ref, n_genes, random_state=seed, **kwargs
    )
    truth = query.uns["simulation"]["truth"]
    return (
        query,
        reference,
        pd.Series(
            truth["reference_cluster"].to_numpy(dtype=object),
            index=truth["query_cluster"].to_numpy(dtype=object),
        ),
    )


def preprocess(query, reference):
    return pr.pp.preprocess_adatas(
        query,
        reference,
        "cell_type",
        "cell_type",
        "sample_id",
        "sample_id",
        n_top_genes=N_TOP_GENES,
        random_state=0,
    )


def top1(mapping: pd.DataFrame, truth: pd.Series) -> tuple[int, int]:
    """(correct, scored): query clusters with a counterpart whose best match is it."""
    scored = truth[truth != ""]
    best = mapping.idxmax(axis=1).reindex(scored.index)
    return int((best == scored).sum()), int(scored.size)


def cell_accuracy(dm, truth: pd.Series) -> float:
    """Share of the query cells of scored clusters whose ``best`` is their true cluster."""
    scored = truth[truth != ""]
    labels = pd.Series(np.asarray(dm.query_labels, dtype=object))
    best = dm.compute_cell_mapping()["best"].astype(str).to_numpy()
    keep = labels.isin(scored.index).to_numpy()
    expected = labels[keep].map(scored).to_numpy()
    return float(np.mean(best[keep] == expected))


def solve(dm) -> pd.DataFrame:
    dm.init_problem()
    solution = dm.solve(progress=False)
    if not bool(solution.converged):
        print("  (Sinkhorn did not converge)")
    return dm.compute_mapping()


# ------------------------------------------------------------------ variants (--variants)
def _ova(info, clusters, genes, column):
    table = info["de_ova"]
    wide = table.pivot_table(
        index="cluster", columns="gene", values=column, observed=True, aggfunc="first"
    )
    wide.index = wide.index.astype(str)
    wide.columns = wide.columns.astype(str)
    return wide.reindex(index=clusters, columns=genes).to_numpy(dtype=np.float64)


def _corr(a, b):
    a = np.nan_to_num(a)
    b = np.nan_to_num(b)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return a @ b.T


def _ranks(values):
    """0-based rank of every gene within each row, largest first."""
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    ranks[np.arange(values.shape[0])[:, None], order] = np.arange(values.shape[1])[None, :]
    return ranks


def variant_distances(dm) -> dict[str, np.ndarray]:
    """The other label distances measured, each query x reference in ``dm``'s order."""
    info1, info2 = dm._info
    qc, rc = dm.query_clusters, dm.reference_clusters
    genes = sorted(
        set(info1["de_ova"]["gene"].astype(str)) & set(info2["de_ova"]["gene"].astype(str))
    )
    lfc = [_ova(info1, qc, genes, "logFC"), _ova(info2, rc, genes, "logFC")]
    signed_z = []
    for info, clusters, fold in ((info1, qc, lfc[0]), (info2, rc, lfc[1])):
        p = np.clip(_ova(info, clusters, genes, "P.Value"), 1e-300, 1.0)
        signed_z.append(np.sign(fold) * stats.norm.isf(p / 2))
    auroc = [_ova(info1, qc, genes, "auroc") - 0.5, _ova(info2, rc, genes, "auroc") - 0.5]
    out = {}
    # the published L, each row shrunk toward its mean by the query cluster's marker count
    markers = marker_lists(info1["de_ova"], info1["de_ava"], n_genes_ova=10, n_genes_ava=3)
    counts = markers.groupby("cluster", observed=False).size()
    counts.index = counts.index.astype(str)
    weight = np.minimum(counts.reindex(qc).fillna(0).to_numpy() / 10.0, 1.0)[:, None]
    L = dm.label_distance.to_numpy()
    out["shrink_by_markers"] = L.mean(1, keepdims=True) + weight * (L - L.mean(1, keepdims=True))
    out["corr_logFC"] = normalize_label_distance(1 - _corr(*lfc))
    out["corr_signed_z"] = normalize_label_distance(1 - _corr(*signed_z))
    out["corr_auroc_signed"] = normalize_label_distance(1 - _corr(*auroc))
    # the published rank distance on unthresholded lists: the query's top 10 genes by
    # signed z, ranked in the reference's full z ranking (capped at 250, as absent genes)
    rank_q = _ranks(signed_z[0])
    rank_r = np.minimum(_ranks(signed_z[1]), 250).astype(np.float64)
    D = np.zeros((len(qc), len(rc)))
    for i in range(len(qc)):
        top = np.argsort(rank_q[i])[:10]
        D[i] = np.abs(np.log1p(np.arange(10.0))[None, :] - np.log1p(rank_r[:, top])).mean(1)
    out["top10_rank_z"] = normalize_label_distance(D)
    # the robust mode without its gene filter and with signed profiles is corr_auroc_signed;
    # the library's robust mode, recomputed here as a check of the injection
    _, robust = robust_label_distance(info1["de_ova"], info2["de_ova"], qc, rc)
    out["robust_injected"] = robust.to_numpy()
    return out


def cell_summary(dm):
    """``(M, s)`` of :func:`cell_term_summary` for ``dm``'s geometry, as ``auto`` computes it."""
    geom = dm.geom
    return cell_term_summary(
        geom.x,
        geom.y,
        geom.query_codes,
        geom.ref_codes,
        len(dm.query_clusters),
        len(dm.reference_clusters),
    )


def auto_choice(dm, candidates: dict[str, np.ndarray], shrink: bool = False):
    """``dm`` (fitted with ``label_distance_mode="auto"``: ``lambda_feature = 1``) with its
    label columns rebuilt from the label distance :func:`choose` picks among ``candidates``,
    at the weight it gives (``shrink``: times the chosen distance's association, at least 0);
    returns ``(dm, chosen name, {name: (association, p)})``."""
    geom = dm.geom
    M, s = cell_summary(dm)
    name, weight, tests = choose(candidates, M, s)
    if shrink and name != "none":
        weight *= max(float(tests[name][0]), 0.0)
    L = candidates.get(name, geom.label_distance)
    x_aug = geom.x_aug.copy()
    x_aug[:, -L.shape[1] :] = (weight * L.astype(np.float32))[geom.query_codes]
    dm.geom = dataclasses.replace(
        geom, x_aug=x_aug, label_distance=np.asarray(L, dtype=np.float64), lambda_label=weight
    )
    return dm, name, tests


def with_label_distance(dm, L: np.ndarray):
    """``dm`` with the label columns of its geometry rebuilt from ``L`` (lambda kept)."""
    geom = dm.geom
    x_aug = geom.x_aug.copy()
    x_aug[:, -L.shape[1] :] = (geom.lambda_label * L.astype(np.float32))[geom.query_codes]
    dm.geom = dataclasses.replace(geom, x_aug=x_aug, label_distance=L)
    return dm


def auto_confirm(dm, low: str = "scale", gate: bool = True):
    """``dm`` (fitted with ``label_distance_mode="auto"``) with a weight per row of the robust
    ``L``: the published label weight (1.5) on the rows whose nearest reference cluster is also
    the cell term's (the diagnostics' ``disagree`` is false and the row is not constant), and on
    the other rows ``s`` (``low="scale"``, auto's equal footing) or 0 (``low="zero"``).
    ``gate``: keep auto's association test (no label term when it fails). Returns
    ``(dm, chosen)``, ``chosen`` naming how many rows were confirmed."""
    geom = dm.geom
    L = np.asarray(geom.label_distance, dtype=np.float64)
    M, s = cell_summary(dm)
    decision = dm.label_distance_params["auto_decision"]
    if (gate and decision["label_distance"] == "none") or not np.ptp(L) > 0 or not s > 0:
        return dm, "none"
    centred = M - np.nanmean(M, axis=0, keepdims=True)
    constant = np.ptp(L, axis=1) <= 1e-12
    finite = np.isfinite(centred).any(axis=1)
    cell_nearest = np.where(finite, np.nanargmin(np.where(finite[:, None], centred, 0), 1), -1)
    confirmed = ~constant & finite & (np.argmin(L, axis=1) == cell_nearest)
    weight = np.where(confirmed, 1.5, s if low == "scale" else 0.0)
    dm = _set_label_columns(dm, weight[:, None] * L, L, 1.0)
    return dm, f"{int(confirmed.sum())}/{len(confirmed)}"


def _set_label_columns(dm, weighted: np.ndarray, L: np.ndarray, lambda_label: float):
    """``dm`` with its geometry's label columns replaced by ``weighted`` (query x reference
    clusters, weights included), its label distance by ``L`` (recorded weight
    ``lambda_label``)."""
    geom = dm.geom
    x_aug = geom.x_aug.copy()
    x_aug[:, -weighted.shape[1] :] = weighted.astype(np.float32)[geom.query_codes]
    dm.geom = dataclasses.replace(
        geom, x_aug=x_aug, label_distance=L, lambda_label=float(lambda_label)
    )
    return dm


def auto_mean(dm, published: np.ndarray):
    """``dm`` (fitted with ``label_distance_mode="auto"``) with the label distance replaced by
    the mean of the robust and the published one, at auto's weight ``s``, kept only when that
    mean passes auto's association test. Returns ``(dm, chosen)``."""
    from pairot.tl._cost._auto_label_distance import decide

    geom = dm.geom
    L = 0.5 * (np.asarray(geom.label_distance, dtype=np.float64) + published)
    M, s = cell_summary(dm)
    decision = decide(L, M, s)
    dm = _set_label_columns(dm, decision.lambda_label * L, L, decision.lambda_label)
    return dm, "mean" if decision.lambda_label > 0 else "none"


def auto_follow(dm, make):
    """Two stages: ``dm`` fitted as it is (auto's weights), then ``make()`` (a fresh copy of
    ``dm``'s configuration) refitted with the published label weight 1.5 on the rows whose
    nearest reference cluster (argmin of ``L``) is that cluster's top-1 in the first fit's
    ``"mean"`` mapping (the label term, the cells and the marginals agree), the first fit's
    weight elsewhere. Returns ``(dm, chosen)``."""
    geom = dm.geom
    weight = float(geom.lambda_label)
    L = np.asarray(geom.label_distance, dtype=np.float64)
    if not weight > 0:
        return dm, "none"
    dm.init_problem()
    dm.solve(progress=False)
    top = dm.compute_mapping().to_numpy().argmax(axis=1)
    confirmed = (np.ptp(L, axis=1) > 1e-12) & (np.argmin(L, axis=1) == top)
    w = np.where(confirmed, 1.5, weight)
    fresh = _set_label_columns(make(), w[:, None] * L, L, weight)
    return fresh, f"{int(confirmed.sum())}/{len(confirmed)}"


# ----------------------------------------------------------------------------- the run
METHODS = ("default", "robust", "spearman", "cell", "auto", "auto_choice")
CONFIRM = {
    "auto_confirm": {"low": "scale"},
    "auto_confirm0": {"low": "zero"},
    "auto_confirm_nogate": {"low": "scale", "gate": False},
}


def run_seed(regime: str, seed: int, variants: bool, methods=METHODS) -> list[dict]:
    query, reference, truth = study_pair(regime, seed)
    q, r = preprocess(query, reference)
    rows = []
    fits = {
        "default": {},
        "robust": {"label_distance_mode": "robust"},
        "spearman": {"lambda_label": 0.0},
        "cell": {"lambda_label": 0.0, "lambda_feature": 1.0},
        "auto": {"label_distance_mode": "auto"},
        "auto_choice": {"label_distance_mode": "auto"},
        "auto_shrink": {"label_distance_mode": "auto"},
        **{name: {"label_distance_mode": "auto"} for name in CONFIRM},
        "auto_mean": {"label_distance_mode": "auto"},
        "auto_follow": {"label_distance_mode": "auto"},
        "auto_mean_follow": {"label_distance_mode": "auto"},
    }
    n_markers = None
    candidates: dict[str, np.ndarray] = {}
    if {"auto_choice", "auto_shrink", "auto_mean", "auto_mean_follow"} & set(methods):
        for name, kwargs in (("robust", fits["robust"]), ("pairot", fits["default"])):
            dm = pr.tl.DatasetMap(q, r)
            dm.init_geom(**kwargs)
            candidates[name] = dm.label_distance.to_numpy(dtype=np.float64)
    for method, kwargs in fits.items():
        if method not in methods:
            continue
        dm = pr.tl.DatasetMap(q, r)
        dm.init_geom(**kwargs)
        chosen = None
        if method == "auto":
            chosen = dm.label_distance_params["auto_decision"]["label_distance"]
        if method == "auto_choice":
            order = {name: candidates[name] for name in ("robust", "pairot")}
            dm, chosen, _ = auto_choice(dm, order)
            same = [row for row in rows if row["method"] == "auto" and row["chosen"] == chosen]
            if same:  # the same label distance at the same weight: the same geometry and fit
                rows.append({**same[0], "method": "auto_choice"})
                continue
        if method == "auto_shrink":  # robust first: it wins a tie
            dm, chosen, _ = auto_choice(dm, candidates, shrink=True)
        if method in CONFIRM:
            dm, chosen = auto_confirm(dm, **CONFIRM[method])
        if method in ("auto_mean", "auto_mean_follow"):
            dm, chosen = auto_mean(dm, candidates["pairot"])
        if method in ("auto_follow", "auto_mean_follow"):

            def make(mean=method == "auto_mean_follow"):
                fresh = pr.tl.DatasetMap(q, r)
                fresh.init_geom(label_distance_mode="auto")
                return auto_mean(fresh, candidates["pairot"])[0] if mean else fresh

            dm, stage = auto_follow(dm, make)
            chosen = f"{chosen} {stage}"
        if n_markers is None:
            degs = dm.DEGs_label_distance
            first = dm.reference_clusters[0]
            n_markers = float(np.median([len(degs[c][first]) for c in dm.query_clusters]))
        correct, scored = top1(solve(dm), truth)
        rows.append(
            {
                "method": method,
                "correct": correct,
                "scored": scored,
                "cells": cell_accuracy(dm, truth),
                "chosen": chosen,
            }
        )
    if variants:
        dm = pr.tl.DatasetMap(q, r)
        dm.init_geom()
        base = dm.geom
        for method, L in variant_distances(dm).items():
            dm.geom = base
            correct, scored = top1(solve(with_label_distance(dm, L)), truth)
            rows.append({"method": method, "correct": correct, "scored": scored})
    for row in rows:
        row.update(regime=regime, seed=seed, markers=n_markers)
    return rows


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Per regime and method: the mean correct clusters per seed (of the scored ones), the
    total, and the seeds on which the method is worse / better than the default."""
    out = []
    for (regime, method), part in frame.groupby(["regime", "method"], sort=False):
        default = frame[(frame.regime == regime) & (frame.method == "default")].set_index("seed")
        gap = part.set_index("seed")["correct"] - default["correct"]
        out.append(
            {
                "regime": regime,
                "method": method,
                "seeds": part["seed"].nunique(),
                "scored per seed": part["scored"].mean(),
                "median markers": part["markers"].mean(),
                "correct per seed": part["correct"].mean(),
                "total": f"{part['correct'].sum()}/{part['scored'].sum()}",
                "vs default": gap.mean(),
                "seeds worse": int((gap < 0).sum()),
                "seeds better": int((gap > 0).sum()),
                "cells": part["cells"].mean(),
            }
        )
    return pd.DataFrame(out)


def goal(frame: pd.DataFrame) -> pd.DataFrame:
    """Per regime, seed by seed: ``auto`` against the better of ``default`` and ``cell``."""
    out = []
    for regime, part in frame.groupby("regime", sort=False):
        wide = part.pivot_table(index="seed", columns="method", values=["correct", "cells"])
        if "auto" not in wide["correct"]:
            continue
        best_c = wide["correct"][["default", "cell"]].max(axis=1)
        best_x = wide["cells"][["default", "cell"]].max(axis=1)
        row = {
            "regime": regime,
            "seeds": len(wide),
            "auto clusters": wide["correct"]["auto"].mean(),
            "best of default/cell": best_c.mean(),
            "seeds below (clusters)": int((wide["correct"]["auto"] < best_c).sum()),
            "auto cells": wide["cells"]["auto"].mean(),
            "best cells": best_x.mean(),
            "seeds below (cells)": int((wide["cells"]["auto"] < best_x - 1e-12).sum()),
        }
        for variant, short in (
            ("auto_choice", "choice"),
            ("auto_shrink", "shrink"),
            *((name, name.removeprefix("auto_")) for name in CONFIRM),
            ("auto_mean", "mean"),
            ("auto_follow", "follow"),
            ("auto_mean_follow", "mean_follow"),
        ):
            if variant not in wide["correct"]:
                continue
            new_c, new_x = wide["correct"][variant], wide["cells"][variant]
            old_c = wide["correct"]["auto"]
            row.update(
                {
                    f"{short} below (clusters)": int((new_c < best_c).sum()),
                    f"{short} below (cells)": int((new_x < best_x - 1e-12).sum()),
                    f"{short} < auto (clusters)": int((new_c < old_c).sum()),
                    f"{short} > auto (clusters)": int((new_c > old_c).sum()),
                }
            )
        out.append(row)
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--regimes",
        default=",".join(DEFAULT_REGIMES),
        help=f"comma-separated, from {list(REGIMES)}",
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1 (10)")
    parser.add_argument("--variants", action="store_true", help="also score the variants")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated fits (auto_choice needs default and robust)",
    )
    parser.add_argument("--first-seed", type=int, default=0, help="start at this seed (0)")
    parser.add_argument("--csv", default=None, help="write the per-seed rows to this file")
    args = parser.parse_args()
    logging.getLogger("pairot").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    regimes = args.regimes.split(",")
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        parser.error(f"unknown regime(s) {unknown}; choose from {list(REGIMES)}")
    rows = []
    start = time.perf_counter()
    for regime in regimes:
        t0 = time.perf_counter()
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows += run_seed(regime, seed, args.variants, args.methods.split(","))
        print(f"{regime}: {REGIMES[regime][0]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summarize(frame).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print(goal(frame).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        decided = frame[frame.method.str.startswith("auto")]
        if not decided.empty:
            print("label distance chosen, seed by seed (auto / auto_choice):")
            wide = decided.pivot(index=["regime", "seed"], columns="method", values="chosen")
            print(wide.to_string())
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
