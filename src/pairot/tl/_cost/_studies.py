"""The two studies as the cost needs them: their DE tables and cluster column (pairot's
``uns["pairot"]`` or upstream pairOT's ``uns["de_res_ova"]`` / ``uns["de_res_ava"]``), their
labels, the shared genes, and the clusters below ``min_cells``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
from anndata import AnnData

from ...pp._validate import get_labels
from . import _small_clusters

#: The obs column where upstream pairOT's ``preprocess_adatas`` writes the cluster labels.
UPSTREAM_CLUSTER_COLUMN = "cell_type_author"
#: The ``uns`` keys of upstream pairOT's DE results.
UPSTREAM_DE_KEYS = ("de_res_ova", "de_res_ava")


def _cluster_order(adata: AnnData, column: str, keys: list[str]) -> list[str]:
    """The DE clusters in the order of ``obs[column]`` (h5ad returns dict keys sorted), then
    those the column does not have, in dict order."""
    values = adata.obs[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        in_obs = [str(c) for c in values.cat.categories]
    else:
        in_obs = sorted({str(v) for v in values.dropna().unique()})
    present = set(keys)
    ordered = [c for c in dict.fromkeys(in_obs) if c in present]
    seen = set(ordered)
    return ordered + [k for k in keys if k not in seen]


def _upstream_info(adata: AnnData, name: str) -> dict:
    """``uns["pairot"]``'s content built from upstream pairOT's ``uns["de_res_ova"]`` /
    ``uns["de_res_ava"]`` and ``obs["cell_type_author"]``; ``adata`` is not modified."""
    # imported here: this upstream adapter is the only user in this module
    from ..._logging import logger
    from ...pp._upstream import ava_from_dict, ova_from_dict

    for key in UPSTREAM_DE_KEYS:
        if key not in adata.uns:
            other = next(k for k in UPSTREAM_DE_KEYS if k != key)
            msg = (
                f"{name}.uns has {other!r} but not {key!r}: upstream pairOT's DE results need "
                f"both; preprocess the study again (pairot.pp.preprocess_adatas writes "
                f"{name}.uns['pairot'])."
            )
            raise ValueError(msg)
    column = UPSTREAM_CLUSTER_COLUMN
    if column not in adata.obs.columns:
        available = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        msg = (
            f"{name} carries upstream pairOT's DE results (uns['de_res_ova'] / "
            f"uns['de_res_ava']) but {name}.obs has no column {column!r} with the clusters "
            f"they were computed for; obs has: {available}. Copy the cluster labels there, "
            f"e.g. {name}.obs[{column!r}] = {name}.obs['<your cluster column>']."
        )
        raise KeyError(msg)
    ova_dict = adata.uns["de_res_ova"]
    if not isinstance(ova_dict, Mapping):
        msg = (
            f"{name}.uns['de_res_ova'] must be a dict of DataFrames (upstream pairOT's "
            f"one-vs-all DE results), got {type(ova_dict).__name__}."
        )
        raise TypeError(msg)
    clusters = _cluster_order(adata, column, [k for k in ova_dict if isinstance(k, str)])
    de_ova = ova_from_dict(ova_dict, argument=f"{name}.uns['de_res_ova']", clusters=clusters)
    de_ava = ava_from_dict(
        adata.uns["de_res_ava"], argument=f"{name}.uns['de_res_ava']", clusters=clusters
    )
    logger.info(
        "%s: converted upstream pairOT DE results (uns['de_res_ova'] / uns['de_res_ava'], "
        "%d clusters, clusters in obs[%r]) to pairot's long tables.",
        name,
        len(clusters),
        column,
    )
    return {"cell_type_key": column, "de_ova": de_ova, "de_ava": de_ava}


def _pairot_info(adata: AnnData, name: str) -> dict:
    """The cluster column and the long DE tables of a study: ``uns["pairot"]`` (pairot's
    preprocessing) or, without it, upstream pairOT's ``uns["de_res_ova"]`` /
    ``uns["de_res_ava"]`` with the clusters in ``obs["cell_type_author"]``, converted."""
    if not isinstance(adata, AnnData):
        msg = f"{name} must be an anndata.AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    info = adata.uns.get("pairot")
    hint = (
        "run pairot.pp.preprocess_adatas(adata1, adata2, ...) first and pass its outputs "
        "(also fine after write_h5ad / read_h5ad or as views)."
    )
    if info is None and any(key in adata.uns for key in UPSTREAM_DE_KEYS):
        return _upstream_info(adata, name)
    if not isinstance(info, Mapping):
        msg = (
            f"{name}.uns['pairot'] is missing (pairot's preprocess_adatas writes it), and so "
            "are upstream pairOT's uns['de_res_ova'] / uns['de_res_ava'] (read with the "
            f"clusters in obs['cell_type_author']): {name} has no DE results; {hint}"
        )
        raise ValueError(msg)
    for key in ("cell_type_key", "de_ova", "de_ava"):
        if key not in info:
            msg = f"{name}.uns['pairot'] lacks {key!r} (incomplete); {hint}"
            raise ValueError(msg)
    if not isinstance(info["cell_type_key"], str):
        msg = (
            f"{name}.uns['pairot']['cell_type_key'] must be the name of the cluster column, "
            f"got {info['cell_type_key']!r}; {hint}"
        )
        raise TypeError(msg)
    for key in ("de_ova", "de_ava"):
        if not isinstance(info[key], pd.DataFrame):
            msg = (
                f"{name}.uns['pairot'][{key!r}] must be a pandas DataFrame, got "
                f"{type(info[key]).__name__}; {hint}"
            )
            raise TypeError(msg)
    return info


def _labels(adata: AnnData, key: str, name: str) -> pd.Categorical:
    """Cluster labels as strings (see :func:`pairot.pp._validate.get_labels`): unused
    categories dropped with an INFO log, missing labels an error."""
    if key not in adata.obs.columns:
        available = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        msg = (
            f"{name}.obs has no column {key!r} (the cluster column recorded in "
            f"{name}.uns['pairot']['cell_type_key'] by preprocess_adatas); available: "
            f"{available}. Restore the column or preprocess again."
        )
        raise KeyError(msg)
    return get_labels(adata, key, name, f"{name}.uns['pairot']['cell_type_key']")


@dataclass
class Studies:
    """What :func:`load_studies` read: the studies (views without dropped small clusters),
    their ``uns["pairot"]`` content, labels, and the small-cluster table."""

    adata1: AnnData
    adata2: AnnData
    info: tuple[dict, dict]
    query_labels: pd.Categorical
    reference_labels: pd.Categorical
    small_clusters: pd.DataFrame


def _check_same_genes(adata1: AnnData, adata2: AnnData) -> None:
    if list(adata1.var_names) != list(adata2.var_names):
        only1 = adata1.var_names.difference(adata2.var_names)[:5].tolist()
        only2 = adata2.var_names.difference(adata1.var_names)[:5].tolist()
        how = (
            f"genes only in adata1: {only1}, only in adata2: {only2}"
            if only1 or only2
            else "the same genes in a different order"
        )
        msg = (
            f"adata1 and adata2 must have the same genes in the same order ({how}); "
            "pass both outputs of one preprocess_adatas call."
        )
        raise ValueError(msg)


def load_studies(adata1: AnnData, adata2: AnnData, min_cells, small_clusters) -> Studies:
    """Read and check the studies of ``DatasetMap(adata1, adata2, ...)`` and handle their
    clusters below ``min_cells`` (``small_clusters``: drop, merge or keep)."""
    info1 = _pairot_info(adata1, "adata1")
    info2 = _pairot_info(adata2, "adata2")
    _check_same_genes(adata1, adata2)
    studies = {
        "query": (adata1, _labels(adata1, info1["cell_type_key"], "adata1")),
        "reference": (adata2, _labels(adata2, info2["cell_type_key"], "adata2")),
    }
    min_cells, small_clusters = _small_clusters.check_arguments(min_cells, small_clusters)
    rows = []
    for side, name in (("query", "adata1"), ("reference", "adata2")):
        adata, labels = studies[side]
        outcome = _small_clusters.handle(
            adata.X, labels, side=side, name=name, min_cells=min_cells, action=small_clusters
        )
        rows += outcome.rows
        if outcome.keep is not None:
            adata = adata[outcome.keep]
        studies[side] = (adata, outcome.labels)
    (adata1, query_labels), (adata2, reference_labels) = studies["query"], studies["reference"]
    return Studies(
        adata1=adata1,
        adata2=adata2,
        info=(info1, info2),
        query_labels=query_labels,
        reference_labels=reference_labels,
        small_clusters=_small_clusters.table(rows),
    )
