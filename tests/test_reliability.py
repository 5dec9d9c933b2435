"""Messy-data tests of every public entry point: one test per case of the reliability issue.

Each case either gives a clear error (ValueError, KeyError or TypeError) whose message names
the argument, the bad value and the fix, or works; the chosen behaviour is stated in each
test's docstring. The property-based tests (hypothesis) asked for by the issue live beside the
kernels they test: ``tests/pp/test_sampling.py::test_downsample_properties``,
``tests/pp/test_auroc.py::test_property_naive_pairs`` and
``tests/pp/test_limma.py::test_permuting_genes_permutes_outputs`` /
``test_adding_a_constant_to_a_gene_keeps_its_ova_t``; a few more are at the end of this file.
"""

from __future__ import annotations

import copy
import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

import pairot as pr

CT, SAMPLE = "ct", "sample"
PP_ARGS = (CT, CT, SAMPLE, SAMPLE)


# ----------------------------------------------------------------------------------- helpers
def make_study(
    seed: int,
    *,
    n_cells: int = 120,
    n_genes: int = 40,
    clusters=("A", "B", "C"),
    n_samples: int = 3,
    fmt: str = "dense",
    gene_prefix: str = "G",
) -> ad.AnnData:
    """A small raw-count study: clusters and samples assigned round-robin (every (sample,
    cluster) pair has several cells), cluster ``k`` over-expressing genes ``4k..4k+3``."""
    rng = np.random.default_rng(seed)
    k = len(clusters)
    labels = np.arange(n_cells) % k
    samples = (np.arange(n_cells) // k) % n_samples
    rate = np.tile(rng.gamma(2.0, 1.0, size=n_genes), (k, 1))
    for c in range(k):
        rate[c, 4 * c : 4 * c + 4] *= 10.0
    X = rng.poisson(rate[labels]).astype(np.float32)
    obs = pd.DataFrame(
        {
            CT: pd.Categorical(np.array(clusters, dtype=object)[labels]),
            SAMPLE: pd.Categorical([f"s{s}" for s in samples]),
        },
        index=[f"c{seed}_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"{gene_prefix}{i}" for i in range(n_genes)])
    adata = ad.AnnData(X=sparse.csr_matrix(X) if fmt == "csr" else X, obs=obs, var=var)
    adata.layers["counts"] = adata.X.copy()
    adata.obsm["X_emb"] = rng.normal(size=(n_cells, 5)) + labels[:, None]
    adata.uns["note"] = {"caller": "data"}
    return adata


def make_pair(**kwargs) -> tuple[ad.AnnData, ad.AnnData]:
    return make_study(1, **kwargs), make_study(2, fmt="csr", **kwargs)


def preprocess(a1, a2, **kwargs):
    kwargs.setdefault("n_top_genes", 20)
    # the small studies here (40-48 genes, 20-30 HVGs) are below the default minimum of 50
    # genes for the cell term on purpose; test_too_few_shared_genes tests the minimum itself
    kwargs.setdefault("min_shared_genes", 10)
    return pr.pp.preprocess_adatas(a1, a2, *PP_ARGS, **kwargs)


def fit(q, r, *, epsilon=0.05, tau_a=1.0, tau_b=1.0, **geom):
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(epsilon=epsilon, **geom)
    dm.init_problem(tau_a=tau_a, tau_b=tau_b)
    dm.solve(progress=False)
    return dm


def assert_finite_outputs(dm):
    sol = dm.ot_solution
    assert np.isfinite(np.asarray(sol.f)).all() and np.isfinite(np.asarray(sol.g)).all()
    for frame in dm.compute_mapping(None).values():
        assert np.isfinite(frame.to_numpy()).all()
    assert np.isfinite(dm.compute_distance().to_numpy()).all()


def dense(X):
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def snapshot(adata):
    return {
        "X": dense(adata.X).copy(),
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "uns": copy.deepcopy(dict(adata.uns)),
        "layers": {k: dense(v).copy() for k, v in adata.layers.items()},
        "obsm": {k: np.asarray(v).copy() for k, v in adata.obsm.items()},
        "obs_names": list(adata.obs_names),
        "var_names": list(adata.var_names),
        "is_view": adata.is_view,
    }


def assert_unchanged(adata, before):
    after = snapshot(adata)
    np.testing.assert_array_equal(after["X"], before["X"])
    pd.testing.assert_frame_equal(after["obs"], before["obs"])
    pd.testing.assert_frame_equal(after["var"], before["var"])
    assert after["uns"].keys() == before["uns"].keys()
    for key, value in before["uns"].items():
        if isinstance(value, dict) and "de_ova" in value:
            for name in ("de_ova", "de_ava"):
                pd.testing.assert_frame_equal(after["uns"][key][name], value[name])
        else:
            assert after["uns"][key] == value
    assert after["layers"].keys() == before["layers"].keys()
    for key, value in before["layers"].items():
        np.testing.assert_array_equal(after["layers"][key], value)
    for key, value in before["obsm"].items():
        np.testing.assert_array_equal(after["obsm"][key], value)
    assert after["obs_names"] == before["obs_names"]
    assert after["var_names"] == before["var_names"]
    assert after["is_view"] == before["is_view"]


@pytest.fixture(scope="module")
def pair():
    return make_pair()


@pytest.fixture(scope="module")
def processed(pair):
    return preprocess(*pair)


# ------------------------------------------------------------------- X is not raw counts
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1.0, r"adata2\.X contains negative values \(min -1\.0\).*raw UMI counts"),
        (np.nan, r"adata2\.X contains NaN or infinite values.*raw UMI counts"),
        (np.inf, r"adata2\.X contains NaN or infinite values.*raw UMI counts"),
    ],
)
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_x_not_raw_counts(pair, value, match, fmt):
    """Negative, NaN or infinite values: ValueError asking for raw counts (from
    both preprocess_adatas and rank_genes_limma)."""
    bad = pair[1].copy()
    X = dense(bad.X)
    X[3, 2] = value
    bad.X = sparse.csr_matrix(X) if fmt == "csr" else X
    with pytest.raises(ValueError, match=match):
        preprocess(pair[0], bad)
    with pytest.raises(ValueError, match=match.replace("adata2", "adata")):
        pr.pp.rank_genes_limma(bad, CT, SAMPLE)


