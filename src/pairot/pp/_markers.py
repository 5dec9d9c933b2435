"""Marker genes of each cluster from the differential-expression results.

See docs/method.md#label-distance and docs/method.md#de-table-forms.

The building blocks of the label distance, steps 1-3:

1. :func:`filter_genes_ova` / :func:`filter_genes_ava` keep the DE genes that pass the
   ``logFC`` / ``adj.P.Val`` / ``auroc`` thresholds (and, optionally, are not uninformative by
   name) and sort them by ``logFC`` within each cluster (pair);
2. :func:`similar_clusters` finds, within one study, the clusters whose top one-vs-all markers
   overlap;
3. :func:`select_genes` builds the ranked marker list of each cluster: its top one-vs-all
   markers plus its top all-vs-all markers against each similar cluster.

Each function takes the DE results in either form, upstream pairOT's dicts of DataFrames
(``{cluster: DataFrame}``, ``{c1: {c2: DataFrame}}``) or pairot's long tables, and returns the
form it was given (``similar_clusters`` always returns its pair table). Upstream's argument
names and positional order are kept; pairot's former keyword names stay accepted as aliases.
The long path does the work: dicts are stacked into long tables (:mod:`._upstream`) and the
results split back. Nothing modifies its inputs.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import sparse

from ._gene_filter import gene_filter_mask
from ._upstream import GENE_INDEX_NAME, ROW_COLUMN, ava_from_dict, ova_from_dict
from ._validate import check_flag, check_has_columns, check_numeric_columns

__all__ = ["filter_genes_ava", "filter_genes_ova", "select_genes", "similar_clusters"]

_OVA_FILTER_COLUMNS = ("cluster", "gene", "logFC", "adj.P.Val", "auroc")
_AVA_FILTER_COLUMNS = ("cluster", "versus", "gene", "logFC", "adj.P.Val", "auroc")
_OVA_SELECT_COLUMNS = ("cluster", "gene", "logFC")
_AVA_SELECT_COLUMNS = ("cluster", "versus", "gene", "logFC")
_FILTER_VALUES = ("logFC", "adj.P.Val", "auroc")
#: ``reference`` of the marker-list rows that come from the one-vs-all markers.
ALL = "all"
#: Private column of the long marker lists: 0 for a one-vs-all row, 1 + b for a row of the
#: all-vs-all markers versus cluster code b.
_SOURCE_COLUMN = "_pairot_source"


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_table(table, argument: str, required: tuple[str, ...], hint: str) -> None:
    if not isinstance(table, pd.DataFrame):
        msg = f"{argument} must be a pandas DataFrame ({hint}), got {type(table).__name__}."
        raise TypeError(msg)
    check_has_columns(table, argument, required, f"Pass {hint} (columns {list(required)}).")
    values = [c for c in required if c not in ("cluster", "versus", "gene")]
    check_numeric_columns(table, argument, values)


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
    gene_filtering = check_flag(gene_filtering, "gene_filtering")

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


class _Default(float):
    """A float default; its identity tells an argument the caller left out from one given."""

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


class _DefaultInt(int):
    """An int default; its identity tells an argument the caller left out from one given."""

    __slots__ = ()

    def __repr__(self) -> str:
        return int.__repr__(self)


_LOGFC = _Default(1.0)
_AUROC = _Default(0.6)
_ADJ_PVAL = _Default(0.05)
_OVERLAP_THRESHOLD = _Default(0.3)
_OVERLAP_N_GENES = _DefaultInt(10)


def _spelling(value, alias_value, default, name: str, alias: str):
    """The value of an argument with two spellings, and the spelling the caller used."""
    if alias_value is default:
        return value, name
    if value is not default:
        msg = (
            f"give {name} or its alias {alias}, not both (got {name}={value!r} and "
            f"{alias}={alias_value!r})."
        )
        raise TypeError(msg)
    return alias_value, alias


def _thresholds(logfc, auroc, auroc_alias, adj_pval, adj_pval_alias, gene_filtering) -> dict:
    """The checked marker-filter thresholds, errors naming the spelling the caller used."""
    auroc, auroc_name = _spelling(auroc, auroc_alias, _AUROC, "aucroc_threshold", "auroc_threshold")
    adj_pval, adj_name = _spelling(
        adj_pval, adj_pval_alias, _ADJ_PVAL, "adj_pval_threshold", "adj_p_val_threshold"
    )
    return {
        "logfc_threshold": _check_real(logfc, "logfc_threshold"),
        "adj_p_val_threshold": _check_real(adj_pval, adj_name, 0.0, 1.0),
        "auroc_threshold": _check_real(auroc, auroc_name, 0.0, 1.0),
        "gene_filtering": check_flag(gene_filtering, "gene_filtering"),
    }


def _form(value, argument: str, what: str) -> str:
    """``"long"`` for a DataFrame, ``"dict"`` for a dict; ``TypeError`` otherwise."""
    if isinstance(value, pd.DataFrame):
        return "long"
    if isinstance(value, Mapping):
        return "dict"
    msg = (
        f"{argument} must be upstream pairOT's {what} dict or pairot's long DE table (a pandas "
        f"DataFrame), got {type(value).__name__}; see docs/method.md#de-table-forms."
    )
    raise TypeError(msg)


def _take_rows(filtered: pd.DataFrame, labels: tuple[str, ...], frames: dict) -> dict:
    """For each block key, the rows of the original DataFrame that passed, in order."""
    n_categories = [len(filtered[c].cat.categories) for c in labels]
    block = np.zeros(len(filtered), dtype=np.int64)
    for column, n in zip(labels, n_categories, strict=True):
        block = block * n + filtered[column].cat.codes.to_numpy().astype(np.int64)
    rows = filtered[ROW_COLUMN].to_numpy()
    order = np.argsort(block, kind="stable")  # keeps the logFC order within a block
    block, rows = block[order], rows[order]
    categories = filtered[labels[0]].cat.categories
    position = {c: i for i, c in enumerate(categories)}
    out = {}
    for key, frame in frames.items():
        codes = (position[key],) if len(labels) == 1 else (position[key[0]], position[key[1]])
        flat = 0
        for code, n in zip(codes, n_categories, strict=True):
            flat = flat * n + code
        lo, hi = np.searchsorted(block, [flat, flat + 1])
        out[key] = frame.iloc[rows[lo:hi]]
    return out


def filter_genes_ova(
    de_res_ova: dict[str, pd.DataFrame] | pd.DataFrame,
    logfc_threshold: float = _LOGFC,
    aucroc_threshold: float = _AUROC,
    adj_pval_threshold: float = _ADJ_PVAL,
    gene_filtering: bool = True,
    *,
    auroc_threshold: float = _AUROC,
    adj_p_val_threshold: float = _ADJ_PVAL,
) -> dict[str, pd.DataFrame] | pd.DataFrame:
    """Keep the one-vs-all marker genes of each cluster and sort them by ``logFC``.

    See docs/method.md#label-distance (step 1). Upstream pairOT's contract: the same argument
    names, order and defaults, and the result in the form it was given (dict or long table).

    A gene passes when ``logFC >= logfc_threshold``, ``adj.P.Val <= adj_pval_threshold`` and
    ``auroc >= aucroc_threshold`` (a NaN in any of these fails), and, with ``gene_filtering``,
    it is an official human gene symbol (:data:`~pairot.pp.OFFICIAL_GENES`) and not an
    uninformative gene (:data:`~pairot.pp.FILTERED_GENES`), as decided by
    :func:`~pairot.pp.gene_filter_mask` (which also handles mouse-style symbols and gene IDs;
    see docs/method.md#gene-filtering).

    Parameters
    ----------
    de_res_ova
        One-vs-all DE results of one study, in either form (docs/method.md#de-table-forms):

        - upstream's dict ``{cluster: DataFrame}``, each DataFrame indexed by gene with at
          least the numeric columns ``logFC, adj.P.Val, auroc`` (as returned by
          :func:`rank_genes_limma` or read back from h5ad);
        - pairot's long table, one row per (cluster, gene), with at least the columns
          ``cluster, gene, logFC, adj.P.Val, auroc`` (``adata.uns["pairot"]["de_ova"]``).
          ``cluster`` and ``gene`` are best given as pandas Categoricals; a non-categorical
          ``cluster`` becomes a Categorical with the sorted distinct names.

        Any other column is carried along.
    logfc_threshold
        Minimum log fold change.
    aucroc_threshold
        Minimum AUROC, in [0, 1] (upstream's spelling).
    adj_pval_threshold
        Maximum Benjamini-Hochberg adjusted p-value, in [0, 1].
    gene_filtering
        Keep only official human gene symbols and drop mitochondrial, ribosomal, lncRNA and
        immune-receptor segment genes.
    auroc_threshold, adj_p_val_threshold
        Keyword-only aliases of ``aucroc_threshold`` / ``adj_pval_threshold`` (pairot's
        spelling, also that of :meth:`pairot.tl.DatasetMap.init_geom`); giving both spellings
        of one threshold is a ``TypeError``.

    Returns
    -------
    The same form as ``de_res_ova``, a new object:

    - dict: the same keys in the same order; each value the passing rows of that cluster's
      DataFrame (same columns, dtypes and gene index), sorted by ``logFC`` descending (a
      stable sort: ties keep their input order); an empty DataFrame when none passes.
    - long table: the passing rows with all columns, sorted by cluster (in category order)
      and then by ``logFC`` descending (stable), with a fresh ``RangeIndex``; ``cluster`` is a
      Categorical with all the categories of the input, also those of clusters left without
      markers.
    """
    thresholds = _thresholds(
        logfc_threshold,
        aucroc_threshold,
        auroc_threshold,
        adj_pval_threshold,
        adj_p_val_threshold,
        gene_filtering,
    )
    if _form(de_res_ova, "de_res_ova", "one-vs-all {cluster: DataFrame}") == "long":
        _check_table(de_res_ova, "de_res_ova", _OVA_FILTER_COLUMNS, "the one-vs-all DE table")
        return _filter(de_res_ova, argument="de_res_ova", labels=("cluster",), **thresholds)
    long = ova_from_dict(de_res_ova, required=_FILTER_VALUES, positions=True)
    filtered = _filter(long, argument="de_res_ova", labels=("cluster",), **thresholds)
    return _take_rows(filtered, ("cluster",), dict(de_res_ova))


def filter_genes_ava(
    de_res_ava: dict[str, dict[str, pd.DataFrame]] | pd.DataFrame,
    logfc_threshold: float = _LOGFC,
    aucroc_threshold: float = _AUROC,
    adj_pval_threshold: float = _ADJ_PVAL,
    gene_filtering: bool = True,
    *,
    auroc_threshold: float = _AUROC,
    adj_p_val_threshold: float = _ADJ_PVAL,
) -> dict[str, dict[str, pd.DataFrame]] | pd.DataFrame:
    """Keep the all-vs-all marker genes of each ordered cluster pair and sort them by ``logFC``.

    The same filter as :func:`filter_genes_ova`, on the all-vs-all results: a gene of the
    comparison ``c1`` versus ``c2`` passes when ``logFC >= logfc_threshold``,
    ``adj.P.Val <= adj_pval_threshold``, ``auroc >= aucroc_threshold`` (NaN fails) and, with
    ``gene_filtering``, the gene is not uninformative. The work is a few boolean masks and one
    sort, so tens of millions of rows are fine.

    Parameters
    ----------
    de_res_ava
        All-vs-all DE results of one study, in either form:

        - upstream's dict ``{c1: {c2: DataFrame}}`` (``c1 != c2``), each DataFrame indexed by
          gene with at least the numeric columns ``logFC, adj.P.Val, auroc``, ``logFC`` that
          of ``c1`` over ``c2``;
        - pairot's long table, one row per ordered pair ``(cluster, versus)`` and gene, with
          at least the columns ``cluster, versus, gene, logFC, adj.P.Val, auroc``.
    logfc_threshold, aucroc_threshold, adj_pval_threshold, gene_filtering
        As in :func:`filter_genes_ova`.
    auroc_threshold, adj_p_val_threshold
        Keyword-only aliases, as in :func:`filter_genes_ova`.

    Returns
    -------
    The same form as ``de_res_ava``, a new object:

    - dict: the same keys (outer and inner) in the same order; each value the passing rows of
      that pair's DataFrame (same columns, dtypes and gene index), sorted by ``logFC``
      descending (stable); an empty DataFrame when none passes.
    - long table: the passing rows with all columns, sorted by ``cluster``, then ``versus``
      (both in category order), then ``logFC`` descending (stable), with a fresh
      ``RangeIndex`` and the categories of ``cluster`` and ``versus`` preserved.
    """
    thresholds = _thresholds(
        logfc_threshold,
        aucroc_threshold,
        auroc_threshold,
        adj_pval_threshold,
        adj_p_val_threshold,
        gene_filtering,
    )
    if _form(de_res_ava, "de_res_ava", "all-vs-all {c1: {c2: DataFrame}}") == "long":
        _check_table(de_res_ava, "de_res_ava", _AVA_FILTER_COLUMNS, "the all-vs-all DE table")
        return _filter(
            de_res_ava, argument="de_res_ava", labels=("cluster", "versus"), **thresholds
        )
    long = ava_from_dict(de_res_ava, required=_FILTER_VALUES, positions=True)
    filtered = _filter(long, argument="de_res_ava", labels=("cluster", "versus"), **thresholds)
    frames = {(c1, c2): frame for c1, inner in de_res_ava.items() for c2, frame in inner.items()}
    taken = _take_rows(filtered, ("cluster", "versus"), frames)
    return {c1: {c2: taken[c1, c2] for c2 in inner} for c1, inner in de_res_ava.items()}


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


def _ova_long(de_res_ova, argument: str) -> pd.DataFrame:
    """The filtered one-vs-all markers as a long table (``cluster, gene, logFC``)."""
    if _form(de_res_ova, argument, "one-vs-all {cluster: DataFrame}") == "long":
        return de_res_ova
    return ova_from_dict(de_res_ova, argument=argument, required=("logFC",))


def similar_clusters(
    de_res_ova: dict[str, pd.DataFrame] | pd.DataFrame,
    *,
    overlap_n_genes: int | None = _OVERLAP_N_GENES,
    overlap_threshold: float = _OVERLAP_THRESHOLD,
    overlap_n_genes_ava: int | None = _OVERLAP_N_GENES,
    overlap_threshold_ava: float = _OVERLAP_THRESHOLD,
) -> pd.DataFrame:
    """Pairs of clusters of one study whose top one-vs-all markers overlap.

    With ``T(c)`` the top ``overlap_n_genes`` markers of cluster ``c`` (by ``logFC``), the
    scaled overlap is

    ``o(a, b) = |T(a) & T(b)| / |T(a) | T(b)| * |T(b)| / |T(a)|``

    (0 when ``T(a)`` is empty). It is not symmetric: a cluster ``a`` with few markers, all
    among those of ``b``, has a large ``o(a, b)``. Cluster ``b != a`` is similar to ``a`` when
    ``o(a, b) >= overlap_threshold``.

    Parameters
    ----------
    de_res_ova
        Output of :func:`filter_genes_ova`, either form: upstream's dict ``{cluster:
        DataFrame indexed by gene}`` or the long table (columns ``cluster, gene, logFC`` at
        least); markers are stably re-sorted by ``logFC`` descending within each cluster.
    overlap_n_genes
        Number of top markers per cluster in ``T(c)``; ``None`` takes all of them.
    overlap_threshold
        Minimum scaled overlap for ``b`` to count as similar to ``a``.
    overlap_n_genes_ava, overlap_threshold_ava
        Aliases (the names of :meth:`pairot.tl.DatasetMap.init_geom`); giving both spellings
        of one argument is a ``TypeError``.

    Returns
    -------
    DataFrame with columns ``cluster`` (``a``), ``similar`` (``b``), both Categoricals with the
    clusters of ``de_res_ova`` (dict: in key order), and ``overlap`` (``o(a, b)``); only the
    pairs that pass the threshold, sorted by ``cluster`` then ``similar`` (category order).
    """
    overlap_n_genes, n_name = _spelling(
        overlap_n_genes,
        overlap_n_genes_ava,
        _OVERLAP_N_GENES,
        "overlap_n_genes",
        "overlap_n_genes_ava",
    )
    overlap_threshold, t_name = _spelling(
        overlap_threshold,
        overlap_threshold_ava,
        _OVERLAP_THRESHOLD,
        "overlap_threshold",
        "overlap_threshold_ava",
    )
    overlap_n_genes = _check_n(overlap_n_genes, n_name)
    overlap_threshold = _check_real(overlap_threshold, t_name)
    ova = _OvaMarkers(_ova_long(de_res_ova, "de_res_ova"), "de_res_ova")
    overlap = ova.overlap(overlap_n_genes)
    a, b = np.nonzero(_similar_mask(overlap, overlap_threshold))
    return pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(a, categories=ova.categories),
            "similar": pd.Categorical.from_codes(b, categories=ova.categories),
            "overlap": overlap[a, b],
        }
    )


def select_genes(
    de_res_ova: dict[str, pd.DataFrame] | pd.DataFrame,
    de_res_ava: dict[str, dict[str, pd.DataFrame]] | pd.DataFrame,
    n_genes_ova: int | None = 10,
    n_genes_ava: int | None = 3,
    n_genes_max: int | None = None,
    overlap_threshold: float = _OVERLAP_THRESHOLD,
    overlap_n_genes: int | None = _OVERLAP_N_GENES,
    remove_duplicated_genes: bool = True,
    *,
    overlap_threshold_ava: float = _OVERLAP_THRESHOLD,
    overlap_n_genes_ava: int | None = _OVERLAP_N_GENES,
) -> dict[str, pd.DataFrame] | pd.DataFrame:
    """The ranked marker list of each cluster of one study.

    See docs/method.md#label-distance (steps 2-3). Upstream pairOT's argument names and order.

    The list of cluster ``a`` is its top ``n_genes_ova`` one-vs-all markers followed, for every
    cluster ``b`` similar to ``a`` (:func:`similar_clusters`; blocks in cluster order of
    ``b``), by the top ``n_genes_ava`` all-vs-all markers of ``a`` versus ``b``; this
    concatenation is sorted by ``logFC`` descending with a stable sort (ties keep the
    concatenation order); with ``remove_duplicated_genes`` each gene is kept at its first
    occurrence; finally the list is cut to its first ``n_genes_max`` genes.

    Parameters
    ----------
    de_res_ova
        Output of :func:`filter_genes_ova`: upstream's dict ``{cluster: DataFrame indexed by
        gene}`` (column ``logFC`` at least) or the long table (columns ``cluster, gene,
        logFC`` at least). Its clusters (dict keys in order, or the ``cluster`` categories)
        are the clusters of the study. The other columns of the dict's DataFrames are
        carried into the result; those of a long table are not.
    de_res_ava
        Output of :func:`filter_genes_ava`, in the same form as ``de_res_ova``: the dict
        ``{c1: {c2: DataFrame}}`` or the long table (columns ``cluster, versus, gene, logFC``
        at least), with cluster names from ``de_res_ova``.
    n_genes_ova
        Number of top one-vs-all markers per cluster; ``None`` keeps all (the reference
        study's full ranked list).
    n_genes_ava
        Number of top all-vs-all markers per similar cluster; ``None`` keeps all.
    n_genes_max
        Maximum length of each cluster's final list (after sorting and removing duplicates);
        ``None``: no cap.
    overlap_threshold, overlap_n_genes
        Define the similar clusters, see :func:`similar_clusters`.
    remove_duplicated_genes
        Keep each gene once per cluster, at its first (highest-``logFC``) occurrence. With
        ``False`` a gene is kept once per comparison, so a gene that is a marker in several
        comparisons (one-vs-all and against several similar clusters) appears several times.
        The label distance needs ``True``.
    overlap_threshold_ava, overlap_n_genes_ava
        Keyword-only aliases of ``overlap_threshold`` / ``overlap_n_genes`` (the names of
        :meth:`pairot.tl.DatasetMap.init_geom`); giving both spellings is a ``TypeError``.

    Returns
    -------
    The marker lists, in the form of the inputs:

    - dict: ``{cluster: DataFrame}`` for every cluster of ``de_res_ova`` in its key order,
      indexed by gene (index name ``"gene"``) in list order. Each row is the gene's row of
      the DataFrame it comes from, ``de_res_ova[cluster]`` or
      ``de_res_ava[cluster][reference]``, with all its columns (typically ``logFC, P.Value,
      adj.P.Val, auroc``; values and dtypes as given). The columns are the union of the
      columns of all input DataFrames in order of first appearance (the one-vs-all frames
      in key order, then the all-vs-all frames), a column a source frame lacks being NaN,
      then ``reference``: ``"all"`` for a one-vs-all marker, else the name of the similar
      cluster whose all-vs-all markers brought the gene in (an input column named
      ``reference`` is replaced). A cluster without markers gets an empty DataFrame with
      these columns.
    - long table: columns ``cluster`` (Categorical with all clusters of ``de_res_ova``, also
      those without markers), ``rank`` (0-based position in the cluster's list, the input of
      the label-distance formula; the tables users read count ranks from 1, see
      docs/method.md#rank-convention), ``gene``, ``logFC`` and ``reference`` (as above, a
      string), sorted by cluster then rank.

    A cluster literally named ``"all"`` makes ``reference`` ambiguous; rename it.
    """
    overlap_threshold, t_name = _spelling(
        overlap_threshold,
        overlap_threshold_ava,
        _OVERLAP_THRESHOLD,
        "overlap_threshold",
        "overlap_threshold_ava",
    )
    overlap_n_genes, n_name = _spelling(
        overlap_n_genes,
        overlap_n_genes_ava,
        _OVERLAP_N_GENES,
        "overlap_n_genes",
        "overlap_n_genes_ava",
    )
    n_genes_ova = _check_n(n_genes_ova, "n_genes_ova")
    n_genes_ava = _check_n(n_genes_ava, "n_genes_ava")
    n_genes_max = _check_n(n_genes_max, "n_genes_max")
    overlap_n_genes = _check_n(overlap_n_genes, n_name)
    overlap_threshold = _check_real(overlap_threshold, t_name)
    remove_duplicated_genes = check_flag(remove_duplicated_genes, "remove_duplicated_genes")
    forms = (
        _form(de_res_ova, "de_res_ova", "one-vs-all {cluster: DataFrame}"),
        _form(de_res_ava, "de_res_ava", "all-vs-all {c1: {c2: DataFrame}}"),
    )
    if forms[0] != forms[1]:
        msg = (
            f"de_res_ova and de_res_ava must be in the same form, got a {forms[0]} one-vs-all "
            f"and a {forms[1]} all-vs-all result; pass both dicts (upstream's form) or both "
            "long tables (convert with pairot.pp.de_tables_to_dicts / de_tables_from_dicts)."
        )
        raise TypeError(msg)
    if forms[0] == "long":
        ova_table, ava_table = de_res_ova, de_res_ava
    else:
        ova_table = ova_from_dict(de_res_ova, required=("logFC",))
        clusters = list(ova_table["cluster"].cat.categories)
        ava_table = ava_from_dict(de_res_ava, clusters=clusters, required=("logFC",))
    markers = _select(
        ova_table,
        ava_table,
        n_genes_ova=n_genes_ova,
        n_genes_ava=n_genes_ava,
        n_genes_max=n_genes_max,
        overlap_threshold=overlap_threshold,
        overlap_n_genes=overlap_n_genes,
        remove_duplicated_genes=remove_duplicated_genes,
        with_source=forms[0] == "dict",
    )
    if forms[0] == "long":
        return markers
    return _markers_dict(markers, de_res_ova, de_res_ava)


def _source_columns(de_res_ova: Mapping, de_res_ava: Mapping) -> dict[str, object]:
    """The columns of all input DataFrames in order of first appearance (one-vs-all frames in
    key order, then all-vs-all frames in outer then inner key order), each with the dtype of
    its first appearance; ``reference`` left out (the marker lists set it)."""
    frames = list(de_res_ova.values())
    frames += [frame for inner in de_res_ava.values() for frame in inner.values()]
    columns: dict[str, object] = {}
    for frame in frames:
        for column, dtype in frame.dtypes.items():
            if column != "reference" and column not in columns:
                columns[column] = dtype
    return columns


def _markers_dict(
    markers: pd.DataFrame, de_res_ova: Mapping, de_res_ava: Mapping
) -> dict[str, pd.DataFrame]:
    """The long marker lists as ``{cluster: DataFrame indexed by gene}``: each row that of its
    source DataFrame (``de_res_ova[cluster]`` or ``de_res_ava[cluster][reference]``) with all
    its columns, then ``reference``."""
    columns = _source_columns(de_res_ova, de_res_ava)
    codes = markers["cluster"].cat.codes.to_numpy()
    categories = markers["cluster"].cat.categories
    bounds = np.searchsorted(codes, np.arange(len(categories) + 1))
    genes = markers["gene"].to_numpy(dtype=object)
    reference = markers["reference"].to_numpy(dtype=object)
    # 0 for a one-vs-all row, 1 + b for an all-vs-all row versus cluster b (unambiguous even
    # for a cluster named "all")
    source = markers[_SOURCE_COLUMN].to_numpy()
    out = {}
    for i, cluster in enumerate(categories):
        lo, hi = bounds[i], bounds[i + 1]
        index = pd.Index(genes[lo:hi], dtype=object, name=GENE_INDEX_NAME)
        if hi == lo:
            frame = pd.DataFrame(
                {c: pd.Series(dtype=dtype) for c, dtype in columns.items()}, index=index
            )
        else:
            pieces, positions = [], []
            for block in pd.unique(source[lo:hi]):
                at = np.flatnonzero(source[lo:hi] == block)
                frame = (
                    de_res_ova[cluster]
                    if block == 0
                    else de_res_ava[cluster][categories[block - 1]]
                )
                # genes are unique within a frame (checked when the dicts were stacked)
                pieces.append(frame.iloc[frame.index.get_indexer(genes[lo:hi][at])])
                positions.append(at)
            frame = pieces[0] if len(pieces) == 1 else pd.concat(pieces, sort=False)
            frame = frame.take(np.argsort(np.concatenate(positions), kind="stable"))
            frame = frame.reindex(columns=list(columns))
            frame.index = index
        frame["reference"] = pd.Series(reference[lo:hi], index=index, dtype=object)
        out[cluster] = frame
    return out


def _select(
    de_ova_filtered: pd.DataFrame,
    de_ava_filtered: pd.DataFrame,
    *,
    n_genes_ova: int | None,
    n_genes_ava: int | None,
    n_genes_max: int | None,
    overlap_threshold: float,
    overlap_n_genes: int | None,
    remove_duplicated_genes: bool,
    with_source: bool = False,
) -> pd.DataFrame:
    """:func:`select_genes` on the long tables, arguments checked; with ``with_source`` the
    column :data:`_SOURCE_COLUMN` says where each row comes from (0: one-vs-all, 1 + b:
    all-vs-all versus cluster code b)."""
    _check_table(
        de_ava_filtered, "de_res_ava", _AVA_SELECT_COLUMNS, "the output of filter_genes_ava"
    )
    ova = _OvaMarkers(de_ova_filtered, "de_res_ova")
    n_clusters = len(ova.categories)
    similar = _similar_mask(ova.overlap(overlap_n_genes), overlap_threshold)

    # all-vs-all rows, with cluster / versus coded in de_res_ova's categories
    ava_codes = []
    for column in ("cluster", "versus"):
        codes, categories = _label_codes(de_ava_filtered, column)
        _check_no_missing(codes, "de_res_ava", column)
        lookup = ova.categories.get_indexer(categories)
        unknown = np.unique(codes[lookup[codes] < 0])
        if unknown.size:
            names = [categories[c] for c in unknown[:5]]
            msg = (
                f"de_res_ava[{column!r}] has clusters that de_res_ova does not have, "
                f"e.g. {names}; pass the two results of the same study (de_res_ova has "
                f"{list(ova.categories[:10])})."
            )
            raise ValueError(msg)
        ava_codes.append(lookup[codes].astype(np.int64))
    cl, vs = ava_codes
    genes = _object_values(de_ava_filtered, "gene", "de_res_ava")
    logfc = _float_column(de_ava_filtered, "logFC")
    if np.isnan(logfc).any():
        msg = (
            "de_res_ava['logFC'] has NaN values; pass the output of filter_genes_ava, "
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
            f"de_res_ava has several rows for cluster {ova.categories[cl[first]]!r}, "
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
    keep = np.ones(order.size, dtype=bool)
    if remove_duplicated_genes:
        # each gene once per cluster, at its first occurrence
        gene_codes, gene_names = pd.factorize(c_gene[order])
        keys = c_cluster[order] * max(len(gene_names), 1) + gene_codes
        _, first = np.unique(keys, return_index=True)
        keep[:] = False
        keep[first] = True
    order = order[keep]
    rank = _group_positions(c_cluster[order], n_clusters).astype(np.int64)
    if n_genes_max is not None:
        order, rank = order[rank < n_genes_max], rank[rank < n_genes_max]

    reference_names = np.asarray([ALL] + [str(c) for c in ova.categories], dtype=object)
    columns = {
        "cluster": pd.Categorical.from_codes(c_cluster[order], categories=ova.categories),
        "rank": rank,
        "gene": c_gene[order],
        "logFC": c_logfc[order],
        "reference": reference_names[c_block[order]],
    }
    if with_source:
        columns[_SOURCE_COLUMN] = c_block[order]
    return pd.DataFrame(columns)
