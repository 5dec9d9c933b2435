"""Per query cluster: how much evidence the label term has, and whether the cells agree
(``DatasetMap.label_term_diagnostics``; docs/method.md#accuracy-on-real-studies).

A kernel on arrays plus the table: the markers behind each row of ``L`` (the published marker
list of the query cluster, whatever the mode), the share of the row saturated at 1, whether
the row is constant (the transport ignores it), the label term's nearest reference cluster
(argmin of the row) and the cell term's nearest one. The cell term's nearest cluster is the
argmin over reference clusters of the cluster-level cell-term cost ``M[k, c]`` (mean
``0.5 * (1 - rho)`` between the cells of the two clusters, on the subsample of
:func:`._auto_label_distance.cell_term_summary`) minus that reference cluster's mean over all
query clusters: without this centring, a reference cluster similar to every query cluster (a
hub) would be everybody's nearest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._auto_label_distance import cell_term_summary

__all__ = ["SATURATED", "diagnostics_of", "label_term_diagnostics"]

#: A label distance at or above this counts as saturated (``L`` is capped at 1).
SATURATED = 0.999


def label_term_diagnostics(
    L: np.ndarray,
    M: np.ndarray,
    n_markers: np.ndarray,
    n_cells: np.ndarray,
    query_clusters: list[str],
    reference_clusters: list[str],
) -> pd.DataFrame:
    """The diagnostics table (see the module docstring).

    Parameters
    ----------
    L
        Label distance, query x reference clusters.
    M
        Cluster-level cell-term cost, same shape (NaN rows for clusters without sampled cells).
    n_markers, n_cells
        Markers in each query cluster's list and its cells in the fit.
    query_clusters, reference_clusters
        Names of the rows and columns.

    Returns
    -------
    DataFrame indexed by query cluster (``query_cluster``) with ``n_cells``, ``n_markers``,
    ``saturated_share``, ``constant_row``, ``label_nearest`` (None for a constant row),
    ``cell_nearest``, ``disagree`` (both defined and different).
    """
    L = np.asarray(L, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    constant = np.ptp(L, axis=1) <= 1e-12 if L.size else np.zeros(0, dtype=bool)
    label_nearest = [
        None if constant[k] else reference_clusters[int(np.argmin(L[k]))] for k in range(L.shape[0])
    ]
    centred = M - np.nanmean(M, axis=0, keepdims=True)
    cell_nearest = [
        None if not np.isfinite(centred[k]).any() else reference_clusters[int(np.nanargmin(row))]
        for k, row in enumerate(centred)
    ]
    disagree = [
        a is not None and b is not None and a != b
        for a, b in zip(label_nearest, cell_nearest, strict=True)
    ]
    return pd.DataFrame(
        {
            "n_cells": np.asarray(n_cells, dtype=np.int64),
            "n_markers": np.asarray(n_markers, dtype=np.int64),
            "saturated_share": (L >= SATURATED).mean(axis=1),
            "constant_row": constant,
            "label_nearest": pd.Series(label_nearest, dtype=object).to_numpy(),
            "cell_nearest": pd.Series(cell_nearest, dtype=object).to_numpy(),
            "disagree": np.asarray(disagree, dtype=bool),
        },
        index=pd.Index(list(query_clusters), name="query_cluster"),
    )


def diagnostics_of(
    geom, label_distance: pd.DataFrame, details: pd.DataFrame, query_clusters, reference_clusters
) -> pd.DataFrame:
    """The diagnostics table of a geometry (``DatasetMap.label_term_diagnostics``): the
    cluster-level cell-term cost from its features, the markers kept from the label
    distance's ``details`` (one row per query marker gene and reference cluster)."""
    n_q, n_r = len(query_clusters), len(reference_clusters)
    M, _ = cell_term_summary(geom.x, geom.y, geom.query_codes, geom.ref_codes, n_q, n_r)
    genes = details.groupby("query_cluster", observed=False)["gene"].nunique()
    genes.index = genes.index.astype(str)
    return label_term_diagnostics(
        label_distance.to_numpy(),
        M,
        genes.reindex(query_clusters).fillna(0).to_numpy(),
        np.bincount(geom.query_codes, minlength=n_q),
        query_clusters,
        reference_clusters,
    )
