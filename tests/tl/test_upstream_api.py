"""DatasetMap's upstream pairOT contracts (issue 13): what upstream code calls runs unchanged.

``select_similar_clusters`` with ``None`` thresholds and its dict form (the default), a
one-line repr for ``solve()``, upstream's OTT-JAX keyword arguments, ``ot_prob`` and the
static ``DatasetMap.preprocess_adatas``.
"""

import logging

import numpy as np
import pandas as pd
import pytest

import pairot as pr


@pytest.fixture(scope="module")
def studies():
    query, reference = pr.datasets.pbmc_demo()
    for adata in (query, reference):
        adata.obs = adata.obs.rename(columns={"cell_type": "cell_type_author"})
    return query, reference


@pytest.fixture(scope="module")
def preprocessed(studies):
    # upstream's static method, with its column defaults cell_type_author / sample_id
    return pr.tl.DatasetMap.preprocess_adatas(*studies, n_top_genes=150)


@pytest.fixture(scope="module")
def fitted(preprocessed):
    dm = pr.tl.DatasetMap(*preprocessed)
    dm.init_geom(batch_size=256, epsilon=0.05)
    dm.init_problem(tau_a=1.0, tau_b=1.0)
    dm.solve(progress=False)
    return dm


def test_static_preprocess_adatas_equals_pp(studies, preprocessed):
    expected = pr.pp.preprocess_adatas(
        *studies, "cell_type_author", "cell_type_author", "sample_id", "sample_id", 150
    )
    for e, g in zip(expected, preprocessed, strict=True):
        assert list(e.var_names) == list(g.var_names)
        pd.testing.assert_frame_equal(e.uns["pairot"]["de_ova"], g.uns["pairot"]["de_ova"])
        assert (e.X != g.X).nnz == 0
    with pytest.raises(TypeError, match="unexpected keyword"):
        pr.tl.DatasetMap.preprocess_adatas(*studies, n_top=3)


# --------------------------------------------------------------- select_similar_clusters
def _naive_matches(mapping, distance, t_map, t_dist):
    """For each query cluster, the passing reference clusters by mapping, best first."""
    out = {}
    for q in mapping.index:
        passing = [
            (mapping.loc[q, r], r)
            for r in mapping.columns
            if (t_map is None or mapping.loc[q, r] >= t_map)
            and (t_dist is None or distance.loc[q, r] <= t_dist)
        ]
        # stable: ties keep the column order
        out[q] = [r for _, r in sorted(passing, key=lambda item: -item[0])]
    return out


@pytest.mark.parametrize(
    ("t_map", "t_dist"), [(None, None), (None, 1.0), (0.25, None), (0.1, 0.9), (0.25, 1.0)]
)
def test_select_similar_clusters_thresholds_and_dict_form(fitted, t_map, t_dist):
    mapping = fitted.compute_mapping()
    distance = fitted.compute_distance()
    expected = _naive_matches(mapping, distance, t_map, t_dist)
    select = pr.tl.DatasetMap.select_similar_clusters
    got = select(
        mapping, distance, threshold_mapping=t_map, threshold_distance=t_dist, output="dict"
    )
    assert got == expected
    assert list(got) == list(mapping.index)  # every query cluster, in row order
    table = fitted.select_similar_clusters(mapping, distance, t_map, t_dist, output="table")
    assert len(table) == sum(len(v) for v in expected.values())
    if t_map is None and t_dist is None:
        assert len(table) == mapping.size  # no threshold: every pair, never an empty table
    top = select(mapping, distance, t_map, t_dist, n_top=1, output="dict")
    assert top == {q: refs[:1] for q, refs in expected.items()}


def test_select_similar_clusters_defaults_to_upstreams_dict(fitted):
    mapping = fitted.compute_mapping()
    distance = fitted.compute_distance()
    got = pr.tl.DatasetMap.select_similar_clusters(mapping, distance)  # upstream's call
    assert isinstance(got, dict)
    assert got == pr.tl.DatasetMap.select_similar_clusters(mapping, distance, output="dict")
    assert got == _naive_matches(mapping, distance, 0.25, 1.0)  # the default thresholds
    # the table grouped by query cluster, every query cluster a key, in mapping row order
    table = pr.tl.DatasetMap.select_similar_clusters(mapping, distance, output="table")
    assert isinstance(table, pd.DataFrame)
    grouped = {q: [] for q in mapping.index}
    for q, r in zip(table["query"], table["reference"], strict=True):
        grouped[q].append(r)
    assert got == grouped and list(got) == list(mapping.index)
    assert any(got.values())  # some match passes: the comparison is not vacuous
    # .items() iteration as upstream code does it
    pairs = [(q, r) for q, refs in got.items() for r in refs]
    assert pairs == list(zip(table["query"], table["reference"], strict=True))
    # the bound method on an instance: the same default
    assert fitted.select_similar_clusters(mapping, distance, None, None, 2) == {
        q: list(mapping.loc[q].sort_values(ascending=False, kind="stable").index[:2])
        for q in mapping.index
    }


