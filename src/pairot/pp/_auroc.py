"""Exact AUROC of every gene for every one-vs-all and all-vs-all cluster comparison.

The AUROC of gene ``g`` with the cells of cluster ``c1`` as positives against the cells of
cluster ``c2`` is the Mann-Whitney statistic ``U / (n1 * n2)`` with ties counted one half:

    U[c1, c2] = sum over i in c1, j in c2 of [x_i > x_j] + 0.5 * [x_i == x_j].

Grouping the cells of a gene by distinct value ``v`` with per-cluster counts ``cnt[v, c]`` and
per-cluster counts strictly below ``below[v, c]`` gives every pair at once,

    U[c1, c2] = sum_v cnt[v, c1] * (below[v, c2] + 0.5 * cnt[v, c2]),

so one sort per gene serves all ``K * K`` comparisons. The one-vs-all ``U`` of cluster ``c`` is
the row sum ``sum_{c2 != c} U[c, c2]`` (the negatives are the union of all other clusters).

:func:`auroc_ova_ava` evaluates this with a numba kernel over the stored (non-zero) entries of
each gene, treating all zeros of a gene as one tie group whose per-cluster counts are
``cluster size - stored non-zeros``; the cost per gene is ``O(nnz log nnz + nnz * K + K * K)``
instead of ``O(n_cells)``. :func:`auroc_pairwise_loop` is the naive per-comparison baseline
(one rank-based Mann-Whitney test per cluster pair), kept for benchmarks and tests.

The statistic needs of a cell only its value and its cluster, not its row: preprocessing keeps
the AUROC subsample as :class:`LabelledColumns` (each gene's stored values with their cells'
cluster codes) and evaluates it with :func:`auroc_columns`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata
from tqdm.auto import tqdm

from .._interrupt import check as check_interrupt
from .._numba import njit_parallel

__all__ = ["LabelledColumns", "auroc_columns", "auroc_ova_ava", "auroc_pairwise_loop"]

# Work per block of genes: stored entries handed to the kernel at once, and the number of
# K x K integer accumulators held at once.
_BLOCK_NNZ = 4_000_000
_BLOCK_KK = 8_000_000
# Dense input: at most this many values of a dense column block are copied at once.
_BLOCK_DENSE = 4_000_000


@njit_parallel
def _u2_block(data, indices, indptr, labels, sizes, out):  # pragma: no cover - numba
    """Twice the Mann-Whitney U of every ordered cluster pair, for a block of genes.

    ``data``, ``indices``, ``indptr``: CSC arrays of the block (float64, int64, int64).
    ``labels``: cluster code of every cell (int64). ``sizes``: cells per cluster (int64).
    ``out``: (n_genes, K, K) int64, overwritten with ``2 * U[c1, c2]`` (diagonal meaningless).
    """
    n_genes = indptr.shape[0] - 1
    k = sizes.shape[0]
    for jj in numba.prange(n_genes):
        start = indptr[jj]
        m = indptr[jj + 1] - start
        vals = data[start : start + m]
        rows = indices[start : start + m]
        u2 = out[jj]
        u2[:, :] = 0
        below2 = np.zeros(k, np.int64)  # 2 * cells of each cluster strictly below
        grp = np.zeros(k, np.int64)  # cells of each cluster in the current tie group
        touched = np.empty(k, np.int64)
        zeros = sizes.copy()  # cells of each cluster with value 0 (implicit or stored)
        lab = np.empty(m, np.int64)
        for t in range(m):
            lab[t] = labels[rows[t]]
            if vals[t] != 0:
                zeros[lab[t]] -= 1
        order = np.argsort(vals)
        zero_done = False
        v = 0.0
        i = 0
        while i < m or not zero_done:
            if i < m:
                v = vals[order[i]]
                if v == 0:  # stored zeros belong to the zero group
                    i += 1
                    continue
            if not zero_done and (i >= m or v > 0):
                # tie group of all zeros, placed between negative and positive values
                for a in range(k):
                    za = zeros[a]
                    if za == 0:
                        continue
                    for b in range(k):
                        u2[a, b] += za * (below2[b] + zeros[b])
                for a in range(k):
                    below2[a] += 2 * zeros[a]
                zero_done = True
                continue
            # tie group order[i:j] of value v
            j = i
            nt = 0
            while j < m and vals[order[j]] == v:
                a = lab[order[j]]
                if grp[a] == 0:
                    touched[nt] = a
                    nt += 1
                grp[a] += 1
                j += 1
            for p in range(nt):
                a = touched[p]
                ga = grp[a]
                for b in range(k):
                    u2[a, b] += ga * below2[b]
                for q in range(nt):
                    b = touched[q]
                    u2[a, b] += ga * grp[b]
            for p in range(nt):
                a = touched[p]
                below2[a] += 2 * grp[a]
                grp[a] = 0
            i = j


def _check_inputs(X, labels, n_clusters: int):
    """Validate ``X``, ``labels``, ``n_clusters``; return (X, labels int64, sizes int64)."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer):
        msg = f"n_clusters must be an integer, got {n_clusters!r}."
        raise TypeError(msg)
    n_clusters = int(n_clusters)
    if n_clusters < 1:
        msg = f"n_clusters must be >= 1, got {n_clusters}."
        raise ValueError(msg)
    if not sp.issparse(X):
        X = np.asarray(X)
    if X.ndim != 2:
        msg = f"X must be a 2-d cells x genes matrix, got shape {X.shape}."
        raise ValueError(msg)
    if X.dtype.kind not in "biuf":
        msg = f"X must hold numbers (int or float), got dtype {X.dtype}."
        raise TypeError(msg)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
        msg = f"labels must be 1-d with one entry per cell ({X.shape[0]}), got {labels.shape}."
        raise ValueError(msg)
    if labels.size and labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or not np.array_equal(labels, np.round(labels)):
            msg = f"labels must be integer cluster codes 0..n_clusters-1, got dtype {labels.dtype}."
            raise TypeError(msg)
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        msg = (
            f"labels must lie in 0..{n_clusters - 1} (n_clusters={n_clusters}), "
            f"got values in {labels.min()}..{labels.max()}."
        )
        raise ValueError(msg)
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    return X, labels, sizes


