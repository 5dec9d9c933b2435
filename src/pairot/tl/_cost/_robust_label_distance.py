"""The ``"robust"`` label distance: AUROC up-regulation profiles instead of marker lists
(docs/method.md#robust-label-distance).

For every cluster ``k`` of a study, its one-vs-all AUROC over all genes ``g`` of the DE table
gives an up-regulation profile ``u[k, g] = max(auroc[k, g] - 0.5, 0)`` (0 where the AUROC is
missing). A query cluster ``q`` and a reference cluster ``r`` are compared by the Pearson
correlation of their profiles over the genes both studies tested (less those the gene filter
drops, with ``gene_filtering``), ``S[q, r] = corr_g(u_q, u_r)`` (0 when a profile is
constant), and

``D = 1 - S`` (in [0, 2]),  ``L = min(D / quantile(D, q_norm), 1)``,

the same normalization as the published method's step 5
(:func:`~pairot.tl._label_distance.normalize_label_distance`). No threshold decides whether a
gene counts: a cluster whose markers are too weak to pass the published filters still has a
profile, and a profile that is only noise correlates with nothing, so its row of ``D`` stays
above the quantile and its ``L`` at 1 (a constant row, which the transport ignores).

Cost: two dense (clusters x genes) arrays and one matrix product, ``O(K_q K_r G)`` time and
``O((K_q + K_r) G + K_q K_r)`` memory; cells never enter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pairot.pp._gene_filter import gene_filter_mask

from ._label_distance import _check_q_norm, normalize_label_distance

__all__ = ["LABEL_DISTANCE_MODES", "check_mode", "robust_label_distance", "up_profiles"]

#: The label distances ``DatasetMap.init_geom(label_distance_mode=...)`` can build:
#: ``"pairot"``, the published method's ranked marker lists (the default), ``"robust"``, and
#: ``"auto"``, the robust one weighted (or dropped) by a rule on the pair's data
#: (:mod:`._auto_label_distance`).
LABEL_DISTANCE_MODES = ("pairot", "robust", "auto")

_OVA_COLUMNS = ("cluster", "gene", "auroc")


def check_mode(mode) -> str:
    """``mode`` if it is one of :data:`LABEL_DISTANCE_MODES`, else a clear error."""
    if not isinstance(mode, str):
        msg = (
            f"label_distance_mode must be a string, one of {list(LABEL_DISTANCE_MODES)}, got "
            f"{mode!r} ({type(mode).__name__})."
        )
        raise TypeError(msg)
    if mode not in LABEL_DISTANCE_MODES:
        msg = (
            f"label_distance_mode={mode!r} is not a label distance; choose one of "
            f"{list(LABEL_DISTANCE_MODES)} ('pairot', the published method, is the default; "
            "'robust' for studies with few markers, see docs/method.md#robust-label-distance; "
            "'auto' to let the pair decide, see docs/method.md#automatic-label-distance)."
        )
        raise ValueError(msg)
    return mode


def up_profiles(
    de_ova: pd.DataFrame,
    clusters: list[str],
    genes: pd.Index,
    *,
    argument: str = "de_ova",
) -> np.ndarray:
    """The up-regulation profiles ``max(auroc - 0.5, 0)``, clusters x genes (float64).

    Parameters
    ----------
    de_ova
        Long one-vs-all DE table (columns ``cluster, gene, auroc`` at least).
    clusters
        The clusters, in the order of the rows of the result; each must occur in
        ``de_ova["cluster"]``.
    genes
        The genes, in the order of the columns of the result. A gene without a row for a
        cluster, or with a NaN AUROC, gets 0 there.
    argument
        The name of ``de_ova`` in messages.

    Returns
    -------
    Array of shape ``(len(clusters), len(genes))``, values in [0, 0.5].
    """
    if not isinstance(de_ova, pd.DataFrame):
        msg = (
            f"{argument} must be a pandas DataFrame (a long one-vs-all DE table), got "
            f"{type(de_ova).__name__}."
        )
        raise TypeError(msg)
    missing = [c for c in _OVA_COLUMNS if c not in de_ova.columns]
    if missing:
        msg = (
            f"{argument} is missing the column(s) {missing}; it has {list(de_ova.columns)}. "
            "Pass the one-vs-all table of preprocess_adatas (uns['pairot']['de_ova'])."
        )
        raise ValueError(msg)
    row, present = _positions(de_ova["cluster"], pd.Index(clusters, dtype=object))
    col, _ = _positions(de_ova["gene"], pd.Index(genes, dtype=object))
    absent = [c for c, seen in zip(clusters, present, strict=True) if not seen]
    if absent:
        msg = (
            f"{argument} has no rows for the cluster(s) {absent}; were the labels changed "
            "after preprocess_adatas?"
        )
        raise ValueError(msg)
    auroc = pd.to_numeric(de_ova["auroc"], errors="coerce").to_numpy(dtype=np.float64)
    keep = (row >= 0) & (col >= 0) & np.isfinite(auroc)
    profiles = np.zeros((len(clusters), len(genes)))
    profiles[row[keep], col[keep]] = np.maximum(auroc[keep] - 0.5, 0.0)
    return profiles


def _codes(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (-1 for missing) and the names behind them, without converting every
    row to a string (the long tables hold clusters x genes rows)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy().astype(np.int64), column.cat.categories.astype(str)
    codes, names = pd.factorize(column.to_numpy(dtype=object))
    return codes.astype(np.int64), pd.Index(names).astype(str)


def _positions(column: pd.Series, index: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """The position of every row's value in ``index`` (-1 when absent) and, for every entry
    of ``index``, whether some row holds it."""
    codes, names = _codes(column)
    lookup = np.append(index.get_indexer(names), -1)  # code -1 (missing) -> -1
    positions = lookup[codes]
    seen = np.bincount(positions[positions >= 0], minlength=len(index)) > 0
    return positions, seen


def _genes(column: pd.Series) -> pd.Index:
    """The distinct names of a gene column that some row holds, in order of first code."""
    codes, names = _codes(column)
    used = np.bincount(codes[codes >= 0], minlength=len(names)) > 0
    return names[used]


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with every row of ``b`` (0 for a constant
    row)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    a = np.divide(a, na[:, None], out=np.zeros_like(a), where=na[:, None] > 0)
    b = np.divide(b, nb[:, None], out=np.zeros_like(b), where=nb[:, None] > 0)
    return np.clip(a @ b.T, -1.0, 1.0)


def robust_label_distance(
    query_ova: pd.DataFrame,
    reference_ova: pd.DataFrame,
    query_clusters: list[str],
    reference_clusters: list[str],
    *,
    q_norm: float = 0.33,
    gene_filtering: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The robust label distance between every query and every reference cluster.

    See the module docstring and docs/method.md#robust-label-distance.

    Parameters
    ----------
    query_ova, reference_ova
        Long one-vs-all DE tables of the two studies (``uns["pairot"]["de_ova"]``; columns
        ``cluster, gene, auroc`` at least). The genes compared are those of both tables.
    query_clusters, reference_clusters
        The clusters of each study, in the order of the result's rows and columns.
    q_norm
        Quantile of ``D`` that maps to 1, in (0, 1].
    gene_filtering
        Leave out the genes :func:`pairot.pp.gene_filter_mask` drops (as the published
        marker filter does).

    Returns
    -------
    D
        ``1 - S``, the profile dissimilarity, DataFrame (index ``query_cluster``, columns
        ``reference_cluster``), values in [0, 2].
    L
        ``min(D / quantile(D, q_norm), 1)``, same axes, values in [0, 1].
    """
    q_norm = _check_q_norm(q_norm)
    query_genes = _genes(query_ova["gene"])
    genes = pd.Index(query_genes[query_genes.isin(_genes(reference_ova["gene"]))], dtype=object)
    if gene_filtering and len(genes):
        dropped = gene_filter_mask(np.asarray(genes, dtype=object), what="the DE tables' genes")
        genes = genes[~dropped]
    u_query = up_profiles(query_ova, query_clusters, genes, argument="query_ova")
    u_reference = up_profiles(reference_ova, reference_clusters, genes, argument="reference_ova")
    D = 1.0 - _correlation(u_query, u_reference)
    L = normalize_label_distance(D, q_norm)
    index = pd.Index(list(query_clusters), name="query_cluster")
    columns = pd.Index(list(reference_clusters), name="reference_cluster")
    return (
        pd.DataFrame(D, index=index, columns=columns),
        pd.DataFrame(L, index=index.copy(), columns=columns.copy()),
    )
