"""The cost geometry of ``DatasetMap.init_geom``: the cell features of both studies and
the cost ``C = lambda_feature * 0.5 * (1 - x . y) + lambda_label * L`` as augmented vectors
(docs/method.md#cell-features-and-cost)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ..._logging import logger
from ...pp._validate import argument_text, part, study
from ._auto_label_distance import cell_term_summary, decide
from ._features import cosine_features, spearman_features, uninformative_features
from ._labels import LabelModel, build_label_model


@dataclass
class Geometry:
    """Cell features and the cost structure of the OT problem.

    ``C[i, j] = lambda_feature * 0.5 * (1 - x[i] . y[j]) + lambda_label * L[k_i, c_j]``, written as
    ``offset + x_aug[i] . y_aug[j]`` with ``x_aug = [-0.5 * lambda_feature * x, lambda_label *
    L[k_i]]`` and ``y_aug = [y, onehot(c_j)]``.
    """

    x: np.ndarray
    y: np.ndarray
    x_aug: np.ndarray
    y_aug: np.ndarray
    offset: float
    query_codes: np.ndarray
    ref_codes: np.ndarray
    label_distance: np.ndarray
    epsilon: float
    batch_size: int
    lambda_feature: float
    lambda_label: float

    def cost(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The cost of the given query cells against every reference cell (float64).

        This materializes ``len(rows) x m`` values: meant for inspection and tests on small
        data; the solver and the outputs never build the full matrix.
        """
        x_aug = np.asarray(self.x_aug[rows], dtype=np.float64)
        return self.offset + x_aug @ np.asarray(self.y_aug, dtype=np.float64).T


def _features(function, matrix, where: str) -> np.ndarray:
    """``function(matrix)``, its input errors prefixed with where the matrix comes from."""
    try:
        return function(matrix)
    except (TypeError, ValueError) as error:
        msg = f"{where}: {error}"
        raise type(error)(msg) from error


def _warn_uninformative(x: np.ndarray, y: np.ndarray, embedding_layer: str | None) -> None:
    """Warn when the cell features of either study carry no information
    (docs/method.md#cell-features-and-cost)."""
    for features, name in ((x, "adata1"), (y, "adata2")):
        reason = uninformative_features(features, embedding=embedding_layer is not None)
        if reason is None:
            continue
        fix = (
            "use a shared embedding that separates the cells"
            if embedding_layer is not None
            else "use more highly variable genes (preprocess_adatas(n_top_genes=...), at "
            "least 50) or a shared embedding (init_geom(embedding_layer='X_pca'))"
        )
        logger.warning(
            "The cell features of %s carry no information: %s. The cell term of the cost "
            "(lambda_feature) then cannot tell cells apart, and the mapping rests on the "
            "label term (the marker genes) alone; %s.",
            study(name),
            reason,
            fix,
        )


def cell_features(
    adata1: AnnData, adata2: AnnData, embedding_layer: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Unit feature vectors of both studies' cells: Spearman features of ``X``, or the cosine
    features of ``obsm[embedding_layer]``; errors name the study and the slot."""
    if embedding_layer is None:
        x = _features(spearman_features, adata1.X, "adata1.X")
        y = _features(spearman_features, adata2.X, "adata2.X")
        return x, y
    if not isinstance(embedding_layer, str):
        msg = (
            f"embedding_layer must be None or the name of an obsm entry such as "
            f"'X_pca', got {embedding_layer!r}."
        )
        raise TypeError(msg)
    for adata, name in ((adata1, "adata1"), (adata2, "adata2")):
        if embedding_layer not in adata.obsm:
            msg = (
                f"{argument_text('embedding_layer', embedding_layer)} is not in "
                f"{part(name, 'obsm')}; available: {list(adata.obsm.keys())}."
            )
            raise KeyError(msg)
    e1 = adata1.obsm[embedding_layer]
    e2 = adata2.obsm[embedding_layer]
    e1 = e1.toarray() if sparse.issparse(e1) else np.asarray(e1)
    e2 = e2.toarray() if sparse.issparse(e2) else np.asarray(e2)
    e1 = e1.reshape(e1.shape[0], -1)
    e2 = e2.reshape(e2.shape[0], -1)
    if e1.shape[1] != e2.shape[1]:
        msg = (
            f"{argument_text('embedding_layer', embedding_layer)} has {e1.shape[1]} "
            f"dimensions in {study('adata1')} but {e2.shape[1]} in "
            f"{study('adata2')}; use a shared embedding."
        )
        raise ValueError(msg)
    where = f"obsm[{embedding_layer!r}]"
    x = _features(cosine_features, e1, part("adata1", where))
    y = _features(cosine_features, e2, part("adata2", where))
    return x, y


def build_cost(
    adata1: AnnData,
    adata2: AnnData,
    info: tuple[Mapping, Mapping],
    query_labels: pd.Categorical,
    reference_labels: pd.Categorical,
    label_params: Mapping,
    *,
    embedding_layer: str | None,
    epsilon: float,
    batch_size: int,
    lambda_feature: float,
    lambda_label: float,
) -> tuple[Geometry, LabelModel]:
    """The label model and the geometry of ``init_geom`` (arguments already checked)."""
    query_clusters = list(query_labels.categories)
    reference_clusters = list(reference_labels.categories)
    labels = build_label_model(info, query_clusters, reference_clusters, label_params)
    x, y = cell_features(adata1, adata2, embedding_layer)
    qc = query_labels.codes.astype(np.int64)
    rc = reference_labels.codes.astype(np.int64)
    if label_params["label_distance_mode"] == "auto":
        M, scale = cell_term_summary(x, y, qc, rc, len(query_clusters), len(reference_clusters))
        decision = decide(labels.label_distance.to_numpy(dtype=np.float64), M, scale)
        lambda_feature, lambda_label = decision.lambda_feature, decision.lambda_label
        labels.auto = decision.record()
        logger.info("init_geom(label_distance_mode='auto'): %s.", decision.reason)
    if lambda_feature > 0:
        _warn_uninformative(x, y, embedding_layer)
    L = labels.label_distance
    Lv = L.to_numpy(dtype=np.float32)
    x_aug = np.concatenate([(-0.5 * lambda_feature) * x, (lambda_label * Lv)[qc]], axis=1).astype(
        np.float32
    )
    y_aug = np.concatenate(
        [y, np.eye(len(reference_clusters), dtype=np.float32)[rc]], axis=1
    ).astype(np.float32)
    geom = Geometry(
        x=x,
        y=y,
        x_aug=x_aug,
        y_aug=y_aug,
        offset=0.5 * lambda_feature,
        query_codes=qc,
        ref_codes=rc,
        label_distance=L.to_numpy(dtype=np.float64),
        epsilon=epsilon,
        batch_size=batch_size,
        lambda_feature=lambda_feature,
        lambda_label=lambda_label,
    )
    return geom, labels
