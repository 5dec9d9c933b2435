"""Clusters below ``min_cells``: dropped, merged or kept, each against an independent run."""

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import pairot as pr

TINY = "tiny"


@pytest.fixture(scope="module")
def pair():
    """The demo pair with one query cell of 'Dendritic' relabelled as a one-cell cluster."""
    query, reference = pr.datasets.pbmc_demo()
    labels = query.obs["cell_type"].astype(str).to_numpy().copy()
    labels[np.flatnonzero(labels == "Dendritic")[0]] = TINY
    query.obs["cell_type"] = pd.Categorical(labels)
    return pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=150
    )


def _fit(dm):
    dm.init_geom(batch_size=256)
    dm.init_problem()
    dm.solve(progress=False)
    return dm.compute_mapping(), dm.compute_distance()


def test_drop_equals_a_run_without_those_cells(pair, caplog):
    q, r = pair
    with caplog.at_level(logging.WARNING, logger="pairot"):
        dm = pr.tl.DatasetMap(q, r)
    (message,) = [m for m in caplog.messages if "min_cells" in m]
    assert message.startswith("Query cluster 'tiny' has 1 cell (fewer than min_cells=5)")
    assert "1/9 of the query's" in message and "left out of the transport" in message
    assert dm.small_clusters.to_dict("records") == [
        {"side": "query", "cluster": TINY, "n_cells": 1, "action": "drop", "merged_into": ""}
    ]
    assert TINY not in dm.query_clusters and dm.adata1.n_obs == q.n_obs - 1
    assert q.n_obs == pair[0].n_obs  # the caller's object is untouched
    mapping, distance = _fit(dm)
    without = pr.tl.DatasetMap(q[q.obs["cell_type"] != TINY], r, min_cells=None)
    expected_mapping, expected_distance = _fit(without)
    pd.testing.assert_frame_equal(mapping, expected_mapping)
    pd.testing.assert_frame_equal(distance, expected_distance)


def test_keep_shows_the_consequence(pair, caplog):
    q, r = pair
    with caplog.at_level(logging.WARNING, logger="pairot"):
        kept = pr.tl.DatasetMap(q, r, small_clusters="keep")
    assert any("it is kept (small_clusters='keep')" in m for m in caplog.messages)
    assert TINY in kept.query_clusters
    mapping_kept, _ = _fit(kept)
    mapping_dropped, _ = _fit(pr.tl.DatasetMap(q, r))
    # the one cell takes 1/9 of the query's mass: the other scores move
    others = mapping_dropped.index
    shift = (mapping_kept.loc[others] - mapping_dropped).abs().to_numpy().max()
    assert shift > 0.02, shift
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairot"):
        unchecked = pr.tl.DatasetMap(q, r, min_cells=None)
    assert not [m for m in caplog.messages if "min_cells" in m]
    assert unchecked.small_clusters.empty and TINY in unchecked.query_clusters


def _most_similar_by_hand(adata, column, small):
    X = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    X = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    labels = adata.obs[column].astype(str).to_numpy()
    means = {c: X[labels == c].mean(axis=0) for c in np.unique(labels)}
    scores = {c: np.corrcoef(means[small], v)[0, 1] for c, v in means.items() if c != small}
    return max(scores, key=scores.get)


def test_merge_equals_a_relabelled_run(pair):
    q, r = pair
    before = q.obs.copy()
    dm = pr.tl.DatasetMap(q, r, small_clusters="merge")
    target = _most_similar_by_hand(q, "cell_type", TINY)
    assert dm.small_clusters.loc[0, "merged_into"] == target
    pd.testing.assert_frame_equal(q.obs, before)  # obs unchanged; labels live on the map
    relabelled = q.copy()
    labels = relabelled.obs["cell_type"].astype(str).replace({TINY: target})
    relabelled.obs["cell_type"] = pd.Categorical(labels)
    mapping, distance = _fit(dm)
    expected_mapping, expected_distance = _fit(pr.tl.DatasetMap(relabelled, r, min_cells=None))
    pd.testing.assert_frame_equal(mapping, expected_mapping)
    pd.testing.assert_frame_equal(distance, expected_distance)


def test_reference_side_and_bad_arguments(pair):
    q, r = pair
    dm = pr.tl.DatasetMap(q, r, min_cells=10)  # the reference's 9-cell memory T cluster
    sides = dict(zip(dm.small_clusters["cluster"], dm.small_clusters["side"], strict=True))
    assert sides == {TINY: "query", "CD4+/CD45RO+ Memory": "reference"}
    assert "CD4+/CD45RO+ Memory" not in dm.reference_clusters
    with pytest.raises(TypeError, match="min_cells must be a non-negative integer or None"):
        pr.tl.DatasetMap(q, r, min_cells=2.5)
    with pytest.raises(ValueError, match="small_clusters must be one of"):
        pr.tl.DatasetMap(q, r, small_clusters="remove")
    with pytest.raises(ValueError, match="every cluster of the query"):
        pr.tl.DatasetMap(q, r, min_cells=10**6)
