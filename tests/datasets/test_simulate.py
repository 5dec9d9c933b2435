"""Tests of the synthetic-study simulator against independent, naive computations."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from pairot.datasets import SCENARIOS, UNINFORMATIVE_GENES, simulate_pair
from pairot.datasets._simulate import _sample_chunk, _search_right

SMALL = {"n_cells_query": 2000, "n_cells_reference": 1800, "n_genes": 800}


@pytest.fixture(scope="module")
def pairs():
    return {s: simulate_pair(**SMALL, scenario=s, random_state=3) for s in SCENARIOS}


def naive_pseudobulk_log(adata, groupby, target_sum=1e5):
    """log1p(normalized summed counts) per group: a plain loop over the groups."""
    X = adata.X.toarray().astype(np.float64)
    keys = adata.obs[list(groupby)].astype(str).agg("|".join, axis=1).to_numpy()
    rows, labels = [], []
    for key in sorted(set(keys)):
        cells = keys == key
        if cells.sum() < 2:
            continue
        total = X[cells].sum(axis=0)
        rows.append(np.log1p(total / total.sum() * target_sum))
        labels.append(key.split("|"))
    return np.array(rows), pd.DataFrame(labels, columns=list(groupby))


def type_profiles(adata, column="cell_type"):
    X = adata.X.toarray().astype(np.float64)
    labels = adata.obs[column].astype(str).to_numpy()
    names = list(adata.obs[column].cat.categories)
    prof = np.array([X[labels == c].sum(axis=0) for c in names])
    return np.log1p(prof / prof.sum(axis=1, keepdims=True) * 1e4), names


def test_same_seed_same_data_other_seed_other_data():
    a_q, a_r = simulate_pair(600, 500, 400, n_cell_types=4, random_state=11)
    b_q, b_r = simulate_pair(600, 500, 400, n_cell_types=4, random_state=11)
    c_q, _ = simulate_pair(600, 500, 400, n_cell_types=4, random_state=12)
    for a, b in ((a_q, b_q), (a_r, b_r)):
        assert (a.X != b.X).nnz == 0
        np.testing.assert_array_equal(a.X.indptr, b.X.indptr)
        pd.testing.assert_frame_equal(a.obs, b.obs)
    assert a_q.X.shape == c_q.X.shape
    assert (a_q.X != c_q.X).nnz > 0
    # a Generator is accepted and is deterministic given its own seed
    g_q, _ = simulate_pair(600, 500, 400, n_cell_types=4, random_state=np.random.default_rng(5))
    h_q, _ = simulate_pair(600, 500, 400, n_cell_types=4, random_state=np.random.default_rng(5))
    assert (g_q.X != h_q.X).nnz == 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_counts_are_canonical_nonnegative_integers(pairs, scenario):
    for adata in pairs[scenario]:
        X = adata.X
        assert sp.issparse(X) and X.format == "csr"
        assert X.dtype == np.float32
        assert X.has_canonical_format
        assert X.data.min() >= 1  # no stored zeros, no negatives
        np.testing.assert_array_equal(X.data, np.rint(X.data))
        assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
        assert isinstance(adata.obs["sample_id"].dtype, pd.CategoricalDtype)
        assert adata.var_names.is_unique and adata.obs_names.is_unique
        assert "GENE00001" in adata.var_names
        assert set(UNINFORMATIVE_GENES) <= set(adata.var_names)
        assert adata.obs["sample_id"].nunique() == 4


def test_library_sizes_near_mean(pairs):
    q, r = simulate_pair(3000, 300, 600, n_cell_types=4, mean_library_size=1500, random_state=1)
    totals = np.asarray(q.X.sum(axis=1)).ravel()
    assert abs(totals.mean() / 1500 - 1) < 0.03
    # log-normal spread of the library size (sd 0.4) plus a little counting noise
    assert 0.35 < np.log(totals).std() < 0.5


def test_markers_have_pseudobulk_log_fold_change_above_one(pairs):
    q, _ = pairs["one_to_one"]
    markers = q.uns["simulation"]["markers"]
    values, meta = naive_pseudobulk_log(q, ["sample_id", "cell_type"])
    genes = list(q.var_names)
    for cell_type in q.obs["cell_type"].cat.categories:
        own = (meta["cell_type"] == cell_type).to_numpy()
        type_genes = markers.loc[
            (markers["program"] == cell_type) & (markers["level"] == "cell_type"), "gene"
        ]
        lfc = np.array(
            [
                values[own, genes.index(g)].mean() - values[~own, genes.index(g)].mean()
                for g in type_genes
            ]
        )
        assert (lfc >= 1).sum() >= 12, (cell_type, np.sort(lfc))


def test_hierarchy_siblings_are_closer_than_other_lineages(pairs):
    q, _ = pairs["one_to_one"]
    prof, names = type_profiles(q)
    lineage = q.uns["simulation"]["cell_types"].set_index("cell_type")["lineage"]
    keep = np.asarray(q.X.sum(axis=0)).ravel() >= 20
    centred = prof[:, keep] - prof[:, keep].mean(axis=0)
    corr = np.corrcoef(centred)
    for i, a in enumerate(names):
        siblings = [j for j, b in enumerate(names) if b != a and lineage[b] == lineage[a]]
        others = [j for j, b in enumerate(names) if lineage[b] != lineage[a]]
        assert siblings and others
        assert corr[i, siblings].min() > corr[i, others].max(), a


def test_class_imbalance(pairs):
    q, r = pairs["one_to_one"]
    for adata in (q, r):
        sizes = adata.obs["cell_type"].value_counts()
        assert sizes.max() / sizes.min() >= 3
        assert sizes.min() >= 5 * adata.obs["sample_id"].nunique()
    # the realized sizes follow the recorded expected proportions: every type first gets the
    # minimum (5 cells per sample), the rest is shared in proportion (rounded)
    table = q.uns["simulation"]["cell_types"].set_index("cell_type")
    n_cells, n_types, minimum = q.n_obs, len(table), 5 * 4
    expected = minimum + table["proportion_query"] * (n_cells - n_types * minimum)
    observed = q.obs["cell_type"].value_counts()[table.index]
    assert np.abs(observed.to_numpy() - expected.to_numpy()).max() <= 1
    assert observed.sum() == n_cells


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_matches_the_data(pairs, scenario):
    """Each query type's best-correlated reference cluster is its true counterpart."""
    q, r = pairs[scenario]
    truth = q.uns["simulation"]["truth"]
    assert list(truth.columns[:2]) == ["query_cluster", "reference_cluster"]
    assert list(truth["query_cluster"]) == list(q.obs["cell_type"].cat.categories)
    pq, names_q = type_profiles(q)
    pr, names_r = type_profiles(r)
    keep = (np.asarray(q.X.sum(axis=0)).ravel() >= 20) & (np.asarray(r.X.sum(axis=0)).ravel() >= 20)
    cq = pq[:, keep] - pq[:, keep].mean(axis=0)
    cr = pr[:, keep] - pr[:, keep].mean(axis=0)
    corr = np.corrcoef(cq, cr)[: len(names_q), len(names_q) :]
    for i, row in truth.iterrows():
        if row["reference_cluster"] == "":
            continue
        assert names_r[int(np.argmax(corr[i]))] == row["reference_cluster"], row["query_cluster"]


