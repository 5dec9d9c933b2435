"""Cell feature vectors whose inner products give the cell-to-cell similarity.

See docs/method.md#cell-features-and-cost.

Two kinds of features, both rows of unit (or zero) L2 norm, so that the inner product of two
rows is a similarity in [-1, 1] and the feature distance is ``0.5 * (1 - <x_i, y_j>)``:

- :func:`spearman_features` (the default): the centred, normalised within-cell rank vector of
  each cell's gene values. The inner product of two such rows is the Spearman correlation of
  the two cells.
- :func:`cosine_features`: embedding vectors (e.g. an ``obsm`` entry) scaled to unit norm. The
  inner product is the cosine similarity.

A cell with no defined direction (all gene values equal, or an all-zero embedding) gets the
zero vector: its similarity with every other cell is 0 and its feature distance 0.5, never NaN.

Both functions are numerical kernels on arrays (dense or ``scipy.sparse``); they never modify
their input and process it in row chunks, so besides the ``n x d`` output (and a CSR copy of
non-CSR sparse input) only ``O(chunk_size x d)`` memory is used. The ranks are computed by a
numba kernel, rows in parallel on all cores.
"""

from __future__ import annotations

import numbers

import numba
import numpy as np
from scipy import sparse

from ..._numba import njit_parallel

__all__ = ["cosine_features", "feature_spread", "spearman_features", "uninformative_features"]

#: Target number of matrix entries per row chunk (work arrays of a few tens of MiB).
_CHUNK_ENTRIES = 1 << 22
#: A study whose share of cells without a feature direction (a zero row: all HVG values
#: equal, e.g. all zero, or an all-zero embedding) exceeds this leaves the cell term without
#: information: those cells are at feature distance 0.5 from every cell. On the PBMC demo
#: pair (``benchmarks/bench_min_genes.py``) the share is 0 with 50 or more HVGs, 5% with 30,
#: a quarter with 20 and one half with 10, where Spearman features alone find a query cell's
#: true reference cluster for 37% of the cells, no better than always answering the largest
#: cluster (35%; 75-81% with 50 to 400 HVGs).
MAX_UNDEFINED_SHARE = 0.5
#: A study whose unit feature vectors have a total variance across cells below this (their
#: mean pairwise similarity exceeds 0.99: all cells look alike) leaves the cell term without
#: information as well: a term that does not vary over the cells of one study only shifts
#: the transport potentials and cannot change the plan. Real studies sit far above it: 0.76
#: to 0.93 for the PBMC demo's Spearman features (500 to 50 HVGs), 0.99 for its PCA.
MIN_FEATURE_VARIANCE = 0.01


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_matrix(X, argument: str):
    """A 2-D numeric dense array or a CSR matrix, without copying dense numeric input."""
    if sparse.issparse(X):
        if X.ndim != 2:
            msg = f"{argument} must be 2-D (cells x features), got shape {X.shape}."
            raise ValueError(msg)
        X = X.tocsr()
        values = X.data
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            msg = (
                f"{argument} must be a 2-D array (cells x features), got {X.ndim} dimension(s) "
                f"with shape {X.shape}; reshape it, e.g. with {argument}.reshape(1, -1) for a "
                "single cell."
            )
            raise ValueError(msg)
        values = X
    dtype = values.dtype
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        msg = (
            f"{argument} must hold real numbers (integer or float dtype), got dtype {dtype}; "
            f"convert it, e.g. with {argument}.astype(np.float32)."
        )
        raise TypeError(msg)
    if np.issubdtype(dtype, np.floating):
        bad = ~np.isfinite(values)
        if bad.any():
            n_nan = int(np.count_nonzero(np.isnan(values)))
            n_inf = int(np.count_nonzero(bad)) - n_nan
            msg = (
                f"{argument} has non-finite values ({n_nan} NaN, {n_inf} infinite); "
                "features need finite values: replace or drop them first."
            )
            raise ValueError(msg)
    return X


def _check_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError as error:
        msg = f"dtype must be a numpy floating dtype such as np.float32, got {dtype!r}."
        raise TypeError(msg) from error
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        msg = (
            f"dtype must be np.float32 or np.float64, got {dtype}; feature vectors are unit "
            "vectors with fractional entries."
        )
        raise TypeError(msg)
    return dtype


