"""Stratified downsampling of cells by label."""

from __future__ import annotations

import numpy as np
import pandas as pd


def downsample_indices(labels, n_samples: int, random_state: int | None = 0) -> np.ndarray:
    """Indices of a stratified subsample: at most ``n_samples`` cells per label.

    See docs/method.md#downsampling.

    Every cell of a label with fewer than ``n_samples`` cells is kept; from a larger label,
    ``n_samples`` cells are drawn without replacement. Rare labels are never lost.

    Parameters
    ----------
    labels
        One label per cell (array-like, any hashable values; NaN is not allowed).
    n_samples
        Maximum number of cells kept per label (>= 1).
    random_state
        Seed of the draw; the same seed gives the same indices.

    Returns
    -------
    Sorted integer indices into ``labels`` of the kept cells.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        msg = (
            f"n_samples must be a positive integer, got {n_samples!r}; pass e.g. n_samples=10_000."
        )
        raise TypeError(msg)
    if n_samples < 1:
        msg = (
            f"n_samples must be >= 1, got {n_samples}; pass the maximum number of cells per label."
        )
        raise ValueError(msg)
    if isinstance(labels, str | bytes) or np.ndim(labels) != 1:
        msg = (
            f"labels must be one label per cell (1-d), got {type(labels).__name__} with shape "
            f"{np.shape(labels)}; pass e.g. adata.obs['cell_type'].to_numpy()."
        )
        raise ValueError(msg)
    labels = pd.Series(
        np.asarray(labels, dtype=object)
        if not isinstance(labels, pd.Series)
        else labels.to_numpy(dtype=object)
    )
    if labels.isna().any():
        n_na = int(labels.isna().sum())
        msg = (
            f"labels contains {n_na} missing value(s) (NaN/None); drop or label those cells "
            "before downsampling."
        )
        raise ValueError(msg)
    codes, _ = pd.factorize(labels, sort=True)
    rng = np.random.default_rng(random_state)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes) if codes.size else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    kept = []
    for k, n in enumerate(counts):
        members = order[starts[k] : starts[k + 1]]
        if n > n_samples:
            members = rng.choice(members, size=n_samples, replace=False)
        kept.append(members)
    if not kept:
        return np.zeros(0, dtype=np.intp)
    return np.sort(np.concatenate(kept)).astype(np.intp)
