"""Cell features (METHOD section 5) against scipy's Spearman correlation and sklearn's cosine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import sparse, stats
from sklearn.metrics.pairwise import cosine_similarity

from pairot.tl._cost._features import (
    MAX_UNDEFINED_SHARE,
    MIN_FEATURE_VARIANCE,
    cosine_features,
    feature_spread,
    spearman_features,
    uninformative_features,
)


def spearman_reference(X: np.ndarray) -> np.ndarray:
    """Cell-by-cell Spearman correlation from scipy, with 0 where a cell is constant."""
    X = np.asarray(X, dtype=np.float64)
    varying = np.flatnonzero(np.ptp(X, axis=1) > 0)
    rho = np.zeros((X.shape[0], X.shape[0]))  # the method defines rho = 0 for a constant cell
    if varying.size == 1:
        rho[varying, varying] = 1.0
    elif varying.size >= 2:
        # scipy returns one NaN for the whole matrix when any cell is constant: leave those out
        sub = stats.spearmanr(X[varying], axis=1).statistic
        if np.ndim(sub) == 0:  # two cells: scipy returns the single coefficient
            sub = np.array([[1.0, sub], [sub, 1.0]])
        rho[np.ix_(varying, varying)] = sub
    return rho


def count_matrix(seed: int, n_cells: int = 40, n_genes: int = 15) -> np.ndarray:
    """Small counts with many zeros and ties, a constant-zero and a constant-nonzero cell."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(0.8, size=(n_cells, n_genes)).astype(np.float64)
    X[rng.random(X.shape) < 0.3] = 0.0
    X[1] = 0.0
    X[2] = 3.0
    X[3] = 0.0
    X[3, 5] = 7.0  # one non-zero value
    return X


# --------------------------------------------------------------------------------------------
# spearman_features
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "convert",
    [
        np.asarray,
        sparse.csr_matrix,
        sparse.csc_matrix,
        sparse.coo_matrix,
        sparse.csr_array,
        lambda X: X.astype(np.int64),
    ],
    ids=["dense", "csr", "csc", "coo", "csr_array", "dense_int"],
)
def test_spearman_inner_products_equal_scipy(seed, convert):
    X = count_matrix(seed)
    F = spearman_features(convert(X), dtype=np.float64, chunk_size=7)
    np.testing.assert_allclose(F @ F.T, spearman_reference(X), atol=1e-12)


def test_spearman_constant_cells_are_zero_vectors():
    X = count_matrix(0)
    F = spearman_features(sparse.csr_matrix(X))
    assert F.dtype == np.float32
    assert np.all(F[1] == 0) and np.all(F[2] == 0)
    assert not np.isnan(F @ F.T).any()
    norms = np.linalg.norm(F.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms[[0, 3, 4]], 1.0, rtol=1e-6)
    # feature distance of a constant cell is 0.5 to everyone
    np.testing.assert_allclose(0.5 * (1 - F[1] @ F.T), 0.5)


def test_spearman_rows_are_centred_ranks():
    x = np.array([[0.0, 3.0, 0.0, 1.0, 3.0, 0.0]])
    ranks = stats.rankdata(x[0])  # [2, 5.5, 2, 4, 5.5, 2]
    expected = (ranks - ranks.mean()) / np.linalg.norm(ranks - ranks.mean())
    for X in (x, sparse.csr_matrix(x)):
        np.testing.assert_allclose(spearman_features(X, dtype=np.float64)[0], expected)


