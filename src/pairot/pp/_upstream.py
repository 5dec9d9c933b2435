"""Conversions between pairot's long DE tables and upstream pairOT's dicts of DataFrames.

See docs/method.md#de-table-forms.

pairot stores the differential-expression results of a study as two tidy tables in
``adata.uns["pairot"]`` (h5ad-safe for any cluster name):

- ``de_ova``: one row per (cluster, gene), columns ``cluster, gene, logFC, P.Value, adj.P.Val,
  auroc``;
- ``de_ava``: one row per ordered cluster pair and gene, columns ``cluster, versus, gene,
  logFC, P.Value, adj.P.Val, auroc`` (``logFC`` of ``cluster`` over ``versus``).

Upstream pairOT hands the same numbers around as nested dicts:

- ``de_res_ova[cluster]``: a DataFrame indexed by gene, columns ``logFC, P.Value, adj.P.Val,
  auroc``;
- ``de_res_ava[c1][c2]``: the same for ``c1`` versus ``c2`` (``c1 != c2``).

The functions here translate one form into the other; :func:`de_tables_to_dicts` and
:func:`de_tables_from_dicts` are the public pair. Nothing modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ._validate import check_has_columns, check_numeric_columns

__all__ = ["de_tables_from_dicts", "de_tables_to_dicts"]

#: The value columns of one DE table of upstream pairOT, in upstream's order.
DE_COLUMNS = ("logFC", "P.Value", "adj.P.Val", "auroc")
#: Name of the gene index of the DataFrames that pairot builds.
GENE_INDEX_NAME = "gene"
#: Column of a long table built with ``positions=True``: the row's position in its DataFrame.
ROW_COLUMN = "_pairot_row"


# --------------------------------------------------------------------------------------------
# dict -> long
# --------------------------------------------------------------------------------------------
def _check_key(key, argument: str) -> str:
    if not isinstance(key, str):
        msg = (
            f"{argument} has the key {key!r} ({type(key).__name__}); its keys must be the "
            f"cluster names as strings, e.g. {{str(k): v for k, v in {argument}.items()}}."
        )
        raise TypeError(msg)
    return key


def _check_mapping(value, argument: str, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        msg = f"{argument} must be a dict {what}, got {type(value).__name__}."
        raise TypeError(msg)
    return value


def _slash_hint(argument: str, value: Mapping) -> str:
    """What a dict where a DataFrame belongs may mean: a cluster name with '/' in h5ad."""
    names = [f"{argument.rsplit('[', 1)[-1][1:-2]}/{k}" for k in list(value)[:3]]
    return (
        f"If these results were read from an h5ad file, a cluster name with '/' (e.g. "
        f"{names[0]!r}) was split into nested groups when the file was written: h5ad cannot "
        "store '/' in a dict key. Rename such clusters before writing upstream's dicts, or "
        "keep pairot's long tables (adata.uns['pairot'], see pairot.pp.de_tables_from_dicts), "
        "which store any name."
    )


def _frame_genes(frame, argument: str, required: Sequence[str]) -> np.ndarray:
    """Check one upstream DE DataFrame; return its gene names (index) as an object array."""
    if isinstance(frame, Mapping) and frame:
        msg = (
            f"{argument} is a dict, not a DataFrame indexed by gene. {_slash_hint(argument, frame)}"
        )
        raise TypeError(msg)
    if not isinstance(frame, pd.DataFrame):
        msg = (
            f"{argument} must be a pandas DataFrame indexed by gene (columns "
            f"{list(required)}), got {type(frame).__name__}."
        )
        raise TypeError(msg)
    check_has_columns(
        frame,
        argument,
        required,
        f"Each DataFrame needs the columns {list(required)}, indexed by gene.",
    )
    if not frame.columns.is_unique:
        duplicated = frame.columns[frame.columns.duplicated()].unique().tolist()
        msg = f"{argument} has the column(s) {duplicated} more than once; keep one of each."
        raise ValueError(msg)
    check_numeric_columns(frame, argument, required)
    genes = np.asarray(frame.index.to_numpy(dtype=object), dtype=object)
    if len(genes) and pd.api.types.infer_dtype(genes, skipna=False) != "string":
        bad = next(g for g in genes if not isinstance(g, str))
        msg = (
            f"{argument} must be indexed by gene names (strings), but its index holds "
            f"{bad!r} ({type(bad).__name__}); set the gene names as the index, e.g. with "
            f"{argument}.set_index('gene')."
        )
        raise ValueError(msg)
    if not frame.index.is_unique:
        gene = frame.index[frame.index.duplicated()][0]
        msg = (
            f"{argument} lists the gene {gene!r} more than once; a DE table has one row per "
            "gene: drop the duplicated rows (e.g. frame[~frame.index.duplicated()])."
        )
        raise ValueError(msg)
    return genes


def _long_table(
    blocks: list[tuple[tuple[int, ...], pd.DataFrame, np.ndarray]],
    labels: tuple[str, ...],
    categories: list[str],
    required: Sequence[str],
    positions: bool,
) -> pd.DataFrame:
    """Stack checked blocks ``(label codes, frame, genes)`` into one long table, the blocks
    sorted by their label codes (category order)."""
    blocks = sorted(blocks, key=lambda block: block[0])
    sizes = np.asarray([len(frame) for _, frame, _ in blocks], dtype=np.int64)
    columns: dict[str, object] = {}
    for i, label in enumerate(labels):
        codes = np.asarray([block[0][i] for block in blocks], dtype=np.int64)
        columns[label] = pd.Categorical.from_codes(
            np.repeat(codes, sizes).astype(np.int32), categories=pd.Index(categories)
        )
    genes = np.concatenate([g for _, _, g in blocks]) if blocks else np.empty(0, dtype=object)
    gene_codes, gene_names = pd.factorize(genes)
    columns["gene"] = pd.Categorical.from_codes(
        gene_codes.astype(np.int32), categories=pd.Index(np.asarray(gene_names, dtype=object))
    )
    for column in required:
        parts = [f[column].to_numpy(dtype=np.float64, na_value=np.nan) for _, f, _ in blocks]
        columns[column] = np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
    if positions:
        columns[ROW_COLUMN] = (
            np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
            if blocks
            else np.empty(0, dtype=np.int64)
        )
    return pd.DataFrame(columns, copy=False)


def _categories(keys: list[str], clusters: Sequence[str] | None, argument: str) -> list[str]:
    if clusters is None:
        return list(keys)
    clusters = list(clusters)
    known = set(clusters)
    unknown = [k for k in keys if k not in known]
    if unknown:
        msg = (
            f"{argument} has the cluster(s) {unknown[:5]} that are not among the clusters "
            f"{clusters[:10]}; pass the DE results of one study."
        )
        raise ValueError(msg)
    return clusters


def ova_from_dict(
    de_res_ova,
    *,
    argument: str = "de_res_ova",
    clusters: Sequence[str] | None = None,
    required: Sequence[str] = DE_COLUMNS,
    positions: bool = False,
) -> pd.DataFrame:
    """Upstream's one-vs-all dict -> pairot's long one-vs-all table.

    Parameters
    ----------
    de_res_ova
        ``{cluster: DataFrame indexed by gene with the columns `required`}``.
    argument
        Name of the argument in error messages.
    clusters
        Category order of the ``cluster`` column; it must contain every key. Default: the
        dict's key order.
    required
        Columns every DataFrame must have (numeric), stacked as float64; other columns are
        left out.
    positions
        Add the column :data:`ROW_COLUMN`: each row's position in its DataFrame (to take rows
        of the original DataFrames back).

    Returns
    -------
    Long table with columns ``cluster`` (Categorical), ``gene`` (Categorical), the required
    columns and, with ``positions``, :data:`ROW_COLUMN`; clusters in category order, genes of a
    cluster in the row order of its DataFrame, a fresh ``RangeIndex``.
    """
    de_res_ova = _check_mapping(
        de_res_ova, argument, "of one DataFrame per cluster (upstream's one-vs-all DE results)"
    )
    keys = [_check_key(k, argument) for k in de_res_ova]
    categories = _categories(keys, clusters, argument)
    position = {c: i for i, c in enumerate(categories)}
    blocks = []
    for key in keys:
        frame = de_res_ova[key]
        where = f"{argument}[{key!r}]"
        if isinstance(frame, Mapping):
            msg = (
                f"{where} is a dict, not a DataFrame: this looks like upstream's all-vs-all "
                "form {c1: {c2: DataFrame}}; pass it as the all-vs-all results (e.g. to "
                "filter_genes_ava), and the one-vs-all dict {cluster: DataFrame} here. "
                + (_slash_hint(where, frame) if frame else "")
            )
            raise TypeError(msg.strip())
        genes = _frame_genes(frame, where, required)
        blocks.append(((position[key],), frame, genes))
    return _long_table(blocks, ("cluster",), categories, required, positions)


def ava_from_dict(
    de_res_ava,
    *,
    argument: str = "de_res_ava",
    clusters: Sequence[str] | None = None,
    required: Sequence[str] = DE_COLUMNS,
    positions: bool = False,
) -> pd.DataFrame:
    """Upstream's all-vs-all dict -> pairot's long all-vs-all table.

    Parameters
    ----------
    de_res_ava
        ``{c1: {c2: DataFrame indexed by gene}}`` with ``c1 != c2`` (``logFC`` of ``c1`` over
        ``c2``).
    argument, required, positions
        As in :func:`ova_from_dict`.
    clusters
        Category order of ``cluster`` and ``versus`` (the one-vs-all clusters); every key, outer
        and inner, must be among them. Default: the outer keys in dict order, then inner keys
        that are not outer keys in order of appearance.

    Returns
    -------
    Long table with columns ``cluster``, ``versus`` (Categoricals with the same categories),
    ``gene``, the required columns and, with ``positions``, :data:`ROW_COLUMN`; pairs in category
    order of ``cluster``, then ``versus``.
    """
    de_res_ava = _check_mapping(
        de_res_ava,
        argument,
        "of dicts of DataFrames, {c1: {c2: DataFrame}} (upstream's all-vs-all DE results)",
    )
    outer = [_check_key(k, argument) for k in de_res_ava]
    inner = {}
    for c1 in outer:
        where = f"{argument}[{c1!r}]"
        value = de_res_ava[c1]
        if isinstance(value, pd.DataFrame):
            msg = (
                f"{where} is a DataFrame, not a dict of DataFrames: this looks like upstream's "
                "one-vs-all form {cluster: DataFrame}; the all-vs-all form is "
                "{c1: {c2: DataFrame}} (e.g. pass the one-vs-all dict to filter_genes_ova)."
            )
            raise TypeError(msg)
        value = _check_mapping(value, where, "of one DataFrame per other cluster, {c2: DataFrame}")
        keys = [_check_key(k, where) for k in value]
        if c1 in keys:
            msg = (
                f"{where} has an entry for {c1!r} itself; all-vs-all results compare distinct "
                f"clusters: drop {where}[{c1!r}]."
            )
            raise ValueError(msg)
        inner[c1] = keys
    if clusters is None:
        categories = list(dict.fromkeys([*outer, *(k for c1 in outer for k in inner[c1])]))
    else:
        categories = _categories(outer, clusters, argument)
        for c1 in outer:
            _categories(inner[c1], clusters, f"{argument}[{c1!r}]")
    position = {c: i for i, c in enumerate(categories)}
    blocks = []
    for c1 in outer:
        for c2 in inner[c1]:
            frame = de_res_ava[c1][c2]
            genes = _frame_genes(frame, f"{argument}[{c1!r}][{c2!r}]", required)
            blocks.append(((position[c1], position[c2]), frame, genes))
    return _long_table(blocks, ("cluster", "versus"), categories, required, positions)


# --------------------------------------------------------------------------------------------
# long -> dict
# --------------------------------------------------------------------------------------------
def _check_long(table, argument: str, labels: tuple[str, ...], columns: Sequence[str]) -> None:
    required = (*labels, "gene", *columns)
    if not isinstance(table, pd.DataFrame):
        msg = (
            f"{argument} must be a pandas DataFrame (pairot's long DE table, columns "
            f"{list(required)}), got {type(table).__name__}."
        )
        raise TypeError(msg)
    check_has_columns(
        table,
        argument,
        required,
        f"Pass pairot's long DE table (columns {list(required)}), e.g. "
        "adata.uns['pairot']['de_ova'] / ['de_ava'].",
    )
    check_numeric_columns(table, argument, columns)


def _codes(table: pd.DataFrame, column: str, argument: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes and category names (as strings) of a label column; no missing values."""
    values = table[column]
    categorical = values.array if isinstance(values.dtype, pd.CategoricalDtype) else None
    if categorical is None:
        categorical = pd.Categorical(values.to_numpy(dtype=object))
    codes = np.asarray(categorical.codes, dtype=np.int64)
    if (codes < 0).any():
        msg = (
            f"{argument}[{column!r}] has {int((codes < 0).sum())} missing value(s); every row "
            f"needs a {column} name: drop those rows first."
        )
        raise ValueError(msg)
    names = [str(c) for c in categorical.categories]
    if len(set(names)) < len(names):
        msg = (
            f"{argument}[{column!r}] has names that coincide as text ({names}); rename them so "
            "each is unique as a string."
        )
        raise ValueError(msg)
    return codes, names