def test_log_normalized_x_is_rejected(pair):
    """Typical log-normalized data (scanpy normalize_total + log1p): ValueError naming the
    layer to use instead."""
    lognorm = pair[0].copy()
    lognorm.X = np.log1p(dense(lognorm.X) / dense(lognorm.X).sum(1, keepdims=True) * 1e4)
    with pytest.raises(ValueError, match=r"log-transformed.*layers\['counts'\]"):
        preprocess(lognorm, pair[1])


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float32, np.float16, np.int32, np.int64, np.uint16]
)
def test_float_or_int_dtype_holding_integers_works(pair, processed, dtype):
    """Counts in any numeric dtype give the same result as the float32 original (float16 is
    read as float32, exactly; scipy.sparse has no float16, so here it is dense)."""
    a1 = pair[0].copy()
    a1.X = dense(a1.X).astype(dtype)
    q, _ = preprocess(a1, pair[1])
    assert list(q.var_names) == list(processed[0].var_names)
    pd.testing.assert_frame_equal(q.uns["pairot"]["de_ova"], processed[0].uns["pairot"]["de_ova"])


@pytest.mark.parametrize(
    "convert", [sparse.csr_matrix, sparse.csc_matrix, sparse.csr_array, np.asarray]
)
def test_x_formats_give_the_same_result(pair, processed, convert):
    """Dense arrays, CSR and CSC matrices and scipy sparse arrays all work alike."""
    a1 = pair[0].copy()
    a1.X = convert(dense(a1.X))
    q, r = preprocess(a1, pair[1])
    pd.testing.assert_frame_equal(q.uns["pairot"]["de_ova"], processed[0].uns["pairot"]["de_ova"])
    np.testing.assert_array_equal(dense(q.X), dense(processed[0].X))
    assert_finite_outputs(fit(q, r))


def test_x_missing_or_not_numbers(pair):
    """X is None (counts only in a layer): ValueError naming where the counts should go; a
    matrix passed instead of an AnnData: TypeError."""
    a1 = pair[0].copy()
    a1.X = None
    with pytest.raises(ValueError, match=r"adata1\.X is None.*layers\['counts'\]"):
        preprocess(a1, pair[1])
    with pytest.raises(TypeError, match=r"adata1 must be an anndata\.AnnData, got ndarray"):
        preprocess(dense(pair[0].X), pair[1])


# ------------------------------------------------------------------------------ obs columns
@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("cell_type", CT, SAMPLE, SAMPLE), r"cell_type_column_adata1='cell_type' is not a"),
        ((CT, "celltype", SAMPLE, SAMPLE), r"cell_type_column_adata2='celltype' is not a"),
        ((CT, CT, "donor", SAMPLE), r"sample_column_adata1='donor' is not a column of adata1"),
        ((CT, CT, SAMPLE, "donor"), r"sample_column_adata2='donor' is not a column of adata2"),
    ],
)
def test_missing_obs_column(pair, args, match):
    """KeyError naming the argument, the column and the columns that exist."""
    with pytest.raises(KeyError, match=match) as info:
        pr.pp.preprocess_adatas(*pair, *args)
    assert "available: 'ct', 'sample'" in str(info.value)
    with pytest.raises(KeyError, match=r"cluster_label='cell_type'.*available: 'ct', 'sample'"):
        pr.pp.rank_genes_limma(pair[0], "cell_type", SAMPLE)


