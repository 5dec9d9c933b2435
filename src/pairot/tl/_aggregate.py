"""Per-cluster sums of per-cell values: the numpy-level helper below both the engine
(``_ot``, whose aggregation passes sum the plan per cluster) and the answers (``_answers``).

It imports numpy only, so that the engine can be loaded on its own
(``benchmarks/bench_gpu.py``).
"""

from __future__ import annotations

import numpy as np

#: Plan mass below which a cluster pair counts as carrying no mass.
MASS_FLOOR = 1e-16


def cluster_sums(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum the columns of ``values`` (rows x cells) per cluster code: rows x clusters."""
    out = np.zeros((values.shape[0], n_clusters), dtype=np.float64)
    for k in range(values.shape[0]):
        out[k] = np.bincount(codes, weights=values[k], minlength=n_clusters)
    return out
