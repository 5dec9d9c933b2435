"""Cluster-to-cluster label distance from ranked marker lists (docs/method.md#label-distance).

- :func:`marker_lists`: steps 1-3, the ranked marker list of every cluster of one study from
  its long one-vs-all and all-vs-all DE tables (a thin wrapper around
  :func:`pairot.pp.filter_genes_ova`, :func:`pairot.pp.filter_genes_ava` and
  :func:`pairot.pp.select_genes`).
- :func:`rank_distance`: step 4, the rank distance ``D[q, r]`` between every query cluster
  ``q`` and reference cluster ``r``, with the genes behind every entry.
- :func:`normalize_label_distance`: step 5, ``L = min(D / quantile(D, q_norm), 1)``.
- :func:`label_distance`: steps 4-5 together, with cluster names on the axes.

All functions take and return tidy DataFrames or arrays and never modify their inputs.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from pairot.pp._markers import filter_genes_ava, filter_genes_ova, select_genes

__all__ = ["label_distance", "marker_lists", "normalize_label_distance", "rank_distance"]

_MARKER_COLUMNS = ("cluster", "rank", "gene", "logFC")


# --------------------------------------------------------------------------------------------
# steps 1-3: marker lists
# --------------------------------------------------------------------------------------------
def marker_lists(
    de_ova: pd.DataFrame,
    de_ava: pd.DataFrame,
    *,
    n_genes_ova: int | None,
    n_genes_ava: int | None,
    overlap_threshold_ava: float = 0.3,
    overlap_n_genes_ava: int | None = 10,
    adj_p_val_threshold: float = 0.05,
    auroc_threshold: float = 0.6,
    logfc_threshold: float = 1.0,
    gene_filtering: bool = True,
) -> pd.DataFrame:
    """The ranked marker list of every cluster of one study (docs/method.md#label-distance,
    steps 1-3).

    Filters both DE tables with :func:`~pairot.pp.filter_genes_ova` and
    :func:`~pairot.pp.filter_genes_ava` (``logFC >= logfc_threshold``,
    ``adj.P.Val <= adj_p_val_threshold``, ``auroc >= auroc_threshold``, uninformative genes
    dropped when ``gene_filtering``) and builds the lists with :func:`~pairot.pp.select_genes`.

    Parameters
    ----------
    de_ova
        Long one-vs-all DE table of the study (columns ``cluster, gene, logFC, adj.P.Val,
        auroc`` at least), as stored by :func:`~pairot.pp.preprocess_adatas`.
    de_ava
        Long all-vs-all DE table of the same study (columns ``cluster, versus, gene, logFC,
        adj.P.Val, auroc`` at least).
    n_genes_ova
        Number of top one-vs-all markers per cluster; ``None`` keeps all. The query study uses
        10, the reference study ``None`` (its full ranked list).
    n_genes_ava
        Number of top all-vs-all markers per similar cluster; ``None`` keeps all. The query
        study uses 3, the reference study ``None``.
    overlap_threshold_ava, overlap_n_genes_ava
        Which clusters count as similar, see :func:`~pairot.pp.similar_clusters`.
    adj_p_val_threshold, auroc_threshold, logfc_threshold, gene_filtering
        The marker filter, see :func:`~pairot.pp.filter_genes_ova`.

    Returns
    -------
    Long DataFrame with columns ``cluster`` (Categorical with every cluster of ``de_ova``,
    also those without markers), ``rank`` (0-based position in the list; see
    docs/method.md#rank-convention), ``gene``, ``logFC``
    and ``reference`` (``"all"`` or the similar cluster behind an all-vs-all marker), sorted
    by cluster then rank: the long output of :func:`~pairot.pp.select_genes`.
    """
    thresholds = {
        "logfc_threshold": logfc_threshold,
        "adj_pval_threshold": adj_p_val_threshold,
        "aucroc_threshold": auroc_threshold,
        "gene_filtering": gene_filtering,
    }
    ova = filter_genes_ova(de_ova, **thresholds)
    ava = filter_genes_ava(de_ava, **thresholds)
    return select_genes(
        ova,
        ava,
        n_genes_ova=n_genes_ova,
        n_genes_ava=n_genes_ava,
        overlap_threshold=overlap_threshold_ava,
        overlap_n_genes=overlap_n_genes_ava,
    )


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_number(value, argument: str, *, example: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        msg = f"{argument} must be a real number, got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    value = float(value)
    if not np.isfinite(value):
        msg = f"{argument} must be a finite number, got {value}; pass e.g. {argument}={example}."
        raise ValueError(msg)
    return value


def _check_missing_rank(missing_rank) -> float:
    missing_rank = _check_number(missing_rank, "missing_rank", example="250")
    if missing_rank < 0:
        msg = (
            f"missing_rank must be >= 0 (the 0-based rank given to a gene absent from a "
            f"reference list), got {missing_rank}; the method's default is 250."
        )
        raise ValueError(msg)
    return missing_rank


def _check_q_norm(q_norm) -> float:
    q_norm = _check_number(q_norm, "q_norm", example="0.33")
    if not 0.0 < q_norm <= 1.0:
        msg = (
            f"q_norm must lie in (0, 1] (the quantile of D that maps to 1), got {q_norm}; "
            "the method's default is 0.33."
        )
        raise ValueError(msg)
    return q_norm


class _Markers:
    """A marker-list table as arrays: cluster codes, categories, genes, ranks, logFC."""

    def __init__(self, table, argument: str):
        if not isinstance(table, pd.DataFrame):
            msg = (
                f"{argument} must be a pandas DataFrame (the output of marker_lists), got "
                f"{type(table).__name__}."
            )
            raise TypeError(msg)
        missing = [c for c in _MARKER_COLUMNS if c not in table.columns]
        if missing:
            msg = (
                f"{argument} is missing the column(s) {missing}; it has {list(table.columns)}. "
                f"Pass the output of marker_lists (columns {list(_MARKER_COLUMNS)})."
            )
            raise ValueError(msg)

        cluster = table["cluster"]
        if isinstance(cluster.dtype, pd.CategoricalDtype):
            self.codes = cluster.cat.codes.to_numpy().astype(np.int64)
            self.categories = cluster.cat.categories
        else:
            categorical = pd.Categorical(cluster)
            self.codes = categorical.codes.astype(np.int64)
            self.categories = categorical.categories
        if (self.codes < 0).any():
            msg = (
                f"{argument}['cluster'] has {int((self.codes < 0).sum())} missing value(s); "
                "every marker row needs a cluster name: drop those rows first."
            )
            raise ValueError(msg)

        genes = table["gene"].to_numpy(dtype=object)
        if pd.isna(genes).any():
            msg = (
                f"{argument}['gene'] has {int(pd.isna(genes).sum())} missing value(s); every "
                "marker row needs a gene name: drop those rows first."
            )
            raise ValueError(msg)
        self.genes = genes

        for column in ("rank", "logFC"):
            dtype = table[column].dtype
            if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
                msg = (
                    f"{argument}[{column!r}] must be numeric, got dtype {dtype}; pass the "
                    "output of marker_lists."
                )
                raise TypeError(msg)
        rank = table["rank"].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(rank) | (rank < 0) | (rank != np.round(rank))
        if bad.any():
            example = table["rank"].iloc[int(np.flatnonzero(bad)[0])]
            msg = (
                f"{argument}['rank'] must hold 0-based integer positions (>= 0), got e.g. "
                f"{example!r} in {int(bad.sum())} row(s); pass the output of marker_lists."
            )
            raise ValueError(msg)
        self.rank = rank.astype(np.int64)
        self.logfc = table["logFC"].to_numpy(dtype=np.float64, na_value=np.nan)

        gene_codes, gene_names = pd.factorize(genes)
        pairs = self.codes * max(len(gene_names), 1) + gene_codes
        duplicated = pd.Series(pairs).duplicated().to_numpy()
        if duplicated.any():
            first = int(np.flatnonzero(duplicated)[0])
            msg = (
                f"{argument} lists gene {genes[first]!r} more than once for cluster "
                f"{self.categories[self.codes[first]]!r}; a marker list holds each gene once."
            )
            raise ValueError(msg)


# --------------------------------------------------------------------------------------------
# step 4: rank distance
# --------------------------------------------------------------------------------------------
def rank_distance(
    query_markers: pd.DataFrame,
    reference_markers: pd.DataFrame,
    *,
    missing_rank: float = 250,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Rank distance between every query cluster and every reference cluster (step 4).

    For query cluster ``q`` and reference cluster ``r``: each gene ``g`` of ``q``'s list at
    0-based rank ``rq`` is looked up in ``r``'s list, where it has 0-based rank ``rr``, or
    ``rr = missing_rank`` when it is absent there; then

    ``D[q, r] = mean_g |log1p(rq) - log1p(rr)|``.

    ``D[q, r] = missing_rank`` for every ``r`` when ``q`` has no markers. A reference cluster
    without markers needs no special case: every gene of ``q`` is absent from it, so
    ``D[q, r] = mean_g |log1p(rq) - log1p(missing_rank)|``. The formula is applied as stated:
    a gene present in ``r``'s (full, uncut) list at a rank beyond ``missing_rank`` contributes
    more than an absent gene.

    Parameters
    ----------
    query_markers
        Marker lists of the query study, the output of :func:`marker_lists` (columns
        ``cluster, rank, gene, logFC`` at least; ``rank`` is the 0-based position used as
        ``rq``). Query clusters are the categories of ``cluster`` (a non-categorical column
        gives the sorted distinct names); a category without rows has no markers.
    reference_markers
        Marker lists of the reference study, the same format; ``rank`` gives ``rr``.
    missing_rank
        Rank of a gene absent from a reference list, and the distance of a query cluster
        without markers.

    Returns
    -------
    D
        Array of shape (query clusters, reference clusters), float64, rows and columns in
        category order of the two ``cluster`` columns.
    details
        Tidy DataFrame, one row per (query cluster, reference cluster, gene of the query
        cluster's list), sorted by ``query_cluster``, ``reference_cluster`` (category order)
        and ``rank_query``, with columns ``query_cluster``, ``reference_cluster``
        (Categoricals with all clusters of each study), ``gene``, ``rank_query`` (int64),
        ``rank_reference`` (float64; NaN when the gene is absent from the reference list, in
        which case ``missing_rank`` entered the distance), ``logFC_query``,
        ``logFC_reference`` (NaN when absent) and ``contribution``
        (``|log1p(rq) - log1p(rr)|``; ``D[q, r]`` is its mean over the rows of ``(q, r)``).
        Query clusters without markers have no rows.
    """
    missing_rank = _check_missing_rank(missing_rank)
    query = _Markers(query_markers, "query_markers")
    reference = _Markers(reference_markers, "reference_markers")
    n_query, n_reference = len(query.categories), len(reference.categories)

    # query rows by cluster, then rank
    order = np.lexsort((query.rank, query.codes))
    q_codes, q_rank = query.codes[order], query.rank[order]
    q_genes, q_logfc = query.genes[order], query.logfc[order]

    # (query genes x reference clusters) lookup of the reference rank and logFC, built once
    gene_codes, gene_names = pd.factorize(q_genes)
    ref_gene = pd.Index(gene_names, dtype=object).get_indexer(reference.genes)
    found = ref_gene >= 0
    rank_lookup = np.full((len(gene_names), n_reference), np.nan)
    logfc_lookup = np.full((len(gene_names), n_reference), np.nan)
    rank_lookup[ref_gene[found], reference.codes[found]] = reference.rank[found]
    logfc_lookup[ref_gene[found], reference.codes[found]] = reference.logfc[found]

    rank_reference = rank_lookup[gene_codes]  # query rows x reference clusters
    used = np.where(np.isnan(rank_reference), missing_rank, rank_reference)
    contribution = np.abs(np.log1p(q_rank.astype(np.float64))[:, None] - np.log1p(used))

    sums = np.zeros((n_query, n_reference))
    np.add.at(sums, q_codes, contribution)
    counts = np.bincount(q_codes, minlength=n_query).astype(np.float64)
    D = np.full((n_query, n_reference), missing_rank)
    has_markers = counts > 0
    D[has_markers] = sums[has_markers] / counts[has_markers, None]

    # details: row-major over (query row, reference cluster), then sorted by q, r, rank
    n_rows = q_codes.size
    ref_codes = np.tile(np.arange(n_reference, dtype=np.int64), n_rows)
    q_rep = np.repeat(q_codes, n_reference)
    rank_rep = np.repeat(q_rank, n_reference)
    flat = np.lexsort((rank_rep, ref_codes, q_rep))
    row_of = flat // max(n_reference, 1)
    details = pd.DataFrame(
        {
            "query_cluster": pd.Categorical.from_codes(q_rep[flat], categories=query.categories),
            "reference_cluster": pd.Categorical.from_codes(
                ref_codes[flat], categories=reference.categories
            ),
            "gene": q_genes[row_of],
            "rank_query": rank_rep[flat],
            "rank_reference": rank_reference.ravel()[flat],
            "logFC_query": q_logfc[row_of],
            "logFC_reference": logfc_lookup[gene_codes].ravel()[flat],
            "contribution": contribution.ravel()[flat],
        }
    )
    return D, details


# --------------------------------------------------------------------------------------------
# step 5: normalization
# --------------------------------------------------------------------------------------------
def normalize_label_distance(D, q_norm: float = 0.33) -> np.ndarray:
    """Scale the rank distance to the label distance ``L = min(D / quantile(D, q_norm), 1)``.

    The quantile is taken over all entries of ``D`` with numpy's default (linear
    interpolation) method, ``np.quantile(D, q_norm)``. Entries at or above the quantile map to
    1, so at least a fraction ``1 - q_norm`` of the cluster pairs (the far ones) get the
    largest label cost.

    Degenerate case: when the quantile is 0 (at least a fraction ``q_norm`` of the entries are
    0), the ratio is 0/0 or x/0; then entries with ``D == 0`` map to 0 and all others to 1,
    the limit of ``min(D / s, 1)`` as the scale ``s`` goes to 0. The result is never NaN.

    Parameters
    ----------
    D
        Rank distances (array-like or DataFrame, any shape, usually query x reference
        clusters); finite and non-negative.
    q_norm
        Quantile of ``D`` that maps to 1, in (0, 1].

    Returns
    -------
    Float64 array of the shape of ``D`` with values in [0, 1] (empty when ``D`` is empty).
    """
    q_norm = _check_q_norm(q_norm)
    try:
        D = np.array(D, dtype=np.float64)
    except (TypeError, ValueError) as error:
        msg = f"D must be an array of numbers (rank distances), could not convert it: {error}"
        raise TypeError(msg) from error
    if not np.isfinite(D).all():
        msg = (
            f"D has {int((~np.isfinite(D)).sum())} non-finite value(s) (NaN or infinite); "
            "pass the finite rank distances from rank_distance."
        )
        raise ValueError(msg)
    if (D < 0).any():
        msg = (
            f"D has negative values (minimum {D.min()}); rank distances are >= 0: pass the "
            "output of rank_distance."
        )
        raise ValueError(msg)
    if D.size == 0:
        return D
    scale = float(np.quantile(D, q_norm))
    if scale > 0:
        return np.minimum(D / scale, 1.0)
    return (D > 0).astype(np.float64)


# --------------------------------------------------------------------------------------------
# steps 4-5
# --------------------------------------------------------------------------------------------
def label_distance(
    query_markers: pd.DataFrame,
    reference_markers: pd.DataFrame,
    *,
    q_norm: float = 0.33,
    missing_rank: float = 250,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rank distance and normalized label distance between query and reference clusters.

    :func:`rank_distance` followed by :func:`normalize_label_distance`
    (docs/method.md#label-distance, steps 4-5).

    Parameters
    ----------
    query_markers, reference_markers
        Marker lists of the two studies, outputs of :func:`marker_lists` (the query with
        ``n_genes_ova=10, n_genes_ava=3``, the reference with ``None, None``).
    q_norm
        Quantile of the rank distance that maps to 1, in (0, 1].
    missing_rank
        Rank of a gene absent from a reference list and distance of a query cluster without
        markers.

    Returns
    -------
    D
        Rank distance, DataFrame with the query clusters as index (named ``query_cluster``)
        and the reference clusters as columns (named ``reference_cluster``), in category
        order.
    L
        Label distance ``min(D / quantile(D, q_norm), 1)``, same axes, values in [0, 1].
    details
        The genes behind every entry, see :func:`rank_distance`.
    """
    q_norm = _check_q_norm(q_norm)
    D, details = rank_distance(query_markers, reference_markers, missing_rank=missing_rank)
    index = pd.Index(details["query_cluster"].cat.categories, name="query_cluster")
    columns = pd.Index(details["reference_cluster"].cat.categories, name="reference_cluster")
    L = normalize_label_distance(D, q_norm)
    return (
        pd.DataFrame(D, index=index, columns=columns),
        pd.DataFrame(L, index=index.copy(), columns=columns.copy()),
        details,
    )