def test_coarse_reference_truth_maps_fine_types_to_parents(pairs):
    q, r = pairs["coarse_reference"]
    truth = q.uns["simulation"]["truth"].set_index("query_cluster")["reference_cluster"]
    # the parent, read off the cells: reference cells of fine type t carry t's lineage label
    for fine, labels in r.obs.groupby("cell_type_fine", observed=True)["cell_type"]:
        assert labels.nunique() == 1
        assert truth[fine] == labels.iloc[0]
    assert set(r.obs["cell_type"].cat.categories) == set(truth)  # lineages only
    # and from the recorded hierarchy
    lineage = q.uns["simulation"]["cell_types"].set_index("cell_type")["lineage"]
    assert (truth == lineage[truth.index]).all()
    assert set(truth.index) == set(q.obs["cell_type"].cat.categories)
    assert r.obs["cell_type"].nunique() < q.obs["cell_type"].nunique()
    assert (q.uns["simulation"]["truth"]["relation"] == "parent").all()


def test_missing_type_is_absent_from_reference(pairs):
    q, r = pairs["missing_type"]
    truth = q.uns["simulation"]["truth"]
    absent = truth.loc[truth["reference_cluster"] == "", "query_cluster"].tolist()
    assert len(absent) == 1
    assert absent[0] == q.uns["simulation"]["params"]["missing_type"]
    assert absent[0] in set(q.obs["cell_type"])
    assert absent[0] not in set(r.obs["cell_type"])
    assert absent[0] not in set(r.obs["cell_type"].cat.categories)
    present = truth.loc[truth["reference_cluster"] != ""]
    assert (present["query_cluster"] == present["reference_cluster"]).all()
    assert set(present["reference_cluster"]) == set(r.obs["cell_type"])
    # the missing type has a sibling in the reference (the hard case)
    lineage = q.uns["simulation"]["cell_types"].set_index("cell_type")["lineage"]
    assert (r.obs["lineage"] == lineage[absent[0]]).any()


