"""Per-cell mapping: each cell's distribution over the other study's clusters, from the plan.

For a query cell ``i`` and a reference cluster ``c``, ``p_i(c) = sum_{j in c} P_ij / sum_j
P_ij`` (the conditional of the plan given the row); for a reference cell ``j`` and a query
cluster ``k``, ``q_j(k) = sum_{i in k} P_ij / sum_i P_ij``. The sums come from the one
aggregation pass over the plan (:func:`pairot.tl._ot.aggregate`: ``row_cluster`` and ``tm``);
everything here is host-side arithmetic on ``cells x clusters`` arrays, free of AnnData except
:func:`transfer_labels`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger("pairot")

#: The columns that follow the distribution in a cell mapping, in this order.
SUMMARY_COLUMNS = ("best", "probability", "entropy", "entropy_normalized")
#: Prefix of the distribution columns when a cluster is named like a summary column.
CLASH_PREFIX = "p_"
#: Default share of a cluster's cells whose second most frequent best cluster flags a split.
SPLIT_SHARE = 0.25
#: Default minimum number of cells behind that second best cluster for a split.
SPLIT_MIN_CELLS = 5


def distribution_columns(clusters: list[str]) -> list[str]:
    """The distribution column names of a cell mapping over ``clusters``: the names
    themselves, or all prefixed with :data:`CLASH_PREFIX` when one of them is a summary
    column's name (``"best"``, ``"probability"``, ``"entropy"``, ``"entropy_normalized"``)."""
    clusters = [str(c) for c in clusters]
    if set(clusters) & set(SUMMARY_COLUMNS):
        return [CLASH_PREFIX + c for c in clusters]
    return clusters