def test_same_column_for_clusters_and_samples(pair):
    """One column cannot be both the cluster and the sample column."""
    with pytest.raises(ValueError, match=r"cell_type_column_adata1 and sample_column_adata1"):
        pr.pp.preprocess_adatas(*pair, CT, CT, CT, SAMPLE)


@pytest.mark.parametrize("column", [CT, SAMPLE])
def test_nan_labels_or_samples(pair, column):
    """Missing cluster or sample labels: ValueError with the count and the fix."""
    a1 = pair[0].copy()
    values = a1.obs[column].astype(object).to_numpy()
    values[[0, 5]] = np.nan
    a1.obs[column] = values
    with pytest.raises(ValueError, match=rf"adata1\.obs\['{column}'\] has 2 missing values"):
        preprocess(a1, pair[1])


def test_unused_categories_are_dropped_with_a_log_message(pair, processed, caplog):
    """Unused categories of the cluster and sample columns are dropped (INFO log), results are
    the same as without them; DatasetMap does the same for its label column."""
    a1 = pair[0].copy()
    a1.obs[CT] = a1.obs[CT].cat.add_categories(["ghost"])
    a1.obs[SAMPLE] = a1.obs[SAMPLE].cat.add_categories(["s_unused"])
    with caplog.at_level(logging.INFO, logger="pairot"):
        q, _ = preprocess(a1, pair[1])
    assert "Dropping unused categories of adata1.obs['ct']: ['ghost']" in caplog.text
    assert "s_unused" in caplog.text
    assert list(q.obs[CT].cat.categories) == ["A", "B", "C"]
    pd.testing.assert_frame_equal(q.uns["pairot"]["de_ova"], processed[0].uns["pairot"]["de_ova"])

    subset = processed[0][processed[0].obs[CT] != "B"].copy()
    subset.obs[CT] = subset.obs[CT].cat.set_categories(["A", "B", "C"])  # "B" unused
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pairot"):
        dm = pr.tl.DatasetMap(subset, processed[1])
    assert "Dropping unused categories of adata1.obs['ct']: ['B']" in caplog.text
    assert dm.query_clusters == ["A", "C"]


def test_duplicated_var_names(pair):
    """ValueError listing duplicates and the fix (var_names_make_unique)."""
    a1 = pair[0].copy()
    a1.var_names = ["G0", "G0", *a1.var_names[2:]]
    with pytest.raises(ValueError, match=r"adata1\.var_names has duplicated.*\['G0'\].*"):
        preprocess(a1, pair[1])
    with pytest.raises(ValueError, match=r"var_names_make_unique\(\)"):
        pr.pp.rank_genes_limma(a1, CT, SAMPLE)


def test_anndata_views_work(pair, processed):
    """Views (cell and gene subsets) are accepted and give the result of their copies."""
    v1 = pair[0][pair[0].obs[SAMPLE] != "s9", :]  # all cells, still a view
    v2 = pair[1][:, list(pair[1].var_names)]
    assert v1.is_view and v2.is_view
    q, r = preprocess(v1, v2)
    assert v1.is_view and v2.is_view
    pd.testing.assert_frame_equal(q.uns["pairot"]["de_ova"], processed[0].uns["pairot"]["de_ova"])
    pd.testing.assert_frame_equal(r.uns["pairot"]["de_ava"], processed[1].uns["pairot"]["de_ava"])
    half = pair[0][::2]
    de_ova, _ = pr.pp.rank_genes_limma(half, CT, SAMPLE, result_format="long")
    expected, _ = pr.pp.rank_genes_limma(half.copy(), CT, SAMPLE, result_format="long")
    pd.testing.assert_frame_equal(de_ova, expected)


@pytest.mark.parametrize("axis", ["cells", "genes"])
def test_empty_study(pair, axis):
    """A study with 0 cells or 0 genes: ValueError naming the study and its shape."""
    empty = pair[1][:0] if axis == "cells" else pair[1][:, :0]
    shape = "0 cells x 40 genes" if axis == "cells" else "120 cells x 0 genes"
    with pytest.raises(ValueError, match=rf"adata2 is empty \({shape}\)"):
        preprocess(pair[0], empty)
    with pytest.raises(ValueError, match=rf"adata is empty \({shape}\)"):
        pr.pp.rank_genes_limma(empty, CT, SAMPLE)


