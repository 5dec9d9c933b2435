"""A study's long DE tables, built from its limma statistics and AUROCs (arrays by cluster)."""

from __future__ import annotations

import numpy as np
import pandas as pd

OVA_COLUMNS = ["cluster", "gene", "logFC", "P.Value", "adj.P.Val", "auroc"]
AVA_COLUMNS = ["cluster", "versus", "gene", "logFC", "P.Value", "adj.P.Val", "auroc"]


def code_dtype(n_categories: int) -> np.dtype:
    """The integer dtype pandas stores the codes of ``n_categories`` categories in (code -1
    means missing, so int8 holds up to 126 categories)."""
    for dtype in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def de_tables(
    limma_results, auroc_results, genes: pd.Index, clusters: pd.Categorical
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long one-vs-all and all-vs-all DE tables of one study.

    Each column is built once and handed to pandas without a copy (no consolidation of the
    float columns), and each cluster x cluster x gene array is dropped once its column exists:
    pass ``limma_results`` and ``auroc_results`` without keeping a reference to them.
    """
    (ova_fc, ova_p, ova_adj), ava_limma = limma_results
    ova_auc, ava_auc = auroc_results
    del limma_results, auroc_results
    n_clusters = len(clusters.categories)
    n_genes = len(genes)
    categories = clusters.categories
    # codes in the smallest signed dtype of each: pandas keeps them as they are (no copy)
    gene_codes = np.arange(n_genes, dtype=code_dtype(n_genes))
    cluster_codes = np.arange(n_clusters, dtype=code_dtype(n_clusters))
    ova = pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(np.repeat(cluster_codes, n_genes), categories),
            "gene": pd.Categorical.from_codes(np.tile(gene_codes, n_clusters), genes),
            "logFC": ova_fc.ravel(),
            "P.Value": ova_p.ravel(),
            "adj.P.Val": ova_adj.ravel(),
            "auroc": ova_auc.ravel(),
        },
        copy=False,
    )
    first, second = np.nonzero(~np.eye(n_clusters, dtype=bool))
    columns = {
        "cluster": pd.Categorical.from_codes(np.repeat(cluster_codes[first], n_genes), categories),
        "versus": pd.Categorical.from_codes(np.repeat(cluster_codes[second], n_genes), categories),
        "gene": pd.Categorical.from_codes(np.tile(gene_codes, first.size), genes),
    }
    arrays = [*ava_limma, ava_auc]
    del ava_limma, ava_auc
    for key in ("logFC", "P.Value", "adj.P.Val", "auroc"):
        columns[key] = arrays.pop(0)[first, second].ravel()
    return ova, pd.DataFrame(columns, copy=False)
