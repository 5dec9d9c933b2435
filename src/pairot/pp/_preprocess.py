"""The public preprocessing entry points: ``preprocess_adatas`` and ``rank_genes_limma``."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._interrupt import check as check_interrupt
from .._interrupt import interruptible_call
from .._logging import logger, progress_logger
from .._numba import njit_serial
from ._auroc import auroc_ova_ava
from ._genes import flag_uninformative_genes
from ._hvg import select_hvgs
from ._limma import limma_ava, limma_ova
from ._pseudobulk import log_normalize, pseudobulk
from ._sampling import downsample_indices
from ._validate import argument_text, check_adata, check_counts, get_labels, study

#: Minimum total count over all cells for a gene to count as expressed in a study.
MIN_TOTAL_COUNT = 10
#: Minimum number of cells of a (sample, cluster) pair to form a pseudobulk profile.
MIN_CELLS_PER_PROFILE = 2
#: Each pseudobulk profile is scaled to this many counts before ``log1p``.
PSEUDOBULK_TARGET_SUM = 1e5

OVA_COLUMNS = ["cluster", "gene", "logFC", "P.Value", "adj.P.Val", "auroc"]
AVA_COLUMNS = ["cluster", "versus", "gene", "logFC", "P.Value", "adj.P.Val", "auroc"]


def _check_positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{argument} must be a positive integer, got {value!r}."
        raise TypeError(msg)
    if value < 1:
        msg = f"{argument} must be >= 1, got {value}."
        raise ValueError(msg)
    return int(value)


def _check_distinct_columns(cluster_column, sample_column, cluster_arg: str, sample_arg: str):
    if isinstance(cluster_column, str) and cluster_column == sample_column:
        msg = (
            f"{argument_text(cluster_arg)} and {argument_text(sample_arg)} are both "
            f"{cluster_column!r}; pass the column of cluster labels and the column of "
            "samples / donors, two different columns."
        )
        raise ValueError(msg)


def _check_limma_design(
    clusters: pd.Categorical,
    samples: pd.Categorical,
    *,
    name: str,
    cluster_arg: str,
    cluster_column: str,
    sample_arg: str,
    sample_column: str,
) -> None:
    """Raise ``ValueError`` unless the pseudobulk profiles of a study can be fitted by limma.

    A profile is a (sample, cluster) pair with at least ``MIN_CELLS_PER_PROFILE`` cells.
    One-vs-all limma (design ``~ is_c``) needs at least 3 profiles and all-vs-all limma
    (``~ 0 + cluster``) one more profile than clusters with profiles, both from at least two
    clusters: one residual degree of freedom. Clusters without a profile of their own (e.g. a
    cluster of one cell) are allowed: their limma statistics are NaN. Checked from the labels
    alone, before any expensive step. Each message starts with the problem in plain words and
    what to do; the limma details follow in parentheses.
    """
    who = study(name, start=True)
    cluster_given = argument_text(cluster_arg, cluster_column)
    sample_given = argument_text(sample_arg, sample_column)
    n_clusters = len(clusters.categories)
    if n_clusters < 2:
        only = clusters.categories[0] if n_clusters else None
        msg = (
            f"{who} has a single cluster ({only!r}) in {cluster_given}; differential "
            "expression needs at least two clusters: check the column, or pass a study with "
            "more cell types."
        )
        raise ValueError(msg)
    n_samples = len(samples.categories)
    pair = np.asarray(samples.codes, dtype=np.int64) * n_clusters + np.asarray(clusters.codes)
    sizes = np.bincount(pair, minlength=n_samples * n_clusters)
    kept = np.flatnonzero(sizes >= MIN_CELLS_PER_PROFILE)
    n_profiles = kept.size
    n_present = np.unique(kept % n_clusters).size
    needed = max(3, n_present + 1)
    profile = (
        f"a pseudobulk profile sums the counts of one cluster's cells in one sample and needs "
        f">= {MIN_CELLS_PER_PROFILE} cells"
    )
    if n_samples < 2:
        msg = (
            f"{who} has only one sample (donor) in {sample_given}, and pseudobulk "
            "differential expression needs at least two: give "
            f"{argument_text(sample_arg)} the column that identifies the donors or batches, "
            "or use a study with more samples. (limma needs at least "
            f"{needed} pseudobulk profiles for {n_present} cluster(s), one residual degree of "
            f"freedom; one sample gives {n_profiles}, one per cluster; {profile}.)"
        )
        raise ValueError(msg)
    if n_present < 2:
        msg = (
            f"{who} has only {n_present} cluster with at least {MIN_CELLS_PER_PROFILE} cells "
            "in one sample (donor), and differential expression needs two such clusters: "
            f"check {cluster_given} and {sample_given}, or pass a study with more cells per "
            f"cluster and sample. (limma compares pseudobulk profiles of at least two "
            f"clusters; {profile}; {sample_given} has {n_samples} samples.)"
        )
        raise ValueError(msg)
    if n_profiles < needed:
        msg = (
            f"{who} has too few samples (donors) per cluster for pseudobulk differential "
            f"expression: give {argument_text(sample_arg)} a column with more samples, so "
            f"that at least one cluster has >= {MIN_CELLS_PER_PROFILE} cells in each of two "
            "samples, or merge clusters. (limma needs at least "
            f"{needed} pseudobulk profiles for {n_present} clusters, one residual degree of "
            f"freedom, and has {n_profiles}; {profile}; {sample_given} has {n_samples} "
            "samples.)"
        )
        raise ValueError(msg)


def _gene_totals(X) -> np.ndarray:
    return np.asarray(X.sum(axis=0), dtype=np.float64).ravel()


#: Rows of X read at once while building the normalized AUROC matrix.
_CHUNK_ROWS = 16_384


@njit_serial
def _scatter_csc(indptr, indices, data, scale, row_offset, next_free, out_indices, out_data):
    """Place a CSR chunk's entries, scaled per row, into preallocated CSC arrays."""
    for r in range(indptr.size - 1):  # pragma: no cover - numba
        for p in range(indptr[r], indptr[r + 1]):
            col = indices[p]
            q = next_free[col]
            out_indices[q] = row_offset + r
            out_data[q] = data[p] * scale[r]
            next_free[col] = q + 1


