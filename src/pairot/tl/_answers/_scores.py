"""Cluster-level scores (mapping, distance) from the per-block sums of the transport plan.

All functions take the arrays that one blocked pass over the plan produces
(``pairot.tl._ot.aggregate``) and return query-clusters x reference-clusters arrays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...pp._sampling import downsample_indices
from .._ot import cluster_sums

#: Plan mass below which a cluster pair counts as carrying no mass.
MASS_FLOOR = 1e-16


def mapping_mean(tm: np.ndarray, b: np.ndarray, ref_codes: np.ndarray, n_ref: int) -> np.ndarray:
    """``M[k, c]`` = mean over reference cells j of cluster c of ``tm[k, j] / b[j]``."""
    ratio = np.divide(tm, b[None, :], out=np.zeros_like(tm, dtype=np.float64), where=b > 0)
    counts = np.bincount(ref_codes, minlength=n_ref).astype(np.float64)
    sums = cluster_sums(ratio, ref_codes, n_ref)
    return np.divide(sums, counts[None, :], out=np.full_like(sums, np.nan), where=counts > 0)


def mapping_transported_mass(
    mass: np.ndarray, a: np.ndarray, query_codes: np.ndarray
) -> np.ndarray:
    """``mass[k, c] / sum_{i in k} a_i``: the share of cluster k's mass sent to c.

    ``mass[k, c] = sum_{j in c} tm[k, j]`` is the plan mass of the cluster pair, as the
    aggregation pass returns it.
    """
    source = np.bincount(query_codes, weights=a, minlength=mass.shape[0])
    return np.divide(
        mass, source[:, None], out=np.full_like(mass, np.nan), where=source[:, None] > 0
    )


def mapping_jensen_shannon(
    tm: np.ndarray, b: np.ndarray, ref_codes: np.ndarray, n_ref: int
) -> np.ndarray:
    """``1 - JS_2(p, q)`` with ``p = tm[k] / b`` and ``q`` the indicator of cluster c.

    Both are normalized to sum to one; ``JS_2`` is the base-2 Jensen-Shannon distance (the
    square root of the divergence), as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    Only the cells of c enter the sums: outside c, ``q = 0`` and the mixture is ``p / 2``.
    """
    ratio = np.divide(tm, b[None, :], out=np.zeros_like(tm, dtype=np.float64), where=b > 0)
    totals = ratio.sum(axis=1, keepdims=True)
    p = np.divide(ratio, totals, out=np.zeros_like(ratio), where=totals > 0)
    counts = np.bincount(ref_codes, minlength=n_ref).astype(np.float64)
    q = 1.0 / counts[ref_codes]  # q_j for the cluster of j
    log2 = np.log(2.0)
    mix = 0.5 * (p + q[None, :])
    # KL(p || m) = log 2 * P(outside c) + sum_{j in c} p_j log(p_j / m_j)
    with np.errstate(divide="ignore", invalid="ignore"):
        inside_p = np.where(p > 0, p * np.log(p / mix), 0.0)
    inside_q = q[None, :] * np.log(q[None, :] / mix)
    mass_in = cluster_sums(p, ref_codes, n_ref)
    kl_p = log2 * (1.0 - mass_in) + cluster_sums(inside_p, ref_codes, n_ref)
    kl_q = cluster_sums(inside_q, ref_codes, n_ref)
    divergence = np.clip(0.5 * (kl_p + kl_q) / log2, 0.0, 1.0)
    return 1.0 - np.sqrt(divergence)


def cluster_distance(
    mass: np.ndarray,
    cost_mass: np.ndarray,
    cost_sum: np.ndarray,
    query_codes: np.ndarray,
    ref_codes: np.ndarray,
) -> np.ndarray:
    """Plan-weighted mean cost per cluster pair; the unweighted mean where the plan is empty."""
    n_query, n_ref = mass.shape
    pairs = np.outer(
        np.bincount(query_codes, minlength=n_query), np.bincount(ref_codes, minlength=n_ref)
    ).astype(np.float64)
    return mean_cost(mass, cost_mass, cost_sum, pairs)


def mean_cost(
    mass: np.ndarray, cost_mass: np.ndarray, cost_sum: np.ndarray, pairs: np.ndarray
) -> np.ndarray:
    """``cost_mass / mass`` (the plan-weighted mean cost) where the plan carries mass above
    ``MASS_FLOOR``, else ``cost_sum / pairs`` (the unweighted mean over the cell pairs)."""
    unweighted = np.divide(cost_sum, pairs, out=np.full_like(cost_sum, np.nan), where=pairs > 0)
    weighted = np.divide(cost_mass, mass, out=np.zeros_like(cost_mass), where=mass > MASS_FLOOR)
    return np.where(mass > MASS_FLOOR, weighted, unweighted)


def cluster_frame(values: np.ndarray, query: list[str], reference: list[str]) -> pd.DataFrame:
    """A query-clusters x reference-clusters table (index ``query``, columns ``reference``)."""
    return pd.DataFrame(
        values,
        index=pd.Index(query, name="query"),
        columns=pd.Index(reference, name="reference"),
    )


def mapping_scores(sums: dict, problem, geom, methods) -> dict[str, np.ndarray]:
    """The mapping of each of ``methods`` from the plan sums ``sums`` of ``geom``'s cells with
    ``problem``'s marginals."""
    n_ref = geom.label_distance.shape[1]
    out = {}
    for method in methods:
        if method == "mean":
            out[method] = mapping_mean(sums["tm"], problem.b, geom.ref_codes, n_ref)
        elif method == "jensen_shannon":
            out[method] = mapping_jensen_shannon(sums["tm"], problem.b, geom.ref_codes, n_ref)
        else:
            out[method] = mapping_transported_mass(sums["mass"], problem.a, geom.query_codes)
    return out


def distance_of(sums: dict, geom, rows=None, cols=None) -> np.ndarray:
    """:func:`cluster_distance` from the plan sums ``sums`` over ``geom``'s query cells
    ``rows`` and reference cells ``cols`` (all by default)."""
    qc = geom.query_codes if rows is None else geom.query_codes[rows]
    rc = geom.ref_codes if cols is None else geom.ref_codes[cols]
    return cluster_distance(sums["mass"], sums["cost_mass"], sums["cost_sum"], qc, rc)


def subsample(geom, n_samples: int, random_state: int):
    """The query and reference cells of ``compute_distance(n_samples=...)``: a seeded
    subsample of at most ``n_samples`` cells per cluster on each side of ``geom``."""
    rows = downsample_indices(geom.query_codes, n_samples, random_state=random_state)
    cols = downsample_indices(geom.ref_codes, n_samples, random_state=random_state)
    return rows, cols
