"""limma in numpy/scipy against frozen outputs of R limma 3.54.1 (tests/data/limma/README.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairot.pp._limma import (
    contrasts_fit,
    ebayes,
    fit_f_dist,
    group_statistics,
    limma_ava,
    limma_ova,
    lm_fit,
    p_adjust_bh,
    squeeze_var,
    trigamma_inverse,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "limma"
FIXTURES = [
    "a_balanced",
    "b_zero_var",
    "c_unbalanced",
    "d_equal_var",
    "e_homoscedastic",
    "f_min_df",
]
RTOL = 1e-6
# Genes that are constant across all profiles have a true logFC (and t) of exactly 0. R's
# Householder QR returns round-off there (e.g. 1.3e-15 for the constant gene of b_zero_var,
# an exact 0 for the all-zero gene) and so do we, with other round-off, so a relative
# tolerance is meaningless for them: these entries (and only these) are compared with an
# absolute tolerance.
ATOL_CONSTANT = 1e-12


@cache
def _load(name: str) -> dict:
    expr = pd.read_csv(DATA / f"{name}_expr.csv", index_col=0).to_numpy(dtype=np.float64)
    labels = pd.read_csv(DATA / f"{name}_labels.csv")["label"].to_numpy()
    n_genes = expr.shape[0]
    n_clusters = int(labels.max()) + 1
    ova = pd.read_csv(DATA / f"{name}_r_ova.csv")
    ava = pd.read_csv(DATA / f"{name}_r_ava.csv")
    priors = pd.read_csv(DATA / f"{name}_r_priors.csv").set_index("fit")
    return {
        "expr": expr,
        "labels": labels,
        "n_clusters": n_clusters,
        "constant": np.ptp(expr, axis=1) == 0,
        "ova": {col: ova[col].to_numpy().reshape(n_clusters, n_genes) for col in ova.columns[2:]},
        "ava": {col: ava[col].to_numpy().reshape(-1, n_genes) for col in ava.columns[3:]},
        "ava_pairs": ava[["group1", "group2"]].to_numpy()[::n_genes],
        "priors": priors,
    }


def _assert_r(ours: np.ndarray, r: np.ndarray, constant: np.ndarray | None = None) -> None:
    """Relative comparison; if ``constant`` (genes on the last axis) is given, those genes
    are compared with ``ATOL_CONSTANT`` only (true value exactly 0)."""
    ours = np.asarray(ours)
    r = np.asarray(r)
    assert ours.shape == r.shape
    if constant is None or not constant.any():
        np.testing.assert_allclose(ours, r, rtol=RTOL, atol=0)
        return
    np.testing.assert_allclose(ours[..., ~constant], r[..., ~constant], rtol=RTOL, atol=0)
    np.testing.assert_allclose(ours[..., constant], r[..., constant], rtol=0, atol=ATOL_CONSTANT)


def _ova_design(labels: np.ndarray, c: int) -> np.ndarray:
    return np.column_stack([np.ones(labels.size), (labels == c).astype(np.float64)])


def _ava_contrasts(n: int) -> np.ndarray:
    i1, i2 = np.triu_indices(n, k=1)
    cm = np.zeros((n, i1.size))
    cm[i1, np.arange(i1.size)] = 1.0
    cm[i2, np.arange(i1.size)] = -1.0
    return cm


# --------------------------------------------------------------------------------------------
# array weights (DatasetMap.bootstrap's donor resampling), against R's lmFit(weights = w)
# --------------------------------------------------------------------------------------------
WEIGHTED = ["a_balanced", "c_unbalanced"]


@cache
def _load_weighted(name: str) -> dict:
    fx = _load(name)
    n_genes = fx["expr"].shape[0]
    k = fx["n_clusters"]
    weights = pd.read_csv(DATA / f"{name}_weights.csv")["weight"].to_numpy(dtype=np.float64)
    ova = pd.read_csv(DATA / f"{name}_r_ova_weighted.csv")
    ava = pd.read_csv(DATA / f"{name}_r_ava_weighted.csv")
    return {
        "weights": weights,
        "ova": {col: ova[col].to_numpy().reshape(k, n_genes) for col in ova.columns[2:]},
        "ava": {col: ava[col].to_numpy().reshape(-1, n_genes) for col in ava.columns[3:]},
        "ava_pairs": ava[["group1", "group2"]].to_numpy()[::n_genes],
    }


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_ova_matches_r(name: str) -> None:
    fx, wx = _load(name), _load_weighted(name)
    w = wx["weights"]
    assert np.ptp(w) > 1  # the weights differ enough to change every statistic
    logfc, p, adj = limma_ova(fx["expr"], fx["labels"], fx["n_clusters"], weights=w)
    _assert_r(logfc, wx["ova"]["logFC"])
    _assert_r(p, wx["ova"]["P.Value"])
    _assert_r(adj, wx["ova"]["adj.P.Val"])
    for c in range(fx["n_clusters"]):
        eb = ebayes(lm_fit(fx["expr"], _ova_design(fx["labels"], c), weights=w))
        _assert_r(eb.t[:, 1], wx["ova"]["t"][c])
    # and the weights matter: the unweighted fit differs from R's weighted one
    plain = limma_ova(fx["expr"], fx["labels"], fx["n_clusters"])[1]
    assert np.max(np.abs(plain / wx["ova"]["P.Value"] - 1)) > 1e-2


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_ava_matches_r(name: str) -> None:
    fx, wx = _load(name), _load_weighted(name)
    k, w = fx["n_clusters"], wx["weights"]
    statistics = group_statistics(fx["expr"], fx["labels"], k, weights=w)
    logfc, p, adj = limma_ava(fx["expr"], fx["labels"], k, weights=w, statistics=statistics)
    g1, g2 = wx["ava_pairs"].T
    _assert_r(logfc[g1, g2], wx["ava"]["logFC"])
    _assert_r(p[g1, g2], wx["ava"]["P.Value"])
    _assert_r(adj[g1, g2], wx["ava"]["adj.P.Val"])
    eb = ebayes(
        contrasts_fit(lm_fit(fx["expr"], np.eye(k)[fx["labels"]], weights=w), _ava_contrasts(k))
    )
    _assert_r(eb.t.T, wx["ava"]["t"])


def test_unit_weights_are_the_unweighted_fit() -> None:
    fx = _load("c_unbalanced")
    ones = np.ones(fx["labels"].size)
    for test in (limma_ova, limma_ava):
        plain = test(fx["expr"], fx["labels"], fx["n_clusters"])
        weighted = test(fx["expr"], fx["labels"], fx["n_clusters"], weights=ones)
        for a, b in zip(plain, weighted):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        (np.ones(3), "one precision weight per profile"),
        (np.zeros(12), "positive and finite"),
        (np.full(12, np.nan), "positive and finite"),
    ],
)
def test_bad_weights(weights, fragment) -> None:
    fx = _load("a_balanced")
    with pytest.raises(ValueError, match=fragment):
        limma_ova(fx["expr"], fx["labels"], fx["n_clusters"], weights=weights)
    with pytest.raises(ValueError, match=fragment):
        lm_fit(fx["expr"], np.eye(fx["n_clusters"])[fx["labels"]], weights=weights)


# --------------------------------------------------------------------------------------------
# agreement with R
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_ova_matches_r(name: str) -> None:
    fx = _load(name)
    logfc, p, adj = limma_ova(fx["expr"], fx["labels"], fx["n_clusters"])
    _assert_r(logfc, fx["ova"]["logFC"], fx["constant"])
    _assert_r(p, fx["ova"]["P.Value"])
    _assert_r(adj, fx["ova"]["adj.P.Val"])


@pytest.mark.parametrize("name", FIXTURES)
def test_ova_t_and_priors_match_r(name: str) -> None:
    fx = _load(name)
    for c in range(fx["n_clusters"]):
        eb = ebayes(lm_fit(fx["expr"], _ova_design(fx["labels"], c)))
        _assert_r(eb.t[:, 1], fx["ova"]["t"][c], fx["constant"])
        prior = fx["priors"].loc[f"ova_{c}"]
        np.testing.assert_allclose(eb.df_prior, prior["df.prior"], rtol=RTOL, atol=0)
        np.testing.assert_allclose(eb.s2_prior, prior["s2.prior"], rtol=RTOL, atol=0)


@pytest.mark.parametrize("name", FIXTURES)
def test_ava_matches_r(name: str) -> None:
    fx = _load(name)
    k = fx["n_clusters"]
    logfc, p, adj = limma_ava(fx["expr"], fx["labels"], k)
    assert logfc.shape == p.shape == adj.shape == (k, k, fx["expr"].shape[0])
    g1, g2 = fx["ava_pairs"].T
    _assert_r(logfc[g1, g2], fx["ava"]["logFC"], fx["constant"])
    _assert_r(p[g1, g2], fx["ava"]["P.Value"])
    _assert_r(adj[g1, g2], fx["ava"]["adj.P.Val"])
    # the mirrored direction: negated logFC, identical p-values
    np.testing.assert_array_equal(logfc[g2, g1], -logfc[g1, g2])
    np.testing.assert_array_equal(p[g2, g1], p[g1, g2])
    np.testing.assert_array_equal(adj[g2, g1], adj[g1, g2])
    diag = np.arange(k)
    assert np.isnan(logfc[diag, diag]).all()
    assert np.isnan(p[diag, diag]).all()
    assert np.isnan(adj[diag, diag]).all()


@pytest.mark.parametrize("name", FIXTURES)
def test_ava_t_and_priors_match_r(name: str) -> None:
    fx = _load(name)
    k = fx["n_clusters"]
    fit = lm_fit(fx["expr"], np.eye(k)[fx["labels"]])
    eb = ebayes(contrasts_fit(fit, _ava_contrasts(k)))
    _assert_r(eb.t.T, fx["ava"]["t"], fx["constant"])
    prior = fx["priors"].loc["ava"]
    np.testing.assert_allclose(eb.df_prior, prior["df.prior"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(eb.s2_prior, prior["s2.prior"], rtol=RTOL, atol=0)


def test_fixtures_cover_infinite_prior_df() -> None:
    # d: every fit has df.prior = Inf; e: only the all-vs-all fit (with unequal variances,
    # where limma sets s2.prior to the mean of the variances)
    assert np.isinf(_load("d_equal_var")["priors"]["df.prior"]).all()
    e = _load("e_homoscedastic")["priors"]["df.prior"]
    assert np.isinf(e["ava"]) and np.isfinite(e.drop("ava")).all()
    fx = _load("e_homoscedastic")
    fit = lm_fit(fx["expr"], np.eye(fx["n_clusters"])[fx["labels"]])
    eb = ebayes(fit)
    assert np.isinf(eb.df_prior)
    np.testing.assert_allclose(eb.s2_post, eb.s2_prior, rtol=0, atol=0)
    np.testing.assert_allclose(eb.df_total, fit.df_residual.sum(), rtol=0, atol=0)


def test_absent_clusters_are_nan_and_do_not_change_the_rest() -> None:
    fx = _load("c_unbalanced")
    k = fx["n_clusters"]
    codes = 2 * np.arange(k) + 1  # clusters 0, 2, 4, ... have no profiles
    n_clusters = 2 * k + 1
    labels = codes[fx["labels"]]
    logfc, p, adj = limma_ova(fx["expr"], labels, n_clusters)
    _assert_r(logfc[codes], fx["ova"]["logFC"], fx["constant"])
    _assert_r(p[codes], fx["ova"]["P.Value"])
    _assert_r(adj[codes], fx["ova"]["adj.P.Val"])
    absent = np.setdiff1d(np.arange(n_clusters), codes)
    assert np.isnan(logfc[absent]).all() and np.isnan(adj[absent]).all()

    logfc, p, adj = limma_ava(fx["expr"], labels, n_clusters)
    g1, g2 = codes[fx["ava_pairs"].T]
    _assert_r(logfc[g1, g2], fx["ava"]["logFC"], fx["constant"])
    _assert_r(p[g2, g1], fx["ava"]["P.Value"])
    _assert_r(adj[g1, g2], fx["ava"]["adj.P.Val"])
    for out in (logfc, p, adj):
        assert np.isnan(out[absent]).all() and np.isnan(out[:, absent]).all()


# --------------------------------------------------------------------------------------------
# building blocks against R
# --------------------------------------------------------------------------------------------


@cache
def _misc() -> pd.DataFrame:
    return pd.read_csv(DATA / "misc_r.csv")


def _misc_rows(what: str) -> pd.DataFrame:
    return _misc()[_misc()["what"] == what]


def test_trigamma_inverse_matches_r() -> None:
    rows = _misc_rows("trigammaInverse")
    _assert_r(trigamma_inverse(rows["x"].to_numpy()), rows["y"].to_numpy())
    np.testing.assert_allclose(trigamma_inverse(0.3), rows["y"].to_numpy()[4], rtol=RTOL)
    assert np.isnan(trigamma_inverse(np.array([np.nan, -1.0]))).all()


def test_p_adjust_bh_matches_r() -> None:
    rows = _misc_rows("p.adjust.BH")
    p = rows["x"].to_numpy()
    q = p_adjust_bh(p)
    np.testing.assert_array_equal(np.isnan(q), np.isnan(p))
    _assert_r(q[~np.isnan(p)], rows["y"].to_numpy()[~np.isnan(p)])
    # along an axis: each column adjusted on its own
    stacked = np.column_stack([p, p[::-1]])
    q2 = p_adjust_bh(stacked, axis=0)
    np.testing.assert_array_equal(q2[:, 0], q)
    np.testing.assert_array_equal(q2[:, 1], q[::-1])
    np.testing.assert_array_equal(p_adjust_bh(np.array([0.3])), [0.3])


V_F = np.array([0, 0, 0, 0, 0.5, 1.2, np.nan, -1, np.inf, 0.3, 2.5])
DF_F = np.array([3, 3, 4, 4, 5, 5, 2, 2, 6, 0, 3], dtype=np.float64)
V_G = np.array([0.1, 0.7, 0.2, 1.5, 0.05, 0.3, 0.9, 0, 0.4, 0.6, 2.2])


def test_fit_f_dist_and_squeeze_var_match_r() -> None:
    (r_zeros,) = _misc_rows("fitFDist.zeros")[["x", "y"]].to_numpy()
    np.testing.assert_allclose(fit_f_dist(V_F, 3.0), r_zeros, rtol=RTOL)
    (r_vec,) = _misc_rows("fitFDist.df1vec")[["x", "y"]].to_numpy()
    np.testing.assert_allclose(fit_f_dist(V_G, DF_F), r_vec, rtol=RTOL)
    var_post, var_prior, df_prior = squeeze_var(V_G, DF_F)
    (r_prior,) = _misc_rows("squeezeVar.prior")[["x", "y"]].to_numpy()
    np.testing.assert_allclose([var_prior, df_prior], r_prior, rtol=RTOL)
    _assert_r(var_post, _misc_rows("squeezeVar.post")["y"].to_numpy())


def test_contrasts_fit_non_orthogonal() -> None:
    fx = _load("c_unbalanced")
    fit = lm_fit(fx["expr"], _ova_design(fx["labels"], 0))  # correlated coefficients
    cm = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    fit2 = contrasts_fit(fit, cm)
    expected = np.sqrt(np.diag(cm.T @ fit.cov_coefficients @ cm))
    np.testing.assert_allclose(fit2.stdev_unscaled, np.tile(expected, (fit.sigma.size, 1)))
    np.testing.assert_allclose(fit2.coefficients[:, :2], fit.coefficients, rtol=1e-12)
    np.testing.assert_allclose(fit2.stdev_unscaled[:, :2], fit.stdev_unscaled, rtol=1e-12)
    np.testing.assert_allclose(fit2.cov_coefficients, cm.T @ fit.cov_coefficients @ cm)


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


def _random_pseudobulk(seed: int, n_genes: int, sizes: list[int]) -> tuple:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    counts = rng.poisson(rng.gamma(1.0, 30.0, (n_genes, 1)), (n_genes, labels.size))
    counts = counts.astype(np.float64) + rng.integers(0, 2, counts.shape)
    expr = np.log1p(counts / counts.sum(axis=0, keepdims=True) * 1e5)
    return expr, labels


datasets = st.tuples(
    st.integers(0, 2**32 - 1),
    st.integers(4, 40),
    st.lists(st.integers(1, 4), min_size=2, max_size=5).filter(lambda s: sum(s) >= len(s) + 2),
)


@settings(max_examples=25, deadline=None)
@given(data=datasets, perm_seed=st.integers(0, 2**32 - 1))
def test_permuting_genes_permutes_outputs(data: tuple, perm_seed: int) -> None:
    seed, n_genes, sizes = data
    expr, labels = _random_pseudobulk(seed, n_genes, sizes)
    perm = np.random.default_rng(perm_seed).permutation(n_genes)
    for fun in (limma_ova, limma_ava):
        ref = fun(expr, labels, len(sizes))
        out = fun(expr[perm], labels, len(sizes))
        for a, b in zip(out, ref, strict=True):
            np.testing.assert_allclose(a, b[..., perm], rtol=1e-9, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(
    data=datasets,
    gene=st.integers(0, 1000),
    shift=st.floats(-5.0, 5.0, allow_nan=False).filter(lambda x: abs(x) > 1e-3),
)
def test_adding_a_constant_to_a_gene_keeps_its_ova_t(data: tuple, gene: int, shift: float) -> None:
    seed, n_genes, sizes = data
    expr, labels = _random_pseudobulk(seed, n_genes, sizes)
    gene %= n_genes
    shifted = expr.copy()
    shifted[gene] += shift
    for c in range(len(sizes)):
        design = _ova_design(labels, c)
        t_ref = ebayes(lm_fit(expr, design)).t[:, 1]
        t_new = ebayes(lm_fit(shifted, design)).t[:, 1]
        np.testing.assert_allclose(t_new, t_ref, rtol=1e-8, atol=1e-9)
    ref = limma_ova(expr, labels, len(sizes))
    new = limma_ova(shifted, labels, len(sizes))
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(new[1], ref[1], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(new[2], ref[2], rtol=1e-7, atol=1e-12)


# --------------------------------------------------------------------------------------------
# input errors
# --------------------------------------------------------------------------------------------


def test_too_few_profiles_raise() -> None:
    expr = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match=r"at least 4 pseudobulk profiles"):
        limma_ava(expr, np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match=r"at least 3 pseudobulk profiles"):
        limma_ova(expr[:, :2], np.array([0, 1]), 2)
    # one profile per cluster plus one: the smallest valid all-vs-all problem
    limma_ava(expr, np.array([0, 1, 1]), 2)


def test_fewer_than_two_clusters_raise() -> None:
    expr = np.random.default_rng(0).normal(size=(10, 4))
    for fun in (limma_ova, limma_ava):
        with pytest.raises(ValueError, match=r"at least 2 clusters with pseudobulk profiles"):
            fun(expr, np.zeros(4, dtype=int), 3)


def test_bad_labels_raise() -> None:
    expr = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=r"cluster codes in 0\.\.1"):
        limma_ova(expr, np.array([0, 1, 2, 1]), 2)
    with pytest.raises(ValueError, match=r"got 3 labels for 4 profiles"):
        limma_ava(expr, np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"integer cluster codes"):
        limma_ova(expr, np.array(["a", "b", "a", "b"]), 2)
    with pytest.raises(ValueError, match=r"integer cluster codes"):
        limma_ava(expr, np.array([0.0, 1.5, 0.0, 1.0]), 2)


def test_lm_fit_and_ebayes_errors() -> None:
    rng = np.random.default_rng(0)
    expr = rng.normal(size=(10, 4))
    design = np.column_stack([np.ones(4), [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"rank deficient \(rank 2 < 3"):
        lm_fit(expr, design)
    with pytest.raises(ValueError, match=r"design has 3 rows but expr has 4 profiles"):
        lm_fit(expr, design[:3, :2])
    bad = expr.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        lm_fit(bad, design[:, :2])
    saturated = lm_fit(expr, np.eye(4))
    assert np.isnan(saturated.sigma).all()
    with pytest.raises(ValueError, match=r"No residual degrees of freedom"):
        ebayes(saturated)
    with pytest.raises(ValueError, match=r"one row per coefficient"):
        contrasts_fit(lm_fit(expr, design[:, :2]), np.ones((3, 1)))