def test_h5ad_round_trip(pairs, tmp_path):
    for scenario in ("coarse_reference", "missing_type"):
        for k, adata in enumerate(pairs[scenario]):
            path = tmp_path / f"{scenario}_{k}.h5ad"
            adata.write_h5ad(path)
            back = ad.read_h5ad(path)
            assert (back.X != adata.X).nnz == 0
            assert back.X.dtype == np.float32
            pd.testing.assert_frame_equal(back.obs, adata.obs)
            assert list(back.var_names) == list(adata.var_names)
            for key in ("truth", "cell_types", "markers"):
                pd.testing.assert_frame_equal(
                    back.uns["simulation"][key], adata.uns["simulation"][key], check_dtype=False
                )
            assert back.uns["simulation"]["params"]["scenario"] == scenario


def test_bad_arguments_raise_naming_the_argument():
    with pytest.raises(ValueError, match="scenario"):
        simulate_pair(100, 100, 400, scenario="one-to-one")
    with pytest.raises(ValueError, match="n_genes"):
        simulate_pair(500, 500, 100)
    with pytest.raises(ValueError, match="n_cells_reference"):
        simulate_pair(500, 20, 400)
    with pytest.raises(ValueError, match="marker_log_fold_change"):
        simulate_pair(500, 500, 400, marker_log_fold_change=(2.0, 1.0))
    with pytest.raises(ValueError, match="random_state"):
        simulate_pair(500, 500, 400, random_state=-1)


def test_sampler_is_negative_binomial_for_dense_and_poisson_for_sparse_genes():
    """One group, many cells: compare the chunk sampler with scipy's laws."""
    n_cells = 20_000
    p = np.array([0.02, 0.005, 1e-4, 2e-5, 0.0])
    profiles = np.append(p, 1 - p.sum())[None, :]  # (1 group, 6 genes)
    phi = np.array([0.5, 0.25, 0.5, 0.5, 0.5, 0.1], dtype=np.float32)
    library = np.full(n_cells, 1000.0)
    threshold = 1e-3  # genes 0, 1 and 5 are dense; 2, 3 and 4 are Poisson
    nnz, idx, val = _sample_chunk(
        profiles,
        np.zeros(n_cells, dtype=np.int64),
        library,
        (1 / phi).astype(np.float32),
        phi,
        threshold,
        np.random.SeedSequence(0),
    )
    indptr = np.concatenate([[0], np.cumsum(nnz)])
    X = sp.csr_matrix((val, idx, indptr), shape=(n_cells, 6)).toarray()
    mu = p * 1000
    for g in (0, 1):  # negative binomial: compare the pmf with scipy
        r = 1 / phi[g]
        ks = np.arange(40)
        emp = np.array([(X[:, g] == k).mean() for k in ks])
        theory = stats.nbinom.pmf(ks, r, r / (r + mu[g]))
        assert np.abs(emp - theory).max() < 0.01
        assert abs(X[:, g].var() / (mu[g] + phi[g] * mu[g] ** 2) - 1) < 0.06
    for g in (2, 3):  # Poisson: total and fraction of zeros within 4 standard errors
        expected_total = n_cells * mu[g]
        assert abs(X[:, g].sum() - expected_total) < 4 * np.sqrt(expected_total)
        p0 = np.exp(-mu[g])
        assert abs((X[:, g] == 0).mean() - p0) < 4 * np.sqrt(p0 * (1 - p0) / n_cells)
    assert X[:, 4].sum() == 0