def _gene_names(table: pd.DataFrame, argument: str) -> np.ndarray:
    genes = table["gene"]
    if isinstance(genes.dtype, pd.CategoricalDtype):
        codes = genes.cat.codes.to_numpy()
        missing = codes < 0
        names = np.asarray(genes.cat.categories.astype(str), dtype=object)[np.maximum(codes, 0)]
    else:
        names = genes.to_numpy(dtype=object)
        missing = pd.isna(names)
        names = np.asarray([str(g) for g in names], dtype=object)
    if missing.any():
        msg = (
            f"{argument}['gene'] has {int(missing.sum())} missing value(s); every row needs a "
            "gene name: drop those rows first."
        )
        raise ValueError(msg)
    return names


def _split(
    table: pd.DataFrame,
    group: np.ndarray,
    n_groups: int,
    genes: np.ndarray,
    columns: Sequence[str],
    argument: str,
    describe,
) -> list[pd.DataFrame]:
    """One DataFrame per group (indexed by gene, the given columns), rows in table order."""
    order = np.argsort(group, kind="stable")
    group = group[order]
    bounds = np.searchsorted(group, np.arange(n_groups + 1))
    values = {c: table[c].to_numpy(dtype=np.float64, na_value=np.nan)[order] for c in columns}
    genes = genes[order]
    frames = []
    for g in range(n_groups):
        lo, hi = bounds[g], bounds[g + 1]
        index = pd.Index(genes[lo:hi], dtype=object, name=GENE_INDEX_NAME)
        if not index.is_unique:
            gene = index[index.duplicated()][0]
            msg = (
                f"{argument} has several rows for {describe(g)} and gene {gene!r}; a DE table "
                "has one row per comparison and gene."
            )
            raise ValueError(msg)
        frames.append(pd.DataFrame({c: values[c][lo:hi] for c in columns}, index=index))
    return frames


