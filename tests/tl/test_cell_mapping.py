"""Per-cell mapping against a dense brute-force float64 plan, on all three aggregation paths;
label transfer onto copies aligned by name; the split flag on simulated studies."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.tl import _ot
from pairot.tl._answers import _cell_mapping
from pairot.tl._ot import _sparse


def _preprocess(query, reference, n_top_genes=200):
    return pr.pp.preprocess_adatas(
        query,
        reference,
        "cell_type",
        "cell_type",
        "sample_id",
        "sample_id",
        n_top_genes=n_top_genes,
    )


@pytest.fixture(scope="module")
def simulated():
    query, reference = pr.datasets.simulate_pair(600, 600, 800, n_cell_types=6, random_state=2)
    return _preprocess(query, reference)


@pytest.fixture(scope="module")
def demo():
    query, reference = pr.datasets.pbmc_demo()
    return _preprocess(query, reference)


def brute_force(dataset_map, active=None):
    """``p_i(c)`` and ``q_j(k)`` from the dense float64 plan ``exp((f_i + g_j - C_ij) / eps)``;
    with ``active`` (a cluster-pair mask), the entries of the other blocks set to 0."""
    geom, solution = dataset_map.geom, dataset_map.ot_solution
    f = np.asarray(solution.f, dtype=np.float64)
    g = np.asarray(solution.g, dtype=np.float64)
    plan = np.exp((f[:, None] + g[None, :] - geom.cost()) / geom.epsilon)
    qc, rc = geom.query_codes, geom.ref_codes
    if active is not None:
        plan = plan * active[qc][:, rc]
    kq, kr = int(qc.max()) + 1, int(rc.max()) + 1
    query = np.stack([plan[:, rc == c].sum(axis=1) for c in range(kr)], axis=1)
    reference = np.stack([plan[qc == k].sum(axis=0) for k in range(kq)], axis=1)
    return query / query.sum(axis=1, keepdims=True), reference / reference.sum(
        axis=1, keepdims=True
    )


def check_against(frame, expected, clusters, names):
    assert list(frame.index) == list(names)
    assert list(frame.columns) == [
        *clusters,
        "best",
        "probability",
        "entropy",
        "entropy_normalized",
    ]
    p = frame[clusters].to_numpy()
    np.testing.assert_allclose(p, expected, atol=2e-5, rtol=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    # best, its probability and the entropy, recomputed from the brute-force distribution
    best = np.asarray(clusters, dtype=object)[np.argmax(expected, axis=1)]
    clear = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2] > 1e-4
    assert (frame["best"].astype(str).to_numpy()[clear] == best[clear]).all()
    assert list(frame["best"].cat.categories) == list(clusters)
    np.testing.assert_allclose(frame["probability"], expected.max(axis=1), atol=2e-5)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(expected > 0, expected * np.log(expected), 0.0).sum(axis=1)
    np.testing.assert_allclose(frame["entropy"], entropy, atol=2e-4)
    np.testing.assert_allclose(
        frame["entropy_normalized"], entropy / np.log(len(clusters)), atol=2e-4
    )


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [
        ("log", {"sparse": False, "kernel_memory_budget": 0}),
        ("kernel", {"sparse": False}),
        ("sparse", {"sparse": True}),
    ],
)
def test_cell_mapping_matches_the_brute_force_plan(simulated, monkeypatch, mode, kwargs):
    if mode == "sparse":  # the active-block mode also on this small problem
        monkeypatch.setattr(_sparse, "MIN_SPARSE_PAIRS", 0)
        monkeypatch.setattr(_sparse, "MAX_ACTIVE_SHARE", 1.0)
    dataset_map = pr.tl.DatasetMap(*simulated)
    dataset_map.init_geom()
    dataset_map.init_problem()
    solution = dataset_map.solve(progress=False, threshold=1e-5, **kwargs)
    assert solution.mode == ("log" if mode == "log" else "kernel")
    assert solution.sparse is (mode == "sparse")
    active = solution.blocks.active.copy() if mode == "sparse" else None
    if mode == "sparse":
        assert not active.all()  # some blocks are skipped, and count as 0
    # brute force before the outputs (they free the kernel); the potentials stay
    query, reference = brute_force(dataset_map, active)
    calls = []
    original = _ot.aggregate
    monkeypatch.setattr(_ot, "aggregate", lambda *a, **k: calls.append(1) or original(*a, **k))
    dataset_map.compute_mapping()
    frames = {side: dataset_map.compute_cell_mapping(side) for side in ("query", "reference")}
    assert len(calls) == 1  # one pass for the mapping and both per-cell sides
    check_against(
        frames["query"], query, dataset_map.reference_clusters, dataset_map.adata1.obs_names
    )
    check_against(
        frames["reference"], reference, dataset_map.query_clusters, dataset_map.adata2.obs_names
    )
    assert frames["query"].columns.name == "reference"
    assert frames["reference"].columns.name == "query"
    if mode == "sparse":  # the skipped blocks' mass is certified negligible
        full_query, _ = brute_force(dataset_map)
        np.testing.assert_allclose(
            frames["query"][dataset_map.reference_clusters], full_query, atol=1e-3
        )
    # an aggregation cached without the per-cell sums (e.g. before the feature) is redone once
    del dataset_map._aggregates["row_cluster"]
    again = dataset_map.compute_cell_mapping()
    assert len(calls) == 2
    pd.testing.assert_frame_equal(again, frames["query"], check_exact=False, atol=1e-5)


def test_reference_side_is_the_column_normalized_tm(simulated):
    """q_j(k) is ``tm[k, j] / sum_k tm[k, j]``: the same sums as the cluster mapping's."""
    dataset_map = pr.tl.DatasetMap(*simulated)
    dataset_map.init_geom()
    dataset_map.init_problem()
    dataset_map.solve(progress=False)
    frame = dataset_map.compute_cell_mapping("reference")
    tm = dataset_map._aggregates["tm"]
    np.testing.assert_allclose(frame[dataset_map.query_clusters].to_numpy(), (tm / tm.sum(0)).T)


