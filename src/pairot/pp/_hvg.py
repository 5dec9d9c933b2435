"""Highly variable genes selected jointly over two studies with scanpy."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from scipy import sparse

from .._logging import logger


def hvg_rows(n: int, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """The cells of a study's HVG subsample: all of them, or ``n_max`` drawn (sorted)."""
    return np.arange(n) if n <= n_max else np.sort(rng.choice(n, size=n_max, replace=False))


def study_statistics(sub, genes: pd.Index, n_top_genes: int) -> pd.DataFrame:
    """scanpy's per-batch HVG statistics of one study's subsample ``sub`` (cells x ``genes``
    counts, CSR), as in ``highly_variable_genes(batch_key=)``.

    A float32 ``sub`` is normalized and log-transformed in place (the caller hands it over):
    no second copy of the subsample is made, also not of its expressed genes.
    """
    expressed = np.asarray(sub.getnnz(axis=0) > 0)
    if sub.dtype != np.float32:
        sub = sparse.csr_matrix(
            (sub.data.astype(np.float32), sub.indices, sub.indptr), shape=sub.shape
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        return _batch_statistics(sub, expressed, genes, n_top_genes)


#: Values of a subsample handed to scanpy at once (scanpy copies them twice).
_HVG_BLOCK_VALUES = 1 << 24
#: Mean bins of the seurat flavor (scanpy's ``n_bins`` default).
_N_BINS = 20


def _seurat_statistics(X, n_top_genes: int, columns: np.ndarray | None = None) -> pd.DataFrame:
    """scanpy's ``highly_variable_genes(flavor="seurat", n_top_genes=...)`` of ``X``
    (normalized, ``log1p``-transformed cells x genes, CSR), in bounded memory; with
    ``columns``, of ``X[:, columns]`` without building it.

    Each gene's mean and dispersion depend on that gene alone, so scanpy computes them on
    blocks of genes (it copies what it is given twice: on a whole 100,000-cell subsample that
    is the largest allocation of preprocessing). The steps that need all genes are done here as
    scanpy does them: genes are binned by mean into 20 equal-width bins (``pandas.cut``), each
    dispersion is normalized by its bin's mean and standard deviation (a bin holding a single
    gene gives it a normalized dispersion of 1), and the genes whose normalized dispersion
    reaches the ``n_top_genes``-th highest are selected (NaN never).
    """
    columns = np.arange(X.shape[1]) if columns is None else np.asarray(columns)
    n_genes = columns.size
    nnz_per_gene = max(1.0, X.nnz / max(1, X.shape[1]))
    step = max(1, int(_HVG_BLOCK_VALUES // nnz_per_gene))
    parts = []
    for g0 in range(0, n_genes, step):
        block = AnnData(X=X[:, columns[g0 : g0 + step]])
        part = sc.pp.highly_variable_genes(
            block, n_top_genes=min(n_top_genes, block.n_vars), flavor="seurat", inplace=False
        )
        parts.append(part[["means", "dispersions"]].reset_index(drop=True))
        del block
    table = pd.concat(parts, ignore_index=True)
    mean_bin = pd.cut(table["means"], bins=_N_BINS)
    grouped = table.groupby(mean_bin, observed=True)["dispersions"]
    stats = grouped.agg(avg="mean", dev="std")
    single = stats["dev"].isnull()
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    per_gene = stats.loc[mean_bin].set_index(table.index)
    table["dispersions_norm"] = (table["dispersions"] - per_gene["avg"]) / per_gene["dev"]
    norm = table["dispersions_norm"].to_numpy()
    finite = np.sort(norm[~np.isnan(norm)])[::-1]
    n = min(n_top_genes, finite.size)
    cutoff = finite[n - 1] if n else np.inf
    table["highly_variable"] = np.nan_to_num(norm, nan=-np.inf) >= cutoff
    return table


def _batch_statistics(
    sub, expressed: np.ndarray, genes: pd.Index, n_top_genes: int
) -> pd.DataFrame:
    """scanpy's per-batch statistics of one study, as in ``highly_variable_genes(batch_key=)``.

    ``sub`` holds all ``genes``; like scanpy's batched mode, the genes without a count in this
    batch (not ``expressed``) are left out of the statistics and reported with zeros. They are
    left out when the statistics are computed, not by copying ``sub``: they hold no stored
    values, so each cell's total, and so its normalization, is the same with or without them.
    """
    adata = AnnData(X=sub, var=pd.DataFrame(index=genes))
    del sub
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    table = _seurat_statistics(adata.X, n_top_genes, np.flatnonzero(expressed))
    del adata
    table.index = genes[expressed]
    missing = pd.DataFrame(
        np.zeros((int((~expressed).sum()), 3)),
        columns=["means", "dispersions", "dispersions_norm"],
        index=genes[~expressed],
    )
    missing["highly_variable"] = False
    return pd.concat([table, missing]).loc[genes]


def combine_statistics(tables: list[pd.DataFrame], genes: pd.Index, n_top_genes: int):
    """Positions (into ``genes``, ascending) of the HVGs of per-study statistics, combined as
    scanpy's batched mode combines batches (mean statistics, genes ranked by the number of
    batches selecting them, then by mean normalized dispersion)."""
    table = pd.concat(tables, axis=0)
    table["highly_variable"] = table["highly_variable"].astype(int)
    table = table.groupby(table.index, observed=True).agg(
        {
            "means": "mean",
            "dispersions": "mean",
            "dispersions_norm": "mean",
            "highly_variable": "sum",
        }
    )
    table = table.rename(columns={"highly_variable": "highly_variable_nbatches"})
    table = table.sort_values(
        ["highly_variable_nbatches", "dispersions_norm"], ascending=False, na_position="last"
    )
    chosen = set(table.index[:n_top_genes])
    return np.flatnonzero(genes.isin(chosen))


def select_hvgs(
    X1,
    X2,
    gene_index1: np.ndarray,
    gene_index2: np.ndarray,
    genes: pd.Index,
    *,
    n_top_genes: int,
    n_samples: int,
    random_state: int,
) -> np.ndarray:
    """Positions (into ``genes``, ascending) of the highly variable genes of two studies.

    At most ``n_samples`` cells of each study are drawn (seeded, :func:`hvg_rows`); on them,
    normalized to 1e4 counts per cell and ``log1p``-transformed, ``n_top_genes`` genes are
    selected as scanpy's ``highly_variable_genes(flavor="seurat", batch_key=<study>)`` selects
    them on the two subsamples concatenated. Each study's statistics come from scanpy itself,
    one study at a time (:func:`study_statistics`), and are combined as scanpy's batched mode
    combines batches (:func:`combine_statistics`). In-memory matrices; ``preprocess_adatas``
    collects the subsamples while streaming instead.
    """
    if n_top_genes >= len(genes):
        logger.warning(
            "n_top_genes=%d is not smaller than the %d shared genes; using all shared genes.",
            n_top_genes,
            len(genes),
        )
        return np.arange(len(genes))
    rng = np.random.default_rng([random_state, 1])
    tables = []
    for X, gene_index in ((X1, gene_index1), (X2, gene_index2)):
        rows = hvg_rows(X.shape[0], n_samples, rng)
        sub = sparse.csr_matrix(X[rows] if sparse.issparse(X) else np.asarray(X)[rows])
        tables.append(study_statistics(sub[:, gene_index], genes, n_top_genes))
    return combine_statistics(tables, genes, n_top_genes)