def ova_to_dict(
    de_ova, *, argument: str = "de_ova", columns: Sequence[str] = DE_COLUMNS
) -> dict[str, pd.DataFrame]:
    """pairot's long one-vs-all table -> upstream's ``{cluster: DataFrame}``.

    One DataFrame per category of ``cluster`` (in category order; sorted names for a
    non-categorical column), indexed by gene (index name ``"gene"``, rows in table order),
    with exactly the float64 ``columns``; a cluster without rows gets an empty DataFrame.
    """
    _check_long(de_ova, argument, ("cluster",), columns)
    codes, names = _codes(de_ova, "cluster", argument)
    genes = _gene_names(de_ova, argument)
    frames = _split(
        de_ova, codes, len(names), genes, columns, argument, lambda g: f"cluster {names[g]!r}"
    )
    return dict(zip(names, frames, strict=True))


def ava_to_dict(
    de_ava, *, argument: str = "de_ava", columns: Sequence[str] = DE_COLUMNS
) -> dict[str, dict[str, pd.DataFrame]]:
    """pairot's long all-vs-all table -> upstream's ``{c1: {c2: DataFrame}}``.

    Outer keys: the categories of ``cluster``; inner keys: the categories of ``versus`` other
    than the outer key (both in category order). Every such ordered pair gets a DataFrame as in
    :func:`ova_to_dict` (empty when the table has no row for it); rows with
    ``cluster == versus`` are an error.
    """
    _check_long(de_ava, argument, ("cluster", "versus"), columns)
    cl, cl_names = _codes(de_ava, "cluster", argument)
    vs, vs_names = _codes(de_ava, "versus", argument)
    vs_in_cl = {n: i for i, n in enumerate(cl_names)}
    same = np.asarray([vs_in_cl.get(n, -1) for n in vs_names], dtype=np.int64)
    if vs.size and (same[vs] == cl).any():
        first = int(np.flatnonzero(same[vs] == cl)[0])
        msg = (
            f"{argument} has rows of cluster {cl_names[cl[first]]!r} versus itself; an "
            "all-vs-all table compares distinct clusters: drop those rows."
        )
        raise ValueError(msg)
    genes = _gene_names(de_ava, argument)
    n_vs = len(vs_names)
    frames = _split(
        de_ava,
        cl * n_vs + vs,
        len(cl_names) * n_vs,
        genes,
        columns,
        argument,
        lambda g: f"cluster {cl_names[g // n_vs]!r} versus {vs_names[g % n_vs]!r}",
    )
    return {
        c1: {c2: frames[i * n_vs + j] for j, c2 in enumerate(vs_names) if c2 != c1}
        for i, c1 in enumerate(cl_names)
    }