def test_cells_without_mass_and_name_clashes():
    sums = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 2.0]])
    frame = _cell_mapping.cell_mapping_frame(
        sums, pd.Index(["a", "b", "c"]), ["best", "entropy", "T"], "reference"
    )
    # every distribution column is prefixed when one cluster is named like a summary column
    assert list(frame.columns) == [
        "p_best",
        "p_entropy",
        "p_T",
        "best",
        "probability",
        "entropy",
        "entropy_normalized",
    ]
    assert list(frame["best"].cat.categories) == ["best", "entropy", "T"]
    np.testing.assert_allclose(
        frame.loc["a", ["p_best", "p_entropy", "p_T"]].astype(float), [0.75, 0.25, 0]
    )
    assert frame.loc["a", "best"] == "best" and frame.loc["c", "best"] == "T"
    assert frame.loc["a", "probability"] == 0.75
    entropy_a = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert frame.loc["a", "entropy"] == pytest.approx(entropy_a)
    assert frame.loc["a", "entropy_normalized"] == pytest.approx(entropy_a / np.log(3))
    # a cell with no plan mass: NaN distribution, best missing
    assert frame.loc["b"].drop("best").isna().all() and pd.isna(frame.loc["b", "best"])
    # ties go to the first cluster in cluster order; an even spread has normalized entropy 1
    tie = _cell_mapping.cell_distributions(np.array([[1.0, 1.0, 1.0]]))
    assert tie["best"][0] == 0 and tie["entropy_normalized"][0] == pytest.approx(1.0)
    # no clash: the names as they are
    plain = _cell_mapping.cell_mapping_frame(sums, pd.Index(["a", "b", "c"]), ["x", "y", "z"], "q")
    assert list(plain.columns[:3]) == ["x", "y", "z"]


def test_transfer_labels_on_a_downsampled_view(demo, tmp_path):
    query, reference = demo
    kept = pr.pp.downsample_indices(query.obs["cell_type"].to_numpy(), 20, random_state=0)
    view = query[kept]
    assert view.is_view
    dataset_map = pr.tl.DatasetMap(view, reference)
    dataset_map.init_geom()
    dataset_map.init_problem()
    dataset_map.solve(progress=False)
    cells = dataset_map.compute_cell_mapping()
    clusters = dataset_map.reference_clusters
    obs_before, view_obs_before = query.obs.copy(), view.obs.copy()

    labelled = dataset_map.transfer_labels()  # onto the fitted view
    assert not labelled.is_view and labelled.n_obs == view.n_obs
    pd.testing.assert_frame_equal(view.obs, view_obs_before)  # caller untouched
    assert "pairot_label" not in view.obs and "pairot_distribution" not in view.obsm
    assert list(labelled.obs["pairot_label"].cat.categories) == clusters
    assert (labelled.obs["pairot_label"].astype(str) == cells["best"].astype(str)).all()
    np.testing.assert_array_equal(labelled.obs["pairot_confidence"], cells["probability"])
    np.testing.assert_array_equal(labelled.obs["pairot_entropy"], cells["entropy"])
    np.testing.assert_array_equal(labelled.obsm["pairot_distribution"], cells[clusters])
    assert list(labelled.uns["pairot_transfer"]["clusters"]) == clusters

    # onto the full study, shuffled: aligned by name, cells outside the fit missing
    order = np.random.default_rng(0).permutation(query.n_obs)
    full = pr.tl.transfer_labels(query[order], cells, key_added="ot")
    pd.testing.assert_frame_equal(query.obs, obs_before)
    fitted = full.obs_names.isin(view.obs_names)
    assert fitted.sum() == view.n_obs and (~fitted).sum() > 0
    assert full.obs["ot_label"][~fitted].isna().all()
    assert np.isnan(full.obs["ot_confidence"][~fitted]).all()
    assert np.isnan(full.obsm["ot_distribution"][~fitted]).all()
    for name in view.obs_names[:10]:
        np.testing.assert_array_equal(
            full[name].obsm["ot_distribution"][0], cells.loc[name, clusters].to_numpy()
        )
        assert full.obs.loc[name, "ot_label"] == cells.loc[name, "best"]
    assert full.uns["ot_transfer"]["params"]["n_cells_missing"] == int((~fitted).sum())

    # the copy survives write_h5ad / read_h5ad, cluster names with "/" included
    assert any("/" in c for c in clusters)
    path = tmp_path / "labelled.h5ad"
    labelled.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_series_equal(back.obs["pairot_label"], labelled.obs["pairot_label"])
    np.testing.assert_array_equal(
        back.obsm["pairot_distribution"], labelled.obsm["pairot_distribution"]
    )
    assert list(back.uns["pairot_transfer"]["clusters"]) == clusters
    # the parquet round trip of the table transfers the same labels
    cells.to_parquet(tmp_path / "cells.parquet")
    again = pr.tl.transfer_labels(view, pd.read_parquet(tmp_path / "cells.parquet"))
    pd.testing.assert_series_equal(again.obs["pairot_label"], labelled.obs["pairot_label"])

    # reference side
    refs = dataset_map.transfer_labels(side="reference")
    assert list(refs.obs["pairot_label"].cat.categories) == dataset_map.query_clusters