def test_spearman_negative_values_and_explicit_zeros():
    rng = np.random.default_rng(5)
    X = rng.integers(-3, 4, size=(30, 9)).astype(np.float64)
    X[4] = -2.0
    # a non-canonical CSR matrix: row 0 stores each value as two halves in reversed column
    # order (duplicates that scipy sums), and explicit zeros in rows 0 and 6
    indptr, indices, data = [0], [], []
    for i, row in enumerate(X):
        cols = np.flatnonzero(row)[::-1]
        if i == 0:
            cols_i = np.concatenate([cols, cols, [np.flatnonzero(row == 0)[0]]])
            vals_i = np.concatenate([row[cols] / 2, row[cols] / 2, [0.0]])
        elif i == 6:
            cols_i = np.concatenate([cols, np.flatnonzero(row == 0)])
            vals_i = np.concatenate([row[cols], np.zeros(np.count_nonzero(row == 0))])
        else:
            cols_i, vals_i = cols, row[cols]
        indices.extend(cols_i)
        data.extend(vals_i)
        indptr.append(len(indices))
    noncanonical = sparse.csr_matrix((data, indices, indptr), shape=X.shape)
    assert not noncanonical.has_canonical_format
    np.testing.assert_array_equal(noncanonical.toarray(), X)
    expected = spearman_reference(X)
    for Y in (X, sparse.csr_matrix(X), noncanonical):
        F = spearman_features(Y, dtype=np.float64, chunk_size=4)
        np.testing.assert_allclose(F @ F.T, expected, atol=1e-12)


def test_spearman_chunk_size_does_not_change_the_result():
    X = sparse.random(101, 23, density=0.4, format="csr", random_state=3) * 10
    X.data = np.floor(X.data)
    reference = spearman_features(X, dtype=np.float64)
    for chunk_size in (1, 7, 100, 101, 1000):
        np.testing.assert_array_equal(
            spearman_features(X, dtype=np.float64, chunk_size=chunk_size), reference
        )


def test_spearman_does_not_modify_input():
    X = sparse.csr_matrix(count_matrix(1))
    before = X.copy()
    spearman_features(X)
    assert (X != before).nnz == 0
    D = count_matrix(1)
    spearman_features(D)
    np.testing.assert_array_equal(D, count_matrix(1))


def test_spearman_edge_shapes():
    assert spearman_features(np.zeros((0, 5))).shape == (0, 5)
    assert spearman_features(np.zeros((3, 0))).shape == (3, 0)
    np.testing.assert_array_equal(spearman_features(np.array([[4.0], [1.0]])), 0.0)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.int64,
        st.tuples(st.integers(2, 8), st.integers(1, 10)),
        elements=st.integers(-2, 4),
    )
)
def test_spearman_property_matches_scipy(X):
    expected = spearman_reference(X)
    for Y in (X, sparse.csr_matrix(X)):
        F = spearman_features(Y, dtype=np.float64)
        norms = np.linalg.norm(F, axis=1)
        assert np.all((np.abs(norms - 1) < 1e-12) | (norms == 0))
        np.testing.assert_allclose(F @ F.T, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "non-finite.*1 NaN"),
        (sparse.csr_matrix(np.array([[1.0, np.inf], [0.0, 1.0]])), "non-finite.*1 infinite"),
        (np.zeros(5), "2-D"),
    ],
)
def test_spearman_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        spearman_features(bad)


