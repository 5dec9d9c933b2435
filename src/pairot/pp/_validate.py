"""Checks of user input shared by the preprocessing entry points."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._logging import logger

_CHUNK = 1 << 22


def check_adata(adata, name: str) -> None:
    """Raise ``TypeError`` unless ``adata`` is an AnnData with cells, genes and unique genes."""
    if not isinstance(adata, AnnData):
        msg = f"{name} must be an anndata.AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = (
            f"{name} is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "pass a study with cells and genes."
        )
        raise ValueError(msg)
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        msg = (
            f"{name}.var_names has duplicated gene names, e.g. {dup}; make them unique "
            f"first, e.g. with {name}.var_names_make_unique()."
        )
        raise ValueError(msg)


def _values(X):
    """The stored values of X, in chunks, without densifying a sparse matrix."""
    if sparse.issparse(X):
        data = X.data
        for start in range(0, data.size, _CHUNK):
            yield data[start : start + _CHUNK]
    else:
        X = np.asarray(X)
        flat = X.reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            yield flat[start : start + _CHUNK]


def check_counts(X, name: str) -> None:
    """Raise ``ValueError`` unless ``X`` holds raw counts: finite, non-negative integers.

    Any numeric dtype is accepted (float32/float64 holding whole numbers included); NaN,
    infinite, negative and fractional values (normalized or log-transformed data) are not.
    """
    if X is None:
        msg = (
            f"{name}.X is None; pairot reads raw UMI counts from X: set it first, e.g. "
            f"{name}.X = {name}.layers['counts']."
        )
        raise ValueError(msg)
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        msg = f"{name}.X has dtype {X.dtype}; raw UMI counts (numbers) are needed."
        raise TypeError(msg)
    integer = np.issubdtype(X.dtype, np.integer)
    for chunk in _values(X):
        if not integer and not np.isfinite(chunk).all():
            msg = (
                f"{name}.X contains NaN or infinite values; pairot needs raw UMI counts "
                "(finite non-negative integers). Pass the unnormalized counts, e.g. from "
                f"{name}.layers['counts'] or {name}.raw."
            )
            raise ValueError(msg)
        if (chunk < 0).any():
            msg = (
                f"{name}.X contains negative values (min {chunk.min()}); pairot needs raw "
                "UMI counts, not scaled or centered data."
            )
            raise ValueError(msg)
        if not integer and (chunk != np.rint(chunk)).any():
            bad = chunk[chunk != np.rint(chunk)][0]
            msg = (
                f"{name}.X contains non-integer values (e.g. {bad}); it looks normalized or "
                "log-transformed. pairot needs raw UMI counts: pass the unnormalized counts, "
                f"e.g. from {name}.layers['counts'] or {name}.raw."
            )
            raise ValueError(msg)


def get_labels(adata: AnnData, column, name: str, argument: str) -> pd.Categorical:
    """The labels of ``adata.obs[column]`` as a Categorical of strings without unused categories.

    Labels are converted to strings (``1`` becomes ``"1"``) so that they survive
    ``write_h5ad`` / ``read_h5ad`` and index tables the same way everywhere. The category order
    is that of the original values: a categorical column keeps its categories' order; any
    other column is ordered as ``pandas.Categorical`` orders its values, so numbers come in
    numeric order (``1, 2, 10`` gives ``"1", "2", "10"``) and strings in lexicographic order.
    Unused categories are dropped with an INFO log message; missing labels are an error.
    """
    if not isinstance(column, str):
        msg = f"{argument} must be the name of a column of {name}.obs, got {column!r}."
        raise TypeError(msg)
    if column not in adata.obs.columns:
        available = ", ".join(map(repr, adata.obs.columns[:20]))
        msg = (
            f"{argument}={column!r} is not a column of {name}.obs; available: "
            f"{available or 'none'}."
        )
        raise KeyError(msg)
    values = adata.obs[column]
    if values.isna().any():
        msg = (
            f"{name}.obs[{column!r}] has {int(values.isna().sum())} missing values (NaN); "
            "drop those cells or give them a label first."
        )
        raise ValueError(msg)
    if isinstance(values.dtype, pd.CategoricalDtype):
        used = values.cat.remove_unused_categories()
        if len(used.cat.categories) < len(values.cat.categories):
            unused = sorted(set(values.cat.categories) - set(used.cat.categories), key=str)
            logger.info("Dropping unused categories of %s.obs[%r]: %s", name, column, unused)
        labels = pd.Categorical(used)
    else:
        try:
            labels = pd.Categorical(values.to_numpy())
        except TypeError:  # values that cannot be ordered together: order them as text
            as_str = values.astype(str).to_numpy()
            labels = pd.Categorical(as_str, categories=sorted(set(as_str)))
    categories = [str(c) for c in labels.categories]
    if len(set(categories)) < len(categories):
        seen: dict[str, list] = {}
        for original, text in zip(labels.categories, categories, strict=True):
            seen.setdefault(text, []).append(original)
        clash = next(group for group in seen.values() if len(group) > 1)
        msg = (
            f"{name}.obs[{column!r}] has labels that coincide as text ({clash!r} all read "
            f"{str(clash[0])!r}); rename them so each label is unique as a string."
        )
        raise ValueError(msg)
    return pd.Categorical.from_codes(np.asarray(labels.codes), categories=categories)
