"""Marker genes of each cluster from the long differential-expression tables.

See docs/method.md#label-distance.

The building blocks of the label distance, steps 1-3:

1. :func:`filter_genes_ova` / :func:`filter_genes_ava` keep the DE genes that pass the
   ``logFC`` / ``adj.P.Val`` / ``auroc`` thresholds (and, optionally, are not uninformative by
   name) and sort them by ``logFC`` within each cluster (pair);
2. :func:`similar_clusters` finds, within one study, the clusters whose top one-vs-all markers
   overlap;
3. :func:`select_genes` builds the ranked marker list of each cluster: its top one-vs-all
   markers plus its top all-vs-all markers against each similar cluster.

All functions take and return tidy (long) DataFrames and never modify their inputs.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from scipy import sparse

from ._gene_tables import gene_filter_mask

__all__ = ["filter_genes_ava", "filter_genes_ova", "select_genes", "similar_clusters"]

_OVA_FILTER_COLUMNS = ("cluster", "gene", "logFC", "adj.P.Val", "auroc")
_AVA_FILTER_COLUMNS = ("cluster", "versus", "gene", "logFC", "adj.P.Val", "auroc")
_OVA_SELECT_COLUMNS = ("cluster", "gene", "logFC")
_AVA_SELECT_COLUMNS = ("cluster", "versus", "gene", "logFC")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_table(table, argument: str, required: tuple[str, ...], hint: str) -> None:
    if not isinstance(table, pd.DataFrame):
        msg = f"{argument} must be a pandas DataFrame ({hint}), got {type(table).__name__}."
        raise TypeError(msg)
    missing = [c for c in required if c not in table.columns]
    if missing:
        msg = (
            f"{argument} is missing the column(s) {missing}; it has the columns "
            f"{list(table.columns)}. Pass {hint} (columns {list(required)})."
        )
        raise ValueError(msg)
    for column in required:
        if column in ("cluster", "versus", "gene"):
            continue
        dtype = table[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            msg = (
                f"{argument}[{column!r}] must be numeric, got dtype {dtype}; convert it, e.g. "
                f"with pd.to_numeric({argument}[{column!r}])."
            )
            raise TypeError(msg)


def _check_real(value, argument: str, low: float | None = None, high: float | None = None):
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        msg = f"{argument} must be a real number, got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    value = float(value)
    if np.isnan(value):
        msg = f"{argument} must be a number, got NaN; pass e.g. {argument}=0.3."
        raise ValueError(msg)
    if (low is not None and value < low) or (high is not None and value > high):
        msg = f"{argument} must lie in [{low}, {high}], got {value}."
        raise ValueError(msg)
    return value


def _check_n(value, argument: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        msg = (
            f"{argument} must be a non-negative integer or None (no cut), got {value!r} "
            f"({type(value).__name__})."
        )
        raise TypeError(msg)
    if value < 0:
        msg = (
            f"{argument} must be >= 0 (or None for all markers), got {value}; pass the number "
            "of top genes to keep."
        )
        raise ValueError(msg)
    return int(value)


def _check_flag(value, argument: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        msg = f"{argument} must be True or False, got {value!r}."
        raise TypeError(msg)
    return bool(value)


def _float_column(table: pd.DataFrame, column: str) -> np.ndarray:
    return table[column].to_numpy(dtype=np.float64, na_value=np.nan)


def _label_codes(table: pd.DataFrame, column: str) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (-1 = missing) and categories of a label column (Categorical or not)."""
    values = table[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), values.cat.categories
    categorical = pd.Categorical(values)
    return categorical.codes, categorical.categories