def test_study_with_a_single_cluster(pair):
    """preprocess: ValueError (DE needs two clusters) naming the study and its one cluster.
    DatasetMap on a one-cluster subset of a preprocessed study works."""
    one = pair[1][pair[1].obs[CT] == "A"]
    with pytest.raises(ValueError, match=r"adata2 has a single cluster \('A'\).*at least two"):
        preprocess(pair[0], one)
    with pytest.raises(ValueError, match=r"cluster_label='ct'"):
        pr.pp.rank_genes_limma(one, CT, SAMPLE)


def test_dataset_map_on_a_single_query_cluster(processed):
    q, r = processed
    dm = fit(q[q.obs[CT] == "B"], r)
    assert dm.query_clusters == ["B"]
    assert_finite_outputs(dm)
    # balanced marginals spread B over every reference cluster; the distance still tells
    assert dm.compute_distance().idxmin(axis=1).tolist() == ["B"]


def test_cluster_with_one_cell(pair, caplog):
    """Works: a one-cell cluster forms no pseudobulk profile, its limma rows (one-vs-all and
    every all-vs-all pair) are NaN with a warning, its AUROC is still computed; it has no
    markers, so its label distance row is 1, and DatasetMap maps it when asked to keep it
    (by default it is left out of the transport, with a warning: it is below min_cells)."""
    a1 = pair[0].copy()
    a1.obs[CT] = a1.obs[CT].cat.add_categories(["lonely"])
    a1.obs.iloc[0, a1.obs.columns.get_loc(CT)] = "lonely"
    with caplog.at_level(logging.WARNING, logger="pairot"):
        q, r = preprocess(a1, pair[1])
    assert "adata1: clusters ['lonely'] have no (sample, cluster) pair with >= 2 cells" in (
        caplog.text
    )
    ova = q.uns["pairot"]["de_ova"]
    lonely = ova[ova["cluster"] == "lonely"]
    assert lonely[["logFC", "P.Value", "adj.P.Val"]].isna().all().all()
    assert lonely["auroc"].notna().all()
    other = ova[ova["cluster"] == "A"]
    assert other[["logFC", "P.Value", "adj.P.Val", "auroc"]].notna().all().all()
    ava = q.uns["pairot"]["de_ava"]
    assert ava[ava["versus"] == "lonely"]["logFC"].isna().all()
    with caplog.at_level(logging.WARNING, logger="pairot"):
        dropped = pr.tl.DatasetMap(q, r)
    assert "Query cluster 'lonely' has 1 cell (fewer than min_cells=5)" in caplog.text
    assert "lonely" not in dropped.query_clusters
    dm = pr.tl.DatasetMap(q, r, min_cells=None)
    dm.init_geom()
    dm.init_problem()
    dm.solve(progress=False)
    assert (dm.label_distance.loc["lonely"] == 1.0).all()
    assert_finite_outputs(dm)


def test_cluster_present_in_one_sample_only(pair):
    """Works when that sample holds >= 2 of its cells: one profile for the cluster, finite
    limma statistics (the residual degrees of freedom come from the other clusters)."""
    a1 = pair[0].copy()
    only = (a1.obs[CT] == "C") & (a1.obs[SAMPLE] != "s0")
    a1 = a1[~only].copy()
    assert set(a1.obs.loc[a1.obs[CT] == "C", SAMPLE]) == {"s0"}
    q, r = preprocess(a1, pair[1])
    ova = q.uns["pairot"]["de_ova"]
    assert ova[["logFC", "P.Value", "adj.P.Val", "auroc"]].notna().all().all()
    ava = q.uns["pairot"]["de_ava"]
    assert ava[["logFC", "P.Value"]].notna().all().all()
    assert_finite_outputs(fit(q, r))


ONE_SAMPLE = (
    r"^adata2 has only one sample \(donor\) in sample_column_adata2='sample', and pseudobulk "
    r"differential expression needs at least two: give sample_column_adata2 the column that "
    r"identifies the donors or batches"
)


@pytest.mark.parametrize(
    ("n_samples", "clusters", "match"),
    [
        # one sample: 3 profiles for 3 clusters, all-vs-all limma needs 4
        (1, ("A", "B", "C"), ONE_SAMPLE + r".*limma needs at least 4 .* one sample gives 3"),
        # one sample, two clusters: 2 profiles, one-vs-all limma needs 3
        (1, ("A", "B"), ONE_SAMPLE + r".*limma needs at least 3 .* one sample gives 2"),
    ],
)
def test_too_few_pseudobulk_profiles(pair, n_samples, clusters, match):
    """ValueError from preprocess_adatas that starts with the problem in plain words and what
    to do (the sample column, more samples), then names the count and what limma needs;
    raised before any expensive step."""
    few = make_study(2, n_samples=n_samples, clusters=clusters)
    with pytest.raises(ValueError, match=match) as info:
        preprocess(pair[0], few)
    assert "sample_column_adata2='sample'" in str(info.value)
    assert "more samples" in str(info.value)


