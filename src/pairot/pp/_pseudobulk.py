"""Pseudobulk profiles: counts summed per (sample, cluster) pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


@dataclass
class Profiles:
    """Which (sample, cluster) pairs form a pseudobulk profile, and each cell's profile.

    Attributes
    ----------
    of_cell
        Profile code of each cell (``-1``: its pair has too few cells).
    cluster, sample
        Cluster and sample code of each profile.
    n_cells
        Number of cells of each profile.
    """

    of_cell: np.ndarray
    cluster: np.ndarray
    sample: np.ndarray
    n_cells: np.ndarray

    @property
    def n_profiles(self) -> int:
        return int(self.cluster.size)


def profiles_of(
    cluster_codes: np.ndarray,
    sample_codes: np.ndarray,
    *,
    n_clusters: int,
    n_samples: int,
    min_cells: int = 2,
) -> Profiles:
    """The profiles (pairs with at least ``min_cells`` cells), ordered by sample, then cluster."""
    cluster_codes = np.asarray(cluster_codes, dtype=np.int64)
    sample_codes = np.asarray(sample_codes, dtype=np.int64)
    pair = sample_codes * n_clusters + cluster_codes
    sizes = np.bincount(pair, minlength=n_clusters * n_samples)
    kept_pairs = np.flatnonzero(sizes >= min_cells)
    profile_of_pair = np.full(sizes.size, -1, dtype=np.int64)
    profile_of_pair[kept_pairs] = np.arange(kept_pairs.size)
    return Profiles(
        of_cell=profile_of_pair[pair],
        cluster=kept_pairs % n_clusters,
        sample=kept_pairs // n_clusters,
        n_cells=sizes[kept_pairs],
    )


def pseudobulk(
    X,
    cluster_codes: np.ndarray,
    sample_codes: np.ndarray,
    *,
    n_clusters: int,
    n_samples: int,
    gene_index: np.ndarray | None = None,
    min_cells: int = 2,
    chunk_size: int | None = None,
) -> Pseudobulk:
    """Sum the counts of the cells of each (sample, cluster) pair with at least ``min_cells`` cells.

    Parameters
    ----------
    X
        Cells x genes counts: dense, scipy.sparse, backed (anndata's on-disk matrix) or dask;
        read in row chunks (see :class:`pairot.pp._reader.CountReader`).
    cluster_codes, sample_codes
        Integer code per cell, in ``[0, n_clusters)`` and ``[0, n_samples)``.
    gene_index
        Columns of ``X`` to keep, in this order (all columns when ``None``).
    min_cells
        Pairs with fewer cells are left out.
    chunk_size
        Rows read at once (default: see ``CountReader``).

    Returns
    -------
    The profiles ordered by sample, then cluster.
    """
    from ._reader import CountReader
    from ._stream import PassSpec, run_pass

    profiles = profiles_of(
        cluster_codes,
        sample_codes,
        n_clusters=n_clusters,
        n_samples=n_samples,
        min_cells=min_cells,
    )
    reader = CountReader(X, name="X", chunk_size=chunk_size)
    index = None if gene_index is None else np.asarray(gene_index, dtype=np.int64)
    spec = PassSpec(gene_index=index, n_profiles=profiles.n_profiles)
    if profiles.n_profiles == 0:
        width = reader.shape[1] if index is None else index.size
        summed = np.zeros((0, width))
    else:
        summed = run_pass(reader, spec, profile=profiles.of_cell).profile_sums
    return Pseudobulk(
        counts=summed,
        cluster=profiles.cluster,
        sample=profiles.sample,
        n_cells=profiles.n_cells,
    )


class LogExpression:
    """``log1p`` of pseudobulk profiles scaled to ``target_sum``, genes x profiles, by blocks.

    The transposed, normalized matrix that limma fits (``log_normalize(counts).T``) is never
    held whole: :meth:`block` computes the rows of a block of genes on demand, so gene-blocked
    limma needs one profiles x genes matrix (the summed counts) and one block.
    """

    def __init__(self, counts: np.ndarray, target_sum: float = 1e5) -> None:
        self.counts = counts
        totals = counts.sum(axis=1)
        self.scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        self.shape = (counts.shape[1], counts.shape[0])

    def release(self) -> None:
        """Drop the summed counts (the shape stays); :meth:`block` cannot be used after."""
        self.counts = None

    def block(self, g0: int, g1: int) -> np.ndarray:
        """Genes ``g0:g1`` x all profiles, float64."""
        return np.log1p(self.counts[:, g0:g1] * self.scale[:, None]).T


def log_normalize(counts: np.ndarray, target_sum: float = 1e5) -> np.ndarray:
    """``log1p`` of each row scaled to ``target_sum`` total counts (rows of zeros stay zero)."""
    totals = counts.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(counts * scale)


def stored_pseudobulk(
    counts: np.ndarray,
    profiles: Profiles,
    clusters,
    samples,
    genes,
) -> dict[str, np.ndarray]:
    """The summed counts of a study's pseudobulk profiles, as ``uns["pairot"]["pseudobulk"]``.

    h5ad-safe (fixed keys, arrays only; cluster and sample names are values, never keys):
    ``counts`` (profiles x genes, float32: ``4 * profiles * genes`` bytes; exact for sums
    below 2**24), ``cluster`` and ``sample`` (int32 codes of each profile into
    ``clusters`` and ``samples``, the study's cluster and sample names), ``n_cells`` (cells
    summed into each profile) and ``genes`` (the columns: the genes of the DE tables).

    Parameters
    ----------
    counts
        Summed counts, profiles x genes (the ``profile_sums`` of the pseudobulk pass).
    profiles
        The profiles' cluster and sample codes.
    clusters, samples
        The study's cluster and sample labels (Categoricals) the codes refer to.
    genes
        The gene of each column of ``counts``.
    """
    return {
        "counts": np.asarray(counts, dtype=np.float32),
        "cluster": np.asarray(profiles.cluster, dtype=np.int32),
        "sample": np.asarray(profiles.sample, dtype=np.int32),
        "n_cells": np.asarray(profiles.n_cells, dtype=np.int64),
        "clusters": np.asarray(clusters.categories.astype(str), dtype=str),
        "samples": np.asarray(samples.categories.astype(str), dtype=str),
        "genes": np.asarray(genes, dtype=str),
    }
