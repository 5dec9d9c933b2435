"""The label part of the cost as ``DatasetMap.init_geom`` builds it: each study's marker
lists, the label distance L (``"pairot"`` or ``"robust"``) and the genes behind each entry
(``DatasetMap.DEGs_label_distance``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from ._label_distance import label_distance, marker_lists
from ._robust_label_distance import robust_label_distance

#: The marker parameters shared by both studies' marker lists.
COMMON_MARKER_PARAMETERS = (
    "overlap_threshold_ava",
    "overlap_n_genes_ava",
    "adj_p_val_threshold",
    "auroc_threshold",
    "logfc_threshold",
    "gene_filtering",
)


def label_parameters(
    *,
    n_genes_ova,
    n_genes_ava,
    q_norm,
    overlap_threshold_ava,
    overlap_n_genes_ava,
    adj_p_val_threshold,
    auroc_threshold,
    logfc_threshold,
    gene_filtering,
    label_distance_mode,
) -> dict:
    """The marker and label-distance parameters of ``init_geom``, in the order
    ``DatasetMap.label_distance_params`` shows them (``bootstrap`` rebuilds L with them)."""
    return {
        "n_genes_ova": n_genes_ova,
        "n_genes_ava": n_genes_ava,
        "q_norm": q_norm,
        "overlap_threshold_ava": overlap_threshold_ava,
        "overlap_n_genes_ava": overlap_n_genes_ava,
        "adj_p_val_threshold": adj_p_val_threshold,
        "auroc_threshold": auroc_threshold,
        "logfc_threshold": logfc_threshold,
        "gene_filtering": gene_filtering,
        "label_distance_mode": label_distance_mode,
    }


def study_markers(de_ova: pd.DataFrame, de_ava: pd.DataFrame, params: Mapping, *, query: bool):
    """A study's marker lists with ``params``: the query's top ``n_genes_ova`` /
    ``n_genes_ava``, the reference's full ranked lists (docs/method.md#label-distance)."""
    common = {key: params[key] for key in COMMON_MARKER_PARAMETERS}
    if query:
        top = {"n_genes_ova": params["n_genes_ova"], "n_genes_ava": params["n_genes_ava"]}
    else:
        top = {"n_genes_ova": None, "n_genes_ava": None}
    return marker_lists(de_ova, de_ava, **top, **common)


def restrict_markers(markers: pd.DataFrame, clusters: list[str], name: str) -> pd.DataFrame:
    """Keep the marker lists of the clusters present in the data, in the data's order."""
    known = set(markers["cluster"].cat.categories.astype(str))
    missing = [c for c in clusters if c not in known]
    if missing:
        msg = (
            f"{name} has clusters {missing} that its DE tables in uns['pairot'] do not "
            "know; were the labels changed after preprocess_adatas?"
        )
        raise ValueError(msg)
    markers = markers[markers["cluster"].astype(str).isin(clusters)].copy()
    markers["cluster"] = pd.Categorical(markers["cluster"].astype(str), categories=clusters)
    return markers.sort_values(["cluster", "rank"], kind="stable").reset_index(drop=True)


@dataclass
class LabelModel:
    """The label part of the cost: the rank distance D, the normalized label distance L (both
    query x reference clusters, in the data's cluster order) and the genes behind each entry
    (ranks from 1)."""

    rank_distance: pd.DataFrame
    label_distance: pd.DataFrame
    details: pd.DataFrame
    #: ``label_distance_mode="auto"``: the decision (``AutoDecision.record()``), else None.
    auto: dict | None = None


def build_label_model(
    info: tuple[Mapping, Mapping],
    query_clusters: list[str],
    reference_clusters: list[str],
    params: Mapping,
) -> LabelModel:
    """The label distance of two studies from their DE tables (``info``: each study's
    ``uns["pairot"]`` content) with the parameters of :func:`label_parameters`."""
    info1, info2 = info
    query_markers = study_markers(info1["de_ova"], info1["de_ava"], params, query=True)
    reference_markers = study_markers(info2["de_ova"], info2["de_ava"], params, query=False)
    query_markers = restrict_markers(query_markers, query_clusters, "adata1")
    reference_markers = restrict_markers(reference_markers, reference_clusters, "adata2")
    q_norm = params["q_norm"]
    D, L, details = label_distance(query_markers, reference_markers, q_norm=q_norm)
    if params["label_distance_mode"] in ("robust", "auto"):  # auto weighs the robust L
        D, L = robust_label_distance(
            info1["de_ova"],
            info2["de_ova"],
            query_clusters,
            reference_clusters,
            q_norm=q_norm,
            gene_filtering=params["gene_filtering"],
        )
    # users read ranks from 1 (1 = top marker); the formula works on 0-based positions
    details = details.assign(
        rank_query=details["rank_query"] + 1, rank_reference=details["rank_reference"] + 1
    )
    return LabelModel(
        rank_distance=D.loc[query_clusters, reference_clusters],
        label_distance=L.loc[query_clusters, reference_clusters],
        details=details,
    )


class DegTable(Mapping):
    """``DEGs_label_distance[q][r]``: the genes behind one label-distance entry."""

    def __init__(self, details: pd.DataFrame, query: list[str], reference: list[str]):
        self._details = details
        self._query = query
        self._reference = reference

    def __getitem__(self, query_cluster):
        if query_cluster not in self._query:
            msg = f"{query_cluster!r} is not a query cluster; query clusters: {self._query}."
            raise KeyError(msg)
        rows = self._details[self._details["query_cluster"] == query_cluster]
        return {r: _deg_frame(rows[rows["reference_cluster"] == r]) for r in self._reference}

    def __iter__(self):
        return iter(self._query)

    def __len__(self):
        return len(self._query)


#: The columns of ``DEGs_label_distance[q][r]``, upstream's names first (the gene is the index).
DEG_COLUMNS = ["rank_query", "logFC_query", "rank_ref", "logFC_ref", "contribution"]


def _deg_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """One ``DEGs_label_distance[q][r]`` table in upstream's layout: indexed by gene."""
    table = rows.rename(columns={"rank_reference": "rank_ref", "logFC_reference": "logFC_ref"})
    table = table.set_index(pd.Index(table["gene"].astype(str).to_numpy(), name="gene"))
    return table[DEG_COLUMNS]