def _check_finite(values: np.ndarray) -> None:
    if values.dtype.kind == "f" and values.size and not np.isfinite(values).all():
        msg = "X contains NaN or infinite values; AUROC needs finite expression values."
        raise ValueError(msg)


def _finish(u2_ava: np.ndarray, sizes: np.ndarray, ava: np.ndarray, ova: np.ndarray, sl: slice):
    """Turn ``2 * U`` of a block (n_genes, K, K) into AUROCs written to ``ava``/``ova``."""
    n_cells = int(sizes.sum())
    sz = sizes.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 2.0 * np.outer(sz, sz)
        denom[denom == 0] = np.nan
        np.fill_diagonal(denom, np.nan)
        ava[:, :, sl] = np.transpose(u2_ava / denom, (1, 2, 0))
        diag = np.einsum("gaa->ga", u2_ava)
        u2_ova = u2_ava.sum(axis=2) - diag
        denom_ova = 2.0 * sz * (n_cells - sz)
        denom_ova[denom_ova == 0] = np.nan
        ova[:, sl] = (u2_ova / denom_ova).T


def _gene_blocks(indptr: np.ndarray, n_genes: int, k: int):
    """Split genes 0..n_genes into consecutive blocks of bounded stored entries and K*K work."""
    max_genes = max(1, _BLOCK_KK // max(1, k * k))
    g0 = 0
    while g0 < n_genes:
        g1 = min(n_genes, g0 + max_genes)
        # shrink to at most _BLOCK_NNZ stored entries (always at least one gene)
        limit = indptr[g0] + _BLOCK_NNZ
        g_nnz = int(np.searchsorted(indptr, limit, side="right")) - 1
        g1 = max(g0 + 1, min(g1, g_nnz))
        yield g0, g1
        g0 = g1


def auroc_ova_ava(
    X, labels, n_clusters: int, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact AUROC of every gene for all one-vs-all and all-vs-all cluster comparisons.

    The AUROC is the Mann-Whitney ``U / (n1 * n2)`` with ties counted one half: the
    probability that a random positive cell has a higher value than a random negative cell,
    plus half the probability of a tie. Only the ordering of the values matters. Every
    comparison comes from a single sort per gene (no loop over cluster pairs); zeros of a
    sparse matrix are one tie group, so the cost per gene grows with its stored entries, not
    with the number of cells.

    Parameters
    ----------
    X
        Cells x genes expression (e.g. library-size-normalized), a numpy array or a
        ``scipy.sparse`` matrix/array (CSC is used as is; CSR and other formats are converted
        to CSC once, which holds a second copy of the stored entries during the call). Any
        int or float dtype; values must be finite. Values are meant to be non-negative, but
        negative values are ordered correctly too. Implicit and stored zeros are both value 0.
        Integer values are compared as float64 (exact up to 2**53).
    labels
        Integer cluster code ``0..n_clusters-1`` of every cell, shape ``(n_cells,)``.
    n_clusters
        Number of clusters ``K``; codes without cells are allowed and give NaN.
    progress
        Show a tqdm progress bar over genes.

    Returns
    -------
    ova
        ``(K, n_genes)`` float64: ``ova[c, g]`` is the AUROC of gene ``g`` for the cells of
        cluster ``c`` against all other cells. NaN if ``c`` has no cells or all cells.
    ava
        ``(K, K, n_genes)`` float64: ``ava[c1, c2, g]`` is the AUROC of gene ``g`` for the
        cells of ``c1`` (positives) against the cells of ``c2``. The diagonal, and pairs
        involving a cluster without cells, are NaN. ``ava[c1, c2] + ava[c2, c1] == 1``.

    Notes
    -----
    Memory: the outputs (``8 * K * (K + 1) * n_genes`` bytes), the CSC copy of a non-CSC
    sparse input, and per block of genes at most a few million stored entries (as float64 and
    int64) plus ``8 * K * K`` bytes per gene of the block. Dense input is read in column blocks
    and never copied as a whole. Genes are processed in parallel by numba on all cores
    (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS`` limit this).
    """
    X, labels, sizes = _check_inputs(X, labels, n_clusters)
    n_cells, n_genes = X.shape
    k = sizes.shape[0]
    if sp.issparse(X):
        owned = X.format != "csc"
        X = X.tocsc()  # the caller's matrix itself when it is CSC already
        if not X.has_canonical_format:  # duplicate entries are summed, as scipy does
            X = X if owned else X.copy()
            X.sum_duplicates()
        indptr = X.indptr.astype(np.int64)
        blocks = _sparse_blocks(X.data, X.indices, indptr, n_genes, k)
    else:
        step = max(1, min(_BLOCK_KK // max(1, k * k), _BLOCK_DENSE // max(1, n_cells)))
        blocks = _dense_blocks(X, n_genes, step)
    return _auroc_blocks(blocks, labels, sizes, n_genes, progress)


@dataclass(frozen=True)
class LabelledColumns:
    """The stored entries of a cells x genes matrix by gene, each with its cell's cluster code
    in place of its row: all that the AUROC needs, in fewer bytes than a CSC matrix.

    Attributes
    ----------
    data
        The values, gene after gene (float32 or any real dtype); zeros not stored are value 0.
    codes
        Cluster code of each value's cell (an unsigned integer dtype, :func:`code_dtype_for`).
    indptr
        ``int64``, ``n_genes + 1``: gene ``g``'s entries are ``data[indptr[g]:indptr[g + 1]]``.
    sizes
        ``int64``, cells per cluster (stored or not), ``n_clusters`` entries.
    """

    data: np.ndarray
    codes: np.ndarray
    indptr: np.ndarray
    sizes: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(cells, genes)."""
        return int(self.sizes.sum()), self.indptr.size - 1

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.codes.nbytes + self.indptr.nbytes


def code_dtype_for(n_clusters: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds the codes ``0..n_clusters - 1``."""
    return np.min_scalar_type(max(int(n_clusters) - 1, 0))


def auroc_columns(
    columns: LabelledColumns, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`auroc_ova_ava` of a matrix given as :class:`LabelledColumns`: the same
    ``(ova, ava)`` as on the cells x genes matrix with those entries and cluster sizes."""
    k = columns.sizes.size
    n_genes = columns.indptr.size - 1
    labels = np.arange(k, dtype=np.int64)  # the entries carry their codes: labels[code] = code
    blocks = _sparse_blocks(columns.data, columns.codes, columns.indptr, n_genes, k)
    return _auroc_blocks(blocks, labels, columns.sizes.astype(np.int64), n_genes, progress)


def _sparse_blocks(data, indices, indptr: np.ndarray, n_genes: int, k: int):
    """Consecutive gene blocks of CSC-like arrays (``indices`` are rows, or cluster codes)."""
    for g0, g1 in _gene_blocks(indptr, n_genes, k):
        s, e = indptr[g0], indptr[g1]
        yield g0, g1, data[s:e], indices[s:e], indptr[g0 : g1 + 1] - s


def _dense_blocks(X: np.ndarray, n_genes: int, step: int):
    """Consecutive column blocks of a dense matrix, each as CSC arrays."""
    for g0 in range(0, n_genes, step):
        g1 = min(n_genes, g0 + step)
        sub = sp.csc_matrix(X[:, g0:g1])
        yield g0, g1, sub.data, sub.indices, sub.indptr.astype(np.int64)


def _auroc_blocks(blocks, labels, sizes, n_genes: int, progress: bool):
    """Run the kernel over gene blocks ``(g0, g1, data, indices, indptr)``; ``labels[index]``
    is the cluster of an entry."""
    k = sizes.shape[0]
    ova = np.full((k, n_genes), np.nan)
    ava = np.full((k, k, n_genes), np.nan)
    if n_genes == 0:
        return ova, ava
    bar = tqdm(total=n_genes, desc="AUROC", unit="gene", disable=not progress)
    try:
        for g0, g1, b_data, b_ind, b_ptr in blocks:
            _check_finite(b_data)
            out = np.empty((g1 - g0, k, k), dtype=np.int64)
            _u2_block(
                np.ascontiguousarray(b_data, dtype=np.float64),
                np.ascontiguousarray(b_ind, dtype=np.int64),
                np.ascontiguousarray(b_ptr),
                labels,
                sizes,
                out,
            )
            _finish(out, sizes, ava, ova, slice(g0, g1))
            bar.update(g1 - g0)
            check_interrupt()
    finally:
        bar.close()
    return ova, ava


def _mwu_auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Rank-based Mann-Whitney AUROC of ``pos`` against ``neg``, per column (genes)."""
    n1, n2 = pos.shape[0], neg.shape[0]
    ranks = rankdata(np.concatenate([pos, neg], axis=0), axis=0)
    u = ranks[:n1].sum(axis=0) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n2)


def auroc_pairwise_loop(X, labels, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Naive baseline of :func:`auroc_ova_ava`: one rank-based Mann-Whitney test per comparison.

    Loops over every unordered cluster pair (``ava[c2, c1]`` is ``1 - ava[c1, c2]``) and every
    one-vs-all comparison; each comparison ranks the values of its two groups afresh with
    :func:`scipy.stats.rankdata` (vectorized over a chunk of genes). This is the cost of
    computing each comparison separately; it is meant for benchmarks and tests.

    Parameters
    ----------
    X, labels, n_clusters
        As in :func:`auroc_ova_ava`.

    Returns
    -------
    ova, ava
        As in :func:`auroc_ova_ava`.
    """
    X, labels, sizes = _check_inputs(X, labels, n_clusters)
    n_cells, n_genes = X.shape
    k = sizes.shape[0]
    ova = np.full((k, n_genes), np.nan)
    ava = np.full((k, k, n_genes), np.nan)
    members = [np.flatnonzero(labels == c) for c in range(k)]
    if sp.issparse(X):
        X = X.tocsr()
        _check_finite(X.data)
        parts = [sp.csc_matrix(X[m]) if m.size else None for m in members]
    else:
        _check_finite(X)
        parts = [X[m] for m in members]
    chunk = max(1, min(n_genes, 16_000_000 // max(1, n_cells)))
    for g0 in range(0, n_genes, chunk):
        sl = slice(g0, min(n_genes, g0 + chunk))
        cols = [
            None
            if p is None
            else (p[:, sl].toarray() if sp.issparse(p) else p[:, sl]).astype(np.float64)
            for p in parts
        ]
        for c1 in range(k):
            for c2 in range(c1 + 1, k):
                if sizes[c1] == 0 or sizes[c2] == 0:
                    continue
                auc = _mwu_auroc(cols[c1], cols[c2])
                ava[c1, c2, sl] = auc
                ava[c2, c1, sl] = 1.0 - auc
        for c in range(k):
            if sizes[c] == 0 or sizes[c] == n_cells:
                continue
            rest = np.concatenate([cols[o] for o in range(k) if o != c and sizes[o] > 0])
            ova[c, sl] = _mwu_auroc(cols[c], rest)
    return ova, ava