def test_poisson_splitting_follows_library_size():
    rng = np.random.default_rng(0)
    n_cells = 4000
    library = rng.lognormal(np.log(1000), 0.5, size=n_cells)
    groups = rng.integers(0, 3, size=n_cells)
    profiles = np.full((3, 2000), 1 / 2000)  # every gene sparse (mu = 0.5 at L = 1000)
    nnz, idx, val = _sample_chunk(
        profiles,
        groups,
        library,
        np.ones(2000, dtype=np.float32),
        np.ones(2000, dtype=np.float32),
        1.0,
        np.random.SeedSequence(1),
    )
    totals = np.add.reduceat(val, np.concatenate([[0], np.cumsum(nnz)[:-1]]))
    totals[nnz == 0] = 0
    # each cell's total is Poisson(L_i): mean ratio 1, variance ratio 1
    z = (totals - library) / np.sqrt(library)
    assert abs(z.mean()) < 0.06 and abs(z.std() - 1) < 0.05


def test_search_right_matches_searchsorted():
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 500):
        cum = np.cumsum(rng.lognormal(0, 1.5, size=n))
        target = np.concatenate([[0.0, cum[0], cum[-1]], cum, rng.random(5000) * cum[-1]])
        np.testing.assert_array_equal(
            _search_right(cum, target), np.searchsorted(cum, target, side="right")
        )


def test_missing_type_similarity_zero_is_the_default_output():
    kwargs = dict(scenario="missing_type", n_cell_types=6, random_state=5)
    q0, r0 = simulate_pair(300, 300, 400, **kwargs)
    q1, r1 = simulate_pair(300, 300, 400, missing_type_similarity=0.0, **kwargs)
    for a, b in ((q0, q1), (r0, r1)):
        assert (a.X != b.X).nnz == 0
        pd.testing.assert_frame_equal(a.obs, b.obs)
        assert a.uns["simulation"]["params"].keys() == b.uns["simulation"]["params"].keys()
        assert "missing_type_similarity" not in a.uns["simulation"]["params"]


def test_missing_type_similarity_moves_only_the_missing_type_toward_a_sibling():
    kwargs = dict(scenario="missing_type", n_cell_types=6, random_state=5)
    q0, r0 = simulate_pair(600, 600, 400, **kwargs)
    q1, r1 = simulate_pair(600, 600, 400, missing_type_similarity=0.9, **kwargs)
    params = q1.uns["simulation"]["params"]
    missing, nearest = params["missing_type"], params["missing_type_nearest"]
    assert params["missing_type_similarity"] == 0.9
    lineage = q1.obs.groupby("cell_type", observed=True)["lineage"].first().astype(str)
    assert lineage[missing] == lineage[nearest] and missing != nearest
    # the reference (which lacks the missing type) is drawn from the same stream: unchanged
    assert (r0.X != r1.X).nnz == 0
    # in the query, the missing type's mean profile moves toward its nearest sibling's

    def profile(adata, cluster):
        x = adata[adata.obs["cell_type"] == cluster].X
        x = np.asarray(x.sum(axis=0)).ravel()
        return np.log1p(1e4 * x / x.sum())

    gap0 = np.linalg.norm(profile(q0, missing) - profile(q0, nearest))
    gap1 = np.linalg.norm(profile(q1, missing) - profile(q1, nearest))
    assert gap1 < 0.6 * gap0, (gap0, gap1)
    # labels and cell order are those of the default draw (only counts are redrawn)
    pd.testing.assert_frame_equal(q0.obs, q1.obs)


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.5", True])
def test_missing_type_similarity_rejects_bad_values(value):
    with pytest.raises(ValueError, match="missing_type_similarity must be a number in"):
        simulate_pair(300, 300, 400, scenario="missing_type", missing_type_similarity=value)