def _check_chunk_size(chunk_size, n_features: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ENTRIES // max(n_features, 1))
    if isinstance(chunk_size, bool | np.bool_) or not isinstance(chunk_size, numbers.Integral):
        msg = (
            f"chunk_size must be a positive integer or None (automatic), got {chunk_size!r} "
            f"({type(chunk_size).__name__})."
        )
        raise TypeError(msg)
    if chunk_size < 1:
        msg = f"chunk_size must be >= 1 (rows per chunk), got {chunk_size}."
        raise ValueError(msg)
    return int(chunk_size)


# --------------------------------------------------------------------------------------------
# Spearman features
# --------------------------------------------------------------------------------------------
@njit_parallel
def _spearman_rows(indptr, indices, data, n_genes, out):  # pragma: no cover - numba
    """Centred, unit-norm within-row average ranks of a canonical CSR block, into ``out``.

    Only the stored values of a row are sorted. With ``k`` stored values, of which ``n_neg``
    are negative and ``n_ze`` are explicit zeros, the row has ``n0 = n_genes - k + n_ze``
    zeros; they tie at the 1-based average rank ``n_neg + (n0 + 1) / 2``. A stored value at
    sorted positions ``j..l`` (0-based, its tie group) has average rank ``(j + l) / 2 + 1``
    when negative and ``(n_genes - k) + (j + l) / 2 + 1`` when positive (the implicit zeros
    sit between the negatives and the positives).
    """
    n_rows = indptr.size - 1
    mean = 0.5 * (n_genes + 1)
    for i in numba.prange(n_rows):
        start = indptr[i]
        k = indptr[i + 1] - start
        values = data[start : start + k]
        order = np.argsort(values)
        n_neg = 0
        n_ze = 0
        for t in range(k):
            if values[t] < 0:
                n_neg += 1
            elif values[t] == 0:
                n_ze += 1
        n0 = n_genes - k + n_ze
        zero_centred = n_neg + 0.5 * (n0 + 1) - mean
        norm2 = n0 * zero_centred * zero_centred
        centred = np.empty(k)
        j = 0
        while j < k:
            v = values[order[j]]
            last = j
            while last + 1 < k and values[order[last + 1]] == v:
                last += 1
            if v < 0:
                c = 0.5 * (j + last) + 1.0 - mean
            elif v == 0:
                c = zero_centred
            else:
                c = (n_genes - k) + 0.5 * (j + last) + 1.0 - mean
            for t in range(j, last + 1):
                centred[order[t]] = c
                if v != 0:
                    norm2 += c * c
            j = last + 1
        # all values equal <=> every centred rank is exactly 0 (ranks are exact half-integers)
        scale = 1.0 / np.sqrt(norm2) if norm2 > 0 else 0.0
        for g in range(n_genes):
            out[i, g] = zero_centred * scale
        for t in range(k):
            out[i, indices[start + t]] = centred[t] * scale


def spearman_features(X, *, dtype=np.float32, chunk_size: int | None = None) -> np.ndarray:
    """Within-cell rank vectors whose inner products are Spearman correlations between cells.

    Each row of ``X`` (a cell) is replaced by the ranks of its values (1-based, average rank
    for ties, as :func:`scipy.stats.rankdata`), minus the mean rank ``(n_genes + 1) / 2``,
    divided by its L2 norm. The inner product of two such rows is the Pearson correlation of
    the two rank vectors, i.e. the Spearman correlation ``rho`` of the two cells, and the
    feature distance ``0.5 * (1 - rho)`` lies in [0, 1].

    A cell whose values are all equal (for example all zero) has no defined rank direction;
    it gets the zero vector, so ``rho = 0`` with every other cell (feature distance 0.5) and
    never NaN. The same holds for every cell when ``X`` has fewer than two columns.

    Parameters
    ----------
    X
        Cells x genes values: a dense array or a ``scipy.sparse`` matrix (raw counts in
        practice; any finite real values are allowed). For sparse input only the stored
        non-zero values are sorted: all zeros of a row tie, so their rank is known without
        sorting them. Dense input is converted to CSR chunk by chunk and takes the same path;
        other sparse formats are converted to CSR once. Rows are ranked in parallel by a numba
        kernel (compiled on first use and cached on disk).
    dtype
        Dtype of the output, ``np.float32`` or ``np.float64``; the ranks are computed in
        float64.
    chunk_size
        Number of rows processed at once; ``None`` picks about ``2**22 / n_genes`` rows. It
        bounds the working memory to ``O(chunk_size x n_genes)`` and does not change the
        result.

    Returns
    -------
    Array of shape ``X.shape`` and dtype ``dtype``; every row has unit L2 norm or is zero.

    Raises
    ------
    ValueError
        When ``X`` is not 2-D or has NaN or infinite values.
    TypeError
        When ``X`` is not numeric or ``dtype`` is not float32 / float64.
    """
    X = _check_matrix(X, "X")
    dtype = _check_dtype(dtype)
    n_cells, n_genes = X.shape
    chunk_size = _check_chunk_size(chunk_size, n_genes)
    out = np.empty((n_cells, n_genes), dtype=dtype)
    if n_genes == 0:
        return out
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        if sparse.issparse(X):
            chunk = X[start:stop]
            if not chunk.has_canonical_format:  # duplicate entries would break the counts
                chunk = chunk.copy()
                chunk.sum_duplicates()
        else:
            block = X[start:stop]
            if block.dtype == np.float16:  # scipy.sparse has no float16; float32 is exact
                block = block.astype(np.float32)
            chunk = sparse.csr_matrix(block)
        _spearman_rows(
            chunk.indptr.astype(np.int64, copy=False),
            chunk.indices.astype(np.int64, copy=False),
            chunk.data.astype(np.float64, copy=False),
            n_genes,
            out[start:stop],
        )
    return out


# --------------------------------------------------------------------------------------------
# how much the features vary
# --------------------------------------------------------------------------------------------
def feature_spread(F: np.ndarray) -> tuple[float, float]:
    """The share of zero rows of a feature matrix and the total variance of its rows.

    Parameters
    ----------
    F
        Cells x features, rows of unit or zero L2 norm (the output of
        :func:`spearman_features` or :func:`cosine_features`).

    Returns
    -------
    ``(undefined, variance)``: the share of cells whose row is zero (no rank vector or no
    embedding direction), and ``sum over features of the variance across cells``, which for
    unit rows is ``1 - mean pairwise inner product`` (0 when every cell has the same vector).
    Both 0 for a matrix without rows.
    """
    F = np.asarray(F)
    if F.shape[0] == 0:
        return 0.0, 0.0
    squares = np.einsum("ij,ij->i", F, F, dtype=np.float64)
    mean = F.mean(axis=0, dtype=np.float64)
    undefined = float(np.count_nonzero(squares == 0)) / F.shape[0]
    return undefined, max(0.0, float(squares.mean() - mean @ mean))


def uninformative_features(F: np.ndarray, *, embedding: bool = False) -> str | None:
    """Why the cell features ``F`` of one study carry no information, or ``None``.

    A study is flagged when more than :data:`MAX_UNDEFINED_SHARE` (half) of its cells have a
    zero feature row, or when its rows' total variance (:func:`feature_spread`) is below
    :data:`MIN_FEATURE_VARIANCE`. The reason is a phrase for a message; ``embedding`` words
    it for :func:`cosine_features` of an embedding instead of Spearman features.
    """
    undefined, variance = feature_spread(F)
    if undefined > MAX_UNDEFINED_SHARE:
        if embedding:
            return f"{undefined:.0%} of its cells have an all-zero embedding vector"
        return (
            f"{undefined:.0%} of its cells have all their {F.shape[1]} highly variable gene "
            "values equal (e.g. all zero), so they have no rank vector"
        )
    if F.shape[0] > 1 and variance < MIN_FEATURE_VARIANCE:
        return (
            f"its cells' feature vectors are (nearly) all the same (total variance "
            f"{variance:.2g} across cells, below {MIN_FEATURE_VARIANCE})"
        )
    return None


# --------------------------------------------------------------------------------------------
# cosine features
# --------------------------------------------------------------------------------------------
def cosine_features(E, *, dtype=np.float32, chunk_size: int | None = None) -> np.ndarray:
    """Embedding rows scaled to unit L2 norm; inner products are cosine similarities.

    Parameters
    ----------
    E
        Cells x embedding dimensions, a dense array or a ``scipy.sparse`` matrix with finite
        values (for example ``adata.obsm["X_pca"]``).
    dtype
        Dtype of the output, ``np.float32`` or ``np.float64``.
    chunk_size
        Number of rows processed at once; ``None`` picks about ``2**22 / n_dims`` rows. It
        does not change the result.

    Returns
    -------
    Array of shape ``E.shape`` and dtype ``dtype``: each row divided by its L2 norm (computed
    in float64). A zero row stays zero, so its cosine similarity with every cell is 0 and its
    feature distance ``0.5 * (1 - cos)`` is 0.5.

    Raises
    ------
    ValueError
        When ``E`` is not 2-D or has NaN or infinite values.
    TypeError
        When ``E`` is not numeric or ``dtype`` is not float32 / float64.
    """
    E = _check_matrix(E, "E")
    dtype = _check_dtype(dtype)
    n_cells, n_dims = E.shape
    chunk_size = _check_chunk_size(chunk_size, n_dims)
    out = np.empty((n_cells, n_dims), dtype=dtype)
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        chunk = E[start:stop]
        chunk = chunk.toarray() if sparse.issparse(chunk) else chunk
        chunk = np.asarray(chunk, dtype=np.float64)
        # scale by the largest magnitude first so that the norm never overflows
        peak = np.max(np.abs(chunk), axis=1, initial=0.0)
        scaled = np.divide(chunk, peak[:, None], out=np.zeros_like(chunk), where=peak[:, None] > 0)
        norm = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
        out[start:stop] = np.divide(
            scaled, norm[:, None], out=np.zeros_like(scaled), where=norm[:, None] > 0
        )
    return out
