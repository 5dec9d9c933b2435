"""End-to-end accuracy on simulated study pairs with a known cluster correspondence.

Each scenario runs the whole pipeline (``preprocess_adatas`` -> ``DatasetMap`` -> Sinkhorn ->
mapping and distance) once, in a module-scoped fixture, on a pair drawn by
``pairot.datasets.simulate_pair`` with a fixed seed, and checks the outputs against the
simulator's truth table (``query.uns["simulation"]["truth"]``).

Simulator settings (all other parameters at their defaults: 2,000 UMI per cell, 4 donors per
study, study batch effect sd 0.2 unless stated, donor effect sd 0.1, type imbalance 10):

- ``one_to_one``: 10 cell types in 3 lineages (4 + 3 + 3), study batch effect sd 0.3.
- ``coarse_reference``: 9 fine query types in 3 lineages of 3, reference labelled by lineage;
  lineage programs of 50 genes and type programs of 10 genes. With the defaults (8 types split
  3 + 3 + 2, programs of 25 and 20 genes) a rare fine type whose top-10 one-vs-all markers are
  all type-specific gets the saturated label distance 1 to every lineage (its markers are
  diluted below the reference's marker filter), and the Spearman term alone, about 0.02 in
  cost against epsilon = 0.05, then spreads its mass over all lineages (seed 4: ``L2_T2``
  maps 0.136 to ``L1`` and 0.134 to its parent ``L2``). Equal lineages also make the balanced
  marginals (1/9 per fine type, 1/3 per lineage) consistent with the truth; with 3 + 3 + 2 the
  two-type lineage must take extra mass from other lineages' weakest-labelled types.
- ``missing_type``: 8 cell types (3 + 3 + 2); seed 3 drops ``L3_T2`` from the reference, whose
  only sibling ``L3_T1`` remains, so the missing type shares its lineage program with a
  reference cluster (label distance 0.5 instead of 1) and is the hard case for detecting it.
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import pairot as pr

N_CELLS = 2000
N_GENES = 1500
N_TOP_GENES = 500
EPSILON = 0.05
BATCH_SIZE = 1024


def _simulate(scenario, random_state, **kwargs):
    return pr.datasets.simulate_pair(
        N_CELLS, N_CELLS, N_GENES, scenario=scenario, random_state=random_state, **kwargs
    )


def _preprocess(query, reference):
    return pr.pp.preprocess_adatas(
        query,
        reference,
        "cell_type",
        "cell_type",
        "sample_id",
        "sample_id",
        n_top_genes=N_TOP_GENES,
    )


def _fit(q, r, *, tau=1.0, **geom_kwargs):
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(epsilon=EPSILON, batch_size=BATCH_SIZE, **geom_kwargs)
    dm.init_problem(tau_a=tau, tau_b=tau)
    solution = dm.solve(progress=False)
    assert bool(solution.converged)
    return SimpleNamespace(
        dm=dm, mapping=dm.compute_mapping(aggregation_method=None), distance=dm.compute_distance()
    )


def _truth(query):
    truth = query.uns["simulation"]["truth"]
    return pd.Series(
        truth["reference_cluster"].to_numpy(dtype=object),
        index=truth["query_cluster"].to_numpy(dtype=object),
    )


def _check_well_posed(query, reference, truth, mapping, *, min_clusters=6):
    """The scenario is not trivially solved: enough clusters, labels as the truth says."""
    assert mapping.shape[0] >= min_clusters
    assert list(mapping.index) == list(truth.index)
    assert set(query.obs["cell_type"].astype(str)) == set(truth.index)
    assert set(truth[truth != ""]) <= set(reference.obs["cell_type"].astype(str))
    assert set(mapping.columns) == set(reference.obs["cell_type"].astype(str))


# ------------------------------------------------------------------------------- one_to_one
@pytest.fixture(scope="module")
def one_to_one():
    query, reference = _simulate("one_to_one", 0, n_cell_types=10, study_effect_sd=0.3)
    q, r = _preprocess(query, reference)
    fit = _fit(q, r)
    fit.query, fit.reference, fit.q, fit.r = query, reference, q, r
    fit.truth = _truth(query)
    _check_well_posed(query, reference, fit.truth, fit.mapping["mean"], min_clusters=10)
    assert (fit.truth == fit.truth.index).all()
    return fit


def test_one_to_one_top1_mapping_is_the_true_cluster(one_to_one):
    mapping = one_to_one.mapping["mean"]
    top1 = mapping.idxmax(axis=1)
    pd.testing.assert_series_equal(top1, one_to_one.truth, check_names=False)
    # the true pair is a clear winner, not a tie resolved by order
    values = mapping.to_numpy()
    diag = np.diag(mapping.loc[one_to_one.truth.index, one_to_one.truth.to_numpy()].to_numpy())
    off = np.where(np.eye(len(diag), dtype=bool), -np.inf, values).max(axis=1)
    assert (diag > 2 * off).all(), (diag, off)


def test_one_to_one_distance_is_smallest_for_true_pairs(one_to_one):
    distance = one_to_one.distance.loc[one_to_one.truth.index, one_to_one.truth.to_numpy()]
    values = distance.to_numpy()
    diag = np.diag(values)
    off = np.where(np.eye(len(diag), dtype=bool), np.inf, values)
    # smallest in each row (per query cluster) and in each column (per reference cluster)
    assert (diag < off.min(axis=1)).all(), (diag, off.min(axis=1))
    assert (diag < off.min(axis=0)).all(), (diag, off.min(axis=0))
    assert ((values >= 0) & (values <= 2)).all()


def test_one_to_one_aggregation_methods_agree_on_top1(one_to_one):
    tops = {method: m.idxmax(axis=1) for method, m in one_to_one.mapping.items()}
    assert set(tops) == {"mean", "jensen_shannon", "transported_mass"}
    for method, top in tops.items():
        pd.testing.assert_series_equal(top, one_to_one.truth, check_names=False, obj=method)


def test_one_to_one_select_similar_clusters_returns_the_true_pairs(one_to_one):
    selected = pr.tl.DatasetMap.select_similar_clusters(
        one_to_one.mapping["mean"], one_to_one.distance, output="table"
    )
    best = selected[selected["rank"] == 1].set_index("query")["reference"]
    assert list(best.index) == list(one_to_one.truth.index)  # every query cluster kept
    pd.testing.assert_series_equal(best, one_to_one.truth, check_names=False)
    # with the default thresholds nothing but the true pairs passes
    assert len(selected) == len(one_to_one.truth)


def test_one_to_one_spearman_features_alone_find_the_true_cluster(one_to_one):
    """Without the label term (lambda_label=0) the cell features still carry the mapping:
    a check of the feature / Sinkhorn path that does not lean on the DE-based distance.

    The plan is then diffuse (feature cost differences of 0.02-0.04 against epsilon = 0.05;
    mean scores about 0.17 for the true cluster against 0.12 for a sibling), and
    ``"jensen_shannon"`` is left out: against a near-uniform profile it favours the largest
    reference clusters (7 of 10 query clusters pick a wrong, large cluster here).
    """
    fit = _fit(one_to_one.q, one_to_one.r, lambda_label=0.0)
    for method in ("mean", "transported_mass"):
        top = fit.mapping[method].idxmax(axis=1)
        pd.testing.assert_series_equal(top, one_to_one.truth, check_names=False, obj=method)
    pd.testing.assert_series_equal(fit.distance.idxmin(axis=1), one_to_one.truth, check_names=False)


# ------------------------------------------------------------------------ coarse_reference
@pytest.fixture(scope="module")
def coarse_reference():
    query, reference = _simulate(
        "coarse_reference", 0, n_cell_types=9, n_markers_lineage=50, n_markers_type=10
    )
    q, r = _preprocess(query, reference)
    fit = _fit(q, r)
    fit.query, fit.reference = query, reference
    fit.truth = _truth(query)
    _check_well_posed(query, reference, fit.truth, fit.mapping["mean"], min_clusters=9)
    assert (query.uns["simulation"]["truth"]["relation"] == "parent").all()
    # several fine types per coarse cluster: every lineage has >= 2 children
    assert fit.truth.value_counts().min() >= 2
    assert len(fit.mapping["mean"].columns) == 3
    return fit


def test_coarse_reference_fine_types_map_to_their_parent(coarse_reference):
    mapping = coarse_reference.mapping["mean"]
    truth = coarse_reference.truth
    pd.testing.assert_series_equal(mapping.idxmax(axis=1), truth, check_names=False)
    for cluster, parent in truth.items():
        others = mapping.loc[cluster].drop(parent)
        # 4 of the 9 fine types have the saturated label distance 1 to every lineage, so their
        # plan is feature-driven and diffuse (about 0.22 to the parent against 0.09)
        assert mapping.loc[cluster, parent] > 1.5 * others.max(), mapping.loc[cluster]


def test_coarse_reference_distance_is_smallest_to_the_parent(coarse_reference):
    pd.testing.assert_series_equal(
        coarse_reference.distance.idxmin(axis=1), coarse_reference.truth, check_names=False
    )


# ---------------------------------------------------------------------------- missing_type
@pytest.fixture(scope="module")
def missing_type_data():
    query, reference = _simulate("missing_type", 3, n_cell_types=8)
    truth = _truth(query)
    absent = list(truth.index[truth == ""])
    assert len(absent) == 1
    (missing,) = absent
    assert missing == query.uns["simulation"]["params"]["missing_type"]
    assert missing in set(query.obs["cell_type"].astype(str))
    assert missing not in set(reference.obs["cell_type"].astype(str))
    # the missing type has a sibling (same lineage) in the reference
    lineage = query.obs.loc[query.obs["cell_type"] == missing, "lineage"].astype(str).unique()
    siblings = set(
        reference.obs.loc[reference.obs["lineage"].astype(str) == lineage[0], "cell_type"]
    )
    assert siblings - {missing}
    q, r = _preprocess(query, reference)
    return SimpleNamespace(query=query, reference=reference, q=q, r=r, truth=truth, missing=missing)


@pytest.fixture(scope="module", params=[0.9, 0.95], ids=lambda tau: f"tau={tau}")
def missing_type(request, missing_type_data):
    data = missing_type_data
    fit = _fit(data.q, data.r, tau=request.param)
    fit.__dict__.update(data.__dict__)
    _check_well_posed(data.query, data.reference, data.truth, fit.mapping["mean"], min_clusters=8)
    return fit


def test_missing_type_has_the_lowest_best_mapping_score(missing_type):
    best = missing_type.mapping["mean"].max(axis=1)
    others = best.drop(missing_type.missing)
    assert best[missing_type.missing] < others.min(), best


def test_missing_type_has_the_highest_best_distance(missing_type):
    best = missing_type.distance.min(axis=1)
    others = best.drop(missing_type.missing)
    assert best[missing_type.missing] > others.max(), best


def test_missing_type_other_clusters_map_to_their_truth(missing_type):
    present = missing_type.truth[missing_type.truth != ""]
    mapping = missing_type.mapping["mean"].loc[present.index]
    pd.testing.assert_series_equal(mapping.idxmax(axis=1), present, check_names=False)
    distance = missing_type.distance.loc[present.index]
    pd.testing.assert_series_equal(distance.idxmin(axis=1), present, check_names=False)