def test_every_cluster_in_one_sample_only(pair):
    """Two samples, but each cluster sits in one of them: 2 profiles, limma needs 3. The
    message starts with what to do."""
    a2 = make_study(2, n_samples=2, clusters=("A", "B"))
    a2.obs[SAMPLE] = pd.Categorical(np.where(a2.obs[CT] == "A", "s0", "s1"))
    with pytest.raises(
        ValueError, match=r"^adata2 has too few samples \(donors\) per cluster"
    ) as info:
        preprocess(pair[0], a2)
    message = str(info.value)
    assert "give sample_column_adata2 a column with more samples" in message
    assert "at least one cluster has >= 2 cells in each of two samples" in message
    assert "limma needs at least 3 pseudobulk profiles for 2 clusters" in message
    assert "and has 2" in message
    assert message.index("give sample_column_adata2") < message.index("limma")


def test_fewer_than_two_clusters_with_profiles(pair):
    """Two clusters but only one has a (sample, cluster) pair with >= 2 cells."""
    a2 = make_study(2, n_samples=3, clusters=("A", "B"))
    keep = (a2.obs[CT] == "A") | (np.arange(a2.n_obs) == 1)
    with pytest.raises(
        ValueError,
        match=r"^adata2 has only 1 cluster with at least 2 cells in one sample \(donor\), and "
        r"differential expression needs two such clusters: check cell_type_column_adata2='ct' "
        r"and sample_column_adata2='sample'",
    ):
        preprocess(pair[0], a2[keep])


def test_no_shared_genes(pair):
    """ValueError asking to check the gene identifiers."""
    other = make_study(2, gene_prefix="ENSG")
    with pytest.raises(ValueError, match=r"share no gene.*same gene identifiers"):
        preprocess(pair[0], other)


def test_too_few_shared_genes(pair):
    """Below min_shared_genes (default 50) a ValueError with the numbers and the way out: the
    cell term would carry no information (the pair shares its 40 genes)."""
    with pytest.raises(
        ValueError,
        match=r"^adata1 and adata2 share only 40 genes .* fewer than min_shared_genes=50: .*"
        r"carries no information.* pass min_shared_genes=40\.$",
    ):
        pr.pp.preprocess_adatas(*pair, *PP_ARGS)


def test_fewer_shared_genes_than_n_top_genes(pair, caplog):
    """Warning, and all shared genes are used (at or above min_shared_genes, here lowered)."""
    with caplog.at_level(logging.WARNING, logger="pairot"):
        q, r = preprocess(*pair, n_top_genes=500)
    assert "n_top_genes=500 is not smaller than the 40 shared genes" in caplog.text
    assert q.n_vars == r.n_vars == 40


# ----------------------------------------------------------------------------- DatasetMap
def test_dataset_map_on_raw_inputs(pair, processed):
    """Inputs not made by preprocess_adatas (no or incomplete uns['pairot'])."""
    with pytest.raises(ValueError, match=r"adata1\.uns\['pairot'\] is missing.*preprocess_adatas"):
        pr.tl.DatasetMap(*pair)
    q = processed[0].copy()
    del q.uns["pairot"]["de_ava"]
    with pytest.raises(ValueError, match=r"adata1\.uns\['pairot'\] lacks 'de_ava'"):
        pr.tl.DatasetMap(q, processed[1])
    r = processed[1].copy()
    r.uns["pairot"]["de_ova"] = "not a table"
    with pytest.raises(TypeError, match=r"adata2\.uns\['pairot'\]\['de_ova'\] must be a"):
        pr.tl.DatasetMap(processed[0], r)
    q = processed[0].copy()
    q.obs = q.obs.rename(columns={CT: "renamed"})
    with pytest.raises(KeyError, match=r"adata1\.obs has no column 'ct'.*available: 'renamed'"):
        pr.tl.DatasetMap(q, processed[1])
    with pytest.raises(TypeError, match=r"adata2 must be an anndata\.AnnData, got DataFrame"):
        pr.tl.DatasetMap(processed[0], processed[1].obs)


def test_dataset_map_genes_differ_or_reordered(processed):
    q, r = processed
    with pytest.raises(ValueError, match=r"same genes in a different order"):
        pr.tl.DatasetMap(q, r[:, ::-1])
    with pytest.raises(ValueError, match=r"genes only in adata1: \['"):
        pr.tl.DatasetMap(q, r[:, 1:])


