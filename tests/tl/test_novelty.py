"""``DatasetMap.unmatched_clusters``: the "no match" flag, its calibration and its API.

The calibration test reruns ``benchmarks/bench_novelty.py``'s setting (1,000 + 1,000 cells,
1,000 genes, 300 HVGs, 8 cell types, ``scenario="missing_type"``) on seeds 0-9 at two
strengths of the missing type: as drawn (``missing_type_similarity=0``) and blended 80% of
the way to its nearest sibling (0.8, the subtlest strength where the target holds). The
figures it asserts are those of benchmarks/README.md.
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.tl._answers._novelty import within_cluster_cost
from pairot.tl._dataset_map import StageError

N_CELLS = 1000
N_GENES = 1000
N_TOP_GENES = 300
SEEDS = range(10)


def _fit(scenario, seed, **kwargs):
    query, reference = pr.datasets.simulate_pair(
        N_CELLS,
        N_CELLS,
        N_GENES,
        scenario=scenario,
        n_cell_types=8,
        random_state=seed,
        **kwargs,
    )
    q, r = pr.pp.preprocess_adatas(
        query,
        reference,
        "cell_type",
        "cell_type",
        "sample_id",
        "sample_id",
        n_top_genes=N_TOP_GENES,
    )
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(epsilon=0.05)
    dm.init_problem()
    dm.solve(progress=False)
    return SimpleNamespace(
        dm=dm, query=query, missing=query.uns["simulation"]["params"].get("missing_type", "")
    )


@pytest.fixture(scope="module")
def calibration():
    out = {}
    for similarity in (0.0, 0.8):
        tables = []
        for seed in SEEDS:
            fit = _fit("missing_type", seed, missing_type_similarity=similarity)
            if similarity == 0 and seed == 0:
                out["fit"] = fit
            table = fit.dm.unmatched_clusters()
            tables.append(table.assign(seed=seed, missing=table.index == fit.missing))
        out[similarity] = pd.concat(tables)
    return out


@pytest.fixture(scope="module")
def fitted(calibration):
    return calibration["fit"]


@pytest.mark.parametrize("similarity", [0.0, 0.8])
def test_missing_type_is_flagged_and_known_types_are_not(calibration, similarity):
    table = calibration[similarity]
    flagged_missing = int(table.loc[table["missing"], "unmatched"].sum())
    false_flags = int(table.loc[~table["missing"], "unmatched"].sum())
    # the target: the missing type flagged in >= 9 of 10 seeds, <= 1 false flag in total
    assert flagged_missing >= 9, table[table["missing"]]
    assert false_flags <= 1, table[~table["missing"] & table["unmatched"]]
    # measured (benchmarks/README.md): 10 of 10 and no false flag at both strengths
    assert flagged_missing == 10
    assert false_flags == 0
    # the score is the rule: flagged exactly when below 1
    assert ((table["score"] < 1) == table["unmatched"]).all()


def test_obvious_missing_type_is_far_from_everything(calibration):
    """As drawn, the missing type keeps about a third of its share and is 3.9-6.5x farther
    from its closest reference cluster than a typical match (benchmarks/README.md)."""
    table = calibration[0.0]
    missing = table[table["missing"]]
    known = table[~table["missing"]]
    assert (missing["retained"] < 0.4).all() and (known["retained"] > 0.8).all()
    assert missing["distance_ratio"].min() > 3.5 > 1.8 > known["distance_ratio"].max()
    assert (missing["label_distance"] > 0.7).all()


def test_relaxed_retained_share_matches_a_separate_unbalanced_solve(fitted):
    """``retained`` against the transported-mass mapping of an unbalanced solve set up by
    hand: the per-cluster row sums give the kept mass of each query cluster."""
    dm = fitted.dm
    table = dm.unmatched_clusters(tau_a=0.9)
    other = pr.tl.DatasetMap(dm.adata1, dm.adata2)
    other.init_geom(epsilon=0.05)
    other.init_problem(tau_a=0.9)
    other.solve(progress=False)
    kept = other.compute_mapping("transported_mass").sum(axis=1)  # mass_k / a(k)
    source = pd.Series(dm.ot_prob.a).groupby(dm.geom.query_codes).sum().to_numpy()
    mass = kept.to_numpy() * source
    expected = (mass / mass.sum()) / source
    np.testing.assert_allclose(table["retained"].to_numpy(), expected, rtol=1e-4)


def test_mapping_and_distance_components_follow_the_outputs(fitted):
    dm = fitted.dm
    table = dm.unmatched_clusters()
    mapping, distance = dm.compute_mapping(), dm.compute_distance()
    assert list(table.index) == list(mapping.index)
    pd.testing.assert_series_equal(
        table["best_reference"], mapping.idxmax(axis=1), check_names=False
    )
    pd.testing.assert_series_equal(table["best_distance"], distance.min(axis=1), check_names=False)
    best = mapping.max(axis=1)
    q = fitted.missing
    assert table.at[q, "mapping_ratio"] == pytest.approx(best[q] / best.drop(q).median())
    assert table.at[q, "unmatched"]
    reason = table.at[q, "reason"]
    assert reason.startswith("no match") and "tau_a=0.95" in reason and "below 60%" in reason
    assert repr(table.at[q, "closest_reference"]) in reason
    assert table.loc[table.index != q, "reason"].str.startswith("matched").all()


def test_within_cluster_cost_matches_a_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codes = np.repeat([0, 1, 2], [12, 17, 1])
    expected = []
    for k in range(3):
        members = x[codes == k]
        pairs = [
            0.5 * (1 - members[i] @ members[j])
            for i in range(len(members))
            for j in range(len(members))
            if i != j
        ]
        expected.append(np.mean(pairs) if pairs else np.nan)
    np.testing.assert_allclose(within_cluster_cost(x, codes, 3), expected)


def test_caller_state_is_left_alone(fitted):
    dm = fitted.dm
    problem, solution = dm.ot_prob, dm.ot_solution
    a = problem.a.copy()
    dm.unmatched_clusters()
    assert dm.ot_prob is problem and dm.ot_solution is solution
    assert dm.ot_prob.tau_a == 1.0
    np.testing.assert_array_equal(dm.ot_prob.a, a)


def test_one_to_one_pair_flags_nothing():
    for seed in (0,):
        fit = _fit("one_to_one", seed)
        table = fit.dm.unmatched_clusters()
        assert not table["unmatched"].any(), table
        assert (table["score"] > 1).all()


def test_stage_error_and_bad_arguments(fitted):
    dm = pr.tl.DatasetMap(fitted.dm.adata1, fitted.dm.adata2)
    with pytest.raises(StageError, match="call init_geom"):
        dm.unmatched_clusters()
    dm.init_geom()
    dm.init_problem()
    with pytest.raises(StageError, match=r"call solve\(\) first"):
        dm.unmatched_clusters()
    solved = fitted.dm
    with pytest.raises(ValueError, match="tau_a must be below 1"):
        solved.unmatched_clusters(tau_a=1.0)
    with pytest.raises(ValueError, match=r"tau_a must lie in \(0, 1\]"):
        solved.unmatched_clusters(tau_a=0.0)
    with pytest.raises(ValueError, match="min_retained must be > 0"):
        solved.unmatched_clusters(min_retained=-0.5)
    with pytest.raises(TypeError, match="max_mapping_ratio must be a positive number"):
        solved.unmatched_clusters(max_mapping_ratio="0.7")


def test_select_similar_clusters_shows_the_flag(fitted):
    dm = fitted.dm
    mapping, distance = dm.compute_mapping(), dm.compute_distance()
    plain = dm.select_similar_clusters(mapping, distance, output="table")
    assert list(plain.columns) == ["query", "reference", "mapping", "distance", "rank"]
    table = dm.unmatched_clusters()
    marked = dm.select_similar_clusters(mapping, distance, output="table", unmatched=table)
    assert list(marked.columns) == [*plain.columns, "unmatched", "reason"]
    q = fitted.missing
    rows = marked[marked["query"] == q]
    assert rows["unmatched"].all() and rows["reason"].str.startswith("no match").all()
    if (plain["query"] == q).any():
        assert len(rows) == (plain["query"] == q).sum()
    else:  # listed once, with no reference
        assert len(rows) == 1 and rows["reference"].isna().all() and rows["rank"].eq(0).all()
    others = marked[marked["query"] != q]
    pd.testing.assert_frame_equal(
        others[plain.columns].reset_index(drop=True),
        plain[plain["query"] != q].reset_index(drop=True),
    )
    assert not others["unmatched"].any() and others["reason"].eq("").all()
    assert list(marked["query"].drop_duplicates()) == [
        c for c in mapping.index if c in set(marked["query"])
    ]
    with pytest.raises(TypeError, match="unmatched must be the DataFrame"):
        dm.select_similar_clusters(mapping, distance, output="table", unmatched={"A": True})
    # the dict (the default, and asked for) has no room for the flag: a clear error
    for output in ({}, {"output": "dict"}):
        with pytest.raises(ValueError, match="unmatched= adds columns .* pass output='table'"):
            dm.select_similar_clusters(mapping, distance, unmatched=table, **output)
    with pytest.raises(ValueError, match="has no row for query cluster"):
        dm.select_similar_clusters(mapping, distance, output="table", unmatched=table.iloc[1:])
