"""Active-block bookkeeping of the sparse Sinkhorn mode: cell layout, cost bounds, active set.

Cells are grouped by cluster and every cluster is padded to a whole number of tiles, so that a
(query cluster, reference cluster) block of the cost is a set of whole tiles. For every block a
rigorous upper bound of the plan mass it can carry under given potentials follows from a lower
bound of its cost (:func:`cost_lower_bounds`)::

    sum_{i in k, j in c} exp((f_i + g_j - C_ij) / eps)
        <= exp(LSE_{i in k}(f_i / eps) + LSE_{j in c}(g_j / eps) - lb[k, c] / eps)

Blocks whose bounds sum to less than a tolerance are skipped (:func:`choose_active`).

Pure numpy, float64; no JAX here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Cells of one side sorted by cluster, each cluster padded to a multiple of ``unit`` cells.

    Attributes
    ----------
    position
        Padded position of every original cell, shape ``(n,)``.
    n_padded
        Number of padded positions (a multiple of ``unit``).
    codes
        Cluster of every padded position, shape ``(n_padded,)``.
    real
        Whether a padded position holds a cell, shape ``(n_padded,)``.
    start, stop
        First and one-past-last padded position of every cluster, shape ``(K,)``.
    counts
        Cells per cluster, shape ``(K,)``.
    """

    position: np.ndarray
    n_padded: int
    codes: np.ndarray
    real: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    counts: np.ndarray
    unit: int

    @classmethod
    def of(cls, codes: np.ndarray, n_clusters: int, unit: int) -> Layout:
        codes = np.asarray(codes, dtype=np.int64)
        counts = np.bincount(codes, minlength=n_clusters)
        padded = -(-counts // unit) * unit
        stop = np.cumsum(padded)
        start = stop - padded
        order = np.argsort(codes, kind="stable")
        first_sorted = np.cumsum(counts) - counts
        sorted_codes = codes[order]
        rank = np.arange(len(codes)) - first_sorted[sorted_codes]
        position = np.empty(len(codes), dtype=np.int64)
        position[order] = start[sorted_codes] + rank
        n_padded = int(stop[-1]) if n_clusters else 0
        real = np.zeros(n_padded, dtype=bool)
        real[position] = True
        return cls(
            position=position,
            n_padded=n_padded,
            codes=np.repeat(np.arange(n_clusters), padded),
            real=real,
            start=start,
            stop=stop,
            counts=counts,
            unit=unit,
        )

    def pad(self, values: np.ndarray, fill) -> np.ndarray:
        """``values`` (one per cell, along axis 0) at their padded positions, ``fill`` elsewhere."""
        values = np.asarray(values)
        out = np.full((self.n_padded, *values.shape[1:]), fill, dtype=values.dtype)
        out[self.position] = values
        return out

    def unpad(self, values) -> np.ndarray:
        """The values of the cells, in their original order, from padded ones."""
        return np.asarray(values)[self.position]


class _Groups:
    """Cells grouped by cluster code: per-cluster reductions of arrays whose rows are in the
    sorted order (``sort``; ``reduceat``, empty clusters give the reduction's identity)."""

    def __init__(self, codes: np.ndarray, n_clusters: int):
        codes = np.asarray(codes, dtype=np.int64)
        self.order = np.argsort(codes, kind="stable")
        self.codes = codes[self.order]  # sorted
        self.counts = np.bincount(codes, minlength=n_clusters)
        self.starts = np.cumsum(self.counts) - self.counts
        self.present = self.counts > 0
        self.n = n_clusters

    def sort(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[self.order]

    def reduce(self, ufunc, values: np.ndarray, identity: float) -> np.ndarray:
        """Per cluster ``ufunc`` over the rows of ``values`` (sorted order)."""
        out = np.full((self.n, *values.shape[1:]), identity, dtype=np.float64)
        if values.shape[0]:
            out[self.present] = ufunc.reduceat(values, self.starts[self.present], axis=0)
        return out

    def max(self, values):
        return self.reduce(np.maximum, values, -np.inf)

    def min(self, values):
        return self.reduce(np.minimum, values, np.inf)

    def mean(self, values):
        total = self.reduce(np.add, np.asarray(values, dtype=np.float64), 0.0)
        return total / np.maximum(self.counts, 1).reshape(-1, *([1] * (total.ndim - 1)))


def _constant_columns(points: np.ndarray, groups: _Groups) -> np.ndarray:
    """Columns (of rows in sorted order) whose value is the same for all cells of every
    cluster: each row equals its cluster's first row."""
    first = points[groups.starts[groups.present]]
    firsts = np.repeat(first, groups.counts[groups.present], axis=0)
    return np.all(points == firsts, axis=0)


def cost_lower_bounds(
    x: np.ndarray,
    y: np.ndarray,
    offset: float,
    query_codes: np.ndarray,
    ref_codes: np.ndarray,
    n_query_clusters: int,
    n_ref_clusters: int,
) -> np.ndarray:
    """``lb[k, c] <= min_{i in k, j in c} (offset + x_i . y_j)``, rigorously, in float64.

    The columns that are constant within every cluster on both sides (the label part of the
    augmented vectors) contribute their exact block value; the others (the cell features)
    are bounded below by the largest of three bounds: Cauchy-Schwarz (``-|x_i| |y_j|``), and
    the cross terms through each cluster's centroid and radius, ``min_{i in k} x_i . nu_c -
    max_{i in k} |x_i| R_c`` and its mirror (``nu_c`` the centroid of reference cluster ``c``,
    ``R_c`` the largest distance of its cells to it). A margin for the float32 round-off of the
    computed costs is subtracted.
    """
    gx = _Groups(query_codes, n_query_clusters)
    gy = _Groups(ref_codes, n_ref_clusters)
    x, y = gx.sort(x), gy.sort(y)  # every per-cell computation below in sorted order
    label = _constant_columns(x, gx) & _constant_columns(y, gy)
    exact = gx.mean(x[:, label]) @ gy.mean(y[:, label]).T
    xf = np.asarray(x[:, ~label], dtype=np.float64)
    yf = np.asarray(y[:, ~label], dtype=np.float64)
    nx = gx.max(np.linalg.norm(xf, axis=1))
    ny = gy.max(np.linalg.norm(yf, axis=1))
    nx = np.where(np.isfinite(nx), nx, 0.0)
    ny = np.where(np.isfinite(ny), ny, 0.0)
    bound = -np.outer(nx, ny)
    if xf.shape[1]:
        mu, nu = gx.mean(xf), gy.mean(yf)
        radius_x = gx.max(np.linalg.norm(xf - mu[gx.codes], axis=1))
        radius_y = gy.max(np.linalg.norm(yf - nu[gy.codes], axis=1))
        radius_x = np.where(np.isfinite(radius_x), radius_x, 0.0)
        radius_y = np.where(np.isfinite(radius_y), radius_y, 0.0)
        cross_x = gx.min(xf @ nu.T)  # min_{i in k} x_i . nu_c
        cross_y = gy.min(yf @ mu.T).T  # min_{j in c} mu_k . y_j
        bound = np.maximum(bound, cross_x - np.outer(nx, radius_y))
        bound = np.maximum(bound, cross_y - np.outer(radius_x, ny))
    scale = (
        1.0 + abs(offset) + np.abs(exact).max(initial=0.0) + (nx.max(initial=0) * ny.max(initial=0))
    )
    margin = 1e-4 * scale
    lb = offset + exact + bound - margin
    return np.where(np.isfinite(lb), lb, -np.inf)


def _cluster_lse(values: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """``LSE_{i : codes_i = k} values_i`` per cluster (``-inf`` for empty or massless ones)."""
    values = np.asarray(values, dtype=np.float64)
    groups = _Groups(codes, n)
    top = groups.max(groups.sort(values))
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        total = np.bincount(codes, weights=np.exp(values - safe[codes]), minlength=n)
        return np.where(np.isfinite(top), safe + np.log(total), -np.inf)


def log_mass_bounds(f, g, epsilon: float, lb: np.ndarray, query_codes, ref_codes) -> np.ndarray:
    """``log`` of the upper bound of every block's plan mass under the potentials ``(f, g)``."""
    kq, kr = lb.shape
    lf = _cluster_lse(np.asarray(f, dtype=np.float64) / epsilon, query_codes, kq)
    lg = _cluster_lse(np.asarray(g, dtype=np.float64) / epsilon, ref_codes, kr)
    with np.errstate(invalid="ignore"):
        out = lf[:, None] + lg[None, :] - lb / epsilon
    return np.where(np.isnan(out), -np.inf, out)


def skipped_log_mass(log_bounds: np.ndarray, active: np.ndarray) -> float:
    """``log`` of the summed bounds of the skipped blocks (``-inf`` when none is skipped)."""
    skipped = log_bounds[~active]
    if skipped.size == 0:
        return -np.inf
    top = skipped.max()
    if not np.isfinite(top):
        return float(top)
    return float(top + np.log(np.exp(skipped - top).sum()))


def choose_active(log_bounds: np.ndarray, log_tolerance: float, present: np.ndarray) -> np.ndarray:
    """The blocks whose mass bound exceeds the tolerance, and every cluster's largest.

    A block is skipped when its bound is at most ``exp(log_tolerance)``; every query and
    reference cluster with cells keeps at least its block of largest bound. ``present[k, c]``:
    both clusters have cells (others are never active).
    """
    masked = np.where(present, log_bounds, -np.inf)
    active = masked > log_tolerance
    rows = np.flatnonzero(present.any(axis=1))
    cols = np.flatnonzero(present.any(axis=0))
    active[rows, np.argmax(masked[rows], axis=1)] = True
    active[np.argmax(masked[:, cols], axis=0), cols] = True
    return active & present