def test_dataset_map_missing_embedding_layer(processed):
    dm = pr.tl.DatasetMap(*processed)
    with pytest.raises(KeyError, match=r"embedding_layer='X_pca' is not in adata1\.obsm.*X_emb"):
        dm.init_geom(embedding_layer="X_pca")
    dm.init_geom(embedding_layer="X_emb")  # present: works
    assert dm.geom.x.shape == (processed[0].n_obs, 5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": 0}, ValueError, r"epsilon must be > 0, got 0"),
        ({"epsilon": -0.05}, ValueError, r"epsilon must be > 0, got -0\.05"),
        ({"epsilon": float("nan")}, ValueError, r"epsilon must be a finite number, got nan"),
        ({"epsilon": "0.05"}, TypeError, r"epsilon must be a positive number, got '0\.05'"),
        ({"batch_size": 0}, ValueError, r"batch_size must be > 0, got 0"),
        ({"batch_size": -3}, ValueError, r"batch_size must be > 0, got -3"),
        ({"batch_size": 10.5}, TypeError, r"batch_size must be a positive integer, got 10\.5"),
        ({"lambda_label": -1}, ValueError, r"lambda_label must be a finite number >= 0"),
    ],
)
def test_init_geom_bad_arguments(processed, kwargs, error, match):
    dm = pr.tl.DatasetMap(*processed)
    with pytest.raises(error, match=match):
        dm.init_geom(**kwargs)


@pytest.mark.parametrize("tau", [0, -0.5, 1.01, 2, float("nan")])
@pytest.mark.parametrize("argument", ["tau_a", "tau_b"])
def test_tau_outside_unit_interval(processed, tau, argument):
    dm = pr.tl.DatasetMap(*processed)
    dm.init_geom()
    with pytest.raises(ValueError, match=rf"{argument} must lie in \(0, 1\], got {tau}"):
        dm.init_problem(**{argument: tau})


def test_unknown_aggregation_method_or_marginals(processed):
    dm = pr.tl.DatasetMap(*processed)
    dm.init_geom()
    with pytest.raises(ValueError, match=r"marginals_distribution must be one of .*'weird'"):
        dm.init_problem(marginals_distribution="weird")
    dm.init_problem()
    dm.solve(progress=False)
    with pytest.raises(ValueError, match=r"aggregation_method must be one of .*'median'"):
        dm.compute_mapping("median")


@pytest.mark.parametrize(
    ("which", "values", "match"),
    [
        ("a", np.ones(3), r"a must have one weight per query cell, shape \(120,\), got \(3,\)"),
        ("b", np.ones((120, 1)), r"b must have one weight per reference cell"),
        ("a", np.r_[-1.0, np.ones(119)], r"a has 1 negative weight\(s\) \(min -1\.0\)"),
        ("b", np.r_[np.nan, np.ones(119)], r"b has 1 NaN or infinite weight\(s\)"),
        ("a", np.zeros(120), r"a sums to 0\.0; give it a positive total mass"),
    ],
)
def test_bad_user_marginals(processed, which, values, match):
    dm = pr.tl.DatasetMap(*processed)
    dm.init_geom()
    with pytest.raises(ValueError, match=match):
        dm.init_problem(**{which: values})


def test_user_marginals_are_normalized(processed):
    dm = pr.tl.DatasetMap(*processed)
    dm.init_geom()
    dm.init_problem(a=np.full(120, 3.0), b=np.arange(120) + 1.0)
    np.testing.assert_allclose(dm.ot_prob.a.sum(), 1.0)
    np.testing.assert_allclose(dm.ot_prob.b.sum(), 1.0)


def test_steps_out_of_order(processed):
    """Each step names the step to call first; re-running an earlier step clears later ones."""
    dm = pr.tl.DatasetMap(*processed)
    with pytest.raises(ValueError, match=r"call init_geom\(\) first"):
        dm.init_problem()
    for call in (dm.solve, dm.compute_mapping, dm.compute_distance):
        with pytest.raises(ValueError, match=r"call init_geom\(\) first"):
            call()
    with pytest.raises(RuntimeError, match=r"call init_geom\(\) first"):
        _ = dm.label_distance
    dm.init_geom()
    with pytest.raises(ValueError, match=r"call init_problem\(\) first"):
        dm.solve()
    with pytest.raises(ValueError, match=r"call init_problem\(\) first"):
        dm.compute_mapping()
    dm.init_problem()
    for call in (dm.compute_mapping, dm.compute_distance):
        with pytest.raises(ValueError, match=r"call solve\(\) first"):
            call()
    dm.solve(progress=False)
    dm.compute_mapping()
    dm.init_geom(epsilon=0.1)  # a new geometry invalidates problem and solution
    with pytest.raises(ValueError, match=r"call init_problem\(\) first"):
        dm.compute_mapping()


