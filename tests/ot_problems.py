"""Small OT problems built like DatasetMap's, shared by the solver tests."""

from __future__ import annotations

import numpy as np

from pairot.tl._ot import sinkhorn


def clustered_problem(seed: int, labels: np.ndarray, n: int, m: int, d: int):
    """Augmented vectors built like DatasetMap's: unit features and a label-distance lookup.

    ``labels`` is the (query clusters x reference clusters) label distance. Returns
    ``x_aug, y_aug, offset, a, b, query_codes, ref_codes, cost`` with balanced marginals.
    """
    rng = np.random.default_rng(seed)
    kq, kr = labels.shape
    qc = np.concatenate([np.arange(kq), rng.choice(kq, n - kq)])
    rc = np.concatenate([np.arange(kr), rng.choice(kr, m - kr)])
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.normal(size=(m, d))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x_aug = np.concatenate([-0.25 * x, 1.5 * labels[qc]], axis=1)
    y_aug = np.concatenate([y, np.eye(kr)[rc]], axis=1)
    a = 1.0 / np.bincount(qc)[qc] / kq
    b = 1.0 / np.bincount(rc)[rc] / kr
    cost = 0.25 + x_aug @ y_aug.T
    return x_aug, y_aug, 0.25, a, b, qc, rc, cost


def solve(problem, **kwargs):
    """:func:`sinkhorn` on a :func:`clustered_problem` (float64, epsilon 0.05, its codes)."""
    x_aug, y_aug, offset, a, b, qc, rc = problem[:7]
    kwargs = {
        "epsilon": 0.05,
        "dtype": np.float64,
        "batch_size": 16,
        "progress": False,
        "query_codes": qc,
        "ref_codes": rc,
    } | kwargs
    return sinkhorn(x_aug, y_aug, offset, a, b, **kwargs)
