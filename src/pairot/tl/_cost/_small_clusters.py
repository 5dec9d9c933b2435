"""Clusters too small to carry their share of the transported mass.

With balanced marginals every cluster carries the same total mass, ``1/K`` of its study's,
whatever its size: a cluster of one cell in a study of seven clusters takes a seventh of the
mass, and the reference cells that must absorb it are taken from the other clusters, so every
other mapping score moves. :class:`pairot.tl.DatasetMap` finds the clusters below
``min_cells`` and drops them, merges them into their most similar cluster, or keeps them with a
warning (``small_clusters``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from ..._logging import logger

#: Default ``min_cells``: a cluster of fewer cells cannot form two pseudobulk profiles of at
#: least 2 cells in each of two samples plus one more cell, so its markers rest on at most two
#: replicates, and each of its cells would carry more than a fifth of its cluster's mass.
DEFAULT_MIN_CELLS = 5
ACTIONS = ("drop", "merge", "keep")
TABLE_COLUMNS = ["side", "cluster", "n_cells", "action", "merged_into"]


def check_arguments(min_cells, small_clusters) -> tuple[int | None, str]:
    if min_cells is not None:
        if isinstance(min_cells, bool | np.bool_) or not isinstance(min_cells, int | np.integer):
            msg = (
                f"min_cells must be a non-negative integer or None (keep every cluster), got "
                f"{min_cells!r}; pass e.g. min_cells={DEFAULT_MIN_CELLS}."
            )
            raise TypeError(msg)
        if min_cells < 0:
            msg = f"min_cells must be >= 0 or None, got {min_cells}."
            raise ValueError(msg)
        min_cells = int(min_cells) or None
    if small_clusters not in ACTIONS:
        msg = f"small_clusters must be one of {ACTIONS}, got {small_clusters!r}."
        raise ValueError(msg)
    return min_cells, small_clusters


@dataclass
class Outcome:
    """What happened to one study's clusters: the cells kept, their labels, the table rows."""

    keep: np.ndarray | None  # boolean mask of the cells kept (None: all)
    labels: pd.Categorical
    rows: list[dict]


def _log_centroids(X, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Mean ``log1p`` of counts per 10,000 of each cluster (clusters x genes)."""
    X = sparse.csr_matrix(X, dtype=np.float64) if not sparse.issparse(X) else X.tocsr()
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    normalized = sparse.diags(scale) @ X
    normalized.data = np.log1p(normalized.data)
    onehot = sparse.csr_matrix(
        (np.ones(codes.size), (codes, np.arange(codes.size))), shape=(n_clusters, codes.size)
    )
    sizes = np.maximum(np.bincount(codes, minlength=n_clusters), 1)
    return np.asarray((onehot @ normalized).todense()) / sizes[:, None]


def _most_similar(centroids: np.ndarray, small: np.ndarray) -> np.ndarray:
    """For each small cluster, the large cluster whose centroid correlates best with its own
    (Pearson correlation of the log-expression centroids; ties: the first)."""
    centred = centroids - centroids.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    unit = np.divide(centred, norms[:, None], out=np.zeros_like(centred), where=norms[:, None] > 0)
    similarity = unit @ unit.T
    large = np.flatnonzero(~small)
    return large[np.argmax(similarity[np.ix_(np.flatnonzero(small), large)], axis=1)]


def handle(
    X,
    labels: pd.Categorical,
    *,
    side: str,
    name: str,
    min_cells: int | None,
    action: str,
) -> Outcome:
    """Find the clusters of one study below ``min_cells`` and apply ``action`` to them."""
    if min_cells is None:
        return Outcome(keep=None, labels=labels, rows=[])
    categories = list(labels.categories)
    codes = np.asarray(labels.codes, dtype=np.int64)
    sizes = np.bincount(codes, minlength=len(categories))
    small = sizes < min_cells
    if not small.any():
        return Outcome(keep=None, labels=labels, rows=[])
    if small.all():
        msg = (
            f"every cluster of the {side} ({name}) has fewer than min_cells={min_cells} cells "
            f"(sizes {dict(zip(categories, sizes.tolist(), strict=True))}); pass a smaller "
            "min_cells, or min_cells=None to keep them all."
        )
        raise ValueError(msg)
    targets = None
    if action == "merge":
        targets = _most_similar(_log_centroids(X, codes, len(categories)), small)
    rows = []
    share = f"1/{len(categories)}"
    for position, k in enumerate(np.flatnonzero(small)):
        merged_into = categories[targets[position]] if targets is not None else ""
        rows.append(
            {
                "side": side,
                "cluster": categories[k],
                "n_cells": int(sizes[k]),
                "action": action,
                "merged_into": merged_into,
            }
        )
        what = {
            "drop": "it is left out of the transport",
            "merge": f"its cells are merged into its most similar cluster {merged_into!r}",
            "keep": "it is kept (small_clusters='keep')",
        }[action]
        cells = "1 cell" if sizes[k] == 1 else f"{sizes[k]} cells"
        logger.warning(
            "%s cluster %r has %s (fewer than min_cells=%d). With balanced marginals every "
            "cluster carries the same share of the mass (%s of the %s's here), so %s would "
            "take that share and shift every other mapping score; %s. Pass min_cells=None to "
            "keep every cluster as it is, or small_clusters='drop' / 'merge' / 'keep'.",
            side.capitalize(),
            categories[k],
            cells,
            min_cells,
            share,
            side,
            "its cell" if sizes[k] == 1 else "its cells",
            what,
        )
    if action == "keep":
        return Outcome(keep=None, labels=labels, rows=rows)
    if action == "drop":
        keep = ~small[codes]
        remaining = [c for c, s in zip(categories, small, strict=True) if not s]
        kept = pd.Categorical(np.asarray(labels)[keep], categories=remaining)
        return Outcome(keep=keep, labels=kept, rows=rows)
    new_codes = codes.copy()
    for position, k in enumerate(np.flatnonzero(small)):
        new_codes[codes == k] = targets[position]
    remaining = [c for c, s in zip(categories, small, strict=True) if not s]
    values = np.asarray(categories, dtype=object)[new_codes]
    return Outcome(keep=None, labels=pd.Categorical(values, categories=remaining), rows=rows)


def table(rows: list[dict]) -> pd.DataFrame:
    """The clusters below ``min_cells`` and what was done with them."""
    return pd.DataFrame(rows, columns=TABLE_COLUMNS).astype({"n_cells": np.int64})
