"""The suggested matches (``DatasetMap.select_similar_clusters``): the reference clusters of
each query cluster that pass the thresholds, ranked by mapping, optionally with the
no-match flags and the bootstrap's intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._novelty import mark_unmatched

#: The columns of the table ``DatasetMap.bootstrap`` returns.
BOOTSTRAP_COLUMNS = (
    "query",
    "reference",
    "mapping",
    "mapping_low",
    "mapping_high",
    "distance",
    "distance_low",
    "distance_high",
    "top_share",
)
#: The columns added to the suggested matches (``matches.csv``).
CONFIDENCE_COLUMNS = BOOTSTRAP_COLUMNS[3:5] + BOOTSTRAP_COLUMNS[6:]


def select_matches(
    mapping: pd.DataFrame,
    distance: pd.DataFrame,
    threshold_mapping: float | None,
    threshold_distance: float | None,
    n_top: int | None,
    *,
    output: str,
    unmatched: pd.DataFrame | None,
    intervals: pd.DataFrame | None,
) -> dict[str, list[str]] | pd.DataFrame:
    """The matches as ``output`` (``"dict"`` or ``"table"``), arguments already checked."""
    long = pd.DataFrame(
        {
            "query": np.repeat(np.asarray(mapping.index, dtype=object), mapping.shape[1]),
            "reference": np.tile(np.asarray(mapping.columns, dtype=object), mapping.shape[0]),
            "mapping": mapping.to_numpy(dtype=np.float64).ravel(),
            "distance": distance.to_numpy(dtype=np.float64).ravel(),
        }
    )
    long["query_order"] = np.repeat(np.arange(mapping.shape[0]), mapping.shape[1])
    keep = np.ones(len(long), dtype=bool)
    if threshold_mapping is not None:
        keep &= long["mapping"].to_numpy() >= threshold_mapping
    if threshold_distance is not None:
        keep &= long["distance"].to_numpy() <= threshold_distance
    long = long[keep].sort_values(
        ["query_order", "mapping"], ascending=[True, False], kind="stable"
    )
    long["rank"] = long.groupby("query_order").cumcount() + 1
    if n_top is not None:
        long = long[long["rank"] <= n_top]
    long = long.drop(columns="query_order").reset_index(drop=True)
    if unmatched is not None:
        long = mark_unmatched(long, unmatched, list(mapping.index))
    if intervals is not None:
        long = add_intervals(long, intervals)
    if output == "dict":
        chosen = {query: [] for query in mapping.index}
        for query, reference in zip(long["query"], long["reference"], strict=True):
            chosen[query].append(reference)
        return chosen
    return long


def add_intervals(matches: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """The suggested matches with the interval columns of a ``bootstrap`` table, matched by
    ``(query, reference)`` (NaN for a pair the table lacks)."""
    if not isinstance(intervals, pd.DataFrame):
        msg = (
            "intervals must be the DataFrame that DatasetMap.bootstrap returns, got "
            f"{type(intervals).__name__}."
        )
        raise TypeError(msg)
    missing = [c for c in ("query", "reference", *CONFIDENCE_COLUMNS) if c not in intervals]
    if missing:
        msg = (
            f"intervals lacks the column(s) {missing}; pass the table of "
            "DatasetMap.bootstrap (or dataset_map.bootstrap_results)."
        )
        raise ValueError(msg)
    keys = pd.MultiIndex.from_arrays(
        [intervals["query"].astype(str), intervals["reference"].astype(str)]
    )
    where = keys.get_indexer(
        pd.MultiIndex.from_arrays([matches["query"].astype(str), matches["reference"].astype(str)])
    )
    out = matches.copy()
    out.attrs.update(intervals.attrs)  # n_bootstrap, confidence, what was resampled
    for column in CONFIDENCE_COLUMNS:
        values = intervals[column].to_numpy(dtype=np.float64)
        out[column] = np.where(where >= 0, values[np.maximum(where, 0)], np.nan)
    return out