def _object_values(table: pd.DataFrame, column: str, argument: str) -> np.ndarray:
    """The labels of ``column`` as an object array; ``ValueError`` on missing values."""
    values = table[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        missing = codes < 0
        array = np.asarray(values.cat.categories, dtype=object)[np.maximum(codes, 0)]
    else:
        array = values.to_numpy(dtype=object)
        missing = pd.isna(array)
    if missing.any():
        msg = (
            f"{argument}[{column!r}] has {int(missing.sum())} missing value(s); every row "
            f"needs a {column} name: drop those rows first."
        )
        raise ValueError(msg)
    return array


def _check_no_missing(codes: np.ndarray, argument: str, column: str) -> None:
    n_missing = int(np.count_nonzero(codes < 0))
    if n_missing:
        msg = (
            f"{argument}[{column!r}] has {n_missing} missing value(s) in rows that pass the "
            f"thresholds; every row needs a {column} name: drop those rows first."
        )
        raise ValueError(msg)


# --------------------------------------------------------------------------------------------
# step 1: marker filter
# --------------------------------------------------------------------------------------------
def _filter(
    table: pd.DataFrame,
    *,
    argument: str,
    labels: tuple[str, ...],
    logfc_threshold,
    adj_p_val_threshold,
    auroc_threshold,
    gene_filtering,
) -> pd.DataFrame:
    logfc_threshold = _check_real(logfc_threshold, "logfc_threshold")
    adj_p_val_threshold = _check_real(adj_p_val_threshold, "adj_p_val_threshold", 0.0, 1.0)
    auroc_threshold = _check_real(auroc_threshold, "auroc_threshold", 0.0, 1.0)
    gene_filtering = _check_flag(gene_filtering, "gene_filtering")

    logfc = _float_column(table, "logFC")
    # comparisons with NaN are False: a NaN in any of the three columns fails the filter
    mask = logfc >= logfc_threshold
    mask &= _float_column(table, "adj.P.Val") <= adj_p_val_threshold
    mask &= _float_column(table, "auroc") >= auroc_threshold
    rows = np.flatnonzero(mask)

    if gene_filtering and rows.size:
        gene = table["gene"]
        if isinstance(gene.dtype, pd.CategoricalDtype):
            codes = gene.cat.codes.to_numpy()[rows]
            names = gene.cat.categories
        else:
            codes, names = pd.factorize(gene.to_numpy(dtype=object)[rows])
        _check_no_missing(codes, argument, "gene")
        # one decision per table: from all its genes when ``gene`` is categorical (as the
        # tables of preprocess_adatas are), else from the genes of the passing rows
        flagged = gene_filter_mask(
            np.asarray(names.astype(str), dtype=object), what=f"{argument}['gene']"
        )
        rows = rows[~flagged[codes]]

    label_codes = {}
    for column in labels:
        codes, categories = _label_codes(table, column)
        _check_no_missing(codes[rows], argument, column)
        label_codes[column] = (codes, categories)

    # one stable sort: labels in category order, then logFC descending (ties keep input order)
    keys = [-logfc[rows]] + [label_codes[c][0][rows] for c in reversed(labels)]
    rows = rows[np.lexsort(keys)]

    out = table.take(rows)
    out.index = pd.RangeIndex(rows.size)
    for column in labels:
        if not isinstance(table[column].dtype, pd.CategoricalDtype):
            codes, categories = label_codes[column]
            out[column] = pd.Categorical.from_codes(codes[rows], categories=categories)
    return out


def filter_genes_ova(
    de_ova: pd.DataFrame,
    *,
    logfc_threshold: float = 1.0,
    adj_p_val_threshold: float = 0.05,
    auroc_threshold: float = 0.6,
    gene_filtering: bool = True,
) -> pd.DataFrame:
    """Keep the one-vs-all marker genes of each cluster and sort them by ``logFC``.

    A row passes when ``logFC >= logfc_threshold``, ``adj.P.Val <= adj_p_val_threshold`` and
    ``auroc >= auroc_threshold`` (a NaN in any of these fails), and, with ``gene_filtering``,
    its gene is an official human gene symbol (:data:`~pairot.pp.OFFICIAL_GENES`) and not an
    uninformative gene (:data:`~pairot.pp.FILTERED_GENES`), as decided by
    :func:`~pairot.pp.gene_filter_mask` (which also handles mouse-style symbols and gene IDs;
    see docs/method.md#gene-filtering).

    Parameters
    ----------
    de_ova
        One-vs-all DE table, one row per (cluster, gene), with at least the columns
        ``cluster, gene, logFC, adj.P.Val, auroc`` (``P.Value`` and any other column is carried
        along). ``cluster`` and ``gene`` are best given as pandas Categoricals; a
        non-categorical ``cluster`` becomes a Categorical with the sorted distinct names.
    logfc_threshold
        Minimum log fold change.
    adj_p_val_threshold
        Maximum Benjamini-Hochberg adjusted p-value, in [0, 1].
    auroc_threshold
        Minimum AUROC, in [0, 1].
    gene_filtering
        Keep only official human gene symbols and drop mitochondrial, ribosomal, lncRNA and
        immune-receptor segment genes.

    Returns
    -------
    A new DataFrame with the passing rows and all columns of ``de_ova``, sorted by cluster (in
    category order) and then by ``logFC`` descending (a stable sort: ties keep their input
    order), with a fresh ``RangeIndex``. ``cluster`` is a Categorical with all the categories of
    the input, also those of clusters left without markers.
    """
    _check_table(de_ova, "de_ova", _OVA_FILTER_COLUMNS, "the one-vs-all DE table")
    return _filter(
        de_ova,
        argument="de_ova",
        labels=("cluster",),
        logfc_threshold=logfc_threshold,
        adj_p_val_threshold=adj_p_val_threshold,
        auroc_threshold=auroc_threshold,
        gene_filtering=gene_filtering,
    )


def filter_genes_ava(
    de_ava: pd.DataFrame,
    *,
    logfc_threshold: float = 1.0,
    adj_p_val_threshold: float = 0.05,
    auroc_threshold: float = 0.6,
    gene_filtering: bool = True,
) -> pd.DataFrame:
    """Keep the all-vs-all marker genes of each ordered cluster pair and sort them by ``logFC``.

    The same filter as :func:`filter_genes_ova`, on the all-vs-all table: a row
    ``(cluster, versus, gene)`` passes when ``logFC >= logfc_threshold``,
    ``adj.P.Val <= adj_p_val_threshold``, ``auroc >= auroc_threshold`` (NaN fails) and, with
    ``gene_filtering``, the gene is not uninformative. The work is a few boolean masks and one
    sort, so tables of tens of millions of rows are fine.

    Parameters
    ----------
    de_ava
        All-vs-all DE table, one row per ordered pair ``(cluster, versus)`` and gene, with at
        least the columns ``cluster, versus, gene, logFC, adj.P.Val, auroc``; ``logFC`` is that
        of ``cluster`` over ``versus``.
    logfc_threshold, adj_p_val_threshold, auroc_threshold, gene_filtering
        As in :func:`filter_genes_ova`.

    Returns
    -------
    A new DataFrame with the passing rows and all columns of ``de_ava``, sorted by ``cluster``,
    then ``versus`` (both in category order), then ``logFC`` descending (stable), with a fresh
    ``RangeIndex`` and the categories of ``cluster`` and ``versus`` preserved.
    """
    _check_table(de_ava, "de_ava", _AVA_FILTER_COLUMNS, "the all-vs-all DE table")
    return _filter(
        de_ava,
        argument="de_ava",
        labels=("cluster", "versus"),
        logfc_threshold=logfc_threshold,
        adj_p_val_threshold=adj_p_val_threshold,
        auroc_threshold=auroc_threshold,
        gene_filtering=gene_filtering,
    )


# --------------------------------------------------------------------------------------------
# steps 2-3: similar clusters and marker lists
# --------------------------------------------------------------------------------------------
def _group_positions(keys: np.ndarray, n_groups: int) -> np.ndarray:
    """0-based position of each element within its group, for ``keys`` sorted by group."""
    counts = np.bincount(keys, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(keys.size) - starts[keys]


class _OvaMarkers:
    """The filtered one-vs-all table as sorted arrays: codes, genes, logFC, positions."""

    def __init__(self, table: pd.DataFrame, argument: str):
        _check_table(table, argument, _OVA_SELECT_COLUMNS, "the output of filter_genes_ova")
        codes, self.categories = _label_codes(table, "cluster")
        _check_no_missing(codes, argument, "cluster")
        genes = _object_values(table, "gene", argument)
        logfc = _float_column(table, "logFC")
        if np.isnan(logfc).any():
            msg = (
                f"{argument}['logFC'] has NaN values; pass the output of filter_genes_ova, "
                "which keeps finite log fold changes only."
            )
            raise ValueError(msg)
        gene_codes, gene_names = pd.factorize(genes)
        pairs = codes.astype(np.int64) * max(len(gene_names), 1) + gene_codes
        if np.unique(pairs).size < pairs.size:
            first = int(np.flatnonzero(pd.Series(pairs).duplicated().to_numpy())[0])
            msg = (
                f"{argument} has several rows for cluster {self.categories[codes[first]]!r} and "
                f"gene {genes[first]!r}; a one-vs-all table has one row per (cluster, gene)."
            )
            raise ValueError(msg)
        # stable re-sort by cluster, logFC descending: the identity on filter_genes_ova's output
        order = np.lexsort((-logfc, codes))
        self.codes = codes[order].astype(np.int64)
        self.genes = genes[order]
        self.logfc = logfc[order]
        self.positions = _group_positions(self.codes, len(self.categories))

    def overlap(self, n_top: int | None) -> np.ndarray:
        """The scaled overlap matrix ``o[a, b]`` of the top ``n_top`` markers."""
        n_clusters = len(self.categories)
        top = np.ones(self.codes.size, dtype=bool) if n_top is None else self.positions < n_top
        gene_codes, gene_names = pd.factorize(self.genes[top])
        membership = sparse.csr_matrix(
            (np.ones(gene_codes.size), (self.codes[top], gene_codes)),
            shape=(n_clusters, max(len(gene_names), 1)),
        )
        intersection = (membership @ membership.T).toarray()
        sizes = np.bincount(self.codes[top], minlength=n_clusters).astype(np.float64)
        size_a, size_b = sizes[:, None], sizes[None, :]
        union = size_a + size_b - intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = intersection / union * (size_b / size_a)
        overlap[np.broadcast_to(size_a == 0, overlap.shape)] = 0.0
        return overlap


def _similar_mask(overlap: np.ndarray, threshold: float) -> np.ndarray:
    similar = overlap >= threshold
    np.fill_diagonal(similar, False)
    return similar


def similar_clusters(
    de_ova_filtered: pd.DataFrame,
    *,
    overlap_n_genes_ava: int | None = 10,
    overlap_threshold_ava: float = 0.3,
) -> pd.DataFrame:
    """Pairs of clusters of one study whose top one-vs-all markers overlap.

    With ``T(c)`` the top ``overlap_n_genes_ava`` markers of cluster ``c`` (by ``logFC``), the
    scaled overlap is

    ``o(a, b) = |T(a) & T(b)| / |T(a) | T(b)| * |T(b)| / |T(a)|``

    (0 when ``T(a)`` is empty). It is not symmetric: a cluster ``a`` with few markers, all
    among those of ``b``, has a large ``o(a, b)``. Cluster ``b != a`` is similar to ``a`` when
    ``o(a, b) >= overlap_threshold_ava``.

    Parameters
    ----------
    de_ova_filtered
        Output of :func:`filter_genes_ova` (columns ``cluster, gene, logFC`` at least; it is
        stably re-sorted by ``logFC`` descending within each cluster).
    overlap_n_genes_ava
        Number of top markers per cluster in ``T(c)``; ``None`` takes all of them.
    overlap_threshold_ava
        Minimum scaled overlap for ``b`` to count as similar to ``a``.

    Returns
    -------
    DataFrame with columns ``cluster`` (``a``), ``similar`` (``b``), both Categoricals with the
    clusters of ``de_ova_filtered``, and ``overlap`` (``o(a, b)``); only the pairs that pass
    the threshold, sorted by ``cluster`` then ``similar`` (category order).
    """
    overlap_n_genes_ava = _check_n(overlap_n_genes_ava, "overlap_n_genes_ava")
    overlap_threshold_ava = _check_real(overlap_threshold_ava, "overlap_threshold_ava")
    ova = _OvaMarkers(de_ova_filtered, "de_ova_filtered")
    overlap = ova.overlap(overlap_n_genes_ava)
    a, b = np.nonzero(_similar_mask(overlap, overlap_threshold_ava))
    return pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(a, categories=ova.categories),
            "similar": pd.Categorical.from_codes(b, categories=ova.categories),
            "overlap": overlap[a, b],
        }
    )