def test_missing_type_similarity_needs_the_missing_type_scenario():
    with pytest.raises(ValueError, match="applies to scenario='missing_type' only"):
        simulate_pair(300, 300, 400, missing_type_similarity=0.5)


# ------------------------------------------------------------------- opt-in regimes (issue 26)
OPT_IN = dict(n_cell_types=6, random_state=7)


def test_opt_in_parameters_at_their_defaults_give_the_default_output():
    q0, r0 = simulate_pair(500, 500, 400, **OPT_IN)
    q1, r1 = simulate_pair(
        500,
        500,
        400,
        n_reference_only_types=0,
        mean_library_size_reference=None,
        reference_protocol="umi",
        gene_length_log_sd=None,
        pseudo_count_scale=None,
        **OPT_IN,
    )
    for a, b in ((q0, q1), (r0, r1)):
        assert a.X.dtype == b.X.dtype == np.float32
        assert (a.X != b.X).nnz == 0
        pd.testing.assert_frame_equal(a.obs, b.obs)
        pd.testing.assert_frame_equal(a.var, b.var)
        assert a.uns["simulation"]["params"].keys() == b.uns["simulation"]["params"].keys()


def test_reference_only_types_leave_the_reference_as_drawn_and_the_query_without_them():
    q0, r0 = simulate_pair(600, 600, 400, **OPT_IN)
    q1, r1 = simulate_pair(600, 600, 400, n_reference_only_types=2, **OPT_IN)
    params = q1.uns["simulation"]["params"]
    only = params["reference_only_types"].split(",")
    assert params["n_reference_only_types"] == 2 and len(set(only)) == 2
    assert (r0.X != r1.X).nnz == 0  # the reference is the default draw
    pd.testing.assert_frame_equal(r0.obs, r1.obs)
    assert q1.n_obs == 600
    assert not q1.obs["cell_type"].isin(only).any()
    assert set(q1.obs["cell_type"].cat.categories) == set(r1.obs["cell_type"].cat.categories) - set(
        only
    )
    truth = q1.uns["simulation"]["truth"]
    assert sorted(truth["query_cluster"]) == sorted(q1.obs["cell_type"].cat.categories)
    assert (truth["query_cluster"] == truth["reference_cluster"]).all()
    # each reference-only type keeps a sibling (same lineage) in the query
    lineage = r1.obs.groupby("cell_type", observed=True)["lineage"].first().astype(str)
    in_query = set(q1.obs["cell_type"].astype(str))
    for t in only:
        assert any(lineage[s] == lineage[t] for s in in_query), t


def test_mean_library_size_reference_sets_the_reference_depth_only():
    q0, r0 = simulate_pair(500, 800, 400, **OPT_IN)
    q1, r1 = simulate_pair(500, 800, 400, mean_library_size_reference=6000.0, **OPT_IN)
    assert (q0.X != q1.X).nnz == 0
    assert q1.uns["simulation"]["params"]["mean_library_size_reference"] == 6000.0
    # counts per cell have the library size as expectation (profiles sum to 1, gamma mean 1)
    depth = np.asarray(r1.X.sum(axis=1)).ravel()
    assert abs(depth.mean() / 6000.0 - 1) < 0.05, depth.mean()
    # the reference detects more genes per cell at the larger depth
    assert np.diff(r1.X.indptr).mean() > 1.3 * np.diff(r0.X.indptr).mean()