# --------------------------------------------------------------------------------------------
# public pair
# --------------------------------------------------------------------------------------------
def de_tables_to_dicts(
    de_ova: pd.DataFrame, de_ava: pd.DataFrame
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, pd.DataFrame]]]:
    """pairot's long DE tables of one study -> upstream pairOT's dicts of DataFrames.

    See docs/method.md#de-table-forms. Inverse of :func:`de_tables_from_dicts`.

    Parameters
    ----------
    de_ova
        Long one-vs-all table, e.g. ``adata.uns["pairot"]["de_ova"]`` or
        ``rank_genes_limma(..., result_format="long")[0]``: columns ``cluster, gene, logFC,
        P.Value, adj.P.Val, auroc`` (other columns are dropped).
    de_ava
        Long all-vs-all table of the same study: columns ``cluster, versus, gene, logFC,
        P.Value, adj.P.Val, auroc``.

    Returns
    -------
    de_res_ova
        ``{cluster: DataFrame}``, one per cluster in category order, indexed by gene (index
        name ``"gene"``, genes in table order), columns exactly ``logFC, P.Value, adj.P.Val,
        auroc`` (float64).
    de_res_ava
        ``{c1: {c2: DataFrame}}`` for every ordered pair ``c1 != c2`` of the categories: the
        results of ``c1`` versus ``c2`` (``logFC`` of ``c1`` over ``c2``), same layout; no
        ``c1 == c2`` entry.

    Raises
    ------
    TypeError, ValueError
        A table is not a DataFrame, lacks a column, has a non-numeric value column, missing
        labels, several rows for one comparison and gene, or (AVA) a cluster versus itself;
        a cluster of ``de_ava`` that ``de_ova`` does not have.

    Notes
    -----
    A nested dict keyed by cluster names cannot be written to h5ad when a name contains
    ``/``: keep the long tables (what ``preprocess_adatas`` stores) for files.
    """
    de_res_ova = ova_to_dict(de_ova, argument="de_ova")
    de_res_ava = ava_to_dict(de_ava, argument="de_ava")
    known = set(de_res_ova)
    unknown = [
        c for c in dict.fromkeys([*de_res_ava, *(k for v in de_res_ava.values() for k in v)])
    ]
    unknown = [c for c in unknown if c not in known]
    if unknown:
        msg = (
            f"de_ava has the cluster(s) {unknown[:5]} that de_ova does not have (clusters "
            f"{list(de_res_ova)[:10]}); pass the two tables of one study."
        )
        raise ValueError(msg)
    return de_res_ova, de_res_ava