def select_genes(
    de_ova_filtered: pd.DataFrame,
    de_ava_filtered: pd.DataFrame,
    *,
    n_genes_ova: int | None = 10,
    n_genes_ava: int | None = 3,
    overlap_threshold_ava: float = 0.3,
    overlap_n_genes_ava: int | None = 10,
) -> pd.DataFrame:
    """The ranked marker list of each cluster of one study.

    The list of cluster ``a`` is its top ``n_genes_ova`` one-vs-all markers followed, for every
    cluster ``b`` similar to ``a`` (:func:`similar_clusters`, in category order of ``b``), by
    the top ``n_genes_ava`` all-vs-all markers of ``a`` versus ``b``; this concatenation is
    sorted by ``logFC`` descending with a stable sort (ties keep the concatenation order) and
    each gene is kept at its first occurrence.

    Parameters
    ----------
    de_ova_filtered
        Output of :func:`filter_genes_ova` (columns ``cluster, gene, logFC`` at least). Its
        ``cluster`` categories are the clusters of the study.
    de_ava_filtered
        Output of :func:`filter_genes_ava` (columns ``cluster, versus, gene, logFC`` at
        least), with cluster names from ``de_ova_filtered``.
    n_genes_ova
        Number of top one-vs-all markers per cluster; ``None`` keeps all (the reference
        study's full ranked list).
    n_genes_ava
        Number of top all-vs-all markers per similar cluster; ``None`` keeps all.
    overlap_threshold_ava, overlap_n_genes_ava
        Define the similar clusters, see :func:`similar_clusters`.

    Returns
    -------
    Long DataFrame with columns ``cluster`` (Categorical with all clusters of
    ``de_ova_filtered``, also those without markers), ``rank`` (0-based position in the
    cluster's list, the input of the label-distance formula; the tables users read count
    ranks from 1, see docs/method.md#rank-convention), ``gene``, ``logFC`` and ``source``
    (``"ova"``, or the name of the similar cluster, as a string, whose all-vs-all markers
    brought the gene in), sorted by cluster then rank.
    """
    n_genes_ova = _check_n(n_genes_ova, "n_genes_ova")
    n_genes_ava = _check_n(n_genes_ava, "n_genes_ava")
    overlap_n_genes_ava = _check_n(overlap_n_genes_ava, "overlap_n_genes_ava")
    overlap_threshold_ava = _check_real(overlap_threshold_ava, "overlap_threshold_ava")
    _check_table(
        de_ava_filtered, "de_ava_filtered", _AVA_SELECT_COLUMNS, "the output of filter_genes_ava"
    )
    ova = _OvaMarkers(de_ova_filtered, "de_ova_filtered")
    n_clusters = len(ova.categories)
    similar = _similar_mask(ova.overlap(overlap_n_genes_ava), overlap_threshold_ava)

    # all-vs-all rows, with cluster / versus coded in de_ova_filtered's categories
    ava_codes = []
    for column in ("cluster", "versus"):
        codes, categories = _label_codes(de_ava_filtered, column)
        _check_no_missing(codes, "de_ava_filtered", column)
        lookup = ova.categories.get_indexer(categories)
        unknown = np.unique(codes[lookup[codes] < 0])
        if unknown.size:
            names = [categories[c] for c in unknown[:5]]
            msg = (
                f"de_ava_filtered[{column!r}] has clusters that de_ova_filtered does not have, "
                f"e.g. {names}; pass the two tables of the same study (de_ova_filtered has "
                f"{list(ova.categories[:10])})."
            )
            raise ValueError(msg)
        ava_codes.append(lookup[codes].astype(np.int64))
    cl, vs = ava_codes
    genes = _object_values(de_ava_filtered, "gene", "de_ava_filtered")
    logfc = _float_column(de_ava_filtered, "logFC")
    if np.isnan(logfc).any():
        msg = (
            "de_ava_filtered['logFC'] has NaN values; pass the output of filter_genes_ava, "
            "which keeps finite log fold changes only."
        )
        raise ValueError(msg)
    order = np.lexsort((-logfc, vs, cl))
    pair = cl[order] * n_clusters + vs[order]
    gene_codes, gene_names = pd.factorize(genes[order])
    triples = pair * max(len(gene_names), 1) + gene_codes
    if np.unique(triples).size < triples.size:
        first = order[int(np.flatnonzero(pd.Series(triples).duplicated().to_numpy())[0])]
        msg = (
            f"de_ava_filtered has several rows for cluster {ova.categories[cl[first]]!r}, "
            f"versus {ova.categories[vs[first]]!r} and gene {genes[first]!r}; an all-vs-all "
            "table has one row per (cluster, versus, gene)."
        )
        raise ValueError(msg)
    positions = _group_positions(pair, n_clusters * n_clusters)
    take = similar[cl[order], vs[order]]
    if n_genes_ava is not None:
        take &= positions < n_genes_ava
    ava_rows = order[take]
    ova_rows = (
        np.arange(ova.codes.size)
        if n_genes_ova is None
        else np.flatnonzero(ova.positions < n_genes_ova)
    )

    # candidates in concatenation order: block 0 = OVA, block 1 + b = AVA versus b
    c_cluster = np.concatenate([ova.codes[ova_rows], cl[ava_rows]])
    c_block = np.concatenate([np.zeros(ova_rows.size, dtype=np.int64), 1 + vs[ava_rows]])
    c_position = np.concatenate([ova.positions[ova_rows], positions[take]])
    c_gene = np.concatenate([ova.genes[ova_rows], genes[ava_rows]])
    c_logfc = np.concatenate([ova.logfc[ova_rows], logfc[ava_rows]])
    order = np.lexsort((c_position, c_block, -c_logfc, c_cluster))
    c_cluster, c_block, c_gene, c_logfc = (
        c_cluster[order],
        c_block[order],
        c_gene[order],
        c_logfc[order],
    )
    # each gene once per cluster, at its first occurrence
    gene_codes, gene_names = pd.factorize(c_gene)
    keys = c_cluster * max(len(gene_names), 1) + gene_codes
    _, first = np.unique(keys, return_index=True)
    keep = np.zeros(keys.size, dtype=bool)
    keep[first] = True
    c_cluster, c_block, c_gene, c_logfc = (
        c_cluster[keep],
        c_block[keep],
        c_gene[keep],
        c_logfc[keep],
    )

    source_names = np.asarray(["ova"] + [str(c) for c in ova.categories], dtype=object)
    return pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(c_cluster, categories=ova.categories),
            "rank": _group_positions(c_cluster, n_clusters).astype(np.int64),
            "gene": c_gene,
            "logFC": c_logfc,
            "source": source_names[c_block],
        }
    )
