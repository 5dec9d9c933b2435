"""Host-side sums per cluster in float64: a matrix's columns, and the cost exactly."""

from __future__ import annotations

import numpy as np


def cluster_sums(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum the columns of ``values`` (rows x cells) per cluster code: rows x clusters."""
    out = np.zeros((values.shape[0], n_clusters), dtype=np.float64)
    for k in range(values.shape[0]):
        out[k] = np.bincount(codes, weights=values[k], minlength=n_clusters)
    return out


def _cluster_point_sums(points: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum of the rows of ``points`` per cluster, in float64 (one-hot matrix product)."""
    onehot = (codes[None, :] == np.arange(n_clusters)[:, None]).astype(np.float64)
    return onehot @ points.astype(np.float64, copy=False)


def _cost_sums(x, y, offset, qcodes, rcodes, n_query_clusters, n_ref_clusters) -> np.ndarray:
    """``sum_{i in k, j in c} C_ij``, exactly, from the cluster sums of the augmented vectors."""
    xs = _cluster_point_sums(x, qcodes, n_query_clusters)
    ys = _cluster_point_sums(y, rcodes, n_ref_clusters)
    nq = np.bincount(qcodes, minlength=n_query_clusters).astype(np.float64)
    nr = np.bincount(rcodes, minlength=n_ref_clusters).astype(np.float64)
    return offset * np.outer(nq, nr) + xs @ ys.T
