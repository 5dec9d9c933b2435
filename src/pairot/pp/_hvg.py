"""Highly variable genes selected jointly over two studies with scanpy."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from scipy import sparse

from .._logging import logger


def _subsample_rows(X, gene_index: np.ndarray, n_max: int, rng: np.random.Generator):
    n = X.shape[0]
    rows = np.arange(n) if n <= n_max else np.sort(rng.choice(n, size=n_max, replace=False))
    if sparse.issparse(X):
        sub = sparse.csr_matrix(X[rows])[:, gene_index]
    else:
        sub = sparse.csr_matrix(np.asarray(X)[rows][:, gene_index])
    return sub.astype(np.float32)


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

    At most ``n_samples`` cells of each study are drawn (seeded), the two subsamples are
    concatenated, normalized to 1e4 counts per cell, log1p-transformed, and scanpy's
    ``highly_variable_genes`` (flavor "seurat") picks ``n_top_genes`` genes with the study as
    ``batch_key``.
    """
    if n_top_genes >= len(genes):
        logger.warning(
            "n_top_genes=%d is not smaller than the %d shared genes; using all shared genes.",
            n_top_genes,
            len(genes),
        )
        return np.arange(len(genes))
    rng = np.random.default_rng([random_state, 1])
    parts = [
        _subsample_rows(X, idx, n_samples, rng) for X, idx in ((X1, gene_index1), (X2, gene_index2))
    ]
    study = np.repeat(["adata1", "adata2"], [parts[0].shape[0], parts[1].shape[0]])
    joint = AnnData(
        X=sparse.vstack(parts, format="csr"),
        obs=pd.DataFrame({"study": pd.Categorical(study)}, index=np.arange(study.size).astype(str)),
        var=pd.DataFrame(index=np.asarray(genes, dtype=str)),
    )
    del parts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        sc.pp.normalize_total(joint, target_sum=1e4)
        sc.pp.log1p(joint)
        table = sc.pp.highly_variable_genes(
            joint, n_top_genes=n_top_genes, batch_key="study", flavor="seurat", inplace=False
        )
    return np.flatnonzero(table["highly_variable"].to_numpy())