def test_study_effect_is_the_gene_specific_bias_the_docstring_states():
    """Within one type, the log-ratio of the studies' mean shares of each gene has sd
    sqrt(2) * study_effect_sd (each study its own per-gene shift)."""
    q, r = simulate_pair(
        4000, 4000, 600, n_cell_types=2, study_effect_sd=0.5, donor_effect_sd=0.0,
        mean_library_size=5000.0, random_state=2,
    )  # fmt: skip
    t = q.obs["cell_type"].cat.categories[0]
    share_q = np.asarray(q[q.obs["cell_type"] == t].X.sum(axis=0)).ravel()
    share_r = np.asarray(r[r.obs["cell_type"] == t].X.sum(axis=0)).ravel()
    expressed = (share_q > 2000) & (share_r > 2000)  # Poisson noise well below the effect
    ratio = np.log(share_r[expressed] / share_r.sum()) - np.log(share_q[expressed] / share_q.sum())
    assert expressed.sum() > 100
    assert abs(ratio.std() / (np.sqrt(2) * 0.5) - 1) < 0.15, ratio.std()


@pytest.fixture(scope="module")
def full_length_pair():
    kwargs = dict(
        n_cell_types=3, study_effect_sd=0.0, donor_effect_sd=0.0, random_state=4,
        mean_library_size=3000.0,
    )  # fmt: skip
    umi = simulate_pair(1500, 1500, 600, **kwargs)
    full = simulate_pair(1500, 1500, 600, reference_protocol="full_length", **kwargs)
    return umi, full


def test_full_length_reference_is_rpkm_of_fragments_of_the_umi_molecules(full_length_pair):
    (q0, r0), (q1, r1) = full_length_pair
    params = r1.uns["simulation"]["params"]
    assert params["reference_protocol"] == "full_length"
    assert params["gene_length_log_sd"] == 0.7 and params["pseudo_count_scale"] == 100.0
    assert (q0.X != q1.X).nnz == 0  # the query is untouched
    assert r1.X.dtype == np.float64
    X = r1.X.toarray()
    assert np.array_equal(X, np.round(X)) and X.min() >= 0
    length = r1.var["gene_length"].to_numpy()
    assert 200 <= length.min() and length.max() <= 50_000
    assert "gene_length" not in q1.var.columns
    # fragments only where the UMI draw has molecules
    molecules = r0.X.toarray().astype(np.float64)
    assert not ((X > 0) & (molecules == 0)).any()
    # RPKM: sum_g X_g * len_g / 1e3 = 100 * 1e6 per cell, up to the rounding of each entry
    kb = length / 1e3
    total = X @ kb
    bound = 0.5 * (X > 0) @ kb
    fragments = X.sum(axis=1) > 0
    np.testing.assert_array_less(np.abs(total - 1e8)[fragments], bound[fragments] + 1e-6)
    # per cell, X_g len_g / sum_h X_h len_h is the gene's share of fragments, whose
    # expectation given the molecules m is m_g len_g / sum_h m_h len_h: pooled over cells
    observed = ((X * kb) / total[:, None])[fragments].sum(axis=0)
    weighted = molecules * length
    expected = (weighted / weighted.sum(axis=1, keepdims=True))[fragments].sum(axis=0)
    strong = expected > 3  # summed shares: genes with a few percent of each cell's fragments
    assert strong.sum() > 50
    np.testing.assert_allclose(observed[strong], expected[strong], rtol=0.05)
    assert abs(np.median(observed[strong] / expected[strong]) - 1) < 0.01