def _row_chunks(X, rows: np.ndarray):
    for start in range(0, rows.size, _CHUNK_ROWS):
        block = rows[start : start + _CHUNK_ROWS]
        chunk = X[block] if sparse.issparse(X) else np.asarray(X)[block]
        yield start, sparse.csr_matrix(chunk)


def _library_normalized(X, rows: np.ndarray, gene_index: np.ndarray) -> sparse.csc_matrix:
    """Rows ``rows`` of X, every column, scaled to 1e4 counts per cell over ``gene_index``.

    Only the columns ``gene_index`` count towards a cell's library size; the other columns are
    carried along (the AUROC of a gene depends only on its own column), so no column-subset
    copy is made. The float32 CSC result (the layout of the AUROC kernel) is filled directly
    from chunks of rows in two passes, so no CSR copy of the subset is held beside it.
    """
    n_genes = X.shape[1]
    counted = np.zeros(n_genes, dtype=np.float64)
    counted[gene_index] = 1.0
    col_counts = np.zeros(n_genes, dtype=np.int64)
    totals = np.empty(rows.size, dtype=np.float64)
    for start, chunk in _row_chunks(X, rows):
        col_counts += np.bincount(chunk.indices, minlength=n_genes)
        totals[start : start + chunk.shape[0]] = chunk @ counted
    indptr = np.concatenate([[0], np.cumsum(col_counts)])
    out_indices = np.empty(indptr[-1], dtype=np.int32)
    out_data = np.empty(indptr[-1], dtype=np.float32)
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    next_free = indptr[:-1].copy()
    for start, chunk in _row_chunks(X, rows):
        _scatter_csc(
            chunk.indptr.astype(np.int64, copy=False),
            chunk.indices.astype(np.int64, copy=False),
            chunk.data.astype(np.float64, copy=False),
            scale[start : start + chunk.shape[0]],
            start,
            next_free,
            out_indices,
            out_data,
        )
    return sparse.csc_matrix((out_data, out_indices, indptr), shape=(rows.size, n_genes))