def test_transfer_labels_errors(demo):
    query, _ = demo
    cells = pd.DataFrame({"x": [1.0]}, index=["a"])
    with pytest.raises(ValueError, match="lacks the columns"):
        pr.tl.transfer_labels(query, cells)
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        pr.tl.transfer_labels(query, np.zeros(3))
    with pytest.raises(TypeError, match="must be an anndata.AnnData"):
        pr.tl.transfer_labels(query.obs, cells)
    good = _cell_mapping.cell_mapping_frame(np.ones((2, 2)), pd.Index(["a", "a"]), ["x", "y"], "r")
    with pytest.raises(ValueError, match="duplicate cell names"):
        pr.tl.transfer_labels(query, good)


def _fitted(query, reference):
    q, r = _preprocess(query, reference)
    dataset_map = pr.tl.DatasetMap(q, r)
    dataset_map.init_geom()
    dataset_map.init_problem()
    dataset_map.solve(progress=False)
    return dataset_map


def test_split_flag_fires_for_a_coarse_query_on_a_fine_reference():
    """``coarse_reference`` read in reverse: each lineage of the (coarse) query holds the cells
    of three fine reference types, so its cells' best clusters split."""
    fine, coarse = pr.datasets.simulate_pair(
        600, 600, 800, scenario="coarse_reference", n_cell_types=6, random_state=1
    )
    dataset_map = _fitted(coarse, fine)
    summary = dataset_map.cell_mapping_summary()
    assert list(summary.index) == dataset_map.query_clusters == ["L1", "L2"]
    assert summary["split"].all()
    counts = dataset_map.best_cluster_shares()
    for lineage, row in summary.iterrows():
        # both top clusters are fine types of the cluster's own lineage
        assert row["first"].startswith(f"{lineage}_") and row["second"].startswith(f"{lineage}_")
        assert row["second_share"] >= 0.25 and row["second_cells"] >= 5
        assert row["n_mapped"] == row["n_cells"] == counts.loc[lineage].sum()
        shares = counts.loc[lineage].sort_values(ascending=False) / row["n_mapped"]
        assert shares.iloc[0] == pytest.approx(row["first_share"])
        assert shares.iloc[1] == pytest.approx(row["second_share"])
    # a stricter rule does not fire
    assert not dataset_map.cell_mapping_summary(split_share=0.9)["split"].any()


def test_split_flag_stays_off_one_to_one():
    query, reference = pr.datasets.simulate_pair(600, 600, 800, n_cell_types=6, random_state=1)
    dataset_map = _fitted(query, reference)
    summary = dataset_map.cell_mapping_summary()
    assert not summary["split"].any()
    assert (summary["first"].astype(str) == summary.index).all()
    reverse = dataset_map.cell_mapping_summary("reference")
    assert not reverse["split"].any()
    with pytest.raises(ValueError, match="side must be 'query' or 'reference'"):
        dataset_map.cell_mapping_summary("both")
    with pytest.raises(ValueError, match="split_share must lie in"):
        dataset_map.cell_mapping_summary(split_share=0)
    with pytest.raises(TypeError, match="min_cells must be an integer"):
        dataset_map.cell_mapping_summary(min_cells=2.5)


def test_stage_error_before_solve(simulated):
    dataset_map = pr.tl.DatasetMap(*simulated)
    with pytest.raises(pr.tl._dataset_map.StageError, match="call init_geom"):
        dataset_map.compute_cell_mapping()