def test_dataset_map_bad_features(processed):
    """Non-finite values in X or in the embedding: error naming where they are."""
    q = processed[0].copy()
    X = dense(q.X).astype(np.float32)
    X[0, 0] = np.nan
    q.X = X
    with pytest.raises(ValueError, match=r"adata1\.X: .*non-finite values \(1 NaN"):
        pr.tl.DatasetMap(q, processed[1]).init_geom()
    r = processed[1].copy()
    r.obsm["X_emb"] = r.obsm["X_emb"].copy()
    r.obsm["X_emb"][2, 1] = np.inf
    with pytest.raises(ValueError, match=r"adata2\.obsm\['X_emb'\]: .*1 infinite"):
        pr.tl.DatasetMap(processed[0], r).init_geom(embedding_layer="X_emb")
    with pytest.raises(TypeError, match=r"embedding_layer must be None or the name"):
        pr.tl.DatasetMap(*processed).init_geom(embedding_layer=0)


@pytest.mark.parametrize("labels", ["A", np.zeros((4, 2)), pd.DataFrame({"ct": ["a", "b"]})])
def test_downsample_rejects_labels_that_are_not_one_per_cell(labels):
    with pytest.raises(ValueError, match=r"labels must be one label per cell \(1-d\)"):
        pr.pp.downsample_indices(labels, n_samples=2)


# --------------------------------------------------------------------------- cluster names
NASTY = ["CD4+/CD45RA+ T", "B cell", "NK ñ-γ", "10", "2", "1.5"]


def test_nasty_cluster_names_survive_h5ad(tmp_path):
    """Names with /, +, spaces, unicode or that look like numbers work end to end and survive
    write_h5ad / read_h5ad (labels, DE tables, DatasetMap outputs, parquet)."""
    a1 = make_study(1, clusters=NASTY, n_cells=180, n_genes=48)
    a2 = make_study(2, clusters=NASTY, n_cells=180, n_genes=48, fmt="csr")
    q, r = preprocess(a1, a2, n_top_genes=30)
    expected = sorted(NASTY)
    assert list(q.obs[CT].cat.categories) == expected
    back = []
    for i, out in enumerate((q, r)):
        path = tmp_path / f"{i}.h5ad"
        out.write_h5ad(path)
        back.append(ad.read_h5ad(path))
        assert list(back[-1].obs[CT].cat.categories) == expected
        for key in ("de_ova", "de_ava"):
            pd.testing.assert_frame_equal(back[-1].uns["pairot"][key], out.uns["pairot"][key])
    dm = fit(*back)
    mapping = dm.compute_mapping()
    assert list(mapping.index) == expected and list(mapping.columns) == expected
    assert mapping.idxmax(axis=1).tolist() == expected  # each cluster finds its namesake
    assert set(dm.DEGs_label_distance["CD4+/CD45RA+ T"]) == set(expected)
    mapping.to_parquet(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), mapping)


@pytest.mark.parametrize("categorical", [False, True])
def test_numeric_cluster_labels_become_strings_in_numeric_order(pair, categorical, tmp_path):
    """An obs column of numbers (1, 2, 10) becomes string labels "1", "2", "10", in the
    numeric order of the original values, whether the column is categorical or not."""
    codes = np.array([1, 2, 10])[pair[0].obs[CT].cat.codes.to_numpy()]
    a1 = pair[0].copy()
    a1.obs[CT] = pd.Categorical(codes) if categorical else codes
    a2 = pair[1].copy()
    a2.obs[CT] = pd.Categorical(codes[: a2.n_obs]) if categorical else codes[: a2.n_obs]
    q, r = preprocess(a1, a2)
    assert list(q.obs[CT].cat.categories) == ["1", "2", "10"]
    assert list(q.uns["pairot"]["de_ova"]["cluster"].cat.categories) == ["1", "2", "10"]
    q.write_h5ad(tmp_path / "q.h5ad")
    q = ad.read_h5ad(tmp_path / "q.h5ad")
    dm = fit(q, r)
    assert list(dm.compute_mapping().index) == ["1", "2", "10"]
    de_ova, _ = pr.pp.rank_genes_limma(a1, CT, SAMPLE, result_format="long")
    assert list(de_ova["cluster"].cat.categories) == ["1", "2", "10"]
    de_res_ova, de_res_ava = pr.pp.rank_genes_limma(a1, CT, SAMPLE)  # upstream's dicts
    assert list(de_res_ova) == list(de_res_ava) == ["1", "2", "10"]