def test_full_length_removes_length_from_the_mean_but_not_from_the_detection(full_length_pair):
    (q0, r0), (q1, r1) = full_length_pair
    length = r1.var["gene_length"].to_numpy()
    X = r1.X.toarray()
    share_ref = (X / X.sum(axis=1, keepdims=True)).mean(axis=0)
    Q = q1.X.toarray().astype(np.float64)
    share_query = (Q / Q.sum(axis=1, keepdims=True)).mean(axis=0)
    expressed = (share_query > 1e-3) & (share_ref > 0)
    ratio = np.log(share_ref[expressed] / share_query[expressed])
    slope = np.polyfit(np.log(length[expressed]), ratio, 1)[0]
    assert abs(slope) < 0.15, slope  # without the normalization it would be 1
    # among genes of similar expression, the short ones are zero more often
    middle = (share_query > 2e-4) & (share_query < 2e-3)
    zeros_ref = (X[:, middle] == 0).mean(axis=0)
    zeros_query = (Q[:, middle] == 0).mean(axis=0)
    excess = zeros_ref - zeros_query
    rho = stats.spearmanr(np.log(length[middle]), excess).statistic
    assert middle.sum() > 50 and rho < -0.3, (middle.sum(), rho)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_reference_only_types": -1}, "n_reference_only_types must be an integer >= 0"),
        ({"n_reference_only_types": 1.5}, "n_reference_only_types must be an integer >= 0"),
        ({"n_reference_only_types": 5}, "n_reference_only_types=5 leaves the query 1"),
        ({"mean_library_size_reference": 0.0}, "mean_library_size_reference must be a positive"),
        ({"reference_protocol": "smartseq"}, "reference_protocol must be one of"),
        ({"gene_length_log_sd": 0.5}, "applies to reference_protocol='full_length' only"),
        ({"pseudo_count_scale": 10.0}, "applies to reference_protocol='full_length' only"),
        (
            {"reference_protocol": "full_length", "gene_length_log_sd": -1.0},
            "gene_length_log_sd must be a number >= 0",
        ),
        (
            {"reference_protocol": "full_length", "pseudo_count_scale": 0},
            "pseudo_count_scale must be a positive number",
        ),
    ],
)
def test_opt_in_parameters_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_pair(300, 300, 400, n_cell_types=6, **kwargs)


def test_marker_divergence_moves_type_genes_to_another_type_in_the_reference_only():
    kwargs = dict(
        n_cell_types=4, n_markers_type=10, study_effect_sd=0.0, donor_effect_sd=0.0,
        mean_library_size=5000.0, type_imbalance=1.0, random_state=8,
    )  # fmt: skip
    q0, r0 = simulate_pair(3000, 3000, 600, **kwargs)
    q1, r1 = simulate_pair(3000, 3000, 600, marker_divergence=0.3, **kwargs)
    assert (q0.X != q1.X).nnz == 0  # the query keeps the programs as drawn
    assert q1.uns["simulation"]["params"]["marker_divergence"] == 0.3
    assert "moved_markers" not in q0.uns["simulation"]
    moved = r1.uns["simulation"]["moved_markers"]
    assert moved.groupby("from_type").size().eq(3).all() and len(moved) == 12
    assert (moved["from_type"] != moved["to_type"]).all()
    own = q1.uns["simulation"]["markers"].set_index("gene")
    np.testing.assert_array_equal(
        moved["log_fold_change"], own.loc[moved["gene"], "log_fold_change"]
    )
    assert (own.loc[moved["gene"], "program"].to_numpy() == moved["from_type"].to_numpy()).all()

    def log_share(adata, cluster, genes):
        x = np.asarray(adata[adata.obs["cell_type"] == cluster][:, genes].X.sum(axis=0)).ravel()
        total = adata[adata.obs["cell_type"] == cluster].X.sum()
        return np.log(x / total)

    # in the reference the gene goes up in to_type and down in from_type by its effect, in the
    # query not: the difference of the two studies' log-ratios is twice the effect
    shifts = []
    for row in moved.itertuples():
        ref = log_share(r1, row.to_type, [row.gene]) - log_share(r1, row.from_type, [row.gene])
        query = log_share(q1, row.to_type, [row.gene]) - log_share(q1, row.from_type, [row.gene])
        shifts.append(float(ref[0] - query[0]) / (2 * row.log_fold_change))
    assert abs(np.median(shifts) - 1) < 0.1, shifts
    assert np.min(shifts) > 0.6, shifts


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.3", True])
def test_marker_divergence_rejects_bad_values(value):
    with pytest.raises(ValueError, match="marker_divergence must be a number in"):
        simulate_pair(300, 300, 400, marker_divergence=value)