def cell_distributions(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Normalize per-cell cluster sums of the plan into distributions and summarize them.

    Parameters
    ----------
    sums
        ``(cells, clusters)`` non-negative plan mass of every cell per cluster of the other
        study.

    Returns
    -------
    dict of arrays
        ``distribution`` ``(cells, clusters)``: rows summing to 1, NaN for cells whose total
        is 0 (or not finite); ``best``: the code of the most probable cluster (the first in
        cluster order on ties), -1 for those cells; ``probability``: its probability;
        ``entropy``: ``-sum_c p(c) log p(c)`` in nats (``0 log 0 = 0``); ``entropy_normalized``:
        entropy divided by ``log(clusters)``, in [0, 1] (0 with a single cluster);
        ``defined``: the cells with a distribution.
    """
    sums = np.asarray(sums, dtype=np.float64)
    n, k = sums.shape
    total = sums.sum(axis=1)
    defined = np.isfinite(total) & (total > 0)
    distribution = np.full((n, k), np.nan)
    distribution[defined] = sums[defined] / total[defined, None]
    best = np.full(n, -1, dtype=np.int64)
    probability = np.full(n, np.nan)
    entropy = np.full(n, np.nan)
    if k and defined.any():
        p = distribution[defined]
        best[defined] = np.argmax(p, axis=1)
        probability[defined] = p[np.arange(len(p)), best[defined]]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p), 0.0)
        entropy[defined] = np.maximum(-terms.sum(axis=1), 0.0)
    normalized = entropy / np.log(k) if k > 1 else np.where(defined, 0.0, np.nan)
    return {
        "distribution": distribution,
        "best": best,
        "probability": probability,
        "entropy": entropy,
        "entropy_normalized": normalized,
        "defined": defined,
    }


def cell_mapping_frame(
    sums: np.ndarray, cells: pd.Index, clusters: list[str], other: str
) -> pd.DataFrame:
    """The cell mapping table (see :meth:`pairot.tl.DatasetMap.compute_cell_mapping`).

    ``sums`` is ``(cells, clusters)``; ``other`` names the side of ``clusters``
    (``"reference"`` or ``"query"``), used as the columns' name.
    """
    out = cell_distributions(sums)
    clusters = [str(c) for c in clusters]
    columns = distribution_columns(clusters)
    frame = pd.DataFrame(out["distribution"], index=pd.Index(cells), columns=columns)
    frame["best"] = pd.Categorical.from_codes(out["best"], categories=clusters)
    for name in SUMMARY_COLUMNS[1:]:
        frame[name] = out[name]
    frame.columns.name = other
    undefined = int((~out["defined"]).sum())
    if undefined:
        logger.info(
            "Per-cell mapping: %s of %s cells carry no plan mass (relaxed marginals or "
            "underflow); their distribution and best cluster are NaN.",
            f"{undefined:,}",
            f"{len(frame):,}",
        )
    return frame


def _check_cell_mapping(cell_mapping, argument: str = "cell_mapping") -> list[str]:
    """The clusters of a cell mapping table (the categories of its ``best`` column)."""
    hint = "pass the DataFrame of DatasetMap.compute_cell_mapping() (also after to_parquet)."
    if not isinstance(cell_mapping, pd.DataFrame):
        msg = f"{argument} must be a pandas DataFrame, got {type(cell_mapping).__name__}; {hint}"
        raise TypeError(msg)
    missing = [c for c in SUMMARY_COLUMNS if c not in cell_mapping.columns]
    if missing or not isinstance(cell_mapping["best"].dtype, pd.CategoricalDtype):
        msg = (
            f"{argument} lacks the columns {missing} or a Categorical 'best' column "
            f"(columns: {list(cell_mapping.columns)[:10]}); {hint}"
        )
        raise ValueError(msg)
    clusters = [str(c) for c in cell_mapping["best"].cat.categories]
    absent = [c for c in distribution_columns(clusters) if c not in cell_mapping.columns]
    if absent:
        msg = f"{argument} lacks the distribution columns {absent[:5]}; {hint}"
        raise ValueError(msg)
    return clusters


def best_cluster_shares(
    own: pd.Categorical, cell_mapping: pd.DataFrame, own_side: str, other_side: str
) -> pd.DataFrame:
    """Cells of every cluster of ``own`` counted by their best cluster of the other side.

    Returns a ``(own clusters, other clusters)`` table of cell counts (cells without a best
    cluster are left out).
    """
    clusters = _check_cell_mapping(cell_mapping)
    best = cell_mapping["best"].to_numpy()
    own = pd.Categorical(own)
    defined = ~pd.isna(best)
    counts = np.zeros((len(own.categories), len(clusters)), dtype=np.int64)
    other_codes = pd.Categorical(best[defined], categories=clusters).codes
    np.add.at(counts, (own.codes[defined], other_codes), 1)
    return pd.DataFrame(
        counts,
        index=pd.Index([str(c) for c in own.categories], name=own_side),
        columns=pd.Index(clusters, name=other_side),
    )


def split_summary(
    counts: pd.DataFrame, n_cells: np.ndarray, *, split_share: float, min_cells: int
) -> pd.DataFrame:
    """Per cluster: its cells' two most frequent best clusters, their shares and the split
    flag (``second_share >= split_share`` and at least ``min_cells`` cells behind it).

    Shares are over the cells that have a best cluster (``n_mapped``).
    """
    values = counts.to_numpy()
    n_mapped = values.sum(axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    rows = np.arange(len(values))
    names = np.asarray(counts.columns, dtype=object)
    out = pd.DataFrame(index=counts.index)
    out["n_cells"] = np.asarray(n_cells, dtype=np.int64)
    out["n_mapped"] = n_mapped
    for rank, label in ((0, "first"), (1, "second")):
        if values.shape[1] > rank:
            count = values[rows, order[:, rank]]
            name = np.where(count > 0, names[order[:, rank]], None)
        else:
            count = np.zeros(len(values), dtype=np.int64)
            name = np.full(len(values), None, dtype=object)
        out[label] = pd.Categorical(name, categories=list(counts.columns))
        out[f"{label}_share"] = np.divide(
            count, n_mapped, out=np.full(len(values), np.nan), where=n_mapped > 0
        )
        out[f"{label}_cells"] = count
    out["split"] = (out["second_share"].fillna(0.0).to_numpy() >= split_share) & (
        out["second_cells"].to_numpy() >= min_cells
    )
    return out


def transfer_labels(
    adata: AnnData, cell_mapping: pd.DataFrame, *, key_added: str = "pairot"
) -> AnnData:
    """A copy of ``adata`` with the labels, confidences and distributions of a cell mapping.

    Cells are matched by name (``adata.obs_names`` against ``cell_mapping.index``), so
    ``adata`` may be the study the mapping was computed on, a view or subset of it, or the
    full study when the fit used a downsampled one: cells absent from the mapping get NaN
    (label missing), with an INFO log.

    Parameters
    ----------
    adata
        The study whose cells the mapping describes; never modified.
    cell_mapping
        The output of :meth:`pairot.tl.DatasetMap.compute_cell_mapping` (or its parquet
        round trip).
    key_added
        Prefix of the keys written (scanpy's ``key_added`` convention).

    Returns
    -------
    AnnData
        A copy with ``obs[f"{key_added}_label"]`` (Categorical: the best cluster of the other
        study), ``obs[f"{key_added}_confidence"]`` (its probability), ``obs[f"{key_added}
        _entropy"]`` (entropy of the distribution, nats), ``obsm[f"{key_added}_distribution"]``
        (a ``cells x clusters`` float array) and ``uns[f"{key_added}_transfer"]`` with
        ``clusters`` (the array's column names, in order) and ``params``. The distribution is
        an array, not a DataFrame, so that cluster names with ``/`` survive ``write_h5ad``.
    """
    if not isinstance(adata, AnnData):
        msg = f"adata must be an anndata.AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if not isinstance(key_added, str) or not key_added:
        msg = f"key_added must be a non-empty string, got {key_added!r}."
        raise TypeError(msg) if not isinstance(key_added, str) else ValueError(msg)
    clusters = _check_cell_mapping(cell_mapping)
    names = pd.Index(adata.obs_names.astype(str))
    index = pd.Index(cell_mapping.index.astype(str))
    if not names.equals(index):
        for what, values in (("cell_mapping.index", index), ("adata.obs_names", names)):
            if values.has_duplicates:
                duplicated = values[values.duplicated()].unique()[:3].tolist()
                msg = (
                    f"{what} has duplicate cell names (e.g. {duplicated}), so cells cannot be "
                    "matched by name; make the names unique (adata.obs_names_make_unique()) "
                    "before solving, or pass the same cells in the same order."
                )
                raise ValueError(msg)
        cell_mapping = cell_mapping.set_axis(index).reindex(names)
    missing = int((~names.isin(index)).sum())
    if missing:
        logger.info(
            "transfer_labels: %s of %s cells of adata are not in cell_mapping (not in the "
            "fit); their label is missing and their confidence NaN.",
            f"{missing:,}",
            f"{len(names):,}",
        )
    out = adata.copy()
    best = cell_mapping["best"].astype(str).where(cell_mapping["best"].notna())
    out.obs[f"{key_added}_label"] = pd.Categorical(best.to_numpy(), categories=clusters)
    out.obs[f"{key_added}_confidence"] = cell_mapping["probability"].to_numpy(dtype=np.float64)
    out.obs[f"{key_added}_entropy"] = cell_mapping["entropy"].to_numpy(dtype=np.float64)
    distribution = cell_mapping[distribution_columns(clusters)].to_numpy(dtype=np.float64)
    out.obsm[f"{key_added}_distribution"] = distribution
    out.uns[f"{key_added}_transfer"] = {
        "clusters": np.asarray(clusters, dtype=object),
        "params": {
            "clusters_of": str(cell_mapping.columns.name or ""),
            "n_cells_mapped": int(len(names) - missing),
            "n_cells_missing": missing,
            "entropy_unit": "nats",
        },
    }
    return out


def side_cell_mapping(sums: dict, side: str, obs_names, other_clusters: list[str]) -> pd.DataFrame:
    """``DatasetMap.compute_cell_mapping(side)`` from the plan sums: each cell of ``side``
    (named ``obs_names``) over the clusters of the other side (``other_clusters``)."""
    if side == "query":
        return cell_mapping_frame(sums["row_cluster"], obs_names, other_clusters, "reference")
    return cell_mapping_frame(np.asarray(sums["tm"]).T, obs_names, other_clusters, "query")


def cluster_split_summary(
    labels: pd.Categorical, counts: pd.DataFrame, *, split_share: float, min_cells: int
) -> pd.DataFrame:
    """:func:`split_summary` of the clusters ``labels`` with their best-cluster ``counts``."""
    n_cells = np.bincount(labels.codes, minlength=len(labels.categories))
    return split_summary(counts, n_cells, split_share=split_share, min_cells=min_cells)