# ------------------------------------------------------------------ caller objects unchanged
def test_caller_objects_never_modified(pair):
    """X, obs, var, uns, layers, obsm of every input are the same after every public call,
    also for views (which stay views)."""
    a1 = pair[0][::1]  # a view
    a2 = pair[1].copy()
    before = [snapshot(a) for a in (a1, a2)]
    q, r = preprocess(a1, a2, filter_genes=True)
    pr.pp.rank_genes_limma(a1, CT, SAMPLE)
    pr.pp.downsample_indices(a1.obs[CT], n_samples=5)
    for a, b in zip((a1, a2), before):
        assert_unchanged(a, b)
    qv = q[pr.pp.downsample_indices(q.obs[CT].to_numpy(), n_samples=30), :]
    after_pp = [snapshot(a) for a in (qv, r)]
    dm = fit(qv, r)
    dm.compute_mapping(None)
    dm.compute_distance()
    dm.compute_distance(n_samples=10)
    dm.init_geom(embedding_layer="X_emb")
    _ = dm.label_distance, dm.DEGs_label_distance["A"]
    for a, b in zip((qv, r), after_pp):
        assert_unchanged(a, b)


# -------------------------------------------------------------------- numerically hard cases
def test_tiny_epsilon_stays_finite(processed):
    """epsilon = 0.005 (cost / epsilon up to 400): finite potentials, mapping and distance."""
    dm = fit(*processed, epsilon=0.005)
    assert_finite_outputs(dm)
    assert dm.compute_mapping().idxmax(axis=1).tolist() == ["A", "B", "C"]


def test_identical_cells(pair):
    """A cluster of identical cells, and cells that are identical across both studies: all
    steps stay finite."""
    a1 = pair[0].copy()
    X = dense(a1.X)
    is_b = (a1.obs[CT] == "B").to_numpy()
    X[is_b] = X[np.flatnonzero(is_b)[0]]
    a1.X = X
    a2 = pair[1].copy()
    a2.X = X.copy()  # the reference is the same cells
    a2.obs = a1.obs.copy()
    a2.obs_names = [f"r{i}" for i in range(a2.n_obs)]
    q, r = preprocess(a1, a2)
    ova = q.uns["pairot"]["de_ova"]
    assert ova[["logFC", "auroc"]].notna().all().all()
    dm = fit(q, r)
    assert_finite_outputs(dm)
    assert dm.compute_mapping().idxmax(axis=1).tolist() == ["A", "B", "C"]


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")
def test_all_cells_identical(pair):
    """Every cell of a study identical: no gene varies, limma gives no markers, the label
    distance is 1 everywhere, and the outputs stay finite."""
    a1 = pair[0].copy()
    a1.X = np.tile(dense(a1.X)[0] + 3, (a1.n_obs, 1))
    q, r = preprocess(a1, pair[1])
    dm = fit(q, r)
    assert_finite_outputs(dm)


def test_clusters_without_marker_genes_and_constant_label_distance(processed):
    """No cluster passes the marker filter (logFC >= 100): D = 250 everywhere, L = 1
    everywhere, the label term is a constant and the mapping rests on the features alone."""
    dm = fit(*processed, logfc_threshold=100.0)
    np.testing.assert_array_equal(dm.label_distance.to_numpy(), 1.0)
    assert_finite_outputs(dm)
    assert dm.compute_mapping().idxmax(axis=1).tolist() == ["A", "B", "C"]


def test_unbalanced_with_a_cluster_missing_on_one_side(processed):
    """tau = 0.9 with a query cluster absent from the reference: finite, and the missing
    cluster sends little mass."""
    q, r = processed
    dm = fit(q, r[r.obs[CT] != "C"], tau_a=0.9, tau_b=0.9)
    assert dm.reference_clusters == ["A", "B"]
    assert_finite_outputs(dm)
    mass = dm.compute_mapping("transported_mass")
    assert mass.loc["C"].sum() < mass.loc["A"].sum()
    dm = fit(q[q.obs[CT] != "A"], r, tau_a=0.9, tau_b=0.9, epsilon=0.005)
    assert_finite_outputs(dm)


# --------------------------------------------------------------------- property-based tests
@settings(max_examples=25, deadline=None)
@given(
    labels=st.lists(st.sampled_from(["1", "10", "a/b", "ñ", " "]), min_size=1, max_size=50),
    n_samples=st.integers(min_value=1, max_value=20),
)
def test_downsample_agrees_across_label_containers(labels, n_samples):
    """A list, a numpy array, a Series and a Categorical of the same labels give the same
    indices (the seed tutorial passes ``obs[...].to_numpy()`` of a Categorical)."""
    expected = pr.pp.downsample_indices(labels, n_samples)
    for container in (np.asarray(labels), pd.Series(labels), pd.Categorical(labels)):
        np.testing.assert_array_equal(pr.pp.downsample_indices(container, n_samples), expected)