def de_tables_from_dicts(
    de_res_ova: Mapping[str, pd.DataFrame],
    de_res_ava: Mapping[str, Mapping[str, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Upstream pairOT's dicts of DataFrames of one study -> pairot's long DE tables.

    See docs/method.md#de-table-forms. Inverse of :func:`de_tables_to_dicts`; accepts what
    ``anndata.read_h5ad`` gives back for ``uns["de_res_ova"]`` / ``uns["de_res_ava"]`` (note
    that h5ad returns dict keys in sorted order, not in the order written).

    Parameters
    ----------
    de_res_ova
        ``{cluster: DataFrame}``: per cluster, a DataFrame indexed by gene name (strings, each
        once) with numeric columns ``logFC, P.Value, adj.P.Val, auroc`` (in any order; other
        columns are dropped).
    de_res_ava
        ``{c1: {c2: DataFrame}}``, ``c1 != c2``, the same layout; every key must be a cluster
        of ``de_res_ova``. Pairs may be missing.

    Returns
    -------
    de_ova
        Columns ``cluster, gene, logFC, P.Value, adj.P.Val, auroc``; ``cluster`` a Categorical
        in the key order of ``de_res_ova``, ``gene`` a Categorical (genes in order of
        appearance), rows cluster by cluster in each DataFrame's row order.
    de_ava
        Columns ``cluster, versus, gene, logFC, P.Value, adj.P.Val, auroc``; ``cluster`` and
        ``versus`` Categoricals with the categories of ``de_ova['cluster']``; rows pair by
        pair, ordered by ``cluster`` then ``versus`` (category order).

    Raises
    ------
    TypeError, ValueError
        Not a dict (of dicts) of DataFrames, non-string keys, a missing or non-numeric
        column, an index that is not gene names or lists a gene twice, a ``c1 == c2`` entry,
        an all-vs-all key that is not a one-vs-all cluster.
    """
    de_ova = ova_from_dict(de_res_ova, argument="de_res_ova")
    clusters = list(de_ova["cluster"].cat.categories)
    de_ava = ava_from_dict(de_res_ava, argument="de_res_ava", clusters=clusters)
    return de_ova, de_ava
