"""Pseudobulk profiles: counts summed per (sample, cluster) pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass
class Pseudobulk:
    """Summed counts of every (sample, cluster) pair with enough cells.

    Attributes
    ----------
    counts
        Summed counts, profiles x genes, float64.
    cluster
        Cluster code of each profile.
    sample
        Sample code of each profile.
    n_cells
        Number of cells summed into each profile.
    """

    counts: np.ndarray
    cluster: np.ndarray
    sample: np.ndarray
    n_cells: np.ndarray


def pseudobulk(
    X,
    cluster_codes: np.ndarray,
    sample_codes: np.ndarray,
    *,
    n_clusters: int,
    n_samples: int,
    gene_index: np.ndarray | None = None,
    min_cells: int = 2,
) -> Pseudobulk:
    """Sum the counts of the cells of each (sample, cluster) pair with at least ``min_cells`` cells.

    Parameters
    ----------
    X
        Cells x genes counts, dense or scipy.sparse.
    cluster_codes, sample_codes
        Integer code per cell, in ``[0, n_clusters)`` and ``[0, n_samples)``.
    gene_index
        Columns of ``X`` to keep, in this order (all columns when ``None``).
    min_cells
        Pairs with fewer cells are left out.

    Returns
    -------
    The profiles ordered by sample, then cluster.
    """
    cluster_codes = np.asarray(cluster_codes, dtype=np.int64)
    sample_codes = np.asarray(sample_codes, dtype=np.int64)
    pair = sample_codes * n_clusters + cluster_codes
    sizes = np.bincount(pair, minlength=n_clusters * n_samples)
    kept_pairs = np.flatnonzero(sizes >= min_cells)
    profile_of_pair = np.full(sizes.size, -1, dtype=np.int64)
    profile_of_pair[kept_pairs] = np.arange(kept_pairs.size)
    profile = profile_of_pair[pair]
    cells = np.flatnonzero(profile >= 0)
    indicator = sparse.csr_matrix(
        (np.ones(cells.size), (profile[cells], cells)),
        shape=(kept_pairs.size, pair.size),
    )
    summed = indicator @ X
    summed = summed.toarray() if sparse.issparse(summed) else np.asarray(summed)
    summed = np.asarray(summed, dtype=np.float64)
    if gene_index is not None:
        summed = summed[:, gene_index]
    return Pseudobulk(
        counts=summed,
        cluster=kept_pairs % n_clusters,
        sample=kept_pairs // n_clusters,
        n_cells=sizes[kept_pairs],
    )


def log_normalize(counts: np.ndarray, target_sum: float = 1e5) -> np.ndarray:
    """``log1p`` of each row scaled to ``target_sum`` total counts (rows of zeros stay zero)."""
    totals = counts.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(counts * scale)