def test_select_similar_clusters_bad_arguments(fitted):
    mapping = fitted.compute_mapping()
    distance = fitted.compute_distance()
    select = pr.tl.DatasetMap.select_similar_clusters
    with pytest.raises(ValueError, match="output must be 'dict' .* or 'table'"):
        select(mapping, distance, output="list")
    with pytest.raises(TypeError, match="threshold_mapping must be a number or None"):
        select(mapping, distance, threshold_mapping="0.2")
    with pytest.raises(ValueError, match="threshold_distance must be finite or None"):
        select(mapping, distance, threshold_distance=np.nan)
    with pytest.raises(TypeError, match=r"mapping\['mean'\]"):
        select(fitted.compute_mapping(None), distance)


# ------------------------------------------------------------------ solve, ot_prob, repr
def test_solve_returns_a_one_line_summary(fitted):
    solution = fitted.ot_solution
    text = repr(fitted.solve(progress=False))
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith("SinkhornOutput(converged in ")
    assert f"{solution.n_iterations} iterations" in text
    n, m = fitted.adata1.n_obs, fitted.adata2.n_obs
    assert f"{n:,} x {m:,} cells" in text
    np.testing.assert_array_equal(fitted.ot_solution.f, solution.f)  # results still there


def test_ot_prob(preprocessed):
    dm = pr.tl.DatasetMap(*preprocessed)
    with pytest.raises(pr.tl._dataset_map.StageError, match="init_problem"):
        _ = dm.ot_prob
    dm.init_geom(epsilon=0.07)
    dm.init_problem(tau_a=0.95, tau_b=1.0)
    prob = dm.ot_prob
    labels = dm.query_labels.codes
    counts = np.bincount(labels)
    # balanced: each cluster 1/K of the mass, split evenly over its cells
    np.testing.assert_allclose(prob.a, 1.0 / (len(counts) * counts[labels]))
    assert prob.a.sum() == pytest.approx(1.0) and prob.b.sum() == pytest.approx(1.0)
    assert (prob.tau_a, prob.tau_b, prob.epsilon) == (0.95, 1.0, 0.07)
    assert prob.marginals_distribution == "balanced"
    assert "\n" not in repr(prob) and "tau_a=0.95" in repr(prob)
    dm.init_problem(a=np.ones(dm.adata1.n_obs), b=np.arange(1, dm.adata2.n_obs + 1))
    assert dm.ot_prob.marginals_distribution == "given"
    np.testing.assert_allclose(
        dm.ot_prob.b,
        np.arange(1, dm.adata2.n_obs + 1) / (dm.adata2.n_obs * (dm.adata2.n_obs + 1) / 2),
    )


# -------------------------------------------------------------- upstream's OTT-JAX kwargs
def test_ott_arguments_with_a_meaning_are_mapped(preprocessed, fitted, caplog):
    dm = pr.tl.DatasetMap(*preprocessed)
    dm.init_geom(batch_size=256, epsilon=0.05, relative_epsilon=None, scale_cost=1.0)
    dm.init_problem(tau_a=1.0, tau_b=1.0)
    with caplog.at_level(logging.INFO, logger="pairot"):
        solution = dm.solve(
            progress=False, lse_mode=True, norm_error=1, min_iterations=0, recenter_potentials=True
        )
    assert solution.mode == "log"  # lse_mode=True: log-domain updates, no stored kernel
    assert any("lse_mode=True" in m for m in caplog.messages)
    assert fitted.ot_solution.mode != "log"  # the default stores the kernel here
    np.testing.assert_allclose(
        dm.compute_mapping().to_numpy(), fitted.compute_mapping().to_numpy(), atol=2e-4
    )
    with pytest.raises(ValueError, match="contradict"):
        dm.solve(progress=False, lse_mode=True, kernel_memory_budget=2**30)


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("init_geom", {"relative_epsilon": "mean"}, r"relative_epsilon='mean'.*absolute"),
        ("init_geom", {"scale_cost": "max_cost"}, r"scale_cost='max_cost'.*does not rescale"),
        ("init_geom", {"cost_fn": object()}, r"cost_fn=.*embedding_layer"),
        ("init_geom", {"wrong": 1}, r"unexpected keyword argument\(s\) \['wrong'\].*OTT-JAX"),
        ("init_problem", {"tau_c": 1.0}, r"\['tau_c'\].*OTT-JAX.*takes tau_a, tau_b"),
        ("solve", {"momentum": 1.2}, r"momentum=1.2.*does not use OTT-JAX"),
        ("solve", {"progress_fn": print}, r"progress=True"),
        ("solve", {"min_iterations": 50}, r"min_iterations=50.*lower threshold"),
        ("solve", {"lse_mode": "yes"}, r"lse_mode=...\) must be True or False"),
    ],
)
def test_ott_arguments_without_a_meaning_are_named(preprocessed, method, kwargs, match):
    dm = pr.tl.DatasetMap(*preprocessed)
    if method != "init_geom":
        dm.init_geom(batch_size=256)
    if method == "solve":
        dm.init_problem()
    with pytest.raises(TypeError, match=match):
        getattr(dm, method)(**kwargs)
    if method != "init_geom":
        assert dm.geom is not None  # the earlier stage is kept