def _de_tables(
    X,
    gene_index: np.ndarray,
    genes: pd.Index,
    clusters: pd.Categorical,
    samples: pd.Categorical,
    *,
    n_samples_auroc: int,
    random_state: int,
    name: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One-vs-all and all-vs-all DE tables of the genes ``gene_index`` of one study."""
    n_clusters = len(clusters.categories)
    start = time.perf_counter()
    bulk = pseudobulk(
        X,
        clusters.codes,
        samples.codes,
        n_clusters=n_clusters,
        n_samples=len(samples.categories),
        gene_index=gene_index,
        min_cells=MIN_CELLS_PER_PROFILE,
    )
    missing = sorted(set(range(n_clusters)) - set(bulk.cluster.tolist()))
    if missing:
        logger.warning(
            "%s: clusters %s have no (sample, cluster) pair with >= %d cells; their limma "
            "statistics are NaN.",
            study(name),
            [clusters.categories[k] for k in missing],
            MIN_CELLS_PER_PROFILE,
        )
    expr = log_normalize(bulk.counts, PSEUDOBULK_TARGET_SUM).T
    ova_fc, ova_p, ova_adj = limma_ova(expr, bulk.cluster, n_clusters)
    ava_fc, ava_p, ava_adj = limma_ava(expr, bulk.cluster, n_clusters)
    logger.info(
        "%s: limma on %d pseudobulk profiles x %d genes in %.1f s",
        study(name),
        bulk.counts.shape[0],
        len(gene_index),
        time.perf_counter() - start,
    )

    start = time.perf_counter()
    rows = downsample_indices(clusters.codes, n_samples_auroc, random_state=random_state)
    normalized = _library_normalized(X, rows, gene_index)
    ova_auc, ava_auc = auroc_ova_ava(normalized, clusters.codes[rows], n_clusters)
    del normalized
    if not np.array_equal(gene_index, np.arange(X.shape[1])):
        ova_auc, ava_auc = ova_auc[:, gene_index], ava_auc[:, :, gene_index]
    logger.info(
        "%s: AUROC on %d cells x %d genes in %.1f s",
        study(name),
        rows.size,
        len(gene_index),
        time.perf_counter() - start,
    )

    n_genes = len(genes)
    categories = clusters.categories
    gene_codes = np.arange(n_genes, dtype=np.int32)
    ova = pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(
                np.repeat(np.arange(n_clusters), n_genes), categories
            ),
            "gene": pd.Categorical.from_codes(np.tile(gene_codes, n_clusters), genes),
            "logFC": ova_fc.ravel(),
            "P.Value": ova_p.ravel(),
            "adj.P.Val": ova_adj.ravel(),
            "auroc": ova_auc.ravel(),
        }
    )
    first, second = np.nonzero(~np.eye(n_clusters, dtype=bool))
    ava = pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(np.repeat(first, n_genes), categories),
            "versus": pd.Categorical.from_codes(np.repeat(second, n_genes), categories),
            "gene": pd.Categorical.from_codes(np.tile(gene_codes, first.size), genes),
            "logFC": ava_fc[first, second].ravel(),
            "P.Value": ava_p[first, second].ravel(),
            "adj.P.Val": ava_adj[first, second].ravel(),
            "auroc": ava_auc[first, second].ravel(),
        }
    )
    return ova, ava


@interruptible_call
def rank_genes_limma(
    adata: AnnData,
    cluster_label: str,
    sample_label: str,
    *,
    n_samples_auroc: int = 10_000,
    random_state: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudobulk limma and AUROC for every cluster (one-vs-all) and cluster pair (all-vs-all).

    See docs/method.md#pseudobulk-differential-expression.

    Counts of each (sample, cluster) pair with at least 2 cells are summed, scaled to 1e5 and
    ``log1p``-transformed; limma fits ``~ is_cluster`` per cluster (one-vs-all) and one
    ``~ 0 + cluster`` model with every pairwise contrast (all-vs-all). The AUROC of each gene
    is computed on library-size-normalized single-cell values of a stratified subsample of at
    most ``n_samples_auroc`` cells per cluster. ``adata`` is not modified.

    Parameters
    ----------
    adata
        Raw UMI counts in ``X``; every gene of ``adata`` is tested.
    cluster_label, sample_label
        Columns of ``adata.obs`` with the cluster and the sample (donor) of each cell.
    n_samples_auroc
        Maximum number of cells per cluster used for the AUROC.
    random_state
        Seed of the AUROC subsample.

    Returns
    -------
    de_ova
        One row per (cluster, gene): ``cluster, gene, logFC, P.Value, adj.P.Val, auroc``.
    de_ava
        One row per ordered cluster pair and gene, both directions present:
        ``cluster, versus, gene, logFC, P.Value, adj.P.Val, auroc``; ``logFC`` is
        ``cluster - versus`` and ``auroc`` has ``cluster`` as the positive class.

    Notes
    -----
    Messy data, case by case (see also :func:`preprocess_adatas`):

    - A cluster with a single cell (more generally, without any (sample, cluster) pair of at
      least 2 cells) gets no pseudobulk profile: its one-vs-all rows and every all-vs-all
      pair involving it have NaN ``logFC`` / ``P.Value`` / ``adj.P.Val`` (a warning is
      logged), while its ``auroc`` is still computed from its cells. It then has no marker
      genes downstream (label distance 1 to every reference cluster).
    - A cluster present in one sample only works when that sample holds at least 2 of its
      cells: it gets one profile, and the residual degrees of freedom come from the clusters
      seen in several samples.
    - Too few profiles for limma (fewer than 3, or not more profiles than clusters with
      profiles, or profiles of fewer than two clusters) is a ``ValueError`` naming the study
      and asking for more samples, raised before any computation; so is a single cluster.

    Raises
    ------
    KeyError
        A column is not in ``adata.obs`` (the message lists the columns that exist).
    ValueError
        ``X`` is not raw counts (negative, NaN / infinite or fractional values), labels are
        missing, gene names are duplicated, the study is empty, or the design is too small
        for limma (see Notes).
    """
    check_adata(adata, "adata")
    n_samples_auroc = _check_positive_int(n_samples_auroc, "n_samples_auroc")
    _check_distinct_columns(cluster_label, sample_label, "cluster_label", "sample_label")
    clusters = get_labels(adata, cluster_label, "adata", "cluster_label")
    samples = get_labels(adata, sample_label, "adata", "sample_label")
    X = adata.X
    check_counts(X, "adata")
    _check_limma_design(
        clusters,
        samples,
        name="adata",
        cluster_arg="cluster_label",
        cluster_column=cluster_label,
        sample_arg="sample_label",
        sample_column=sample_label,
    )
    return _de_tables(
        X,
        np.arange(adata.n_vars),
        pd.Index(adata.var_names.astype(str)),
        clusters,
        samples,
        n_samples_auroc=n_samples_auroc,
        random_state=random_state,
        name="adata",
    )


def _shared_expressed_genes(adata1: AnnData, adata2: AnnData) -> pd.Index:
    """Genes with a total count > 10 in both studies, in the order of ``adata1``."""
    expressed1 = adata1.var_names[_gene_totals(adata1.X) > MIN_TOTAL_COUNT]
    expressed2 = adata2.var_names[_gene_totals(adata2.X) > MIN_TOTAL_COUNT]
    return expressed1[expressed1.isin(expressed2)]


def _as_gene_list(genes, argument: str) -> list[str] | None:
    if genes is None:
        return None
    if isinstance(genes, str) or not isinstance(genes, Iterable):
        msg = f"{argument} must be a list of gene names, got {genes!r}."
        raise TypeError(msg)
    return [str(g) for g in genes]


@interruptible_call
def preprocess_adatas(
    adata1: AnnData,
    adata2: AnnData,
    cell_type_column_adata1: str,
    cell_type_column_adata2: str,
    sample_column_adata1: str,
    sample_column_adata2: str,
    n_top_genes: int = 500,
    filter_genes: bool = False,
    n_samples_auroc: int = 10_000,
    n_samples_hvg_selection: int = 100_000,
    *,
    random_state: int = 0,
    genes_to_keep: Iterable[str] | None = None,
    genes_to_drop: Iterable[str] | None = None,
) -> tuple[AnnData, AnnData]:
    """Prepare a query (``adata1``) and a reference (``adata2``) study for ``DatasetMap``.

    See docs/method.md#preprocessing.

    Steps: keep the genes expressed (total count > 10) in both studies, in ``adata1``'s order;
    optionally drop uninformative genes; run pseudobulk limma and AUROC differential expression
    per study (:func:`rank_genes_limma`) on all shared genes; select ``n_top_genes`` highly
    variable genes jointly over both studies (at most ``n_samples_hvg_selection`` cells of each,
    study as batch). The caller's objects are not modified.

    Parameters
    ----------
    adata1, adata2
        Query and reference study: raw UMI counts in ``X`` (dense or sparse), gene symbols as
        ``var_names``.
    cell_type_column_adata1, cell_type_column_adata2
        Columns of ``obs`` with each cell's cluster label.
    sample_column_adata1, sample_column_adata2
        Columns of ``obs`` with each cell's sample / donor, for pseudobulk profiles.
    n_top_genes
        Number of highly variable genes kept in the outputs.
    filter_genes
        Drop mitochondrial, ribosomal, lncRNA-like and immune-receptor segment genes
        (:func:`flag_uninformative_genes`) before differential expression.
    n_samples_auroc
        Maximum number of cells per cluster used for the AUROC.
    n_samples_hvg_selection
        Maximum number of cells per study used to select highly variable genes.
    random_state
        Seed of the AUROC and HVG subsamples.
    genes_to_keep, genes_to_drop
        With ``filter_genes``, genes never dropped by the rules; genes always dropped (also
        without ``filter_genes``).

    Returns
    -------
    Two new AnnData objects with the highly variable genes (same genes, same order), raw
    counts in ``X``, the cluster column as a Categorical of strings, and
    ``uns["pairot"] = {"cell_type_key", "sample_key", "de_ova", "de_ava", "params"}`` where
    ``de_ova`` / ``de_ava`` are the tables of :func:`rank_genes_limma` over all shared genes.

    Notes
    -----
    Input checks and messy data, case by case:

    - ``X`` must hold raw counts: any numeric dtype (float holding whole numbers is fine),
      dense or sparse; negative, NaN / infinite or fractional values (normalized or
      log-transformed data) are a ``ValueError`` pointing to the raw counts.
    - Views (``adata[cells, genes]``) are accepted and give the result of their copies.
    - Cluster and sample labels are converted to strings, in the order of the original values
      (a categorical column keeps its order; numbers come in numeric order, so ``1, 2, 10``
      become ``"1", "2", "10"``). Unused categories are dropped (INFO log); missing labels,
      a missing column (``KeyError`` listing the columns) and one column given as both the
      cluster and the sample column are errors. Names with ``/``, ``+``, spaces or unicode
      work and survive ``write_h5ad`` / ``read_h5ad``.
    - Duplicated ``var_names``: ``ValueError`` (fix: ``adata.var_names_make_unique()``); an
      empty study (0 cells or 0 genes) or no shared expressed gene: ``ValueError``.
    - Fewer shared genes than ``n_top_genes``: a warning, and all shared genes are kept.
    - A single cluster, a cluster of one cell, a cluster in one sample only and too few
      pseudobulk profiles behave as described in :func:`rank_genes_limma`; the checks run
      before any expensive step.
    """
    check_adata(adata1, "adata1")
    check_adata(adata2, "adata2")
    n_top_genes = _check_positive_int(n_top_genes, "n_top_genes")
    n_samples_auroc = _check_positive_int(n_samples_auroc, "n_samples_auroc")
    n_samples_hvg_selection = _check_positive_int(
        n_samples_hvg_selection, "n_samples_hvg_selection"
    )
    if not isinstance(filter_genes, bool | np.bool_):
        msg = f"filter_genes must be True or False, got {filter_genes!r}."
        raise TypeError(msg)
    keep = _as_gene_list(genes_to_keep, "genes_to_keep")
    drop = _as_gene_list(genes_to_drop, "genes_to_drop")
    studies = {
        "adata1": (adata1, cell_type_column_adata1, sample_column_adata1),
        "adata2": (adata2, cell_type_column_adata2, sample_column_adata2),
    }
    labels = {}
    for name, (adata, ct_col, sample_col) in studies.items():
        cluster_arg, sample_arg = f"cell_type_column_{name}", f"sample_column_{name}"
        _check_distinct_columns(ct_col, sample_col, cluster_arg, sample_arg)
        labels[name] = (
            get_labels(adata, ct_col, name, cluster_arg),
            get_labels(adata, sample_col, name, sample_arg),
        )
    for name, (adata, ct_col, sample_col) in studies.items():
        check_counts(adata.X, name)
        _check_limma_design(
            *labels[name],
            name=name,
            cluster_arg=f"cell_type_column_{name}",
            cluster_column=ct_col,
            sample_arg=f"sample_column_{name}",
            sample_column=sample_col,
        )

    genes = _shared_expressed_genes(adata1, adata2)
    logger.info(
        "%d genes are expressed (total count > %d) in both studies.", len(genes), MIN_TOTAL_COUNT
    )
    if filter_genes:
        flagged = flag_uninformative_genes(np.asarray(genes, dtype=str), keep=keep, drop=drop)
    else:
        flagged = genes.isin(drop or [])
    if flagged.any():
        logger.info("Dropping %d uninformative genes.", int(flagged.sum()))
        genes = genes[~np.asarray(flagged)]
    if len(genes) == 0:
        msg = (
            f"{study('adata1', start=True)} and {study('adata2')} share no gene expressed "
            "(total count > 10) in both studies; check that var_names use the same gene "
            "identifiers (e.g. both symbols)."
        )
        raise ValueError(msg)
    genes = pd.Index(np.asarray(genes, dtype=str))

    gene_index = {
        name: adata.var_names.get_indexer(genes) for name, (adata, _, _) in studies.items()
    }
    check_interrupt()
    progress_logger.info(
        "Selecting %d highly variable genes among %d shared genes.", n_top_genes, len(genes)
    )
    start = time.perf_counter()
    hvg = select_hvgs(
        adata1.X,
        adata2.X,
        gene_index["adata1"],
        gene_index["adata2"],
        genes,
        n_top_genes=n_top_genes,
        n_samples=n_samples_hvg_selection,
        random_state=random_state,
    )
    logger.info(
        "Selected %d highly variable genes in %.1f s.", hvg.size, time.perf_counter() - start
    )

    tables = {}
    for name, (adata, _, _) in studies.items():
        clusters, samples = labels[name]
        check_interrupt()
        progress_logger.info(
            "Differential expression of %s's %d clusters (pseudobulk limma, AUROC).",
            study(name),
            len(clusters.categories),
        )
        tables[name] = _de_tables(
            adata.X,
            gene_index[name],
            genes,
            clusters,
            samples,
            n_samples_auroc=n_samples_auroc,
            random_state=random_state,
            name=name,
        )

    params = {
        "n_top_genes": n_top_genes,
        "filter_genes": bool(filter_genes),
        "n_samples_auroc": n_samples_auroc,
        "n_samples_hvg_selection": n_samples_hvg_selection,
        "random_state": int(random_state),
        "n_shared_genes": len(genes),
        "min_total_count": MIN_TOTAL_COUNT,
        "min_cells_per_profile": MIN_CELLS_PER_PROFILE,
        "pseudobulk_target_sum": PSEUDOBULK_TARGET_SUM,
    }
    if keep:
        params["genes_to_keep"] = np.asarray(keep, dtype=str)
    if drop:
        params["genes_to_drop"] = np.asarray(drop, dtype=str)

    outputs = []
    for name, (adata, ct_col, sample_col) in studies.items():
        columns = gene_index[name][hvg]
        X = adata.X
        X_out = X[:, columns] if sparse.issparse(X) else np.asarray(X)[:, columns]
        X_out = X_out.copy()
        obs = adata.obs.copy()
        obs[ct_col] = labels[name][0]
        obs[sample_col] = labels[name][1]
        var = adata.var.iloc[columns].copy()
        var.index = genes[hvg]
        de_ova, de_ava = tables[name]
        out = AnnData(
            X=X_out,
            obs=obs,
            var=var,
            obsm={key: value.copy() for key, value in adata.obsm.items()},
            uns={
                "pairot": {
                    "cell_type_key": ct_col,
                    "sample_key": sample_col,
                    "study": name,
                    "de_ova": de_ova,
                    "de_ava": de_ava,
                    "params": dict(params),
                }
            },
        )
        outputs.append(out)
    return outputs[0], outputs[1]