def test_spearman_rejects_bad_types():
    with pytest.raises(TypeError, match="real numbers"):
        spearman_features(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="real numbers"):
        spearman_features(np.ones((2, 2), dtype=bool))
    with pytest.raises(TypeError, match="dtype must be np.float32 or np.float64"):
        spearman_features(np.ones((2, 2)), dtype=np.int32)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        spearman_features(np.ones((2, 2)), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        spearman_features(np.ones((2, 2)), chunk_size=2.5)


# --------------------------------------------------------------------------------------------
# cosine_features
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("convert", [np.asarray, sparse.csr_matrix], ids=["dense", "csr"])
def test_cosine_matches_sklearn(convert):
    rng = np.random.default_rng(0)
    E = rng.normal(size=(50, 8))
    E[3] = 0.0
    expected = cosine_similarity(E)  # zero rows give 0 in sklearn as well
    E[7] *= 1e200  # cosine is scale-invariant, and the norm must not overflow
    F = cosine_features(convert(E), dtype=np.float64, chunk_size=9)
    np.testing.assert_allclose(F @ F.T, expected, atol=1e-12)
    assert np.all(F[3] == 0)
    norms = np.linalg.norm(np.delete(F, 3, axis=0), axis=1)
    np.testing.assert_allclose(norms, 1.0)


def test_cosine_default_dtype_and_validation():
    E = np.arange(12, dtype=np.float64).reshape(4, 3)
    F = cosine_features(E)
    assert F.dtype == np.float32 and F.shape == (4, 3)
    np.testing.assert_allclose(F @ F.T, cosine_similarity(E), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="E has non-finite"):
        cosine_features(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        cosine_features(np.ones(3))


# --------------------------------------------------------------------------------------------
# how much the features vary
# --------------------------------------------------------------------------------------------
def naive_spread(F):
    """Share of zero rows, and 1 - mean pairwise inner product (for unit rows): plain loops."""
    n = F.shape[0]
    undefined = sum(1 for i in range(n) if not np.any(F[i] != 0)) / n
    total = sum(float(np.dot(F[i], F[i])) for i in range(n)) / n
    pairs = sum(float(np.dot(F[i], F[j])) for i in range(n) for j in range(n)) / n**2
    return undefined, total - pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_feature_spread_matches_naive_loops(seed):
    F = spearman_features(count_matrix(seed), dtype=np.float64)
    undefined, variance = feature_spread(F)
    expected = naive_spread(F)
    assert undefined == expected[0] == 2 / 40  # the two constant cells of count_matrix
    assert variance == pytest.approx(expected[1], abs=1e-12)
    # the same sum of per-feature variances numpy gives
    assert variance == pytest.approx(np.var(F, axis=0).sum(), abs=1e-12)
    assert feature_spread(np.zeros((0, 4))) == (0.0, 0.0)


def test_uninformative_features_thresholds():
    rng = np.random.default_rng(0)
    n = 40
    X = rng.poisson(3.0, size=(n, 30)).astype(np.float64)
    assert uninformative_features(spearman_features(X)) is None
    # just above half of the cells with all HVG values equal: flagged; exactly half: not
    flat = X.copy()
    flat[: n // 2 + 1] = 0.0
    reason = uninformative_features(spearman_features(flat))
    assert reason == (
        "52% of its cells have all their 30 highly variable gene values equal (e.g. all "
        "zero), so they have no rank vector"
    )
    flat[n // 2] = X[n // 2]
    assert feature_spread(spearman_features(flat))[0] == MAX_UNDEFINED_SHARE
    assert uninformative_features(spearman_features(flat)) is None
    # every cell with the same ranks (up to scale): no variance at all
    same = np.tile(X[0], (n, 1)) * rng.integers(1, 4, size=(n, 1))
    assert feature_spread(spearman_features(same))[1] == pytest.approx(0.0, abs=1e-6)
    assert "nearly) all the same (total variance" in uninformative_features(spearman_features(same))
    # an embedding almost constant across cells: variance below the threshold
    E = np.ones((n, 5)) + 1e-3 * rng.normal(size=(n, 5))
    variance = feature_spread(cosine_features(E))[1]
    assert 0 < variance < MIN_FEATURE_VARIANCE
    assert uninformative_features(cosine_features(E), embedding=True).startswith("its cells'")
    E[:30] = 0.0
    assert uninformative_features(cosine_features(E), embedding=True) == (
        "75% of its cells have an all-zero embedding vector"
    )
    assert uninformative_features(np.ones((1, 3)) / np.sqrt(3)) is None  # one cell: no spread


def test_spearman_features_of_float16_equal_float32():
    X = count_matrix(4).astype(np.float16)
    np.testing.assert_array_equal(spearman_features(X), spearman_features(X.astype(np.float32)))
